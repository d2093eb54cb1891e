"""TEST_ECHO: answers with what it was given, and logs every call so tests can
count executions (env MLSTACK_TEST_EXEC_LOG names the log file)."""

from __future__ import annotations

import abc
import json
import os
import time


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
        return {"model_name": self.model_name, "description": "Modelo de eco para testes", "classes": []}

    def get_model_version(self) -> str:
        return "echo-3"

    def predict(self, dataset: list) -> list | str:
        _log("predict", model=self.model_name, items=dataset)
        return list(dataset)

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        _log("evaluate", model=self.model_name, items=data_features)
        hits = sum(1 for f, t in zip(data_features, data_targets, strict=True) if f == t)
        return {"Accuracy": f"{hits / len(data_features) * 100:.2f}%", "n": len(data_features)}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        _log("get_feedback", model=self.model_name, items=y_true)
        return {"y_pred": y_pred, "y_true": y_true}
