"""``mlstack health``: per worker and model, the loaded and production versions and a state.

Reads each worker's ``status.json`` (written by the worker, see services/DESIGN.md), which works
with or without systemd. States: ``ok``, ``loading``, ``degraded`` (serving an older version: alert,
never restart), ``stale`` (production moved, or a load hangs, and the worker has not caught up
within a grace period), ``dead`` (process gone or status not refreshed), ``unknown`` (the registry
cannot be asked: restart nothing).

``--restart-stale`` restarts only ``stale`` or ``dead`` workers, at most MLSTACK_HEALTH_MAX_RESTARTS
per run, and only units listed in MLSTACK_HEALTH_WORKER_UNITS. A status file is written by a
process that runs bundle code, so nothing in it (its ``unit`` field included) ever names what to
restart: a configured unit ``mlstack-worker-pub@<instance>.service`` is matched to the status file
of the state folder ``<state root>/<instance>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from mlstack.settings import WORKER_UNIT_PATTERN, HealthSettings, SettingsError

OK, LOADING, DEGRADED, STALE, DEAD, UNKNOWN = "ok", "loading", "degraded", "stale", "dead", "unknown"
RESTARTABLE = (STALE, DEAD)
WORKER_STATES = (OK, LOADING, DEGRADED, STALE, UNKNOWN)  # what a worker may report itself
# A worker's status file is small; a bigger one is not read (a bundle could write anything there).
MAX_STATUS_BYTES = 1 << 20
MAX_TEXT = 500
# `systemctl restart` waits for the old process to stop (its job in flight) and the new one to be ready.
RESTART_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class ModelHealth:
    instance: str  # the worker's state folder (= its unit's instance)
    unit: str  # the configured unit of that instance, "" when not configured
    worker_id: str  # as the worker reports it: display only
    model: str
    loaded_version: str
    production_version: str | None
    state: str
    reason: str


@dataclass(frozen=True)
class Policy:
    stale_grace_s: float = 300.0
    dead_after_s: float = 90.0


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """Worker-written text made safe to print: no control characters (terminal escapes), bounded."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0  # NaN counts as never


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:
        return False
    return True


def instance_of(unit: str) -> str:
    """``mlstack-worker-pub@example_bundle-1.service`` -> ``example_bundle-1`` (unit already validated)."""
    return unit.split("@", 1)[1].removesuffix(".service")


def read_status(path: Path) -> dict[str, Any] | str:
    """The status document, or why it cannot be used."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return "no status file (the worker never started here)"
    except OSError as exc:
        return f"unreadable status file: {exc.strerror or exc}"
    if len(data) > MAX_STATUS_BYTES:
        return f"status file larger than {MAX_STATUS_BYTES} bytes"
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return f"status file is not JSON: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return "status file has no models"
    return doc


def classify(
    instance: str,
    unit: str,
    doc: dict[str, Any] | str,
    now: float,
    policy: Policy,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> list[ModelHealth]:
    """One row per model of one worker, with the state `mlstack health` acts upon."""
    if isinstance(doc, str):
        return [ModelHealth(instance, unit, "", "-", "", None, DEAD, _text(doc))]
    worker_id = _text(doc.get("worker_id", ""), 100)
    silent = now - _number(doc.get("updated_at"))
    models = doc["models"].values()
    # A worker loading its models at start writes nothing until they are loaded: give it the grace period.
    starting = bool(models) and all(isinstance(st, dict) and st.get("state") == LOADING for st in models)
    down = ""
    if silent > (max(policy.dead_after_s, policy.stale_grace_s) if starting else policy.dead_after_s):
        down = f"status not updated for {int(silent)} s"
    elif not pid_alive(int(_number(doc.get("pid")))):
        down = "worker process is not running"
    rows = []
    for name, st in sorted(doc["models"].items()):
        st = st if isinstance(st, dict) else {}
        production = st.get("production_version")
        state, reason = (DEAD, down) if down else _model_state(st, now, policy)
        rows.append(
            ModelHealth(
                instance,
                unit,
                worker_id,
                _text(name, 200),
                _text(st.get("loaded_version", ""), 100),
                None if production is None else _text(production, 100),
                state,
                _text(reason),
            )
        )
    return rows or [ModelHealth(instance, unit, worker_id, "-", "", None, DEAD, down or "worker reports no model")]


def _model_state(st: dict[str, Any], now: float, policy: Policy) -> tuple[str, str]:
    state, reason = str(st.get("state", "")), str(st.get("reason", ""))
    if state not in WORKER_STATES:
        return UNKNOWN, f"worker reports state {_text(state, 40)!r}: {reason}"
    lasting = now - _number(st.get("since"))
    if state in (LOADING, STALE):
        if lasting <= policy.stale_grace_s:
            return LOADING, reason  # a swap in progress: give it the grace period
        return STALE, f"{state} for {int(lasting)} s: {reason}"
    if st.get("watched") and now - _number(st.get("checked_at")) > policy.stale_grace_s:
        # The version monitor stopped checking: production may have moved without this worker noticing.
        return STALE, f"no version check for {int(now - _number(st.get('checked_at')))} s"
    return state, reason


def collect(
    state_root: Path,
    units: Iterable[str] = (),
    now: float | None = None,
    policy: Policy | None = None,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> list[ModelHealth]:
    """Rows of every configured unit's worker, then of any other worker found under ``state_root``."""
    now = time.time() if now is None else now
    policy = policy or Policy()
    rows: list[ModelHealth] = []
    configured = {instance_of(unit): unit for unit in units}
    for instance, unit in configured.items():
        rows += classify(instance, unit, read_status(state_root / instance / "status.json"), now, policy, pid_alive)
    others = [p for p in sorted(state_root.glob("*/status.json")) if p.parent.name not in configured]
    if (state_root / "status.json").is_file() and state_root.name not in configured:
        others.append(state_root / "status.json")
    for path in others:
        rows += classify(path.parent.name, "", read_status(path), now, policy, pid_alive)
    return rows


