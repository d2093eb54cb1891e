"""Keeps each served model on the version MLflow's ``production`` alias points to.

Every check interval the monitor asks the registry for the production version of
each MLflow-provided model. When it differs from the loaded one, it builds a new
model instance in this (background) thread and swaps it in: jobs already running
finish on the old instance, the next ones get the new one. Every successful load is
kept on disk (``lastgood``) so that a restarted worker can serve it when production
cannot be loaded. States (services/DESIGN.md): a failed load keeps the old version
serving and reports ``degraded``; an unreachable registry reports ``unknown`` and
changes nothing.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlstack.registry import RegistryClient, RegistryError, RegistryUnreachable
from mlstack.worker.bundle import BundleError, ModelSpec, instantiate
from mlstack.worker.lastgood import LastGoodStore
from mlstack.worker.status import DEGRADED, LOADING, OK, STALE, UNKNOWN, StatusReporter

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


def load_at_start(specs: dict[str, ModelSpec], store: LastGoodStore) -> tuple[dict[str, Any], dict[str, str]]:
    """Instantiate every model; one that cannot load serves its last-good copy instead.

    Returns the models and, for those served from a last-good copy, why. Raises BundleError only
    when a model can neither load nor fall back: then the worker has nothing to serve.
    """
    models: dict[str, Any] = {}
    fallbacks: dict[str, str] = {}
    for name, spec in specs.items():
        try:
            model = instantiate(spec)
        except BundleError as exc:
            kept = store.load(name)
            if kept is None:
                raise BundleError(f"{exc}; no last-good copy to serve instead") from exc
            saved = datetime.fromtimestamp(kept.saved_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            fallbacks[name] = f"serving last-good v{kept.version} (kept {saved}): production did not load: {exc}"
            log.error("model %s: %s", name, fallbacks[name])
            models[name] = kept.model
        else:
            models[name] = model
            store.save(name, model, version_of(model))
    return models, fallbacks


class VersionMonitor:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        models: dict[str, Any],
        status: StatusReporter,
        registry: RegistryClient | None,
        janitor: TempDirJanitor,
        on_swap: Callable[[], None],
        store: LastGoodStore | None = None,
    ) -> None:
        self.specs = specs
        self.models = models  # shared with the job thread: replacing an entry is the swap
        self.status = status
        self.registry = registry
        self.janitor = janitor
        self.on_swap = on_swap
        self.store = store
        self._failed: dict[str, tuple[str, float, str]] = {}  # model -> (version, when it failed, why)
        self._fallback: dict[str, str] = {}  # model -> why it serves a last-good copy
        watched = set(self.watched())
        for name, state in status.models.items():
            state.watched = name in watched
            if not state.watched:
                state.set(OK)  # nothing to follow: what loaded is what serves

    def serving_last_good(self, fallbacks: dict[str, str]) -> None:
        """Models that serve a last-good copy since start: ``degraded`` until production loads."""
        for name, reason in fallbacks.items():
            self._fallback[name] = reason
            self.status.models[name].set(DEGRADED, reason)

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

    def _unknown(self, name: str, why: str) -> None:
        """The registry cannot say what production is: keep serving, restart nothing."""
        state = self.status.models[name]
        if name in self._fallback:
            state.set(DEGRADED, f"{self._fallback[name]}; registry: {why}")
        else:
            state.set(UNKNOWN, why)

    def _check_model(self, name: str) -> bool:
        state = self.status.models[name]
        state.checked_at = time.time()
        if self.registry is None:
            self._unknown(name, "MLFLOW_TRACKING_URI is not set")
            return False
        try:
            production = self.registry.production_version(name)
        except RegistryUnreachable as exc:
            self._unknown(name, str(exc))
            return False
        except RegistryError as exc:
            self._unknown(name, f"the registry did not answer: {exc}")
            return False
        state.production_version = production
        if production is None:
            state.set(DEGRADED, f"no production version in the registry; serving v{state.loaded_version}")
            return False
        if production == state.loaded_version:
            state.set(OK)
            self._failed.pop(name, None)
            self._fallback.pop(name, None)
            return False
        failed = self._failed.get(name)
        if failed and failed[0] == production and time.monotonic() - failed[1] < FAILED_RETRY_S:
            state.set(DEGRADED, failed[2])  # keep reporting the load error; retry later
            return False
        return self._load(name, production)

    def _load(self, name: str, production: str) -> bool:
        state = self.status.models[name]
        state.set(LOADING, f"loading v{production}")
        self.status.publish()
        log.info("model %s: production is v%s, loaded v%s; loading", name, production, state.loaded_version)
        before = self.janitor.snapshot()
        try:
            model = instantiate(self.specs[name])
        except Exception as exc:
            serving = "last-good " if name in self._fallback else ""
            reason = f"cannot load v{production}: {exc}; serving {serving}v{state.loaded_version}"
            self._failed[name] = (production, time.monotonic(), reason)
            state.set(DEGRADED, reason)
            log.error("model %s: %s", name, reason)
            return False
        finally:
            self.janitor.clean_since(before)
        new_version = version_of(model)
        self.models[name] = model
        self._fallback.pop(name, None)
        state.loaded_version = new_version
        if new_version == production:
            state.set(OK)
        else:
            state.set(STALE, f"loaded v{new_version}, production is v{production}")
        log.info("model %s: now serving v%s", name, new_version)
        if self.store is not None:
            self.store.save(name, model, new_version)
        return True
