"""Session fixtures: real RabbitMQ vhosts, nx-27017 MongoDB stand-ins, gunicorn APIs
and Pub workers. Stacks are started lazily and shared per session; tests that take
a shared service down get a stack of their own or run last (marker `destructive`)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.infra import REPO, MongoServer
from support.knobs import FB_GLOBAL_INTERVAL_S, FB_MODEL_INTERVAL_S, TTL_MS
from support.procs import stop_all
from support.stack import Stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "destructive: stops a service every stack shares (RabbitMQ); runs after all other tests"
    )
    config.addinivalue_line(
        "markers",
        "installs_host: installs the stack on this machine and takes the shared broker over (it removes"
        " guest, so other stacks' vhost permissions are gone); runs after even the destructive tests",
    )
    config.addinivalue_line("markers", "unit: in-process, no outside system (tests/unit); the tier runs in < 30 s")
    config.addinivalue_line("markers", "property: hypothesis / schemathesis runs against a real API process")
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")


def _run_order(item: pytest.Item) -> int:
    if item.get_closest_marker("installs_host") is not None:
        return 2
    return 1 if item.get_closest_marker("destructive") is not None else 0


# Per-test time limits (pytest-timeout), unless a test sets its own with @pytest.mark.timeout.
DEFAULT_TIMEOUT_S = 300
UNIT_TIMEOUT_S = 20
UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        unit = UNIT_DIR in Path(item.path).parents
        if unit:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S if unit else DEFAULT_TIMEOUT_S))
    items.sort(key=_run_order)  # stable: the file order holds within each rank


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_all()  # whatever a failing fixture left running


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlstack")


@pytest.fixture(scope="session")
def mongo(workdir: Path) -> Iterator[MongoServer]:
    server = MongoServer(workdir, "shared").start()
    yield server
    server.stop()


def _stack(label: str, workdir: Path, mongo: MongoServer, **kwargs: object) -> Stack:
    return Stack(label, workdir, mongo, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def main_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    """Default settings (TTL 90 s, feedback limits 30 min / 2 min), database `ml_api_db`."""
    stack = _stack("main", workdir, mongo)
    try:
        stack.add_worker("basic", "basic")
        stack.add_worker("slow", "slow")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def fb_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    """Two API processes (two gunicorn masters, like two hosts) on one database."""
    stack = _stack(
        "fb",
        workdir,
        mongo,
        db_name="ml_api_db_fb",
        api_env={
            "MLSTACK_FEEDBACK_GLOBAL_INTERVAL_S": str(FB_GLOBAL_INTERVAL_S),
            "MLSTACK_FEEDBACK_MODEL_INTERVAL_S": str(FB_MODEL_INTERVAL_S),
        },
    )
    try:
        stack.add_api()
        stack.add_worker("basic", "basic")
        stack.add_worker("slow", "slow")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def ttl_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    stack = _stack("ttl", workdir, mongo, db_name="ml_api_db_ttl", api_env={"MLSTACK_JOB_TTL_MS": str(TTL_MS)})
    try:
        stack.add_worker("slow", "slow")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def fault_stack(workdir: Path) -> Iterator[Stack]:
    """A stack with a MongoDB of its own, which its tests kill and restart."""
    own_mongo = MongoServer(workdir, "fault").start()
    stack = _stack("fault", workdir, own_mongo)
    try:
        stack.add_worker("basic", "basic")
        yield stack
    finally:
        stack.stop()
        own_mongo.stop()


@pytest.fixture(scope="session")
def bundle_python() -> str:
    python = os.environ.get("MLSTACK_BUNDLE_PYTHON", "")
    if not python:
        pytest.fail("MLSTACK_BUNDLE_PYTHON is not set: it must name the python of the example bundle's venv")
    if not os.access(python, os.X_OK):
        pytest.fail(f"MLSTACK_BUNDLE_PYTHON={python} is not an executable")
    return python


@pytest.fixture(scope="session")
def example_models_dir(workdir: Path, bundle_python: str) -> Path:
    """Artifacts of the example model, trained once per session with the bundle's python."""
    out = workdir / "example-artifacts"
    train = REPO / "example_bundle" / "training_model" / "train.py"
    if not train.is_file():
        pytest.fail(f"{train} is missing")
    result = subprocess.run(
        [bundle_python, str(train), "--output", str(out)],
        cwd=train.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "STACK_LOG_OUTPUT": "console"},
    )
    if result.returncode != 0:
        pytest.fail(f"train.py failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def example_worker(main_stack: Stack, bundle_python: str, example_models_dir: Path) -> Stack:
    """The main stack plus a worker of the project's example bundle (model CLF_IRIS)."""
    if "example" not in main_stack.workers:
        main_stack.add_worker(
            "example",
            REPO / "example_bundle" / "worker_pub",
            python=bundle_python,
            extra_env={"MLSTACK_LOCAL_MODEL_DIR": str(example_models_dir)},
        )
    return main_stack
