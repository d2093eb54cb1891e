"""`mlstack health`: state classification of worker status files and the restart policy.

Status files are written by hand (what a worker, or a hostile bundle, could write); the restart
command is a recording script, the stand-in for systemctl (there is no systemd here)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlstack.health import (
    DEAD,
    DEGRADED,
    LOADING,
    OK,
    STALE,
    UNKNOWN,
    ModelHealth,
    Policy,
    classify,
    collect,
    health_command,
    plan_restarts,
)
from mlstack.settings import HealthSettings, SettingsError

NOW = 1_000_000.0
POLICY = Policy(stale_grace_s=300, dead_after_s=90)
UNIT = "mlstack-worker-pub@{}.service"


def model(
    state: str, *, since: float = NOW - 10, checked_at: float = NOW - 1, watched: bool = True, **kw: object
) -> dict:
    return {
        "loaded_version": "1",
        "production_version": "1",
        "state": state,
        "reason": kw.pop("reason", ""),
        "since": since,
        "watched": watched,
        "checked_at": checked_at,
        **kw,
    }


def doc(*, updated_at: float = NOW - 5, pid: int = 4242, unit: str = "", **models: dict) -> dict:
    return {"worker_id": "w", "pid": pid, "unit": unit, "updated_at": updated_at, "models": models}


def states(document: dict | str, alive: bool = True) -> list[str]:
    return [r.state for r in classify("i", "", document, NOW, POLICY, pid_alive=lambda _pid: alive)]


def test_worker_states_pass_through() -> None:
    for state in (OK, DEGRADED, UNKNOWN):
        assert states(doc(M=model(state))) == [state]


def test_loading_or_stale_within_grace_is_loading_then_stale() -> None:
    assert states(doc(M=model(LOADING, since=NOW - 299))) == [LOADING]
    assert states(doc(M=model(STALE, since=NOW - 299))) == [LOADING]
    assert states(doc(M=model(LOADING, since=NOW - 301))) == [STALE]
    assert states(doc(M=model(STALE, since=NOW - 301))) == [STALE]


def test_a_silent_version_monitor_makes_a_watched_model_stale() -> None:
    assert states(doc(M=model(OK, checked_at=NOW - 301))) == [STALE]
    assert states(doc(M=model(OK, checked_at=0, watched=False))) == [OK]  # local provider: nothing to follow


def test_a_worker_loading_its_models_at_start_is_silent_for_up_to_the_grace_period() -> None:
    assert states(doc(updated_at=NOW - 200, M=model(LOADING, since=NOW - 200))) == [LOADING]
    assert states(doc(updated_at=NOW - 301, M=model(LOADING, since=NOW - 301))) == [DEAD]
    assert states(doc(updated_at=NOW - 200, M=model(LOADING, since=NOW - 200), N=model(OK))) == [DEAD, DEAD]
    assert states(doc(M=model(LOADING)), alive=False) == [DEAD]


def test_dead_when_silent_gone_or_missing() -> None:
    assert states(doc(updated_at=NOW - 91, M=model(OK))) == [DEAD]
    assert states(doc(M=model(OK), N=model(DEGRADED)), alive=False) == [DEAD, DEAD]
    assert states("no status file (the worker never started here)") == [DEAD]


def test_an_unknown_state_word_is_unknown_and_texts_are_made_printable() -> None:
    rows = classify("i", "", doc(M=model("error", reason="\x1b[2Jboom\n")), NOW, POLICY, pid_alive=lambda _pid: True)
    assert rows[0].state == UNKNOWN
    assert "\x1b" not in rows[0].reason and "\n" not in rows[0].reason and "boom" in rows[0].reason


def row(unit: str, state: str) -> ModelHealth:
    return ModelHealth("i", unit, "w", "M", "1", "1", state, "")


def test_only_stale_or_dead_configured_units_restart_at_most_max() -> None:
    units = [UNIT.format(n) for n in "abcde"]
    rows = [
        row(units[0], DEAD),
        row(units[1], DEGRADED),
        row(units[2], UNKNOWN),
        row(units[3], STALE),
        row(units[4], DEAD),
        row("", DEAD),  # a worker found on disk but not configured
    ]
    plan = plan_restarts(rows, units, max_restarts=2)
    assert plan.restart == [units[0], units[3]] and plan.held_back == [units[4]]
    assert plan_restarts(rows, units, max_restarts=0).restart == []
    assert plan_restarts([row(UNIT.format("a"), UNKNOWN), row(UNIT.format("b"), DEGRADED)], units, 2).restart == []


def test_settings_validate_every_unit_name() -> None:
    env = {"MLSTACK_ENV_FILE": "/nonexistent", "MLSTACK_HEALTH_WORKER_UNITS": "poweroff.target x@y.service"}
    with pytest.raises(SettingsError) as err:
        HealthSettings.from_env(env)
    assert "'poweroff.target'" in str(err.value) and "'x@y.service'" in str(err.value)
    for bad in ("mlstack-worker-pub@a/b.service", "mlstack-worker-pub@.service", "mlstack-worker-pub@a.service;x"):
        with pytest.raises(SettingsError):
            HealthSettings.from_env({**env, "MLSTACK_HEALTH_WORKER_UNITS": bad})
    ok = HealthSettings.from_env({**env, "MLSTACK_HEALTH_WORKER_UNITS": f"{UNIT.format('a-1')} {UNIT.format('b.2')}"})
    assert ok.worker_units == (UNIT.format("a-1"), UNIT.format("b.2")) and ok.max_restarts == 2
    assert ok.systemctl == "systemctl"


def write_status(root: Path, instance: str, document: dict) -> None:
    (root / instance).mkdir(parents=True, exist_ok=True)
    (root / instance / "status.json").write_text(json.dumps(document))


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for systemctl (no systemd here): appends its arguments to a file."""
    record = tmp_path / "systemctl.calls"
    script = tmp_path / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def run_health(root: Path, systemctl: Path, units: str, *args: str, max_restarts: str = "2") -> tuple[int, dict]:
    env = {
        "MLSTACK_ENV_FILE": "/nonexistent",
        "MLSTACK_HEALTH_WORKER_UNITS": units,
        "MLSTACK_HEALTH_SYSTEMCTL": str(systemctl),
        "MLSTACK_HEALTH_MAX_RESTARTS": max_restarts,
    }
    result = CliRunner().invoke(health_command, ["--state-root", str(root), "--json", *args], env=env)
    return result.exit_code, json.loads(result.stdout)


