"""CLF_IRIS publication model: the ModeloCLF that a Pub worker loads from params.conf.

Each feature item is one iris flower as a ';'-separated string,
"sepal_length;sepal_width;petal_length;petal_width" (e.g. "5.1;3.5;1.4;0.2"); predict answers one
species name per item ("setosa", "versicolor", "virginica").
Invalid input is answered with a str (a Portuguese message), which the stack reports as the job's error.

Where the model comes from is params.conf's `model_provider_name` (as shipped: `mlflow`), unless the
environment variable `<MODEL NAME>_PROVIDER` (e.g. CLF_IRIS_PROVIDER=local) overrides it:
- `mlflow`: the registry's `production` alias through mllibprodest (needs MLFLOW_TRACKING_URI,
  MLFLOW_TRACKING_USERNAME/PASSWORD, and for s3:// artifact roots MLFLOW_S3_ENDPOINT_URL + AWS credentials).
  It downloads into ./temp_area/<model>/ of the working directory, which must therefore be writable.
- `local`: the directory written by training_model/train.py, named by MLSTACK_LOCAL_MODEL_DIR
  (default <bundle>/training_model/artifacts); the version is metadata.json's "version".
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# Importing mllibprodest without this creates ./logs/ (and fails in a read-only working directory).
os.environ.setdefault("STACK_LOG_OUTPUT", "console")

from mllibprodest.interfaces import ModelPublicationInterfaceCLF
from mllibprodest.provider import Provider

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
EXAMPLE_ITEM = "5.1;3.5;1.4;0.2"
LOCAL_DIR_ENV = "MLSTACK_LOCAL_MODEL_DIR"
DEFAULT_LOCAL_DIR = Path(__file__).resolve().parents[2] / "training_model" / "artifacts"
MLFLOW_ARTIFACTS_DIR = "temp_area"  # mllibprodest's default; relative to the working directory


def _short(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_items(dataset: Any) -> np.ndarray | str:
    """Turn the feature items into an (n, 4) float array, or answer the Portuguese error message."""
    if not isinstance(dataset, list):
        return f"Esta função espera uma lista, mas foi passado um objeto do tipo '{type(dataset).__name__}'."
    if not dataset:
        return "Foi passada uma lista vazia."
    rows: list[list[float]] = []
    for pos, item in enumerate(dataset):
        if not isinstance(item, str):
            return (f"O item na posição {pos} deve ser uma string no formato '{EXAMPLE_ITEM}' "
                    f"({';'.join(FEATURES)}), mas é do tipo '{type(item).__name__}'.")
        fields = item.split(";")
        if len(fields) != len(FEATURES):
            return (f"O item na posição {pos} ('{_short(item)}') tem {len(fields)} campo(s), mas deve ter "
                    f"{len(FEATURES)} separados por ';' ({';'.join(FEATURES)}), ex.: '{EXAMPLE_ITEM}'.")
        values: list[float] = []
        for field in fields:
            try:
                value = float(field)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                return (f"O item na posição {pos} ('{_short(item)}') tem um valor que não é um número "
                        f"válido: '{_short(field, 20)}'.")
            values.append(value)
        rows.append(values)
    return np.array(rows, dtype=float)


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _load_local(model_name: str) -> tuple[Any, dict[str, Any], str]:
    directory = Path(os.environ.get(LOCAL_DIR_ENV) or DEFAULT_LOCAL_DIR)
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
        with open(directory / "model.pkl", "rb") as f:
            model = pickle.load(f)
        with open(directory / "ModelInfo.pkl", "rb") as f:
            info = pickle.load(f)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        raise RuntimeError(f"Não foi possível carregar o modelo '{model_name}' do diretório '{directory}' "
                           f"(provider 'local'; rode training_model/train.py ou ajuste {LOCAL_DIR_ENV}): "
                           f"{e.__class__.__name__} - {e}") from e
    if metadata.get("model_name") != model_name:
        raise RuntimeError(f"O diretório '{directory}' contém o modelo '{metadata.get('model_name')}', "
                           f"não '{model_name}'.")
    return model, dict(info), str(metadata["version"])


def provider_of(model_name: str, configured: str) -> str:
    """params.conf's provider, unless <MODEL NAME>_PROVIDER says otherwise: so that tests and machines
    without a registry can serve the bundle from local files without editing params.conf."""
    return os.environ.get(f"{model_name}_PROVIDER", "").strip() or configured


def _production_version_mlflow(model_name: str) -> str:
    try:
        return str(Provider.get_models_versions([model_name], provider="mlflow")[model_name])
    except Exception as e:
        # mllibprodest reports e.g. refused credentials as a bare JSONDecodeError: say what was asked.
        raise RuntimeError(f"Não foi possível obter a versão de produção do modelo '{model_name}' no MLflow "
                           f"({os.environ.get('MLFLOW_TRACKING_URI', 'MLFLOW_TRACKING_URI não definida')}): "
                           f"{e.__class__.__name__} - {e}") from e


def _load_mlflow(model_name: str) -> tuple[Any, dict[str, Any], str]:
    # Loading (models:/NAME@production) and reading the alias's version are two calls; if the alias moves in
    # between, the reported version would not be the one served, so load again until both agree.
    version = _production_version_mlflow(model_name)
    for _ in range(3):
        model = Provider.load_model(model_name, provider="mlflow",
                                    artifacts_destination_path=MLFLOW_ARTIFACTS_DIR)
        after = _production_version_mlflow(model_name)
        if after == version:
            break
        version = after
    else:
        raise RuntimeError(f"O alias 'production' do modelo '{model_name}' mudou durante a carga; "
                           f"tente novamente.")
    with open(Path(MLFLOW_ARTIFACTS_DIR) / model_name / "ModelInfo.pkl", "rb") as f:
        info = pickle.load(f)
    return model, dict(info), version


class ModeloCLF(ModelPublicationInterfaceCLF):
    """Iris species classifier; the model is loaded once, in the constructor."""

    def __init__(self, model_name: str, model_provider_name: str) -> None:
        # A plain named logger: mllibprodest's make_log would add a handler per instance (duplicate lines on
        # every reload); the worker runtime decides where log records go.
        self._logger = logging.getLogger(f"mlstack.bundle.{model_name}")
        self._model_name = model_name
        self._provider = provider = provider_of(model_name, model_provider_name)
        if provider == "local":
            self._model, self._info, self._version = _load_local(model_name)
        elif provider == "mlflow":
            self._model, self._info, self._version = _load_mlflow(model_name)
        else:
            raise ValueError(f"O provider '{provider}' do modelo '{model_name}' não é suportado. "
                             f"Use 'local' ou 'mlflow'.")
        self._labels: list[str] = [str(label) for label in self._info.get("predictable_labels", [])]
        self._logger.info("model %s v%s loaded from provider %s", model_name, self._version, provider)

    def get_model_name(self) -> str:
        return self._model_name

    def get_model_provider_name(self) -> str:
        return self._provider

    def get_model_version(self) -> str:
        return self._version

    def get_model_info(self) -> dict[str, Any] | str:
        return {**self._info, "model_name": self._model_name, "model_version": self._version,
                "model_provider_name": self._provider}

    def predict(self, dataset: list) -> list | str:
        x = parse_items(dataset)
        if isinstance(x, str):
            self._logger.warning("predict refused: %s", x)
            return x
        return [str(label) for label in np.asarray(self._model.predict(x)).tolist()]

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        if not isinstance(data_targets, list):
            return (f"Esta função espera uma lista de targets, mas foi passado um objeto do tipo "
                    f"'{type(data_targets).__name__}'.")
        y_pred = self.predict(data_features)
        if isinstance(y_pred, str):
            return y_pred
        if len(y_pred) != len(data_targets):
            return "Os parâmetros 'features' e 'targets' devem ter a mesma quantidade de elementos."
        hits = sum(p == str(t) for p, t in zip(y_pred, data_targets, strict=True))
        return {"Accuracy": _percent(hits / len(y_pred))}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        if not isinstance(y_pred, list) or not isinstance(y_true, list):
            return "Os parâmetros 'y_pred' e 'y_true' devem ser listas."
        if not y_true or len(y_pred) != len(y_true):
            return (f"Os parâmetros 'y_pred' e 'y_true' devem ter a mesma quantidade de elementos (maior que "
                    f"zero). Recebidos: {len(y_pred)} e {len(y_true)}.")
        # Compare as text: a label's JSON type is the client's choice, the metrics should not crash on it.
        pred = [str(v) for v in y_pred]
        true = [str(v) for v in y_true]
        total = len(true)
        hits = sum(p == t for p, t in zip(pred, true, strict=True))
        per_class: dict[str, dict[str, Any]] = {}
        for label in sorted(set(pred) | set(true)):
            tp = sum(p == t == label for p, t in zip(pred, true, strict=True))
            predicted, actual = pred.count(label), true.count(label)
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_class[label] = {"precisao": _percent(precision), "recall": _percent(recall),
                                "f1": _percent(f1), "suporte": actual}
        feedback: dict[str, Any] = {"Acuracia": _percent(hits / total), "qtd_acertos": hits,
                                    "qtd_labels_avaliados": total, "qtd_erros": total - hits,
                                    "metricas_por_classe": per_class}
        unknown = sorted({t for t in true if self._labels and t not in self._labels})
        if unknown:
            # Labels the users reported that the model never learned: only a retrain can fix those errors.
            feedback["labels_ausentes"] = unknown
            feedback["ocorrencia_labels_ausentes"] = {label: true.count(label) for label in unknown}
        return feedback
