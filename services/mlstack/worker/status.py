"""Reports what the worker serves: a status file anyone can read, and sd_notify for systemd."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# What a worker reports per model (services/DESIGN.md, "Worker status file"). `mlstack health` adds
# `dead` (the worker stopped reporting) and may turn a lasting `loading`/`stale` into `stale`.
OK, LOADING, DEGRADED, STALE, UNKNOWN = "ok", "loading", "degraded", "stale", "unknown"


@dataclass
class ModelState:
    loaded_version: str
    production_version: str | None = None
    state: str = LOADING  # until the first registry check says otherwise
    reason: str = ""
    since: float = field(default_factory=time.time)  # when `state` last changed
    watched: bool = False  # follows the registry's production alias (set by the version monitor)
    checked_at: float = 0.0  # when the version monitor last ran a check (0: not yet)

    def set(self, state: str, reason: str = "") -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.reason = state, reason


def sd_notify(message: str) -> bool:
    """Send a notification to systemd; a no-op (False) when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec, when systemd asks this process for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def status_line(models: dict[str, ModelState]) -> str:
    """One line for `systemctl status`, e.g. 'CLF_IRIS v3 (production v3) ok'."""
    parts = []
    for name, st in sorted(models.items()):
        production = f"production v{st.production_version}" if st.production_version else "no registry"
        text = f"{name} v{st.loaded_version} ({production}) {st.state}"
        if st.reason:
            text += f": {st.reason}"
        parts.append(text)
    return "; ".join(parts)


class StatusReporter:
    def __init__(self, worker_id: str, state_dir: Path, systemd_unit: str = "") -> None:
        self.worker_id = worker_id
        self.systemd_unit = systemd_unit
        self.path = state_dir / "status.json"
        self.models: dict[str, ModelState] = {}
        self._lock = threading.Lock()

    def publish(self, ready: bool = False) -> None:
        with self._lock:
            document = {
                "worker_id": self.worker_id,
                "pid": os.getpid(),
                "unit": self.systemd_unit,
                "updated_at": time.time(),
                "models": {name: asdict(state) for name, state in self.models.items()},
            }
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
            tmp.replace(self.path)  # atomic: readers never see half a file
            line = status_line(self.models)
        sd_notify(("READY=1\n" if ready else "") + f"STATUS={line}")