def test_a_hostile_status_file_never_names_what_is_restarted(tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    systemctl, record = recorder
    root = tmp_path / "workers"
    now = time.time()
    hostile = {"unit": "poweroff.target", "worker_id": "../../etc"}
    # A configured worker whose (dead) status names another unit: its configured unit is restarted.
    write_status(root, "good-1", {**doc(updated_at=now - 1000, M=model(OK, since=now)), **hostile})
    # A live, healthy configured worker whose status names poweroff.target: nothing to do.
    write_status(root, "good-2", {**doc(updated_at=now, pid=os.getpid(), M=model(OK, checked_at=now)), **hostile})
    # A folder nobody configured, claiming to be stale and dead: shown, never restarted.
    write_status(root, "evil", {**doc(updated_at=0, pid=0, M=model(STALE, since=0)), **hostile})
    units = f"{UNIT.format('good-1')} {UNIT.format('good-2')}"

    code, out = run_health(root, systemctl, units, "--restart-stale")
    assert code == 1, out
    assert record.read_text().splitlines() == [f"restart {UNIT.format('good-1')}"]
    assert out["restarted"] == [UNIT.format("good-1")]
    by_instance = {r["instance"]: r for r in out["models"]}
    assert by_instance["good-1"]["state"] == DEAD and by_instance["good-2"]["state"] == OK
    assert by_instance["evil"]["state"] == DEAD and by_instance["evil"]["unit"] == ""
    assert all("poweroff" not in r["unit"] for r in out["models"])


def test_restarts_per_run_are_capped_and_nothing_without_configuration(
    tmp_path: Path, recorder: tuple[Path, Path]
) -> None:
    systemctl, record = recorder
    root = tmp_path / "workers"
    units = " ".join(UNIT.format(f"w-{n}") for n in range(4))  # none has a status file: all dead
    code, out = run_health(root, systemctl, units, "--restart-stale")
    assert code == 1
    assert record.read_text().splitlines() == [f"restart {UNIT.format('w-0')}", f"restart {UNIT.format('w-1')}"]
    assert out["held_back"] == [UNIT.format("w-2"), UNIT.format("w-3")]

    record.unlink()
    write_status(root, "w-0", doc(updated_at=0, M=model(OK)))
    code, out = run_health(root, systemctl, "", "--restart-stale")
    assert code == 1 and out["restarted"] == [] and not record.exists()
    # Without --restart-stale nothing is ever restarted.
    code, out = run_health(root, systemctl, units)
    assert code == 1 and out["restarted"] == [] and not record.exists()


def test_collect_matches_configured_units_to_state_folders(tmp_path: Path) -> None:
    write_status(tmp_path, "a-1", doc(updated_at=NOW, M=model(OK)))
    write_status(tmp_path, "other", doc(updated_at=NOW, M=model(OK)))
    rows = collect(tmp_path, [UNIT.format("a-1"), UNIT.format("b-1")], now=NOW, policy=POLICY, pid_alive=lambda _: True)
    assert [(r.instance, r.unit, r.state) for r in rows] == [
        ("a-1", UNIT.format("a-1"), OK),
        ("b-1", UNIT.format("b-1"), DEAD),
        ("other", "", OK),
    ]
