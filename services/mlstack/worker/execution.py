"""Runs one job on a model and checks what it returned, as the contract says (pure, no I/O)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from mlstack import messages

log = logging.getLogger(__name__)

# method -> (model attribute, name shown in messages, allowed return type name)
_METHODS: dict[str, tuple[str, str, type]] = {
    "predict": ("predict", "predict", list),
    "evaluate": ("evaluate", "evaluate", dict),
    "info": ("get_model_info", "get_model_info", dict),
    "get_feedback": ("get_feedback", "get_feedback", dict),
}


@dataclass(frozen=True)
class JobResult:
    status: str  # "Done" or "Error"
    response: Any
    model_version: str


def _call(model: Any, method: str, message: dict[str, Any]) -> Any:
    if method == "predict":
        return model.predict(dataset=message["features"])
    if method == "evaluate":
        return model.evaluate(data_features=message["features"], data_targets=message["targets"])
    if method == "get_feedback":
        return model.get_feedback(y_pred=message["y_pred"], y_true=message["y_true"])
    return model.get_model_info()


def _json_ready(value: Any) -> Any:
    """numpy scalars/arrays become plain JSON values; anything else unserialisable raises TypeError."""

    def convert(obj: Any) -> Any:
        for attr in ("tolist", "item"):
            if callable(getattr(obj, attr, None)):
                return getattr(obj, attr)()
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    return json.loads(json.dumps(value, default=convert, allow_nan=False))


def run_job(model: Any, model_name: str, message: dict[str, Any]) -> JobResult:
    """Never raises: a failing model becomes an Error result the client can read."""
    method = message.get("method", "")
    if method not in _METHODS:
        return JobResult("Error", f"Método desconhecido: '{method}'", "")
    _, shown_name, allowed = _METHODS[method]
    try:
        returned = _call(model, method, message)
        version = model.get_model_version()
    except Exception as exc:
        log.warning("model %s raised %s in %s", model_name, exc.__class__.__name__, method)
        return JobResult("Error", messages.model_raised(model_name, exc), "")
    if not isinstance(version, str):
        return JobResult("Error", messages.wrong_version_type(type(version).__name__), "")
    if isinstance(returned, str):
        return JobResult("Error", returned, version)
    if type(returned) is not allowed:
        text = messages.wrong_return_type(shown_name, allowed.__name__, type(returned).__name__)
        return JobResult("Error", text, version)
    try:
        return JobResult("Done", _json_ready(returned), version)
    except (TypeError, ValueError) as exc:
        text = f"O retorno do método '{shown_name}' não pode ser convertido para JSON: {exc}"
        return JobResult("Error", text, version)
