"""promote/rollback against an in-memory registry: the production history is a stack, a version
moved outside the tool is reconciled, deleted versions are skipped, and nothing moves on a refusal.
(The same flows run against a real MLflow in tests/lifecycle.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mlstack.lifecycle import LifecycleError
from mlstack.lifecycle.promote import HISTORY_TAG, promote, read_history, rollback
from mlstack.registry import ModelVersion, NotFound, RegisteredModel, Run

pytestmark = pytest.mark.unit
NAME = "CLF_IRIS"


class FakeRegistry:
    """The RegistryClient calls promote/rollback make, kept in memory."""

    url = "http://registry.invalid"

    def __init__(self) -> None:
        self.versions_by_number: dict[str, ModelVersion] = {}
        self.tags: dict[str, str] = {}
        self.production: str | None = None
        self.alias_moves: list[str] = []

    def add_version(self, run_id: str) -> ModelVersion:
        number = str(len(self.versions_by_number) + 1)
        version = ModelVersion(NAME, number, run_id, f"runs:/{run_id}/model", 0, status="READY")
        self.versions_by_number[number] = version
        return version

    # ---- the client's interface ----
    def get_version(self, name: str, version: str) -> ModelVersion:
        if version not in self.versions_by_number:
            raise NotFound(f"{name} v{version}")
        return self.versions_by_number[version]

    def get_run(self, run_id: str) -> Run:
        return Run(run_id, run_id, 0, f"s3://mlflow/{run_id}")

    def register_run(self, name: str, run: Run) -> tuple[ModelVersion, bool]:
        for version in self.versions_by_number.values():
            if version.run_id == run.run_id:
                return version, False
        return self.add_version(run.run_id), True

    def wait_ready(self, name: str, version: str) -> ModelVersion:
        return self.get_version(name, version)

    def get_model(self, name: str) -> RegisteredModel:
        aliases = {"production": self.production} if self.production else {}
        return RegisteredModel(name, dict(self.tags), aliases)

    def set_production(self, name: str, version: str) -> None:
        self.production = version
        self.alias_moves.append(version)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value


def _history(registry: FakeRegistry) -> list[Any]:
    return json.loads(registry.tags[HISTORY_TAG])


def test_promote_a_new_run_registers_it_and_moves_production() -> None:
    registry = FakeRegistry()
    move = promote(registry, NAME, run_id="run-a")  # type: ignore[arg-type]
    assert (move.version.version, move.previous, move.registered_now, move.changed) == ("1", None, True, True)
    assert registry.production == "1" and _history(registry) == ["1"]


def test_promoting_the_production_version_again_changes_nothing() -> None:
    registry = FakeRegistry()
    promote(registry, NAME, run_id="run-a")  # type: ignore[arg-type]
    move = promote(registry, NAME, version="1")  # type: ignore[arg-type]
    assert not move.changed and registry.alias_moves == ["1"] and _history(registry) == ["1"]


def test_rollback_is_a_stack_of_production_versions() -> None:
    registry = FakeRegistry()
    for run in ("run-a", "run-b", "run-c"):
        promote(registry, NAME, run_id=run)  # type: ignore[arg-type]
    assert [rollback(registry, NAME).version.version for _ in range(2)] == ["2", "1"]  # type: ignore[arg-type]
    assert registry.production == "1" and _history(registry) == ["1"]
    with pytest.raises(LifecycleError, match="no earlier production version than v1"):
        rollback(registry, NAME)  # type: ignore[arg-type]
    assert registry.production == "1"


def test_a_version_moved_outside_the_tool_joins_the_history() -> None:
    registry = FakeRegistry()
    promote(registry, NAME, run_id="run-a")  # type: ignore[arg-type]
    registry.add_version("run-b")
    registry.production = "2"  # moved in the MLflow UI
    move = rollback(registry, NAME)  # type: ignore[arg-type]
    assert (move.previous, move.version.version) == ("2", "1")


def test_rollback_skips_a_deleted_version() -> None:
    registry = FakeRegistry()
    for run in ("run-a", "run-b", "run-c"):
        promote(registry, NAME, run_id=run)  # type: ignore[arg-type]
    del registry.versions_by_number["2"]
    assert rollback(registry, NAME).version.version == "1"  # type: ignore[arg-type]


def test_refusals_move_nothing() -> None:
    registry = FakeRegistry()
    with pytest.raises(LifecycleError, match="no production version"):
        rollback(registry, NAME)  # type: ignore[arg-type]
    with pytest.raises(LifecycleError, match="exclude each other"):
        promote(registry, NAME, run_id="run-a", version="1")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        promote(registry, NAME, version="7")  # type: ignore[arg-type]
    assert registry.alias_moves == [] and HISTORY_TAG not in registry.tags


def test_an_unreadable_history_tag_counts_as_empty() -> None:
    for value in ("not json", '{"a": 1}'):
        assert read_history(RegisteredModel(NAME, {HISTORY_TAG: value}, {})) == []
