"""Helpers of the model-lifecycle tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlstack.registry import RegistryClient
from support.infra import REPO, VENV_BIN, base_env
from support.procs import free_port, wait_for
from support.stack import Stack

LAUNCHER = REPO / "bin" / "mlstack-registry"
EXAMPLE = REPO / "example_bundle"
BUNDLES = Path(__file__).resolve().parent / "bundles"
MODEL = "CLF_IRIS"
# The worker asks the registry for the production version this often (MLSTACK_VERSION_CHECK_S).
VERSION_CHECK_S = 1.0
# The example bundle honours CLF_IRIS_PROVIDER=local (the services tests set it); here it must not.
NO_PROVIDER_OVERRIDE = {f"{MODEL}_PROVIDER": ""}


@dataclass
class Registry:
    state: Path
    env: dict[str, str]  # MLFLOW_TRACKING_URI / _USERNAME / _PASSWORD

    @property
    def url(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def client(self) -> RegistryClient:
        return RegistryClient.from_env(self.env)


def start_registry(state: Path) -> Registry:
    """A registry of its own (bin/mlstack-registry) on free ports; stop it with launcher("stop", state)."""
    started = launcher("start", state, "--port", str(free_port()), "--s3-port", str(free_port()))
    assert started.returncode == 0, f"bin/mlstack-registry start failed:\n{started.stderr[-3000:]}"
    return Registry(state, read_env_file(state / "registry.env"))


def kill_mlflow(registry: Registry) -> None:
    """An MLflow outage: its server process group ends, the S3 stand-in (and so the data) stays."""
    pid = int((registry.state / "run" / "mlflow.pid").read_text())
    os.killpg(pid, signal.SIGTERM)  # bin/mlstack-registry starts it as a process group leader (setsid)
    wait_for(lambda: not _alive(pid), 30, "MLflow to stop", interval=0.2)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie no longer serves


def launcher(command: str, state: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        ["bash", str(LAUNCHER), command, "--state", str(state), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def cli_env(registry: Registry | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base_env().items() if not k.startswith("MLFLOW_") and k != "LOCAL_PATH"}
    env.update(NO_PROVIDER_OVERRIDE)
    if registry is not None:
        env.update(registry.env)
    env.update(extra)
    return env


def mlstack(
    *args: str, registry: Registry | None, timeout: float = 600, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Runs the `mlstack` CLI of the test venv as a process, as an operator would."""
    exe = VENV_BIN / "mlstack"
    argv = [str(exe)] if exe.exists() else [str(VENV_BIN / "python"), "-m", "mlstack.cli"]
    return subprocess.run(
        [*argv, *args],
        env=cli_env(registry, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n--- stdout:\n{result.stdout[-3000:]}\n--- stderr:\n"
        f"{result.stderr[-5000:]}"
    )
    return result.stdout


def models_json(registry: Registry) -> dict[str, dict]:
    out = ok(mlstack("models", "list", "--json", registry=registry))
    return {m["name"]: m for m in json.loads(out)["models"]}


def worker_states(stack: Stack) -> Path:
    return stack.workdir / "worker-states"


def start_example_worker(
    stack: Stack, name: str, bundle_python: str, registry: Registry, extra_env: dict[str, str] | None = None
) -> None:
    env = {
        **registry.env,
        **NO_PROVIDER_OVERRIDE,
        "MLSTACK_VERSION_CHECK_S": str(VERSION_CHECK_S),
        # MLflow's client retries an artifact download that fails with HTTP 500 (what the server answers
        # for a missing artifact) 7 times with backoff 2: over 4 minutes "loading" for a broken version.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        # One folder holding every worker's state folder: what `mlstack health --state-root` reads.
        "MLSTACK_STATE_DIR": str(worker_states(stack) / name),
        **(extra_env or {}),
    }
    stack.add_worker(name, EXAMPLE / "worker_pub", python=bundle_python, extra_env=env)


def worker_status(stack: Stack, name: str) -> dict:
    return json.loads((worker_states(stack) / name / "status.json").read_text())["models"][MODEL]


def wait_status(stack: Stack, name: str, timeout: float, what: str, **expected: str) -> dict:
    def matches() -> dict | None:
        st = worker_status(stack, name)
        return st if all(st.get(k) == v for k, v in expected.items()) else None

    try:
        return wait_for(matches, timeout, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status now: {worker_status(stack, name)}\n{stack.logs()}") from None
