"""BENCH_ECHO: a ModeloCLF with the mllibprodest method set and no dependencies; predict echoes."""

from __future__ import annotations

from typing import Any

VERSION = "1"


class ModeloCLF:
    def __init__(self, model_name: str, model_provider_name: str) -> None:
        self._name = model_name
        self._provider = model_provider_name

    def get_model_name(self) -> str:
        return self._name

    def get_model_provider_name(self) -> str:
        return self._provider

    def get_model_version(self) -> str:
        return VERSION

    def get_model_info(self) -> dict[str, Any]:
        return {"model_name": self._name, "version": VERSION, "description": "echoes its input (bin/bench)"}

    def predict(self, dataset: list[Any]) -> list[Any]:
        return dataset

    def evaluate(self, data_features: list[Any], data_targets: list[Any]) -> dict[str, Any]:
        return {"items": len(data_features), "targets": len(data_targets)}

    def get_feedback(self, y_pred: list[Any], y_true: list[Any]) -> dict[str, Any]:
        return {"items": len(y_true)}
