"""Readiness probes for bin/mlstack-dev (standard library only: curl may be absent).

    stackprobe.py ready URL TIMEOUT_S [PID]
        wait until GET URL/health/ready answers 200 (fails early if PID dies)
    stackprobe.py workers TIMEOUT_S MODEL STATE_DIR:PID...
        wait until every worker's status.json reports MODEL in state "ok"
    stackprobe.py smoke URL MODEL TIMEOUT_S
        POST /inference method "info" (token from $MLSTACK_API_TOKEN), expect "Queued",
        then poll /status until the job is Done
    stackprobe.py health URL
        one GET URL/health/ready; exit 0 on 200
    stackprobe.py state STATE_DIR MODEL
        print what a worker's status.json says about MODEL
Progress goes to stderr; the last line on stdout says what was found.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def _http(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def health(url: str) -> int:
    try:
        status, _ = _http("GET", f"{url}/health/ready")
    except OSError:
        return 1
    return 0 if status == 200 else 1


def ready(url: str, timeout_s: float, pid: int | None) -> int:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"API process {pid} exited", file=sys.stderr)
            return 1
        try:
            status, body = _http("GET", f"{url}/health/ready")
            if status == 200:
                print(f"ready: {body}")
                return 0
            last = f"HTTP {status} {body}"
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    print(f"{url}/health/ready not ready after {timeout_s:.0f}s: {last}", file=sys.stderr)
    return 1


def _model_state(state_dir: Path, model: str) -> dict[str, Any] | None:
    try:
        status = json.loads((state_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = status.get("models", {}).get(model)
    return entry if isinstance(entry, dict) else None


def workers(timeout_s: float, model: str, specs: list[str]) -> int:
    pending: dict[Path, int | None] = {}
    for spec in specs:
        path, _, pid = spec.rpartition(":")
        pending[Path(path)] = int(pid) if pid else None
    deadline = time.monotonic() + timeout_s
    seen: dict[Path, dict[str, Any] | None] = {}
    while pending and time.monotonic() < deadline:
        for state_dir, pid in list(pending.items()):
            entry = seen[state_dir] = _model_state(state_dir, model)
            if entry and entry.get("state") == "ok":
                print(f"{state_dir.name}: {model} v{entry.get('loaded_version')} ok")
                del pending[state_dir]
            elif not _alive(pid):
                print(f"worker {state_dir.name} (pid {pid}) exited", file=sys.stderr)
                return 1
        time.sleep(0.5)
    for state_dir in pending:
        print(f"worker {state_dir.name} not serving {model}: {seen.get(state_dir)}", file=sys.stderr)
    return 1 if pending else 0


def smoke(url: str, model: str, timeout_s: float) -> int:
    token = os.environ.get("MLSTACK_API_TOKEN", "")
    deadline = time.monotonic() + timeout_s
    # A worker writes "ok" a moment before the broker counts its consumer: retry.
    while True:
        _, job = _http("POST", f"{url}/inference", {"model_name": model, "method": "info"}, token)
        if isinstance(job, dict) and job.get("status") == "Queued":
            break
        if time.monotonic() > deadline:
            print(f"POST /inference info was not queued: {job}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    result: Any = None
    while time.monotonic() < deadline:
        _, result = _http("POST", f"{url}/status", {"job_id": job["job_id"]}, token)
        if isinstance(result, dict) and result.get("status") in ("Done", "Error"):
            break
        time.sleep(0.3)
    if not isinstance(result, dict) or result.get("status") != "Done":
        print(f"info job did not finish: {result}", file=sys.stderr)
        return 1
    seconds = result.get("total_response_time_sec")
    took = f" in {seconds:.3f}s" if isinstance(seconds, (int, float)) else ""
    print(f"{model} v{result.get('model_version')} answered an info job{took}")
    return 0


def state(state_dir: Path, model: str) -> int:
    entry = _model_state(state_dir, model)
    if entry is None:
        print(f"{model}: no status yet")
        return 1
    production = entry.get("production_version")
    registry = f" (production v{production})" if production is not None else " (local model)"
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    print(f"{model} v{entry.get('loaded_version')}{registry} {entry.get('state')}{reason}")
    return 0 if entry.get("state") == "ok" else 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "state":
        return state(Path(argv[1]), argv[2])
    if len(argv) >= 2 and argv[0] == "health":
        return health(argv[1])
    if len(argv) in (3, 4) and argv[0] == "ready":
        return ready(argv[1], float(argv[2]), int(argv[3]) if len(argv) == 4 else None)
    if len(argv) >= 4 and argv[0] == "workers":
        return workers(float(argv[1]), argv[2], argv[3:])
    if len(argv) == 4 and argv[0] == "smoke":
        return smoke(argv[1], argv[2], float(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
