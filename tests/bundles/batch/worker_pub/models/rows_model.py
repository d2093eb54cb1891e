"""TEST_ROWS: predict answers row by row (so it may be batched) and logs one "start" and one "end"
event per call with every row, so a test can tell merged calls and count executions per job.

A row is any JSON value; strings ask for misbehaviour of the whole call:
  "raise"          -> raises
  "str_error"      -> returns a str (the model's way to report an error)
  "short"          -> returns one row too few
  "sleep:<s>:<tok>" -> sleeps <s> seconds (the call sleeps the longest such row)
anything else -> ["row:" + JSON of the row]."""

from __future__ import annotations

import abc
import json
import os
import time

STR_ERROR = "Falha simulada pelo modelo de linhas"


def _log(event: str, **data: object) -> None:
    path = os.environ.get("MLSTACK_TEST_EXEC_LOG")
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **data})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _sleep_of(row: object) -> float:
    if isinstance(row, str) and row.startswith("sleep:"):
        return float(row.split(":", 2)[1])
    return 0.0


class ModeloCLF(abc.ABC):  # noqa: B024 - mllibprodest's interfaces are ABCs; loaders may check ABCMeta
    def __init__(self, model_name: str, model_provider_name: str) -> None:
        self.model_name = model_name
        self.model_provider_name = model_provider_name

    def get_model_name(self) -> str:
        return self.model_name

    def get_model_provider_name(self) -> str:
        return self.model_provider_name

    def get_model_info(self) -> dict | str:
        return {"model_name": self.model_name, "description": "Modelo de linhas para testes"}

    def get_model_version(self) -> str:
        return "rows-1"

    def predict(self, dataset: list) -> list | str:
        rows = [json.dumps(row, sort_keys=True) for row in dataset]
        _log("start", model=self.model_name, items=rows)
        time.sleep(max((_sleep_of(row) for row in dataset), default=0.0))
        if "raise" in dataset:
            raise ValueError("linha proibida")
        if "str_error" in dataset:
            return STR_ERROR
        answer = [f"row:{row}" for row in rows]
        _log("end", model=self.model_name, items=rows)
        return answer[:-1] if "short" in dataset else answer

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        _log("evaluate", model=self.model_name, items=[json.dumps(f) for f in data_features])
        return {"n": len(data_features)}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        return {"n": len(y_true)}
