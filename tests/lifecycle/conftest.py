"""Fixtures of the model-lifecycle tests: a real MLflow registry (basic auth, artifacts on the
moto S3 stand-in) started by bin/mlstack-registry, and a stack (API + workers) whose example
worker serves CLF_IRIS from that registry. Helpers: lifecycle_support.py.

The MLflow server venv is MLSTACK_MLFLOW_VENV when set, else the launcher builds
.dev/venvs/mlflow from requirements-mlflow.txt on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_support import Registry, launcher, read_env_file
from support.infra import MongoServer
from support.procs import free_port
from support.stack import Stack


@pytest.fixture(scope="session")
def registry(workdir: Path) -> Iterator[Registry]:
    state = workdir / "registry"
    started = launcher("start", state, "--port", str(free_port()), "--s3-port", str(free_port()))
    try:
        assert started.returncode == 0, f"bin/mlstack-registry start failed:\n{started.stderr[-3000:]}"
        env_file = state / "registry.env"
        assert env_file.stat().st_mode & 0o077 == 0, "registry.env must be private (0600)"
        assert (state / "secrets.env").stat().st_mode & 0o077 == 0, "secrets.env must be private (0600)"
        yield Registry(state, read_env_file(env_file))
    finally:
        stopped = launcher("stop", state, timeout=120)
        assert stopped.returncode == 0, stopped.stderr[-2000:]


@pytest.fixture(scope="session")
def bundle_venv(bundle_python: str) -> Path:
    """The example bundle's venv (mllibprodest, scikit-learn, mlstack): reused for train and retrain."""
    configured = os.environ.get("MLSTACK_BUNDLE_VENV", "")
    return Path(configured) if configured else Path(bundle_python).parent.parent  # no resolve(): a symlink


@pytest.fixture(scope="session")
def lifecycle_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    stack = Stack("lifecycle", workdir, mongo, db_name="ml_api_db_lifecycle").start()
    try:
        yield stack
    finally:
        stack.stop()
