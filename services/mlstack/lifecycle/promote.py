"""Moving a model's ``production`` alias: promote a run or version, roll back to the previous one.

The order of production versions is kept as a tag of the registered model
(``mlstack.production_history``, a JSON list, oldest first), so that rollback is a
stack: promote 1, 2, 3 then rollback, rollback serves 2 then 1. When someone moved the
alias without this tool (MLflow UI), the current version is appended before anything
else, so the history still ends with what is in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlstack.lifecycle import LifecycleError
from mlstack.registry import ModelVersion, NotFound, RegisteredModel, RegistryClient

HISTORY_TAG = "mlstack.production_history"
# MLflow limits tag values (5000 characters); older entries are dropped first.
HISTORY_MAX = 200


@dataclass(frozen=True)
class AliasMove:
    name: str
    version: ModelVersion
    previous: str | None  # production version before the move
    registered_now: bool = False  # promote registered the run as a new version

    @property
    def changed(self) -> bool:
        return self.previous != self.version.version


def read_history(model: RegisteredModel) -> list[str]:
    try:
        value = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _reconciled(model: RegisteredModel, current: str | None) -> list[str]:
    history = read_history(model)
    if current and (not history or history[-1] != current):
        history.append(current)
    return history


def _save_history(client: RegistryClient, name: str, history: list[str]) -> None:
    client.set_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_MAX:]))


def experiment_of_model(client: RegistryClient, name: str) -> str:
    """The experiment of the model's newest version (where its next candidates are logged)."""
    try:
        versions = client.versions(name)
    except NotFound:
        raise LifecycleError(
            f"model '{name}' is not registered in MLflow at {client.url}; to make a run its first version, "
            "name the run (--run) or its experiment (--experiment)"
        ) from None
    for version in reversed(versions):
        if version.run_id:
            try:
                run = client.get_run(version.run_id)
            except NotFound:
                continue
            return client.experiment_name(run.experiment_id)
    raise LifecycleError(f"cannot tell which experiment holds the runs of model '{name}': pass --experiment")


def promote(
    client: RegistryClient,
    name: str,
    *,
    run_id: str | None = None,
    version: str | None = None,
    experiment: str | None = None,
) -> AliasMove:
    """Point ``production`` at a version: the one given, the one made from ``run_id``, or from the
    experiment's latest finished run; a run not registered yet becomes a new version."""
    if run_id and version:
        raise LifecycleError("--run and --version exclude each other")
    registered_now = False
    if version:
        target = client.get_version(name, version)
    else:
        run = client.get_run(run_id) if run_id else client.latest_run(experiment or experiment_of_model(client, name))
        target, registered_now = client.register_run(name, run)
    target = client.wait_ready(name, target.version)
    model = client.get_model(name)
    current = model.aliases.get("production")
    history = _reconciled(model, current)
    if current != target.version:
        client.set_production(name, target.version)
        history.append(target.version)
    _save_history(client, name, history)
    return AliasMove(name, target, current, registered_now)


def rollback(client: RegistryClient, name: str) -> AliasMove:
    """Point ``production`` back at the version that was production before the current one."""
    model = client.get_model(name)
    current = model.aliases.get("production")
    if current is None:
        raise LifecycleError(f"model '{name}' has no production version to roll back from")
    history = _reconciled(model, current)
    history.pop()  # the current one
    while history:
        candidate = history[-1]
        if candidate == current:
            history.pop()
            continue
        try:
            target = client.get_version(name, candidate)
        except NotFound:  # deleted since: skip it
            history.pop()
            continue
        client.set_production(name, target.version)
        _save_history(client, name, history)
        return AliasMove(name, target, current)
    raise LifecycleError(f"model '{name}' has no earlier production version than v{current} to roll back to")
