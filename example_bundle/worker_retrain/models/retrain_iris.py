"""CLF_IRIS retrain model: the ModeloRETRAIN that the retrain runner loads from params.conf.

The runner (as in the original stack) loads the production model, its params, baseline and dataset names,
asks `evaluate` whether the model still meets its baseline on the current data and, if not, calls `retrain`.
A retrained model is registered in MLflow but never promoted: the 'production' alias stays an operator's call.

Providers (params.conf; `<MODEL NAME>_PROVIDER`, e.g. CLF_IRIS_PROVIDER=local, overrides the model provider):
- model_provider_name `mlflow` (as shipped): mllibprodest's loaders (./temp_area/<model>/ in the working
  directory). `local`: the directory written by training_model/train.py (MLSTACK_LOCAL_MODEL_DIR, default
  <bundle>/training_model/artifacts), copied into ./temp_area/<model>/ the same way, so everything below
  works on one layout. A local retrain leaves its new artifacts in ./temp_area/<model>/ and registers nothing.
- dataset_provider_name: mllibprodest's `local` (LOCAL_PATH = a directory holding iris_features.csv and
  iris_targets.csv; default <bundle>/training_model/artifacts/datasets, where train.py writes them) or
  `minio`. Both files are ';'-separated CSV with a header.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

# Importing mllibprodest without this creates ./logs/ (and fails in a read-only working directory).
os.environ.setdefault("STACK_LOG_OUTPUT", "console")

from mllibprodest.interfaces import ModelPublicationInterfaceRETRAIN

LOCAL_DIR_ENV = "MLSTACK_LOCAL_MODEL_DIR"
DEFAULT_LOCAL_DIR = Path(__file__).resolve().parents[2] / "training_model" / "artifacts"
DEFAULT_DATASETS_DIR = DEFAULT_LOCAL_DIR / "datasets"
N_FEATURES = 4
LOCAL_ARTIFACTS = ["model.pkl", "ModelInfo.pkl", "TrainingParams.pkl", "TrainingDatasetsNames.pkl",
                   "BaselineMetrics.pkl"]


def _local_dir() -> Path:
    return Path(os.environ.get(LOCAL_DIR_ENV) or DEFAULT_LOCAL_DIR)


def _read_local_pickle(model_name: str, file_name: str) -> Any:
    directory = _local_dir()
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
        if metadata.get("model_name") != model_name:
            raise ValueError(f"o diretório contém o modelo '{metadata.get('model_name')}'")
        with open(directory / file_name, "rb") as f:
            return pickle.load(f)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        raise RuntimeError(f"Não foi possível ler '{file_name}' do modelo '{model_name}' no diretório "
                           f"'{directory}' (provider 'local'): {e}") from e


def _read_csv(source: Any) -> list[list[str]]:
    """Rows (header dropped) of a ';'-separated CSV given as a file-like object (what mllibprodest's dataset
    providers return), bytes, or str."""
    data = source.read() if hasattr(source, "read") else source
    text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=";") if row]
    return rows[1:]


def read_datasets(datasets: dict) -> tuple[np.ndarray, np.ndarray]:
    try:
        features, targets = _read_csv(datasets["features"]), _read_csv(datasets["targets"])
    except KeyError as e:
        raise ValueError(f"O dataset {e} não foi encontrado no dicionário de datasets.") from None
    if not features or len(features) != len(targets):
        raise ValueError(f"Os datasets de features ({len(features)} linhas) e targets ({len(targets)} "
                         f"linhas) devem ter a mesma quantidade de linhas, maior que zero.")
    if any(len(row) != N_FEATURES for row in features):
        raise ValueError(f"Todas as linhas do dataset de features devem ter {N_FEATURES} colunas.")
    try:
        x = np.array(features, dtype=float)
    except ValueError as e:
        raise ValueError(f"O dataset de features tem valores não numéricos: {e}") from None
    return x, np.array([row[0] for row in targets]).astype(str)


def build_model(params: dict[str, Any]) -> Pipeline:
    # Same construction as training_model/train.py (kept in sync by hand: the two parts deploy separately).
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=params["random_state"]),
    )


def provider_of(model_name: str, configured: str) -> str:
    """params.conf's provider, unless <MODEL NAME>_PROVIDER says otherwise (tests, machines without a registry)."""
    return os.environ.get(f"{model_name}_PROVIDER", "").strip() or configured


