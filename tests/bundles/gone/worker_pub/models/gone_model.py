"""TEST_GONE: a trivial model; what matters is that its worker goes away."""

from __future__ import annotations

import abc


class ModeloCLF(abc.ABC):  # noqa: B024 - mllibprodest's interfaces are ABCs; loaders may check ABCMeta
    def __init__(self, model_name: str, model_provider_name: str) -> None:
        self.model_name = model_name
        self.model_provider_name = model_provider_name

    def get_model_name(self) -> str:
        return self.model_name

    def get_model_provider_name(self) -> str:
        return self.model_provider_name

    def get_model_info(self) -> dict | str:
        return {"model_name": self.model_name}

    def get_model_version(self) -> str:
        return "gone-1"

    def predict(self, dataset: list) -> list | str:
        return list(dataset)

    def evaluate(self, data_features: list, data_targets: list) -> dict | str:
        return {"n": len(data_features)}

    def get_feedback(self, y_pred: list, y_true: list) -> dict | str:
        return {"n": len(y_true)}
