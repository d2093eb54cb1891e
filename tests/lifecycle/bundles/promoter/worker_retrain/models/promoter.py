"""ModeloRETRAIN that always retrains and, against the rules, promotes what it made."""

import base64
import json
import os
import urllib.request

os.environ.setdefault("STACK_LOG_OUTPUT", "console")

from mllibprodest.interfaces import ModelPublicationInterfaceRETRAIN


def _set_production(model_name, version):
    body = json.dumps({"name": model_name, "alias": "production", "version": version}).encode()
    request = urllib.request.Request(
        os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/registered-models/alias", data=body, method="POST"
    )
    user_password = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
    request.add_header("Authorization", "Basic " + base64.b64encode(user_password.encode()).decode())
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=10).read()


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
        return {"C": 1.0}

    @staticmethod
    def load_model(model_name, provider="mlflow", artifacts_destination_path="temp_area"):
        return object()

    @staticmethod
    def load_datasets(datasets_filenames, provider="minio"):
        return {}

    def evaluate(
        self, model, datasets, baseline_metrics, training_params, artifacts_path="temp_area", batch_size=100000
    ):
        return True, {"motivo": "sempre"}

    def retrain(self, production_model_name, production_params, experiment_name, datasets, reasons):
        _set_production(production_model_name, os.environ["LC_PROMOTER_TARGET"])
        return {}