class ModeloRETRAIN(ModelPublicationInterfaceRETRAIN):
    def __init__(self, model_name: str, model_provider_name: str, experiment_name: str,
                 dataset_provider_name: str) -> None:
        self._logger = logging.getLogger(f"mlstack.bundle.{model_name}.retrain")
        self._model_name = model_name
        self._provider = provider = provider_of(model_name, model_provider_name)
        self._experiment_name = experiment_name
        self._dataset_provider = dataset_provider_name
        if provider not in ("local", "mlflow"):
            raise ValueError(f"O provider '{provider}' do modelo '{model_name}' não é suportado. "
                             f"Use 'local' ou 'mlflow'.")

    def get_model_name(self) -> str:
        return self._model_name

    def get_model_provider_name(self) -> str:
        return self._provider

    def get_experiment_name(self) -> str:
        return self._experiment_name

    def get_dataset_provider_name(self) -> str:
        return self._dataset_provider

    @staticmethod
    def load_datasets(datasets_filenames: dict, provider: str = "minio") -> dict:
        if provider == "local":
            # mllibprodest's local provider reads LOCAL_PATH; default to where train.py writes the data.
            os.environ.setdefault("LOCAL_PATH", str(DEFAULT_DATASETS_DIR))
        return ModelPublicationInterfaceRETRAIN.load_datasets(datasets_filenames, provider)

    # mllibprodest's loaders know only 'mlflow'; these add 'local' and otherwise defer to it.
    @staticmethod
    def load_model(model_name: str, provider: str = "mlflow", artifacts_destination_path: str = "temp_area"):
        if provider != "local":
            return ModelPublicationInterfaceRETRAIN.load_model(model_name, provider,
                                                               artifacts_destination_path)
        destination = Path(artifacts_destination_path) / model_name
        shutil.rmtree(destination, ignore_errors=True)  # like mllibprodest: never read a stale artifact
        destination.mkdir(parents=True)
        for name in LOCAL_ARTIFACTS:
            shutil.copyfile(_local_dir() / name, destination / name)
        return _read_local_pickle(model_name, "model.pkl")

    @staticmethod
    def load_production_params(model_name: str, provider: str = "mlflow") -> dict:
        if provider != "local":
            return ModelPublicationInterfaceRETRAIN.load_production_params(model_name, provider)
        return dict(_read_local_pickle(model_name, "TrainingParams.pkl"))

    @staticmethod
    def load_production_datasets_names(model_name: str, provider: str = "mlflow") -> dict:
        if provider != "local":
            return ModelPublicationInterfaceRETRAIN.load_production_datasets_names(model_name, provider)
        return dict(_read_local_pickle(model_name, "TrainingDatasetsNames.pkl"))

    @staticmethod
    def load_production_baseline(model_name: str, provider: str = "mlflow") -> dict:
        if provider != "local":
            return ModelPublicationInterfaceRETRAIN.load_production_baseline(model_name, provider)
        return dict(_read_local_pickle(model_name, "BaselineMetrics.pkl"))

    def evaluate(self, model, datasets: dict, baseline_metrics: dict, training_params: dict,
                 artifacts_path: str = "temp_area", batch_size: int = 100000) -> tuple[bool, dict]:
        """True when the model should be retrained: accuracy fell more than the tolerance below the baseline's
        test accuracy, or the data holds labels the model never learned."""
        x, y = read_datasets(datasets)
        y_pred: list[str] = []
        for start, end in self.generate_batch_indices(len(x), batch_size=batch_size):
            y_pred += [str(v) for v in np.asarray(model.predict(x[start:end])).tolist()]
        hits = sum(p == t for p, t in zip(y_pred, y.tolist(), strict=True))
        accuracy = hits / len(y)
        tolerance = float(baseline_metrics.get("accuracy_drop_tolerance",
                                               training_params.get("accuracy_drop_tolerance", 0.05)))
        threshold = float(baseline_metrics["test_accuracy"]) - tolerance
        known = {str(label) for label in baseline_metrics.get("labels", [])}
        unknown = sorted({t for t in y.tolist() if known and t not in known})

        reasons: list[str] = []
        if accuracy < threshold:
            reasons.append(f"A acurácia avaliada ({accuracy * 100:.2f}%) ficou abaixo do limiar "
                           f"({threshold * 100:.2f}%: acurácia de teste do modelo em produção menos "
                           f"{tolerance * 100:.2f}%).")
        if unknown:
            reasons.append(f"Existem labels nos dados que não fizeram parte do treino: {unknown}.")
        info: dict[str, Any] = {
            "acuracia_avaliada": f"{accuracy * 100:.2f}%", "limiar": f"{threshold * 100:.2f}%",
            "qtd_labels": len(y), "qtd_acertos": hits, "qtd_erros": len(y) - hits, "motivos": reasons,
        }
        run_id = getattr(getattr(model, "metadata", None), "run_id", None)  # set for MLflow-loaded models
        if run_id:
            info["evaluator_model_run_id"] = run_id
        if unknown:
            info["labels_ausentes"] = unknown
        self._logger.info("evaluation of %s: %s", self._model_name, info)
        return bool(reasons), info

    def retrain(self, production_model_name: str, production_params: dict, experiment_name: str,
                datasets: dict, reasons: dict) -> dict:
        """Train a new model with the production hyperparameters on the current data, write its artifacts to
        ./temp_area/<model>/ and, with the mlflow provider, log the run and register a new version (no
        alias)."""
        p = dict(production_params)
        x, y = read_datasets(datasets)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=p["test_size"], random_state=p["random_state"], stratify=y)
        model = build_model(p)
        model.fit(x_train, y_train)
        train_acc, test_acc = float(model.score(x_train, y_train)), float(model.score(x_test, y_test))
        labels = sorted({str(v) for v in y.tolist()})
        info = {"model_name": production_model_name, "algorithm": p.get("algorithm", "LogisticRegression"),
                "predictable_labels": labels, "train_accuracy": f"{train_acc * 100:.2f}%",
                "test_accuracy": f"{test_acc * 100:.2f}%", "retrain_reasons": reasons}
        baseline = {"train_accuracy": train_acc, "test_accuracy": test_acc,
                    "accuracy_drop_tolerance": p.get("accuracy_drop_tolerance", 0.05), "labels": labels}
        datasets_names = self.load_production_datasets_names(production_model_name, self._provider)

        out = Path("temp_area") / production_model_name
        out.mkdir(parents=True, exist_ok=True)
        for name, obj in [("model.pkl", model), ("ModelInfo.pkl", info), ("TrainingParams.pkl", p),
                          ("TrainingDatasetsNames.pkl", datasets_names), ("BaselineMetrics.pkl", baseline)]:
            (out / name).write_bytes(pickle.dumps(obj))
        (out / "ReasonsForTraining.txt").write_text(json.dumps(reasons, ensure_ascii=False, default=str))

        result: dict[str, Any] = {"artifacts_path": str(out.resolve()), "train_accuracy": train_acc,
                                  "test_accuracy": test_acc, "registered_version": None}
        if self._provider == "mlflow":
            result["registered_version"] = self._log_to_mlflow(
                out, model, production_model_name, experiment_name, p, baseline, x_train[:5])
        self._logger.info("retrain of %s done (not promoted): %s", production_model_name, result)
        return result

    @staticmethod
    def _log_to_mlflow(out: Path, model: Pipeline, model_name: str, experiment_name: str, params: dict,
                       baseline: dict, x_sample: np.ndarray) -> str:
        import mlflow  # mllibprodest depends on it; imported here so the local path never needs it
        from mlflow.models import infer_signature

        mlflow.set_experiment(experiment_name)
        with mlflow.start_run(run_name="self_training"):
            mlflow.log_params({k: v for k, v in params.items() if isinstance(v, (str, int, float, bool))})
            mlflow.log_metrics({"train_accuracy": baseline["train_accuracy"],
                                "test_accuracy": baseline["test_accuracy"]})
            for path in sorted(out.iterdir()):  # at the run root, where mllibprodest's loaders look
                if path.is_file():
                    mlflow.log_artifact(str(path))
            logged = mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name,
                                              signature=infer_signature(x_sample, model.predict(x_sample)))
        return str(logged.registered_model_version)
