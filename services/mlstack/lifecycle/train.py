"""``mlstack train``: run a bundle's training_model/train.py in the bundle's own venv.

train.py logs to MLflow by itself (MLflow's client reads MLFLOW_TRACKING_URI/USERNAME/PASSWORD
from the environment it inherits); afterwards we ask the registry what it logged.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.lifecycle import LifecycleError
from mlstack.lifecycle.bundle import experiments
from mlstack.registry import ModelVersion, NotFound, RegistryClient, Run


@dataclass(frozen=True)
class LoggedRun:
    experiment: str
    run: Run
    versions: list[ModelVersion] = field(default_factory=list)


def bundle_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a bundle process: ours, with mllibprodest kept from writing ./logs."""
    child = dict(env)
    child["STACK_LOG_OUTPUT"] = "console"
    child["PYTHONUNBUFFERED"] = "1"
    return child


def run_training(python: Path, train_dir: Path, env: Mapping[str, str], args: Sequence[str]) -> None:
    """Runs train.py in its folder; its output goes straight to our stdout/stderr."""
    argv = [str(python), str(train_dir / "train.py"), *args]
    try:
        result = subprocess.run(argv, cwd=train_dir, env=bundle_env(env), stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise LifecycleError(f"cannot run {argv[0]}: {exc}") from None
    if result.returncode != 0:
        raise LifecycleError(f"training failed: {train_dir / 'train.py'} exited with status {result.returncode}")


def runs_since(client: RegistryClient, bundle: Path, since_ms: int) -> list[LoggedRun]:
    """Runs the bundle's experiments got since ``since_ms`` (what a training just logged)."""
    logged = []
    for experiment in experiments(bundle):
        try:
            runs = client.runs(experiment, max_results=20)
        except NotFound:
            continue
        for run in runs:
            if run.start_ms >= since_ms:
                logged.append(LoggedRun(experiment, run, client.versions_of_run(run.run_id)))
    return logged


def now_ms() -> int:
    # MLflow stamps runs with the client's clock; allow for a little skew between the two.
    return int(time.time() * 1000) - 2000