@dataclass(frozen=True)
class RestartPlan:
    restart: list[str]
    held_back: list[str]  # restartable, but over the per-run limit


def plan_restarts(rows: list[ModelHealth], units: Iterable[str], max_restarts: int) -> RestartPlan:
    """Configured units whose worker is stale or dead, in configured order, at most ``max_restarts``."""
    due = {r.unit for r in rows if r.state in RESTARTABLE}
    # Only names from the configuration, re-validated: never a name a status file could supply.
    candidates = [u for u in units if u in due and WORKER_UNIT_PATTERN.match(u)]
    return RestartPlan(candidates[:max_restarts], candidates[max_restarts:])


@dataclass(frozen=True)
class RestartResult:
    unit: str
    ok: bool
    detail: str


def restart_units(
    units: list[str], systemctl: str, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
) -> list[RestartResult]:
    """``systemctl restart <unit>`` for each unit (unprivileged: a polkit rule allows exactly these units).

    ``systemctl`` is a setting (MLSTACK_HEALTH_SYSTEMCTL) so that tests, which have no systemd, can
    point it to a script that records its arguments."""
    exe = systemctl if os.sep in systemctl else shutil.which(systemctl)
    if not exe:
        return [RestartResult(u, False, f"{systemctl} not found") for u in units]
    results = []
    for unit in units:
        try:
            done = run([exe, "restart", unit], capture_output=True, text=True, timeout=RESTART_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            results.append(RestartResult(unit, False, _text(exc)))
            continue
        detail = _text((done.stderr or done.stdout or "").strip())
        results.append(RestartResult(unit, done.returncode == 0, detail or f"exit status {done.returncode}"))
    return results


def _table(rows: list[ModelHealth]) -> str:
    header = ("WORKER", "MODEL", "LOADED", "PRODUCTION", "STATE", "REASON")
    lines = [header] + [
        (r.instance, r.model, r.loaded_version or "-", r.production_version or "-", r.state, r.reason) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(str(col).ljust(widths[i]) for i, col in enumerate(line[:-1])) + "  " + line[-1] for line in lines
    )


@click.command("health")
@click.option(
    "--state-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder holding one state folder per worker (default: $MLSTACK_WORKERS_STATE_ROOT or "
    "/var/lib/mlstack/workers).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--restart-stale",
    is_flag=True,
    help="Restart the configured worker units (MLSTACK_HEALTH_WORKER_UNITS) whose worker is stale or dead, "
    "at most MLSTACK_HEALTH_MAX_RESTARTS per run.",
)
def health_command(state_root: Path | None, as_json: bool, restart_stale: bool) -> None:
    """Loaded vs production version of every model of every worker; exit 1 if any is not ok."""
    try:
        settings = HealthSettings.from_env()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    root = state_root or settings.state_root
    policy = Policy(settings.stale_grace_s, settings.dead_after_s)
    rows = collect(root, settings.worker_units, policy=policy)
    if not rows:
        click.echo(f"no worker status found under {root} and no MLSTACK_HEALTH_WORKER_UNITS configured", err=True)
        sys.exit(1)
    plan = plan_restarts(rows, settings.worker_units, settings.max_restarts) if restart_stale else RestartPlan([], [])
    results = restart_units(plan.restart, settings.systemctl) if plan.restart else []
    notes = []
    if restart_stale and not settings.worker_units:
        notes.append("MLSTACK_HEALTH_WORKER_UNITS is empty: no unit may be restarted")
    notes += [f"not restarted {u}: over MLSTACK_HEALTH_MAX_RESTARTS={settings.max_restarts}" for u in plan.held_back]
    if as_json:
        document = {
            "models": [asdict(r) for r in rows],
            "restarted": [r.unit for r in results if r.ok],
            "restart_failed": [asdict(r) for r in results if not r.ok],
            "held_back": plan.held_back,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(_table(rows))
        for result in results:
            click.echo(f"restarted {result.unit}" if result.ok else f"could not restart {result.unit}: {result.detail}")
    for note in notes:
        click.echo(note, err=True)
    sys.exit(0 if all(r.state == OK for r in rows) and all(r.ok for r in results) else 1)
