"""ModeloRETRAIN whose answers have the wrong types (no registry, no data needed)."""

import os

os.environ.setdefault("STACK_LOG_OUTPUT", "console")

from mllibprodest.interfaces import ModelPublicationInterfaceRETRAIN


class ModeloRETRAIN(ModelPublicationInterfaceRETRAIN):
    def __init__(self, model_name, model_provider_name, experiment_name, dataset_provider_name):
        self._name, self._provider = model_name, model_provider_name
        self._experiment, self._datasets = experiment_name, dataset_provider_name

    def get_model_name(self):
        return self._name

    def get_model_provider_name(self):
        return self._provider

    def get_experiment_name(self):
        return self._experiment

    def get_dataset_provider_name(self):
        return self._datasets

    @staticmethod
    def load_production_datasets_names(model_name, provider="mlflow"):
        return {"features": "f.csv"}

    @staticmethod
    def load_production_baseline(model_name, provider="mlflow"):
        return {"accuracy": 1.0}

    @staticmethod
    def load_production_params(model_name, provider="mlflow"):
        return ["not", "a", "dict"] if model_name == "LC_BAD_PARAMS" else {"C": 1.0}

    @staticmethod
    def load_model(model_name, provider="mlflow", artifacts_destination_path="temp_area"):
        return object()

    @staticmethod
    def load_datasets(datasets_filenames, provider="minio"):
        return {}

    def evaluate(
        self, model, datasets, baseline_metrics, training_params, artifacts_path="temp_area", batch_size=100000
    ):
        return "yes", {}

    def retrain(self, production_model_name, production_params, experiment_name, datasets, reasons):
        raise AssertionError("never reached: evaluate's answer is refused")
