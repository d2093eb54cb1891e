"""The worker side of the health policy: states the version monitor reports (fake registry), the
last-good copy on disk, and starting on it when production cannot load."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from mlstack.registry import RegistryError, RegistryUnreachable
from mlstack.worker import versions
from mlstack.worker.bundle import BundleError, ModelSpec
from mlstack.worker.lastgood import LastGoodStore
from mlstack.worker.status import DEGRADED, LOADING, OK, UNKNOWN, ModelState, StatusReporter, status_line
from mlstack.worker.versions import TempDirJanitor, VersionMonitor, load_at_start

NAME = "M"
SPEC = ModelSpec(NAME, "m", "ModeloCLF", "mlflow")


class FakeModel:
    def __init__(self, version: str, provider: str = "mlflow") -> None:
        self.version, self.provider = version, provider

    def get_model_version(self) -> str:
        return self.version

    def get_model_provider_name(self) -> str:
        return self.provider


class Unpicklable(FakeModel):
    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.lock = threading.Lock()


class FakeRegistry:
    def __init__(self) -> None:
        self.answer: str | Exception | None = "1"

    def production_version(self, name: str) -> str | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Loads:
    """Stands in for bundle.instantiate: what the next load gives (a model) or raises."""

    def __init__(self) -> None:
        self.next: Any = FakeModel("1")

    def __call__(self, spec: ModelSpec) -> Any:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Loads:
    fake = Loads()
    monkeypatch.setattr(versions, "instantiate", fake)
    return fake


def monitor(tmp_path: Path, model: Any, registry: FakeRegistry | None) -> tuple[VersionMonitor, StatusReporter]:
    status = StatusReporter("w", tmp_path)
    models = {NAME: model}
    status.models = {NAME: ModelState(loaded_version=model.get_model_version())}
    store = LastGoodStore(tmp_path / "last-good")
    mon = VersionMonitor({NAME: SPEC}, models, status, registry, TempDirJanitor(tmp_path / "tmp"), lambda: None, store)  # type: ignore[arg-type]
    return mon, status


def test_registry_unreachable_is_unknown_and_keeps_serving(tmp_path: Path, loads: Loads) -> None:
    registry = FakeRegistry()
    mon, status = monitor(tmp_path, FakeModel("1"), registry)
    assert status.models[NAME].state == LOADING and status.models[NAME].watched
    mon.check_once()
    assert status.models[NAME].state == OK
    registry.answer = RegistryUnreachable("MLflow at http://x is unreachable: refused")
    mon.check_once()
    st = status.models[NAME]
    assert (st.state, st.loaded_version) == (UNKNOWN, "1") and "unreachable" in st.reason
    registry.answer = RegistryError("MLflow registered-models/alias: HTTP 500")
    mon.check_once()
    assert status.models[NAME].state == UNKNOWN
    assert mon.models[NAME].version == "1"


def test_a_broken_promotion_is_degraded_and_the_old_version_serves(tmp_path: Path, loads: Loads) -> None:
    registry = FakeRegistry()
    mon, status = monitor(tmp_path, FakeModel("1"), registry)
    registry.answer = "2"
    loads.next = BundleError("model M: ModeloCLF() failed: OSError: no artifact")
    mon.check_once()
    st = status.models[NAME]
    assert (st.state, st.loaded_version, st.production_version) == (DEGRADED, "1", "2")
    assert "cannot load v2" in st.reason and "no artifact" in st.reason and "serving v1" in st.reason
    assert mon.models[NAME].version == "1"
    assert "M v1 (production v2) degraded: cannot load v2" in status_line(status.models)
    # An outage while degraded reports unknown; back, the known failure is reported again.
    registry.answer = RegistryUnreachable("down")
    mon.check_once()
    assert status.models[NAME].state == UNKNOWN
    registry.answer = "2"
    mon.check_once()
    assert status.models[NAME].state == DEGRADED and "cannot load v2" in status.models[NAME].reason
    registry.answer = None
    mon.check_once()
    assert status.models[NAME].state == DEGRADED and "no production version" in status.models[NAME].reason


def test_a_successful_swap_is_kept_as_last_good(tmp_path: Path, loads: Loads) -> None:
    registry = FakeRegistry()
    mon, status = monitor(tmp_path, FakeModel("1"), registry)
    registry.answer, loads.next = "2", FakeModel("2")
    mon.check_once()
    assert (status.models[NAME].state, status.models[NAME].loaded_version) == (OK, "2")
    kept = LastGoodStore(tmp_path / "last-good").load(NAME)
    assert kept is not None and kept.version == "2" and kept.model.version == "2"


def test_a_model_without_registry_is_ok_and_not_watched(tmp_path: Path, loads: Loads) -> None:
    mon, status = monitor(tmp_path, FakeModel("7", provider="local"), None)
    mon.check_once()
    assert (status.models[NAME].state, status.models[NAME].watched) == (OK, False)


def test_last_good_copy_round_trip_unpicklable_and_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LastGoodStore(tmp_path / "lg")
    assert store.load(NAME) is None
    assert store.save(NAME, FakeModel("3"), "3")
    assert store.path(NAME).stat().st_mode & 0o077 == 0
    kept = store.load(NAME)
    assert kept is not None and (kept.version, kept.model.version) == ("3", "3") and kept.saved_at > 0
    with caplog.at_level(logging.ERROR):
        assert not store.save(NAME, Unpicklable("4"), "4")
    assert "v4 cannot be pickled" in caplog.text and "no last-good copy" in caplog.text
    assert store.load(NAME) is None  # never an older copy than what was last loaded
    store.path(NAME).write_bytes(b"not a pickle")
    assert store.load(NAME) is None
    assert [p.name for p in (tmp_path / "lg").iterdir()] == [store.path(NAME).name]  # no temp file left


def test_start_falls_back_to_last_good_or_fails_without_one(tmp_path: Path, loads: Loads) -> None:
    store = LastGoodStore(tmp_path / "lg")
    loads.next = FakeModel("1")
    models, fallbacks = load_at_start({NAME: SPEC}, store)
    assert models[NAME].version == "1" and fallbacks == {}
    assert store.load(NAME) is not None

    loads.next = BundleError("model M: cannot reach MLflow")
    models, fallbacks = load_at_start({NAME: SPEC}, store)
    assert models[NAME].version == "1"
    assert fallbacks[NAME].startswith("serving last-good v1 (kept ") and "cannot reach MLflow" in fallbacks[NAME]

    status = StatusReporter("w", tmp_path)
    status.models = {NAME: ModelState(loaded_version="1")}
    registry = FakeRegistry()
    registry.answer = RegistryUnreachable("down")
    mon = VersionMonitor({NAME: SPEC}, models, status, registry, TempDirJanitor(tmp_path / "t"), lambda: None, store)  # type: ignore[arg-type]
    mon.serving_last_good(fallbacks)
    mon.check_once()
    assert status.models[NAME].state == DEGRADED and "serving last-good v1" in status.models[NAME].reason
    registry.answer = "1"  # the registry is back and production is the version kept: healthy
    mon.check_once()
    assert status.models[NAME].state == OK

    store.path(NAME).unlink()
    with pytest.raises(BundleError, match="no last-good copy"):
        load_at_start({NAME: SPEC}, store)
