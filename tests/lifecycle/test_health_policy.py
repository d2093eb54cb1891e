"""No restart storm: a broken promotion and an MLflow outage under `mlstack health --restart-stale`.

Two workers of the example bundle serve CLF_IRIS from a registry of this module's own (it is taken
down here). `mlstack health` runs as the health timer would, with the two workers' units configured
(MLSTACK_HEALTH_WORKER_UNITS) and MLSTACK_HEALTH_SYSTEMCTL pointing to a script that records what it
would restart: there is no systemd here, so the script stands in for `systemctl`, and a test
performs a recorded restart itself. The tests run in order, each from the state the previous left.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_support import (
    EXAMPLE,
    MODEL,
    Registry,
    kill_mlflow,
    launcher,
    mlstack,
    ok,
    start_example_worker,
    start_registry,
    wait_status,
    worker_states,
)
from support.infra import MongoServer
from support.procs import wait_for
from support.stack import Stack

WORKERS = ["hp-1", "hp-2"]
UNITS = {name: f"mlstack-worker-pub@{name}.service" for name in WORKERS}
FEATURES = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]
EXPECTED = ["setosa", "virginica"]
LOAD_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def hp_registry(workdir: Path) -> Iterator[Registry]:
    state = workdir / "health-registry"
    try:
        yield start_registry(state)
    finally:
        stopped = launcher("stop", state, timeout=120)
        assert stopped.returncode == 0, stopped.stderr[-2000:]


class Notifications:
    """Where worker hp-1 sends its sd_notify messages (NOTIFY_SOCKET), read as systemd would: always,
    so that the worker's datagrams never fill the socket's queue."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="hp-notify-")  # short: a socket path has at most 107 bytes
        self.path = f"{self.folder}/notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.5)
        self.statuses: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            self.statuses += [line[len("STATUS=") :] for line in data.splitlines() if line.startswith("STATUS=")]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def notify_socket() -> Iterator[Notifications]:
    notifications = Notifications()
    try:
        yield notifications
    finally:
        notifications.close()


@pytest.fixture(scope="module")
def hp_stack(
    workdir: Path,
    mongo: MongoServer,
    hp_registry: Registry,
    bundle_venv: Path,
    bundle_python: str,
    notify_socket: Notifications,
) -> Iterator[Stack]:
    """v1 trained and promoted; workers hp-1 and hp-2 serving it."""
    ok(mlstack("train", str(EXAMPLE), "--venv", str(bundle_venv), registry=hp_registry))
    ok(mlstack("models", "promote", MODEL, registry=hp_registry))
    stack = Stack("health", workdir, mongo, db_name="ml_api_db_health").start()
    try:
        for name in WORKERS:
            start_worker(stack, name, bundle_python, hp_registry, notify_socket)
            wait_status(stack, name, 60, f"{name} ok on v1", state="ok", loaded_version="1", production_version="1")
        # A folder nobody configured, whose status claims a stale, dead worker and names poweroff.target:
        # `mlstack health` shows it and never restarts anything because of it.
        intruder = worker_states(stack) / "intruder"
        intruder.mkdir(parents=True)
        (intruder / "status.json").write_text(
            json.dumps(
                {
                    "worker_id": "intruder",
                    "pid": 1,
                    "unit": "poweroff.target",
                    "updated_at": 0,
                    "models": {MODEL: {"loaded_version": "1", "state": "stale", "since": 0}},
                }
            )
        )
        yield stack
    finally:
        stack.stop()


def start_worker(stack: Stack, name: str, python: str, registry: Registry, notify: Notifications) -> None:
    extra = {"NOTIFY_SOCKET": notify.path} if name == WORKERS[0] else {}
    start_example_worker(stack, name, python, registry, extra_env=extra)


@pytest.fixture(scope="module")
def systemctl(workdir: Path) -> tuple[Path, Path]:
    """The stand-in for systemctl (no systemd here): records its arguments, one call per line."""
    record = workdir / "health-systemctl.calls"
    script = workdir / "health-systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(0o755)
    return script, record


def health(stack: Stack, systemctl: tuple[Path, Path], max_restarts: int = 2) -> dict:
    result = mlstack(
        "health",
        "--restart-stale",
        "--json",
        "--state-root",
        str(worker_states(stack)),
        registry=None,
        MLSTACK_HEALTH_WORKER_UNITS=" ".join(UNITS.values()),
        MLSTACK_HEALTH_SYSTEMCTL=str(systemctl[0]),
        MLSTACK_HEALTH_MAX_RESTARTS=str(max_restarts),
    )
    assert result.returncode in (0, 1), result
    return json.loads(result.stdout)


def states(report: dict) -> dict[str, tuple[str, str]]:
    return {r["instance"]: (r["state"], r["reason"]) for r in report["models"]}


def recorded(systemctl: tuple[Path, Path]) -> list[str]:
    return systemctl[1].read_text().splitlines() if systemctl[1].exists() else []


def wait_restarted(stack: Stack, name: str) -> None:
    """Until the status file is the new process's, past its start."""

    def fresh() -> bool:
        doc = json.loads((worker_states(stack) / name / "status.json").read_text())
        return doc["pid"] == stack.workers[name].proc.pid and doc["models"][MODEL]["state"] != "loading"

    wait_for(fresh, 60, f"{name}'s new process to report", interval=0.2)


def submit(stack: Stack, count: int) -> list[str]:
    client = stack.client()
    return [client.submit(MODEL, "predict", FEATURES) for _ in range(count)]


