"""The example bundle (example_bundle/) trains, loads and answers like a Prodest model.

The bundle runs in its own virtualenv (its requirements.txt: mllibprodest, scikit-learn), not in the one
running pytest, so every check spawns that venv's python, named by MLSTACK_BUNDLE_PYTHON; without it the tests
fail rather than skip. Each probe runs in a fresh working directory, as a worker would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BUNDLE = Path(__file__).resolve().parents[1] / "example_bundle"
TRAIN = BUNDLE / "training_model" / "train.py"
MARKER = "PROBE-RESULT:"

# Iris rows 0, 50 and 100: one flower of each species.
KNOWN_ROWS = {"5.1;3.5;1.4;0.2": "setosa", "7.0;3.2;4.7;1.4": "versicolor", "6.3;3.3;6.0;2.5": "virginica"}

PUB_PROBE = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])  # worker_pub: params.conf + models/
known = json.loads(sys.argv[2])
from models.clf_iris import ModeloCLF  # first import: must keep mllibprodest from creating ./logs
from mllibprodest.initiators.model_initiator import InitModels
from sklearn.datasets import load_iris

out = {"stack_log_output": os.environ.get("STACK_LOG_OUTPUT")}
work = os.getcwd()
os.chdir(sys.argv[1])  # mllibprodest finds params.conf only in the working directory, whatever `path` says
m = InitModels.init_models()["CLF_IRIS"]
os.chdir(work)
out["class"] = type(m).__name__
out["name"], out["provider"] = m.get_model_name(), m.get_model_provider_name()
out["version"] = m.get_model_version()
out["info"] = m.get_model_info()
out["predict_known"] = m.predict(list(known))
iris = load_iris()
items = [";".join(str(v) for v in row) for row in iris.data.tolist()]
truth = [str(iris.target_names[t]) for t in iris.target]
pred = m.predict(items)
out["full_accuracy"] = sum(p == t for p, t in zip(pred, truth)) / len(truth)
out["pred_types"] = sorted({type(p).__name__ for p in pred})
bad = {"too_few": ["5.1;3.5;1.4"], "too_many": ["5.1;3.5;1.4;0.2;9"], "not_number": ["5.1;abc;1.4;0.2"],
       "nan": ["nan;3.5;1.4;0.2"], "not_str": [[5.1, 3.5, 1.4, 0.2]], "empty_list": [], "not_list": "5.1;3.5;1.4;0.2",
       "one_bad_among_good": ["5.1;3.5;1.4;0.2", "", "6.3;3.3;6.0;2.5"]}
out["bad"] = {k: m.predict(v) for k, v in bad.items()}
out["evaluate"] = m.evaluate(["5.1;3.5;1.4;0.2", "7.0;3.2;4.7;1.4"], ["setosa", "virginica"])
out["evaluate_all"] = m.evaluate(items, truth)
out["evaluate_bad"] = m.evaluate(["1;2"], ["setosa"])
out["evaluate_len"] = m.evaluate(["5.1;3.5;1.4;0.2"], ["setosa", "setosa"])
out["feedback"] = m.get_feedback(["setosa", "versicolor", "virginica", "setosa"],
                                 ["setosa", "virginica", "virginica", "unicorn"])
out["feedback_len"] = m.get_feedback(["setosa"], ["setosa", "setosa"])
os.environ.pop("CLF_IRIS_PROVIDER", None)
for provider in ("s3bucket",):
    try:
        ModeloCLF("CLF_IRIS", provider)
        out["bad_provider"] = None
    except Exception as e:
        out["bad_provider"] = [type(e).__name__, str(e)]
os.environ["MLSTACK_LOCAL_MODEL_DIR"] = str(Path.cwd() / "nothing-here")
try:
    ModeloCLF("CLF_IRIS", "local")
    out["missing_dir"] = None
except Exception as e:
    out["missing_dir"] = [type(e).__name__, str(e)]
out["cwd_entries"] = sorted(os.listdir("."))
print("PROBE-RESULT:" + json.dumps(out))
"""

RETRAIN_PROBE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])  # worker_retrain
from models.retrain_iris import ModeloRETRAIN
from mllibprodest.initiators.model_initiator import InitModels

work = os.getcwd()
os.chdir(sys.argv[1])  # mllibprodest finds params.conf only in the working directory
m = InitModels.init_models()["CLF_IRIS"]
os.chdir(work)
out = {"class": type(m).__name__, "getters": [m.get_model_name(), m.get_model_provider_name(),
                                              m.get_experiment_name(), m.get_dataset_provider_name()]}
