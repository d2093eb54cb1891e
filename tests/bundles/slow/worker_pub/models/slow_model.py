"""TEST_SLOW: each feature item is "slow:<seconds>:<token>"; predict sleeps that
long and logs a "start" and an "end" event, so a test can tell a job that ran to
completion from one whose worker was killed mid-way."""

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


def _parse(item: object) -> tuple[float, str]:
    _, seconds, token = str(item).split(":", 2)
    return float(seconds), token


class ModeloCLF(abc.ABC):  # noqa: B024 - mllibprodest's interfaces are ABCs; loaders may check ABCMeta
    def __init__(self, model_name: str, model_provider_name: str) -> None:
        self.model_name = model_name
        self.model_provider_name = model_provider_name

    def get_model_name(self) -> str:
        return self.model_name

    def get_model_provider_name(self) -> str:
        return self.model_provider_name

    def get_model_info(self) -> dict | str:
        return "Informação indisponível para o modelo lento"  # a str: the model reports an error

    def get_model_version(self) -> str:
        return "slow-2"

    def predict(self, dataset: list) -> list | str:
        parsed = [_parse(item) for item in dataset]
        tokens = [token for _, token in parsed]
        _log("start", model=self.model_name, items=tokens)
        time.sleep(sum(seconds for seconds, _ in parsed))
        _log("end", model=self.model_name, items=tokens)
        return [f"slept:{token}" for token in tokens]

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        return {"n": len(data_features)}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        return {"n": len(y_true)}
