"""Keeps each served model on the version MLflow's ``production`` alias points to.

Every check interval the monitor asks the registry for the production version of
each MLflow-provided model. When it differs from the loaded one, it builds a new
model instance in this (background) thread and swaps it in: jobs already running
finish on the old instance, the next ones get the new one. A failed load keeps
the old version serving and reports ``error`` with the reason.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlstack.registry import RegistryClient, RegistryError
from mlstack.worker.bundle import ModelSpec, instantiate
from mlstack.worker.status import StatusReporter

log = logging.getLogger(__name__)

REGISTRY_PROVIDER = "mlflow"
# A version that failed to load is retried at most this often, not at every check.
FAILED_RETRY_S = 60.0


def version_of(model: Any) -> str:
    try:
        version = model.get_model_version()
    except Exception as exc:
        log.warning("get_model_version() raised %s", exc.__class__.__name__)
        return ""
    return version if isinstance(version, str) else ""


def provider_of(model: Any, spec: ModelSpec) -> str:
    try:
        provider = model.get_model_provider_name()
    except Exception:
        return spec.provider
    return provider if isinstance(provider, str) else spec.provider


class TempDirJanitor:
    """mllibprodest leaves a model copy in $TMPDIR on every load; remove what a load added."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir

    def snapshot(self) -> set[str]:
        return {p.name for p in self.tmp_dir.iterdir()} if self.tmp_dir.is_dir() else set()

    def clean_since(self, before: set[str]) -> None:
        for name in self.snapshot() - before:
            path = self.tmp_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class VersionMonitor:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        models: dict[str, Any],
        status: StatusReporter,
        registry: RegistryClient | None,
        janitor: TempDirJanitor,
        on_swap: Callable[[], None],
    ) -> None:
        self.specs = specs
        self.models = models  # shared with the job thread: replacing an entry is the swap
        self.status = status
        self.registry = registry
        self.janitor = janitor
        self.on_swap = on_swap
        self._failed: dict[str, tuple[str, float]] = {}  # model -> (version, when it failed)

    def watched(self) -> list[str]:
        """Models whose instance says it comes from MLflow (a bundle may override params.conf's provider)."""
        return sorted(
            name for name, spec in self.specs.items() if provider_of(self.models[name], spec) == REGISTRY_PROVIDER
        )

    def run(self, interval_s: float, stopping: threading.Event) -> None:
        while not stopping.wait(interval_s):
            self.check_once()

    def check_once(self) -> None:
        swapped = False
        for name in self.watched():
            swapped |= self._check_model(name)
        self.status.publish()
        if swapped:
            self.on_swap()

    def _check_model(self, name: str) -> bool:
        state = self.status.models[name]
        if self.registry is None:
            state.state, state.reason = "error", "MLFLOW_TRACKING_URI is not set"
            return False
        try:
            production = self.registry.production_version(name)
        except RegistryError as exc:
            state.state, state.reason = "error", str(exc)
            return False
        state.production_version = production
        if production is None:
            state.state, state.reason = "error", "no production version in the registry"
            return False
        if production == state.loaded_version:
            state.state, state.reason = "ok", ""
            self._failed.pop(name, None)
            return False
        failed = self._failed.get(name)
        if failed and failed[0] == production and time.monotonic() - failed[1] < FAILED_RETRY_S:
            return False  # keep reporting the load error; retry later
        return self._load(name, production)

    def _load(self, name: str, production: str) -> bool:
        state = self.status.models[name]
        state.state, state.reason = "loading", f"loading v{production}"
        self.status.publish()
        log.info("model %s: production is v%s, loaded v%s; loading", name, production, state.loaded_version)
        before = self.janitor.snapshot()
        try:
            model = instantiate(self.specs[name])
        except Exception as exc:
            self._failed[name] = (production, time.monotonic())
            state.state, state.reason = "error", f"cannot load v{production}: {exc}"
            log.error("model %s: keeping v%s, %s", name, state.loaded_version, state.reason)
            return False
        finally:
            self.janitor.clean_since(before)
        new_version = version_of(model)
        self.models[name] = model
        state.loaded_version = new_version
        if new_version == production:
            state.state, state.reason = "ok", ""
        else:
            state.state, state.reason = "stale", f"production is v{production}"
        log.info("model %s: now serving v%s", name, new_version)
        return True
