#!/usr/bin/env python3
"""Train the CLF_IRIS example model offline from scikit-learn's bundled iris data (no download).

Usage: python train.py [--output DIR] [--version V] [--mlflow | --no-mlflow]

Writes into --output (default: <bundle>/training_model/artifacts), each file replaced atomically:
  model.pkl                   fitted scikit-learn Pipeline: predict(float array (n, 4)) -> species names
  ModelInfo.pkl               dict behind ModeloCLF.get_model_info()
  TrainingParams.pkl          hyperparameters        } the three artifacts mllibprodest requires,
  TrainingDatasetsNames.pkl   dataset file names     } read by the retrain
  BaselineMetrics.pkl         metrics to compare to  }
  datasets/iris_features.csv, datasets/iris_targets.csv   the data, for the 'local' dataset provider
  metadata.json               {"model_name", "version", ...}, written last: the 'local' provider's version

With MLflow (the default when MLFLOW_TRACKING_URI is set, e.g. under `mlstack train`; --mlflow/--no-mlflow
decide explicitly) the same files are logged to MLflow (experiment 'iris_experiment') and the model is
registered as CLF_IRIS; metadata.json then carries the registry version. Promotion (the 'production' alias)
is left to the operator on purpose (`mlstack models promote CLF_IRIS`). MLflow reads MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_USERNAME/PASSWORD and, for s3:// artifact roots, MLFLOW_S3_ENDPOINT_URL + AWS credentials.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

MODEL_NAME = "CLF_IRIS"
EXPERIMENT_NAME = "iris_experiment"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "artifacts"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
DATASET_FILES = {"features": "iris_features.csv", "targets": "iris_targets.csv"}
# Files mllibprodest expects at the MLflow run's artifact root (its loaders download runs:/<id>/).
RUN_ROOT_ARTIFACTS = ["model.pkl", "ModelInfo.pkl", "TrainingParams.pkl", "TrainingDatasetsNames.pkl",
                      "BaselineMetrics.pkl"]

_UMASK = os.umask(0)
os.umask(_UMASK)

TRAINING_PARAMS: dict[str, Any] = {
    "algorithm": "LogisticRegression",
    "C": 10.0,
    "max_iter": 1000,
    "test_size": 0.3,
    "random_state": 0,
    # The retrain asks for a new model once accuracy falls more than this below the baseline.
    "accuracy_drop_tolerance": 0.05,
}


def build_model(params: dict[str, Any]) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=params["random_state"]),
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a worker loading the directory never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; the worker usually runs as another user, so apply the normal umask instead.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def next_version(output: Path) -> str:
    """One more than the version already in `output` (like a registry would count), else "1"."""
    try:
        previous = json.loads((output / "metadata.json").read_text())["version"]
        return str(int(previous) + 1)
    except (OSError, ValueError, KeyError, TypeError):
        return "1"


def log_to_mlflow(output: Path, model: Pipeline, metrics: dict[str, float], x_sample: np.ndarray) -> str:
    """Log the run (artifacts at its root, where mllibprodest looks) and register the model.

    Returns the registered version."""
    import mlflow  # only needed here; mllibprodest pulls it in
    from mlflow.models import infer_signature

    mlflow.set_experiment(EXPERIMENT_NAME)
    with mlflow.start_run(run_name="train"):
        mlflow.log_params(TRAINING_PARAMS)
        mlflow.log_metrics(metrics)
        for name in RUN_ROOT_ARTIFACTS:
            mlflow.log_artifact(str(output / name))
        # A numpy (tensor) signature, so that the pyfunc model accepts the float array ModeloCLF passes.
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL_NAME,
            signature=infer_signature(x_sample, model.predict(x_sample)),
        )
    if info.registered_model_version is None:
        raise RuntimeError("MLflow did not return a registered model version")
    return str(info.registered_model_version)


def train(output: Path, version: str | None, use_mlflow: bool) -> dict[str, Any]:
    iris = load_iris()
    x = np.asarray(iris.data, dtype=float)
    y = np.asarray(iris.target_names[iris.target]).astype(str)  # string labels: predict answers names
    p = TRAINING_PARAMS
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=p["test_size"], random_state=p["random_state"], stratify=y)

    model = build_model(p)
    model.fit(x_train, y_train)
    train_acc = float(model.score(x_train, y_train))
    test_acc = float(model.score(x_test, y_test))
    labels = sorted(str(label) for label in iris.target_names)

    info = {
        "model_name": MODEL_NAME,
        "algorithm": p["algorithm"],
        "input_format": ";".join(FEATURES),
        "features": FEATURES,
        "predictable_labels": labels,
        "train_accuracy": f"{train_acc * 100:.2f}%",
        "test_accuracy": f"{test_acc * 100:.2f}%",
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sklearn_version": sklearn.__version__,
    }
    baseline = {"train_accuracy": train_acc, "test_accuracy": test_acc,
                "accuracy_drop_tolerance": p["accuracy_drop_tolerance"], "labels": labels}

    write_atomic(output / "datasets" / DATASET_FILES["features"], csv_bytes(FEATURES, x.tolist()))
    write_atomic(output / "datasets" / DATASET_FILES["targets"], csv_bytes(["species"], [[v] for v in y]))
    for name, obj in [("model.pkl", model), ("ModelInfo.pkl", info), ("TrainingParams.pkl", dict(p)),
                      ("TrainingDatasetsNames.pkl", dict(DATASET_FILES)), ("BaselineMetrics.pkl", baseline)]:
        write_atomic(output / name, pickle.dumps(obj))

    if use_mlflow:
        version = log_to_mlflow(output, model, {"train_accuracy": train_acc, "test_accuracy": test_acc},
                                x_train[:5])
    metadata = {"model_name": MODEL_NAME, "version": version or next_version(output),
                "trained_at": info["trained_at"], "sklearn_version": sklearn.__version__,
                "test_accuracy": test_acc, "registered_in_mlflow": use_mlflow}
    write_atomic(output / "metadata.json", json.dumps(metadata, indent=2).encode())
    return {**metadata, "train_accuracy": train_acc, "test_rows": len(y_test)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Train {MODEL_NAME} from scikit-learn's bundled iris data.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--version", help="version to record (default: previous version in --output + 1)")
    parser.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=None,
                        help="also log the run to MLflow and register the model (version from the registry); "
                             "default: on when MLFLOW_TRACKING_URI is set")
    args = parser.parse_args(argv)
    use_mlflow = args.mlflow if args.mlflow is not None else bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if use_mlflow and args.version:
        parser.error("--version and MLflow exclude each other: the registry assigns the version (add --no-mlflow)")

    result = train(args.output.resolve(), args.version, use_mlflow)
    print(f"{MODEL_NAME} v{result['version']}: train accuracy {result['train_accuracy'] * 100:.2f}%, "
          f"test accuracy {result['test_accuracy'] * 100:.2f}% ({result['test_rows']} test rows)")
    print(f"artifacts: {args.output.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
