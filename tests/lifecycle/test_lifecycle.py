"""The life of a model, end to end, with the `mlstack` CLI against a real MLflow registry:
train -> promote v1 -> predict (v1) -> retrain (v2 logged, not promoted) -> promote v2 under
load (hot swap, no job lost) -> rollback (v1) -> a broken version (old one keeps serving,
`mlstack health` says why) -> rollback again.

The tests of this module run in order and share one registry, one stack and one worker:
each step starts from the state the previous one left.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from lifecycle_support import (
    EXAMPLE,
    MODEL,
    VERSION_CHECK_S,
    Registry,
    mlstack,
    models_json,
    ok,
    start_example_worker,
    wait_status,
    worker_states,
    worker_status,
)
from support.stack import Stack

WORKER = "lc-1"
WORKER_ID = f"test-{WORKER}"  # support.infra names workers test-<name>
FEATURES = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]
EXPECTED = ["setosa", "virginica"]
# Loading a version (download from MLflow, unpickle) takes a few seconds; this bounds it generously.
LOAD_TIMEOUT_S = 90


def predict(stack: Stack) -> dict:
    answer = stack.client().run(MODEL, "predict", FEATURES, timeout=60)
    assert answer["status"] == "Done", answer
    assert answer["response"] == EXPECTED, answer
    return answer


def drifted_copy(datasets: Path, target: Path) -> Path:
    """The training data with every fifth label rotated: the production model's accuracy on it falls
    to ~79%, below its baseline (100% test accuracy) minus the 5% tolerance, so a retrain is due."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "iris_features.csv").write_bytes((datasets / "iris_features.csv").read_bytes())
    header, *labels = (datasets / "iris_targets.csv").read_text().splitlines()
    rotate = {"setosa": "versicolor", "versicolor": "virginica", "virginica": "setosa"}
    labels = [rotate[label] if i % 5 == 0 else label for i, label in enumerate(labels)]
    (target / "iris_targets.csv").write_text("\n".join([header, *labels]) + "\n")
    return target


@pytest.fixture(scope="module")
def trained(registry: Registry, bundle_venv: Path, workdir: Path) -> tuple[Path, str]:
    output = workdir / "lifecycle-train-output"
    result = mlstack(
        "train", str(EXAMPLE), "--venv", str(bundle_venv), "--", "--output", str(output), registry=registry
    )
    return output, ok(result)


@pytest.fixture(scope="module")
def serving(trained: tuple[Path, str], registry: Registry, lifecycle_stack: Stack, bundle_python: str) -> Stack:
    """v1 promoted and one worker of the example bundle serving it from the registry."""
    ok(mlstack("models", "promote", MODEL, registry=registry))
    if WORKER not in lifecycle_stack.workers:
        start_example_worker(lifecycle_stack, WORKER, bundle_python, registry)
    return lifecycle_stack


def test_train_logs_a_run_and_registers_v1_without_promoting(trained: tuple[Path, str], registry: Registry) -> None:
    output, stdout = trained
    assert "logged run 'train'" in stdout and "to experiment 'iris_experiment'" in stdout, stdout
    assert "registered as CLF_IRIS v1" in stdout, stdout
    model = models_json(registry)[MODEL]
    assert model["production_version"] is None, model
    assert [v["version"] for v in model["versions"]] == ["1"], model
    assert model["versions"][0]["run_name"] == "train" and len(model["versions"][0]["run_id"]) == 32, model
    assert model["versions"][0]["created"], model
    assert (output / "datasets" / "iris_targets.csv").is_file()


def test_promote_v1_then_predict_answers_v1(serving: Stack, registry: Registry) -> None:
    model = models_json(registry)[MODEL]
    assert model["production_version"] == "1" and model["production_history"] == ["1"], model
    assert [v["production"] for v in model["versions"]] == [True], model
    table = ok(mlstack("models", "list", registry=registry))
    assert "CLF_IRIS  (production: v1)" in table and " * " in table, table

    assert predict(serving)["model_version"] == "1"
    wait_status(serving, WORKER, 30, "worker ok on v1", state="ok", loaded_version="1", production_version="1")


def test_retrain_evaluates_then_logs_self_training_without_promoting(
    serving: Stack, registry: Registry, bundle_venv: Path, trained: tuple[Path, str], workdir: Path
) -> None:
    datasets = trained[0] / "datasets"
    args = ("retrain", str(EXAMPLE), "--venv", str(bundle_venv))

    # On the data it was trained on, production meets its baseline: evaluated, nothing retrained.
    same = ok(mlstack(*args, registry=registry, LOCAL_PATH=str(datasets)))
    assert "CLF_IRIS: production v1 evaluated: no retrain needed" in same, same
    assert [v["version"] for v in models_json(registry)[MODEL]["versions"]] == ["1"]

    drifted = drifted_copy(datasets, workdir / "lifecycle-drifted")
    out = ok(mlstack(*args, registry=registry, LOCAL_PATH=str(drifted)))
    assert "CLF_IRIS: production v1 evaluated: retrain needed" in out, out
    assert "run 'self_training'" in out and "registered as v2 (not promoted)" in out, out

    model = models_json(registry)[MODEL]
    assert model["production_version"] == "1", model
    newest = model["versions"][-1]
    assert (newest["version"], newest["run_name"], newest["production"]) == ("2", "self_training", False), model

    # Workers keep serving production, which did not move.
    time.sleep(3 * VERSION_CHECK_S)
    assert predict(serving)["model_version"] == "1"
    status = worker_status(serving, WORKER)
    assert (status["state"], status["loaded_version"], status["production_version"]) == ("ok", "1", "1"), status


