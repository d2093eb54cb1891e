"""Starts and stops the bench's own Pub workers for the BENCH_ECHO bundle."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench dies, so a killed bench leaves no worker behind."""
    # Not Linux: no prctl, and the workers are stopped by the bench's cleanup only.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EchoWorker:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_workers(
    count: int,
    bundle_dir: Path,
    state_root: Path,
    api_url: str,
    worker_token: str,
    amqp_url: str,
    prefetch: int,
    *,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
    label: str = "echo",
) -> list[EchoWorker]:
    workers: list[EchoWorker] = []
    for n in range(1, count + 1):
        worker_id = f"bench-{label}-{n}"
        state_dir = state_root / worker_id
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MLSTACK_ENV_FILE": os.devnull,  # nothing from an installed stack's env file
            "MLSTACK_API_URL": api_url,
            "MLSTACK_WORKER_TOKEN": worker_token,
            "MLSTACK_AMQP_URL": amqp_url,
            "MLSTACK_BUNDLE_DIR": str(bundle_dir),
            "MLSTACK_WORKER_ID": worker_id,
            "MLSTACK_STATE_DIR": str(state_dir),
            "MLSTACK_PREFETCH": str(prefetch),
            **(extra_env or {}),
        }
        env.pop("MLSTACK_API_TOKEN", None)  # a worker never needs the client token
        log_path = state_root / f"{worker_id}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [python, "-m", "mlstack.worker"],
                env=env,
                cwd=state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the bench, which stops the workers in order
                preexec_fn=_die_with_parent,
            )
        workers.append(EchoWorker(worker_id, process, log_path))
    return workers


def stop_workers(workers: list[EchoWorker], timeout_s: float = 20.0) -> list[str]:
    """SIGTERM, then SIGKILL after the timeout; returns the ids of workers that had to be killed."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed: list[str] = []
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(5)
            killed.append(worker.worker_id)
    return killed


def dead_workers(workers: list[EchoWorker]) -> list[EchoWorker]:
    return [w for w in workers if w.process.poll() is not None]