name, provider = m.get_model_name(), m.get_model_provider_name()
names = m.load_production_datasets_names(model_name=name, provider=provider)
baseline = m.load_production_baseline(model_name=name, provider=provider)
params = m.load_production_params(model_name=name, provider=provider)
model = m.load_model(model_name=name, provider=provider)
def datasets():
    return m.load_datasets(datasets_filenames=names, provider=m.get_dataset_provider_name())
need, info = m.evaluate(model=model, datasets=datasets(), baseline_metrics=baseline, training_params=params)
out["ok_eval"] = [type(need).__name__, need, info]
need, info = m.evaluate(model, datasets(), {**baseline, "test_accuracy": 1.5}, params)
out["drop_eval"] = [need, info]
out["retrain"] = m.retrain(production_model_name=name, production_params=params, experiment_name="iris_experiment",
                           datasets=datasets(), reasons=info)
out["temp_area"] = sorted(os.listdir(os.path.join("temp_area", name)))
print("PROBE-RESULT:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def bundle_python() -> str:
    python = os.environ.get("MLSTACK_BUNDLE_PYTHON")
    if not python:
        pytest.fail("MLSTACK_BUNDLE_PYTHON is not set: it must name the python of a venv with "
                    "example_bundle/worker_pub/requirements.txt installed (bin/test sets it)")
    if not os.access(python, os.X_OK):
        pytest.fail(f"MLSTACK_BUNDLE_PYTHON={python} is not an executable")
    return python


def bundle_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STACK_LOG_OUTPUT", "LOCAL_PATH")}
    env.pop("MLSTACK_LOCAL_MODEL_DIR", None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{cmd[:2]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def probe(python: str, script: str, args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = run([python, "-c", script, *args], cwd, env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, f"no probe result:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[0][len(MARKER):])


@pytest.fixture(scope="module")
def trained(bundle_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Artifacts of one training run, written outside the repository."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    cwd = tmp_path_factory.mktemp("train-cwd")
    proc = run([bundle_python, str(TRAIN), "--output", str(artifacts)], cwd, bundle_env())
    return artifacts, proc.stdout


@pytest.fixture(scope="module")
def pub(bundle_python: str, trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    cwd = tmp_path_factory.mktemp("pub-cwd")
    env = bundle_env(MLSTACK_LOCAL_MODEL_DIR=str(trained[0]))
    return probe(bundle_python, PUB_PROBE, [str(BUNDLE / "worker_pub"), json.dumps(KNOWN_ROWS)], cwd, env)


def test_training_writes_artifacts_and_reports_accuracy(trained: tuple[Path, str]) -> None:
    artifacts, stdout = trained
    for name in ("model.pkl", "ModelInfo.pkl", "TrainingParams.pkl", "TrainingDatasetsNames.pkl",
                 "BaselineMetrics.pkl", "metadata.json", "datasets/iris_features.csv",
                 "datasets/iris_targets.csv"):
        assert (artifacts / name).is_file(), name
    metadata = json.loads((artifacts / "metadata.json").read_text())
    assert metadata["model_name"] == "CLF_IRIS"
    assert metadata["version"] == "1"
    assert metadata["test_accuracy"] >= 0.9
    assert "test accuracy" in stdout and "CLF_IRIS v1" in stdout
    features = (artifacts / "datasets/iris_features.csv").read_text().splitlines()
    assert features[0] == "sepal_length;sepal_width;petal_length;petal_width" and len(features) == 151


def test_training_again_counts_the_version_up_and_honours_version(
        bundle_python: str, tmp_path: Path) -> None:
    out = tmp_path / "art"
    run([bundle_python, str(TRAIN), "--output", str(out)], tmp_path, bundle_env())
    run([bundle_python, str(TRAIN), "--output", str(out)], tmp_path, bundle_env())
    assert json.loads((out / "metadata.json").read_text())["version"] == "2"
    run([bundle_python, str(TRAIN), "--output", str(out), "--version", "7"], tmp_path, bundle_env())
    assert json.loads((out / "metadata.json").read_text())["version"] == "7"


def test_model_loads_through_params_conf_without_writing_logs(pub: dict) -> None:
    assert pub["class"] == "ModeloCLF"
    assert (pub["name"], pub["provider"]) == ("CLF_IRIS", "local")
    assert pub["stack_log_output"] == "console"
    # The mllibprodest pitfall the module guards against: ./logs/ in whatever the working directory was.
    assert "logs" not in pub["cwd_entries"]
    assert not (BUNDLE / "worker_pub" / "logs").exists()


def test_version_is_a_string_from_metadata(pub: dict) -> None:
    assert pub["version"] == "1"


def test_info_is_a_dict_naming_model_and_labels(pub: dict) -> None:
    info = pub["info"]
    assert info["model_name"] == "CLF_IRIS" and info["model_version"] == "1"
    assert info["predictable_labels"] == ["setosa", "versicolor", "virginica"]


def test_predict_known_rows(pub: dict) -> None:
    assert pub["predict_known"] == list(KNOWN_ROWS.values())
    assert pub["pred_types"] == ["str"]
    assert pub["full_accuracy"] >= 0.95


@pytest.mark.parametrize(("case", "expected_words"), [
    ("too_few", ["posição 0", "3 campo(s)"]),
    ("too_many", ["posição 0", "5 campo(s)"]),
    ("not_number", ["posição 0", "'abc'"]),
    ("nan", ["posição 0", "'nan'"]),
    ("not_str", ["posição 0", "'list'"]),
    ("empty_list", ["lista vazia"]),
    ("not_list", ["espera uma lista", "'str'"]),
    ("one_bad_among_good", ["posição 1"]),
])
def test_predict_bad_items_answer_a_portuguese_error_string(pub: dict, case: str,
                                                            expected_words: list[str]) -> None:
    answer = pub["bad"][case]
    assert isinstance(answer, str), answer
    for word in expected_words:
        assert word in answer, answer


def test_evaluate_answers_accuracy(pub: dict) -> None:
    assert pub["evaluate"] == {"Accuracy": "50.00%"}
    assert list(pub["evaluate_all"]) == ["Accuracy"]
    assert float(pub["evaluate_all"]["Accuracy"].rstrip("%")) >= 95.0
    assert isinstance(pub["evaluate_bad"], str) and "posição 0" in pub["evaluate_bad"]
    assert isinstance(pub["evaluate_len"], str)


def test_get_feedback_answers_metrics(pub: dict) -> None:
    fb = pub["feedback"]
    assert isinstance(fb, dict)
    assert fb["Acuracia"] == "50.00%" and fb["qtd_acertos"] == 2 and fb["qtd_erros"] == 2
    assert fb["metricas_por_classe"]["virginica"] == {"precisao": "100.00%", "recall": "50.00%",
                                                      "f1": "66.67%", "suporte": 2}
    assert fb["labels_ausentes"] == ["unicorn"]
    assert isinstance(pub["feedback_len"], str)


def test_unknown_provider_and_missing_artifacts_raise_clearly(pub: dict) -> None:
    assert pub["bad_provider"][0] == "ValueError" and "s3bucket" in pub["bad_provider"][1]
    assert pub["missing_dir"][0] == "RuntimeError" and "nothing-here" in pub["missing_dir"][1]


def test_retrain_model_instantiates_evaluates_and_retrains_locally(
        bundle_python: str, trained: tuple[Path, str], tmp_path: Path) -> None:
    artifacts = trained[0]
    env = bundle_env(MLSTACK_LOCAL_MODEL_DIR=str(artifacts), LOCAL_PATH=str(artifacts / "datasets"))
    out = probe(bundle_python, RETRAIN_PROBE, [str(BUNDLE / "worker_retrain")], tmp_path, env)
    assert out["class"] == "ModeloRETRAIN"
    assert out["getters"] == ["CLF_IRIS", "local", "iris_experiment", "local"]
    kind, need, info = out["ok_eval"]
    assert kind == "bool" and need is False and info["qtd_labels"] == 150
    need, info = out["drop_eval"]
    assert need is True and info["motivos"]
    assert out["retrain"]["registered_version"] is None  # local provider: nothing registered, nothing promoted
    assert {"model.pkl", "BaselineMetrics.pkl", "TrainingParams.pkl", "ReasonsForTraining.txt"} <= set(
        out["temp_area"])


def test_params_conf_sections_match_the_contract() -> None:
    import configparser

    for part, cls, source in (("worker_pub", "ModeloCLF", "clf_iris"),
                              ("worker_retrain", "ModeloRETRAIN", "retrain_iris")):
        conf = configparser.ConfigParser()
        conf.read(BUNDLE / part / "params.conf")
        assert conf.sections() == ["CLF_IRIS"]
        section = conf["CLF_IRIS"]
        assert (section["source_file"], section["model_class"]) == (source, cls)
        assert section["experiment_name"] == "iris_experiment"
        assert section["model_provider_name"] in ("local", "mlflow")
        assert (BUNDLE / part / "models" / f"{source}.py").is_file()
        assert "mllibprodest==1.8.9" in (BUNDLE / part / "requirements.txt").read_text().split()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
