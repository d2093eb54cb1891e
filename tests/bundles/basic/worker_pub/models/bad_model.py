"""TEST_BAD: misbehaves on request. The first feature (or the first true label,
for get_feedback) picks the misbehaviour:
  "str_error"  -> returns a str (the model's way to report an error)
  "wrong_type" -> returns the wrong type
  "raise"      -> raises
anything else -> a correct answer."""

from __future__ import annotations

import abc
import json
import os
import time

STR_ERROR = "Falha simulada pelo modelo de teste"


def _log(event: str, **data: object) -> None:
    path = os.environ.get("MLSTACK_TEST_EXEC_LOG")
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **data})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class ModeloCLF(abc.ABC):  # noqa: B024 - mllibprodest's interfaces are ABCs; loaders may check ABCMeta
    def __init__(self, model_name: str, model_provider_name: str) -> None:
        self.model_name = model_name
        self.model_provider_name = model_provider_name

    def get_model_name(self) -> str:
        return self.model_name

    def get_model_provider_name(self) -> str:
        return self.model_provider_name

    def get_model_info(self) -> dict | str:
        return ["uma lista", "em vez de um dict"]  # type: ignore[return-value]  # wrong on purpose

    def get_model_version(self) -> str:
        return "bad-7"

    def predict(self, dataset: list) -> list | str:
        _log("predict", model=self.model_name, items=dataset)
        mode = dataset[0]
        if mode == "str_error":
            return STR_ERROR
        if mode == "wrong_type":
            return {"label": "x"}  # type: ignore[return-value]
        if mode == "raise":
            raise ValueError("falha proposital no predict")
        return ["ok"] * len(dataset)

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        _log("evaluate", model=self.model_name, items=data_features)
        mode = data_features[0]
        if mode == "str_error":
            return STR_ERROR
        if mode == "wrong_type":
            return [1, 2]  # type: ignore[return-value]
        if mode == "raise":
            raise KeyError("chave_ausente")
        return {"Accuracy": "100.00%"}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        _log("get_feedback", model=self.model_name, items=y_true)
        mode = y_true[0]
        if mode == "fb_wrong_type":
            return 42  # type: ignore[return-value]
        if mode == "fb_str_error":
            return STR_ERROR
        if mode == "fb_raise":
            raise RuntimeError("falha proposital no get_feedback")
        return {"n": len(y_true)}
