"""TEST_HOSTILE: the first feature picks the behaviour of predict:
  "big:<bytes>"             -> answers one string of that many bytes (past the API's body limit)
  "sleep:<seconds>:<token>" -> sleeps that long (past the bundle's 1 s time limit), logging
                               "start" and "end" events with the token
anything else               -> echoes the features."""

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
        return {"model": self.model_name}

    def get_model_version(self) -> str:
        return "hostile-1"

    def predict(self, dataset: list) -> list | str:
        mode = str(dataset[0])
        if mode.startswith("big:"):
            return ["x" * int(mode.split(":")[1])]
        if mode.startswith("sleep:"):
            _, seconds, token = mode.split(":", 2)
            _log("start", model=self.model_name, items=[token])
            time.sleep(float(seconds))
            _log("end", model=self.model_name, items=[token])
            return [f"slept:{token}"]
        return dataset

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        return {"n": len(data_features)}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        return {"n": len(y_true)}
