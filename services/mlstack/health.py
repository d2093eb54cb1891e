"""``mlstack health``: per worker and model, the loaded and production versions and a state.

Reads each worker's ``status.json`` (written by the worker, see services/DESIGN.md),
which works with or without systemd; a file not refreshed recently, or whose
process is gone, means the worker is down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

DEFAULT_STATE_ROOT = "/var/lib/mlstack/workers"
# Workers rewrite status.json at least every heartbeat (15 s by default).
STALE_FILE_S = 90.0


@dataclass(frozen=True)
class ModelHealth:
    worker_id: str
    unit: str
    model: str
    loaded_version: str
    production_version: str | None
    state: str
    reason: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_worker(path: Path, now: float, same_host: bool = True) -> list[ModelHealth]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [ModelHealth(path.parent.name, "", "-", "", None, "error", f"unreadable status file: {exc}")]
    worker_id, unit = str(doc.get("worker_id", path.parent.name)), str(doc.get("unit", ""))
    down = ""
    if now - float(doc.get("updated_at", 0)) > STALE_FILE_S:
        down = f"worker silent for {int(now - float(doc.get('updated_at', 0)))} s"
    if same_host and not _pid_alive(int(doc.get("pid", 0))):
        down = "worker process is not running"
    rows = []
    for name, st in sorted(doc.get("models", {}).items()):
        state, reason = str(st.get("state", "error")), str(st.get("reason", ""))
        if down:
            state, reason = "error", down
        rows.append(
            ModelHealth(
                worker_id, unit, name, str(st.get("loaded_version", "")), st.get("production_version"), state, reason
            )
        )
    return rows


def collect(state_root: Path, now: float | None = None) -> list[ModelHealth]:
    now = time.time() if now is None else now
    files = sorted(state_root.glob("*/status.json")) + sorted(state_root.glob("status.json"))
    rows: list[ModelHealth] = []
    for path in files:
        rows += read_worker(path, now)
    return rows


def restart_units(rows: list[ModelHealth]) -> list[str]:
    """Restart workers that did not swap to production by themselves (the health timer's job)."""
    units = sorted({r.unit for r in rows if r.unit and r.state in ("stale", "error")})
    systemctl = shutil.which("systemctl")
    for unit in units if systemctl else []:
        subprocess.run([systemctl, "restart", unit], check=False)  # type: ignore[list-item]
    return units if systemctl else []


def _table(rows: list[ModelHealth]) -> str:
    header = ("WORKER", "MODEL", "LOADED", "PRODUCTION", "STATE", "REASON")
    lines = [header] + [
        (r.worker_id, r.model, r.loaded_version or "-", r.production_version or "-", r.state, r.reason) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(str(col).ljust(widths[i]) for i, col in enumerate(line[:-1])) + "  " + line[-1] for line in lines
    )


@click.command("health")
@click.option(
    "--state-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: os.environ.get("MLSTACK_WORKERS_STATE_ROOT", DEFAULT_STATE_ROOT),
    show_default=f"$MLSTACK_WORKERS_STATE_ROOT or {DEFAULT_STATE_ROOT}",
    help="Folder holding one state folder per worker.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--restart-stale", is_flag=True, help="Restart (systemd) workers whose model is stale or in error.")
def health_command(state_root: Path, as_json: bool, restart_stale: bool) -> None:
    """Loaded vs production version of every model of every worker; exit 1 if any is not ok."""
    rows = collect(state_root)
    if not rows:
        click.echo(f"no worker status found under {state_root}", err=True)
        sys.exit(1)
    restarted = restart_units(rows) if restart_stale else []
    if as_json:
        click.echo(json.dumps({"models": [asdict(r) for r in rows], "restarted": restarted}, indent=2))
    else:
        click.echo(_table(rows))
        for unit in restarted:
            click.echo(f"restarted {unit}")
    sys.exit(0 if all(r.state == "ok" for r in rows) else 1)
