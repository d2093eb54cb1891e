"""A FastAPI hello-world served like the API (gunicorn, the API's worker class and worker count):
the yardstick for the API's CPU per accepted job. POST /inference answers a constant."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from fastapi import FastAPI

app = FastAPI()


@app.post("/inference")
async def inference() -> dict[str, str]:
    return {"message": "Hello World"}


# The API's gunicorn settings that cost CPU per request (services/mlstack/api/gunicorn_conf.py).
WORKER_CLASS = "uvicorn.workers.UvicornWorker"
KEEPALIVE_S = 75


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(workers: int, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """gunicorn serving this app on a free port of 127.0.0.1; returns once it answers."""
    port = _free_port()
    argv = [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "-w", str(workers), "--keep-alive",
            str(KEEPALIVE_S), "-b", f"127.0.0.1:{port}", "--log-level", "warning", "mlbench.hello:app"]  # fmt: skip
    pythonpath = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": pythonpath + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the hello-world gunicorn exited: {log_path.read_text(errors='replace')[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(1.0)  # the workers boot after the master listens
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the hello-world gunicorn did not listen within 30 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