def all_done_on(stack: Stack, job_ids: list[str], version: str) -> None:
    client = stack.client()
    results = [client.wait_done(job_id, timeout=90) for job_id in job_ids]
    assert all(r["status"] == "Done" and r["response"] == EXPECTED for r in results), results
    assert {r["model_version"] for r in results} == {version}, results


def test_broken_promotion_degrades_workers_and_restarts_nothing(
    hp_stack: Stack, hp_registry: Registry, systemctl: tuple[Path, Path], notify_socket: Notifications
) -> None:
    client = hp_registry.client()
    v1 = client.get_version(MODEL, "1")
    # A version whose model cannot be loaded (its source holds no model), promoted to production.
    broken = client.create_version(MODEL, f"runs:/{v1.run_id}/no-such-model", v1.run_id).version
    ok(mlstack("models", "promote", MODEL, "--version", broken, registry=hp_registry))
    jobs = submit(hp_stack, 5)
    for name in WORKERS:
        st = wait_status(
            hp_stack, name, LOAD_TIMEOUT_S, f"{name} degraded", state="degraded", production_version=broken
        )
        assert st["loaded_version"] == "1" and f"cannot load v{broken}" in st["reason"], st

    report = health(hp_stack, systemctl)
    assert report["restarted"] == [] and recorded(systemctl) == [], report
    found = states(report)
    assert {found[name][0] for name in WORKERS} == {"degraded"}, found
    assert found["intruder"][0] == "dead", found
    assert all(r["unit"] in ("", *UNITS.values()) for r in report["models"]), report
    all_done_on(hp_stack, jobs + submit(hp_stack, 5), "1")
    # systemd sees it too: `systemctl status` shows the sd_notify STATUS line.
    assert any(
        f"{MODEL} v1 (production v{broken}) degraded: cannot load v{broken}" in line for line in notify_socket.statuses
    ), notify_socket.statuses[-3:]


def test_a_worker_restarted_during_a_broken_promotion_serves_its_last_good_version(
    hp_stack: Stack, hp_registry: Registry, bundle_python: str, notify_socket: Notifications
) -> None:
    broken = hp_registry.client().production_version(MODEL)
    assert broken not in (None, "1")
    for name in WORKERS:
        hp_stack.workers[name].stop()
    try:
        # Started means consuming (so, with hp-1 stopped, this very process did not exit).
        start_worker(hp_stack, "hp-2", bundle_python, hp_registry, notify_socket)
        wait_restarted(hp_stack, "hp-2")
        st = wait_status(hp_stack, "hp-2", 30, "hp-2 on its last-good copy", state="degraded", loaded_version="1")
        assert st["production_version"] in (None, broken) and "serving last-good v1" in st["reason"], st
        all_done_on(hp_stack, submit(hp_stack, 5), "1")
    finally:
        start_worker(hp_stack, "hp-1", bundle_python, hp_registry, notify_socket)


def test_mlflow_outage_is_unknown_and_restarts_nothing(
    hp_stack: Stack, hp_registry: Registry, systemctl: tuple[Path, Path]
) -> None:
    out = ok(mlstack("models", "rollback", MODEL, registry=hp_registry))
    assert "production is now v1" in out, out
    for name in WORKERS:
        wait_status(hp_stack, name, 30, f"{name} ok on v1", state="ok", loaded_version="1", production_version="1")

    kill_mlflow(hp_registry)
    for name in WORKERS:
        st = wait_status(hp_stack, name, 60, f"{name} to notice the outage", state="unknown")
        assert "unreachable" in st["reason"] and st["loaded_version"] == "1", st
    jobs = submit(hp_stack, 5)
    report = health(hp_stack, systemctl)
    assert report["restarted"] == [] and recorded(systemctl) == [], report
    assert {states(report)[name][0] for name in WORKERS} == {"unknown"}, report
    all_done_on(hp_stack, jobs + submit(hp_stack, 5), "1")


def test_a_worker_restarted_during_the_outage_serves_its_last_good_version(
    hp_stack: Stack,
    hp_registry: Registry,
    bundle_python: str,
    systemctl: tuple[Path, Path],
    notify_socket: Notifications,
) -> None:
    for name in WORKERS:
        hp_stack.workers[name].stop()
    # Both workers are gone: the health run restarts them, but at most one per run here.
    report = health(hp_stack, systemctl, max_restarts=1)
    assert {states(report)[name][0] for name in WORKERS} == {"dead"}, report
    assert recorded(systemctl) == [f"restart {UNITS['hp-1']}"], recorded(systemctl)
    assert report["held_back"] == [UNITS["hp-2"]], report

    # Do what the recorded `systemctl restart` would: start hp-1 again, MLflow still down.
    started = time.monotonic()
    start_worker(hp_stack, "hp-1", bundle_python, hp_registry, notify_socket)
    wait_restarted(hp_stack, "hp-1")
    st = wait_status(hp_stack, "hp-1", 60, "hp-1 on its last-good copy", state="degraded", loaded_version="1")
    assert "serving last-good v1" in st["reason"] and "unreachable" in st["reason"], st
    all_done_on(hp_stack, submit(hp_stack, 10), "1")  # hp-1 is the only worker left
    print(f"hp-1 serving its last-good copy {time.monotonic() - started:.1f}s after its start")
    assert any("serving last-good v1" in line for line in notify_socket.statuses), notify_socket.statuses[-3:]

    systemctl[1].unlink(missing_ok=True)
    report = health(hp_stack, systemctl)
    assert states(report)["hp-1"][0] == "degraded", report
    # hp-2 is still down: restarted (recorded), never the intruder's poweroff.target.
    assert recorded(systemctl) == [f"restart {UNITS['hp-2']}"], recorded(systemctl)
