"""``mlstack retrain``: run the retrain runner in the bundle's retrain venv, then check and report.

The runner evaluates each model against its production baseline and retrains it when
needed (a run named ``self_training``). Retraining never promotes: the production alias
of every model is read before and after, and a model whose alias moved is put back and
reported as a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlstack.lifecycle import LifecycleError
from mlstack.lifecycle.bundle import ModelSection
from mlstack.lifecycle.train import bundle_env, now_ms
from mlstack.registry import NotFound, RegistryClient, Run

RETRAIN_RUN_NAME = "self_training"


@dataclass
class ModelOutcome:
    name: str
    ok: bool
    production_version: str | None = None
    retrain_needed: bool = False
    retrained: bool = False
    evaluation: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    runs: list[Run] = field(default_factory=list)
    registered_versions: list[str] = field(default_factory=list)


def production_versions(client: RegistryClient | None, sections: list[ModelSection]) -> dict[str, str | None]:
    if client is None:
        return {}
    return {s.name: client.production_version(s.name) for s in sections if s.provider == "mlflow"}


def restore_production(
    client: RegistryClient | None, sections: list[ModelSection], before: dict[str, str | None]
) -> dict[str, tuple[str | None, str | None]]:
    """Never promote: whatever the bundle did, production goes back where it was. Returns what moved."""
    after = production_versions(client, sections)
    moved = {name: (was, after.get(name)) for name, was in before.items() if after.get(name) != was}
    for name, (was, _now) in moved.items():
        if client is None:
            continue
        if was is None:
            client.delete_production(name)
        else:
            client.set_production(name, was)
    return moved


# Directories the bundle reads from the environment; the runner works elsewhere, so relative ones are
# made absolute against the operator's working directory.
PATH_VARIABLES = ("LOCAL_PATH", "MLSTACK_LOCAL_MODEL_DIR")


def runner_env(env: Mapping[str, str]) -> dict[str, str]:
    child = bundle_env(env)
    for name in PATH_VARIABLES:
        if child.get(name):
            child[name] = os.path.abspath(child[name])
    return child


def run_runner(python: Path, part: Path, env: Mapping[str, str], workdir: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlstack-retrain-") as scratch:
        result_file = Path(scratch) / "result.json"
        work = workdir or Path(scratch) / "work"
        argv = [
            str(python),
            "-m",
            "mlstack.lifecycle.retrain_runner",
            str(part),
            "--workdir",
            str(work),
            "--result",
            str(result_file),
        ]
        try:
            proc = subprocess.run(argv, env=runner_env(env), stdin=subprocess.DEVNULL, check=False)
        except OSError as exc:
            raise LifecycleError(f"cannot run {python}: {exc}") from None
        try:
            summary: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise LifecycleError(
                f"the retrain runner exited with status {proc.returncode} without a result (see its output above)"
            ) from None
    if proc.returncode not in (0, 1):
        raise LifecycleError(f"the retrain runner exited with status {proc.returncode}")
    return summary


def self_training_runs(client: RegistryClient, experiment: str, since_ms: int) -> list[Run]:
    try:
        runs = client.runs(experiment, max_results=20, run_name=RETRAIN_RUN_NAME)
    except NotFound:
        return []
    return [r for r in runs if r.start_ms >= since_ms]


def retrain(
    python: Path,
    part: Path,
    sections: list[ModelSection],
    env: Mapping[str, str],
    client: RegistryClient | None,
    workdir: Path | None = None,
) -> list[ModelOutcome]:
    before = production_versions(client, sections)
    started = now_ms()
    try:
        summary = run_runner(python, part, env, workdir)
    finally:
        moved = restore_production(client, sections, before)
    outcomes: list[ModelOutcome] = []
    if summary.get("error"):
        raise LifecycleError(str(summary["error"]))

    for name, result in summary.get("models", {}).items():
        outcome = ModelOutcome(name, bool(result.get("ok")), production_version=before.get(name))
        outcome.error = str(result.get("error", ""))
        outcome.retrain_needed = bool(result.get("retrain_needed"))
        outcome.retrained = bool(result.get("retrained"))
        outcome.evaluation = dict(result.get("evaluation") or {})
        if name in moved:
            was, now = moved[name]
            outcome.ok = False
            undone = f"put back to v{was}" if was else "removed"
            outcome.error = (
                f"the bundle's retrain moved 'production' from v{was or '-'} to v{now}; "
                f"retraining must never promote, so it was {undone}"
            )
        if outcome.retrained and client is not None and result.get("experiment"):
            outcome.runs = self_training_runs(client, str(result["experiment"]), started)
            for run in outcome.runs:
                outcome.registered_versions += [v.version for v in client.versions_of_run(run.run_id) if v.name == name]
        outcomes.append(outcome)
    return outcomes


def describe(outcome: ModelOutcome) -> str:
    production = f"production v{outcome.production_version}" if outcome.production_version else "the production model"
    if not outcome.ok:
        return f"{outcome.name}: FAILED: {outcome.error}"
    evaluation = json.dumps(outcome.evaluation, ensure_ascii=False, default=str)
    if not outcome.retrain_needed:
        return f"{outcome.name}: {production} evaluated: no retrain needed ({evaluation})"
    text = f"{outcome.name}: {production} evaluated: retrain needed ({evaluation}); retrained"
    if outcome.runs:
        runs = ", ".join(f"run '{r.name}' {r.run_id}" for r in outcome.runs)
        text += f": {runs}"
    if outcome.registered_versions:
        text += f", registered as v{', v'.join(outcome.registered_versions)}"
    return text + " (not promoted)"
