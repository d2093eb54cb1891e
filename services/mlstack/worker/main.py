"""Pub worker: serves a bundle's models from their queues, reports results to the API, acks late."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from mlstack.broker import JobConsumer, QueueTypeMismatch
from mlstack.logging_setup import configure_logging
from mlstack.params_conf import ParamsConfError, read_params_conf
from mlstack.registry import RegistryClient
from mlstack.settings import SettingsError, WorkerSettings
from mlstack.worker.api_client import ApiClient, ApiRejected, ApiUnavailable, retry_api
from mlstack.worker.batch import batch_limits
from mlstack.worker.bundle import BundleError, ModelSpec, enter_workdir, pub_specs
from mlstack.worker.jobs import JobHandler
from mlstack.worker.lastgood import LastGoodStore
from mlstack.worker.status import ModelState, StatusReporter, sd_notify, watchdog_interval_s
from mlstack.worker.versions import TempDirJanitor, VersionMonitor, load_at_start, version_of

log = logging.getLogger("mlstack.worker")

# Last-good model copies (mlstack.worker.lastgood), inside the state dir.
LAST_GOOD_DIR = "last-good"
# params.conf key of a model's own time limit (seconds); MLSTACK_MODEL_TIME_LIMIT_S otherwise.
TIME_LIMIT_KEY = "time_limit_s"
# Exit status when a model call stays stuck past its grace period: systemd restarts the unit.
EXIT_MODEL_WEDGED = 70
# Exit status when a queue exists with the other type (classic vs quorum): an operator must act
# (EX_CONFIG; systemd's restarts would only repeat the message).
EXIT_QUEUE_TYPE_MISMATCH = 78
# The consuming loop turns at least every second; older than this, it is not making progress.
LOOP_STALL_S = 10.0


class PubWorker:
    def __init__(self, settings: WorkerSettings, specs: dict[str, ModelSpec], models: dict[str, Any]) -> None:
        self.settings = settings
        self.models = models
        self.api = ApiClient(settings.api_url, settings.worker_token)
        self.status = StatusReporter(settings.worker_id, settings.state_dir, settings.systemd_unit)
        self.status.models = {name: ModelState(loaded_version=version_of(m)) for name, m in models.items()}
        self.stopping = threading.Event()
        self.consumer: JobConsumer | None = None
        self.exit_code = 0
        self.jobs = JobHandler(settings, self.api, models, model_time_limits(settings), self.stopping)
        registry = settings.registry
        self.monitor = VersionMonitor(
            specs,
            models,
            self.status,
            RegistryClient(registry.url, registry.username, registry.password) if registry else None,
            TempDirJanitor(settings.state_dir / "tmp"),
            on_swap=self._announce_versions,
            store=LastGoodStore(settings.state_dir / LAST_GOOD_DIR),
        )

    @property
    def announced_models(self) -> list[dict[str, str]]:
        """What the heartbeat tells the API per model (operators see it on /dashboard and /metrics)."""
        return [
            {
                "name": name,
                "version": state.loaded_version,
                "production_version": state.production_version or "",
                "state": state.state,
            }
            for name, state in sorted(self.status.models.items())
        ]

    def _announce_versions(self) -> None:
        try:
            self.api.register(self.settings.worker_id, self.announced_models)
        except (ApiUnavailable, ApiRejected) as exc:
            log.warning("could not announce the new model versions: %s", exc)

    def register(self) -> dict[str, str]:
        """Retry while the API is unreachable: a worker is of no use before it knows its queues."""
        while not self.stopping.is_set():
            call = lambda: self.api.register(self.settings.worker_id, self.announced_models)  # noqa: E731
            queues = retry_api("register", call, 60, self.stopping)
            if queues is not None:
                return queues
        raise SystemExit(0)

    # ---- lifecycle -------------------------------------------------------------------
    def heartbeat(self) -> None:
        watchdog = watchdog_interval_s()
        interval = min(self.settings.heartbeat_interval_s, watchdog) if watchdog else self.settings.heartbeat_interval_s
        interval = min(interval, 1.0 + self.settings.model_grace_s)  # notice a wedged model in time
        last_register = time.monotonic()
        while not self.stopping.wait(interval):
            self._check_wedged()
            if watchdog and self.making_progress():
                sd_notify("WATCHDOG=1")
            if time.monotonic() - last_register >= self.settings.heartbeat_interval_s:
                last_register = time.monotonic()
                self.status.publish()  # refreshes updated_at: `mlstack health` spots dead workers
                try:
                    self.api.register(self.settings.worker_id, self.announced_models)
                except (ApiUnavailable, ApiRejected) as exc:
                    log.warning("heartbeat failed: %s", exc)

    def making_progress(self) -> bool:
        """The job loop turns and no model call is stuck past its grace period: only then is systemd's
        watchdog fed. (Within the grace period the worker still serves jobs: that is progress.)"""
        consumer = self.consumer
        loop_alive = consumer is None or time.monotonic() - consumer.last_tick < LOOP_STALL_S
        return loop_alive and self.jobs.runner.wedged_for() <= self.settings.model_grace_s

    def _check_wedged(self) -> None:
        """A model call abandoned at its time limit and still running after the grace period: exit, so
        systemd restarts the worker (a Python thread cannot be killed). Other jobs were served meanwhile."""
        stuck_for = self.jobs.runner.wedged_for()
        if stuck_for > self.settings.model_grace_s and not self.stopping.is_set():
            log.critical("a model call is still stuck %.0fs after its time limit; exiting to be restarted", stuck_for)
            self.exit_code = EXIT_MODEL_WEDGED
            self.stop()

    def run(self) -> None:
        self.monitor.check_once()  # learn the production versions before saying READY
        queues = self.register()
        self.status.publish(ready=True)
        log.info("worker %s serving %s", self.settings.worker_id, ", ".join(sorted(self.models)))
        batching = batch_limits(self.settings, list(self.models))
        for queue, limit in sorted(batching.items()):
            log.info("%s: micro-batches of up to %d jobs, waiting at most %g ms", queue, limit.max_batch,
                     limit.max_wait_s * 1000)  # fmt: skip
        # Room for the next batch to arrive while one runs.
        prefetch = max([self.settings.prefetch, *(2 * limit.max_batch for limit in batching.values())])
        self.consumer = JobConsumer(
            self.settings.broker.amqp_urls,
            [queues[name] for name in self.models],
            self.jobs.handle,
            prefetch,
            queue_max_length=self.settings.broker.queue_max_length,
            max_attempts=self.settings.max_attempts,
            name=f"mlstack-worker {self.settings.worker_id}",
            batch_handler=self.jobs.handle_batch,
            batch_limits=batching,
            queue_type=self.settings.broker.queue_type,
        )
        guarded_thread("heartbeat", self.heartbeat, self.stopping)
        if self.monitor.watched():
            guarded_thread(
                "versions", lambda: self.monitor.run(self.settings.version_check_s, self.stopping), self.stopping
            )
        self.consumer.run()

    def stop(self) -> None:
        sd_notify("STOPPING=1")
        self.stopping.set()
        if self.consumer is not None:
            self.consumer.stop()


def guarded_thread(name: str, loop: Callable[[], None], stopping: threading.Event) -> threading.Thread:
    """Run ``loop`` in a daemon thread; an exception is logged and the loop restarted, never lost."""

    def run() -> None:
        while not stopping.is_set():
            try:
                loop()
                return
            except Exception:
                log.exception("thread %s failed; restarting it in 5s", name)
                stopping.wait(5.0)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def model_time_limits(settings: WorkerSettings) -> dict[str, float]:
    """Per-model time limits from params.conf (key ``time_limit_s``); a bad value is reported and ignored."""
    try:
        sections = read_params_conf(settings.bundle_dir)
    except ParamsConfError:
        return {}
    limits: dict[str, float] = {}
    for name, section in sections.items():
        raw = section.get(TIME_LIMIT_KEY, "").strip()
        if not raw:
            continue
        try:
            limits[name] = float(raw)
            if not limits[name] > 0:
                raise ValueError(raw)
        except ValueError:
            limits.pop(name, None)
            log.error("params.conf [%s] %s=%r is not a positive number; using %gs", name, TIME_LIMIT_KEY, raw,
                      settings.model_time_limit_s)  # fmt: skip
    return limits


def _prepare_process(settings: WorkerSettings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.state_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    # mllibprodest leaves a model copy in $TMPDIR on every load: keep those in our own folder.
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    # Without this, importing mllibprodest writes ./logs/ and fails on a read-only directory.
    os.environ.setdefault("STACK_LOG_OUTPUT", "console")
    # MLflow's client retries a failing download 7 times with backoff (about 4 minutes) before a
    # broken model version is reported; a worker should say so within seconds and keep serving.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def main() -> None:
    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(f"mlstack-worker: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level)
    _prepare_process(settings)
    janitor = TempDirJanitor(settings.state_dir / "tmp")
    before = janitor.snapshot()
    try:
        specs = pub_specs(settings.bundle_dir)
        # Say `loading` while the models load, so that `mlstack health` does not take a slow start for dead.
        starting = StatusReporter(settings.worker_id, settings.state_dir, settings.systemd_unit)
        starting.models = {name: ModelState(loaded_version="", reason="starting") for name in specs}
        starting.publish()
        enter_workdir(settings.bundle_dir, settings.state_dir / "work")
        # A model that cannot load production (registry down, broken version) serves its last-good copy.
        models, fallbacks = load_at_start(specs, LastGoodStore(settings.state_dir / LAST_GOOD_DIR))
    except BundleError as exc:
        print(f"mlstack-worker: {exc}", file=sys.stderr)
        sys.exit(3)
    finally:
        janitor.clean_since(before)
    configure_logging(settings.log_level)  # model libraries (mllibprodest) reconfigure the root logger
    worker = PubWorker(settings, specs, models)
    worker.monitor.serving_last_good(fallbacks)  # `degraded` with the reason until production loads
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    try:
        worker.run()
    except QueueTypeMismatch as exc:
        log.critical("%s; exiting", exc)
        worker.exit_code = EXIT_QUEUE_TYPE_MISMATCH
        worker.stop()
    finally:
        try:
            worker.api.deregister(settings.worker_id)
        except (ApiUnavailable, ApiRejected):
            log.warning("could not deregister from the API")
    log.info("worker %s stopped", settings.worker_id)
    if worker.exit_code:
        sys.exit(worker.exit_code)