def test_promote_v2_under_load_swaps_without_losing_a_job(serving: Stack, registry: Registry) -> None:
    submitter = serving.client()
    job_ids: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def submit_continuously() -> None:
        try:
            while not stop.is_set():
                job_ids.append(submitter.submit(MODEL, "predict", FEATURES))
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=submit_continuously, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(job_ids) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Default target: the latest run of the model's experiment, the self_training run (v2).
        promoted = ok(mlstack("models", "promote", MODEL, registry=registry))
        assert "production is now v2 (was v1)" in promoted, promoted
        promoted_at = time.monotonic()
        wait_status(serving, WORKER, VERSION_CHECK_S + 5, "worker to notice v2", production_version="2")
        noticed_after = time.monotonic() - promoted_at
        wait_status(serving, WORKER, LOAD_TIMEOUT_S, "worker to serve v2", state="ok", loaded_version="2")
        swapped_after = time.monotonic() - promoted_at
        time.sleep(2)  # more jobs after the swap
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors

    results = [submitter.wait_done(job_id, timeout=90) for job_id in job_ids]
    assert all(r["status"] == "Done" for r in results), [r for r in results if r["status"] != "Done"][:3]
    assert all(r["response"] == EXPECTED for r in results)
    versions = [r["model_version"] for r in results]
    # One worker consumes the queue in order: v1 answers, then v2 answers, nothing in between.
    assert "1" in versions and "2" in versions, versions
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}, versions
    assert noticed_after <= VERSION_CHECK_S + 5, noticed_after
    print(f"{len(results)} jobs, all Done; v2 noticed after {noticed_after:.1f}s, serving after {swapped_after:.1f}s")


def test_rollback_serves_v1_again(serving: Stack, registry: Registry) -> None:
    out = ok(mlstack("models", "rollback", MODEL, registry=registry))
    assert "CLF_IRIS: production is now v1 (rolled back from v2)" in out, out
    model = models_json(registry)[MODEL]
    assert model["production_version"] == "1" and model["production_history"] == ["1"], model
    wait_status(serving, WORKER, LOAD_TIMEOUT_S, "worker back on v1", state="ok", loaded_version="1")
    assert predict(serving)["model_version"] == "1"

    # Nothing before v1: a second rollback is refused, clearly, and changes nothing.
    again = mlstack("models", "rollback", MODEL, registry=registry)
    assert again.returncode == 1 and "no earlier production version than v1" in again.stderr, again
    assert models_json(registry)[MODEL]["production_version"] == "1"


def test_broken_version_keeps_the_old_one_serving_and_health_says_why(serving: Stack, registry: Registry) -> None:
    client = registry.client()
    v1 = client.get_version(MODEL, "1")
    # A registered version whose model cannot be loaded: its source holds no model.
    broken = client.create_version(MODEL, f"runs:/{v1.run_id}/no-such-model", v1.run_id).version
    ok(mlstack("models", "promote", MODEL, "--version", broken, registry=registry))

    status = wait_status(
        serving,
        WORKER,
        LOAD_TIMEOUT_S,
        f"worker to fail loading v{broken}",
        state="degraded",
        production_version=broken,
    )
    assert status["loaded_version"] == "1" and f"v{broken}" in status["reason"], status
    assert predict(serving)["model_version"] == "1"

    states = str(worker_states(serving))
    health = mlstack("health", "--json", "--state-root", states, registry=None)
    assert health.returncode == 1, health
    rows = [r for r in json.loads(health.stdout)["models"] if r["worker_id"] == WORKER_ID and r["model"] == MODEL]
    assert len(rows) == 1, health.stdout
    row = rows[0]
    assert (row["state"], row["loaded_version"], row["production_version"]) == ("degraded", "1", broken), row
    assert f"v{broken}" in row["reason"], row
    text = mlstack("health", "--state-root", states, registry=None)
    assert text.returncode == 1 and "degraded" in text.stdout and row["reason"] in text.stdout, text

    # Back to the version that works: healthy again.
    out = ok(mlstack("models", "rollback", MODEL, registry=registry))
    assert f"production is now v1 (rolled back from v{broken})" in out, out
    wait_status(serving, WORKER, 30, "worker ok on v1", state="ok", loaded_version="1", production_version="1")
    assert mlstack("health", "--state-root", states, registry=None).returncode == 0
