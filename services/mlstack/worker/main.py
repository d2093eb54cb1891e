"""Pub worker: serves a bundle's models from their queues, reports results to the API, acks late."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any

from mlstack.broker import Delivery, JobConsumer, Outcome
from mlstack.logging_setup import configure_logging
from mlstack.registry import RegistryClient
from mlstack.settings import SettingsError, WorkerSettings
from mlstack.worker.api_client import ApiClient, ApiRejected, ApiUnavailable
from mlstack.worker.bundle import BundleError, ModelSpec, enter_workdir, pub_specs
from mlstack.worker.execution import JobResult, run_job
from mlstack.worker.lastgood import LastGoodStore
from mlstack.worker.status import ModelState, StatusReporter, sd_notify, watchdog_interval_s
from mlstack.worker.versions import TempDirJanitor, VersionMonitor, load_at_start, version_of

log = logging.getLogger("mlstack.worker")

# Last-good model copies (mlstack.worker.lastgood), inside the state dir.
LAST_GOOD_DIR = "last-good"
# A job still running after this long is reported as Running (see _run_reporting_running).
RUNNING_REPORT_DELAY_S = 0.05


class PubWorker:
    def __init__(self, settings: WorkerSettings, specs: dict[str, ModelSpec], models: dict[str, Any]) -> None:
        self.settings = settings
        self.models = models
        self.api = ApiClient(settings.api_url, settings.worker_token)
        self.status = StatusReporter(settings.worker_id, settings.state_dir, settings.systemd_unit)
        self.status.models = {name: ModelState(loaded_version=version_of(m)) for name, m in models.items()}
        self.stopping = threading.Event()
        self.consumer: JobConsumer | None = None
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
    def versions(self) -> dict[str, str]:
        return {name: state.loaded_version for name, state in self.status.models.items()}

    def _announce_versions(self) -> None:
        try:
            self.api.register(self.settings.worker_id, self.versions)
        except (ApiUnavailable, ApiRejected) as exc:
            log.warning("could not announce the new model versions: %s", exc)

    # ---- API calls that must eventually succeed ---------------------------------------
    def _retry(self, what: str, call: Any, deadline_s: float) -> Any:
        """Retry while the API is unreachable; None when the deadline passed or we are stopping."""
        delay, give_up = 0.2, time.monotonic() + deadline_s
        while True:
            try:
                return call()
            except ApiUnavailable as exc:
                if time.monotonic() > give_up or self.stopping.is_set():
                    log.error("%s: API unreachable, giving up for now (%s)", what, exc)
                    return None
                log.warning("%s: API unreachable (%s); retrying in %.1fs", what, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def register(self) -> dict[str, str]:
        while not self.stopping.is_set():
            queues = self._retry("register", lambda: self.api.register(self.settings.worker_id, self.versions), 60)
            if queues is not None:
                return queues  # type: ignore[no-any-return]
        raise SystemExit(0)

    # ---- one job -----------------------------------------------------------------------
    def handle(self, delivery: Delivery) -> Outcome:
        try:
            message = json.loads(delivery.body)
            job_id, model_name = str(message["job_id"]), str(message["model_name"])
        except (ValueError, KeyError, TypeError):
            log.error("dropping a malformed message from %s", delivery.queue)
            return Outcome.ACK
        model = self.models.get(model_name)
        if model is None:  # cannot happen with per-model queues, but never lose the job over it
            log.error("job %s is for model %s, which this worker does not serve", job_id, model_name)
            return Outcome.REQUEUE
        created = float(message.get("datetime", time.time()))
        queue_time = time.time() - created
        if delivery.redelivered:
            # A redelivered job may have finished (or expired) already: ask the API before running it.
            may_run = self._may_run(job_id)
            if may_run is None:
                return Outcome.REQUEUE  # the API is unreachable: keep the job for later
            if not may_run:
                return Outcome.ACK
            result = run_job(model, model_name, message)
        else:
            if time.time() > created + float(message.get("ttl_ms", 0)) / 1000:
                log.info("job %s skipped: expired while queued", job_id)
                return Outcome.ACK
            result = self._run_reporting_running(model, model_name, job_id, message)
        payload = {
            "status": result.status,
            "response": result.response,
            "model_version": result.model_version,
            "queue_response_time_sec": queue_time,
            "method": message.get("method", ""),
            "datetime": message.get("datetime"),
        }
        answered = self._retry(
            f"result {job_id}", lambda: self.api.result(job_id, payload), self.settings.result_retry_s
        )
        if answered is None:
            return Outcome.REQUEUE  # the API never got it: another try (here or elsewhere) will
        accepted, reason = answered
        if not accepted:
            log.info("result of job %s not applied: %s", job_id, reason)
        return Outcome.ACK

    def _may_run(self, job_id: str) -> bool | None:
        """Marks the job Running if it may run; None when the API cannot be reached."""
        wid = self.settings.worker_id
        started = self._retry(f"start {job_id}", lambda: self.api.start(job_id, wid), self.settings.result_retry_s)
        if started is None:
            return None
        run, reason = started
        if not run:
            log.info("job %s skipped: %s", job_id, reason)
        return run

    def _run_reporting_running(self, model: Any, model_name: str, job_id: str, message: dict[str, Any]) -> JobResult:
        """Run a first-delivery job; tell the API it is Running only if it lasts long enough to be seen.

        Most jobs take a millisecond: reporting Running for them would cost the API a write per job
        that no client can observe. The result itself is applied only if the job has not expired.
        """
        wid = self.settings.worker_id
        timer = threading.Timer(RUNNING_REPORT_DELAY_S, self._report_running, args=(job_id, wid))
        timer.daemon = True
        timer.start()
        try:
            return run_job(model, model_name, message)
        finally:
            timer.cancel()
            timer.join()  # the Running report, if sent, lands before the result

    def _report_running(self, job_id: str, worker_id: str) -> None:
        try:
            self.api.start(job_id, worker_id)
        except (ApiUnavailable, ApiRejected) as exc:
            log.warning("could not report job %s as Running: %s", job_id, exc)

    # ---- lifecycle -------------------------------------------------------------------
    def heartbeat(self) -> None:
        watchdog = watchdog_interval_s()
        interval = min(self.settings.heartbeat_interval_s, watchdog) if watchdog else self.settings.heartbeat_interval_s
        last_register = time.monotonic()
        while not self.stopping.wait(interval):
            if watchdog:
                sd_notify("WATCHDOG=1")
            if time.monotonic() - last_register >= self.settings.heartbeat_interval_s:
                last_register = time.monotonic()
                self.status.publish()  # refreshes updated_at: `mlstack health` spots dead workers
                try:
                    self.api.register(self.settings.worker_id, self.versions)
                except (ApiUnavailable, ApiRejected) as exc:
                    log.warning("heartbeat failed: %s", exc)

    def run(self) -> None:
        self.monitor.check_once()  # learn the production versions before saying READY
        queues = self.register()
        self.status.publish(ready=True)
        log.info("worker %s serving %s", self.settings.worker_id, ", ".join(sorted(self.models)))
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        if self.monitor.watched():
            threading.Thread(
                target=self.monitor.run,
                args=(self.settings.version_check_s, self.stopping),
                name="versions",
                daemon=True,
            ).start()
        self.consumer = JobConsumer(
            self.settings.broker.amqp_url, [queues[name] for name in self.models], self.handle, self.settings.prefetch
        )
        self.consumer.run()

    def stop(self) -> None:
        sd_notify("STOPPING=1")
        self.stopping.set()
        if self.consumer is not None:
            self.consumer.stop()


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
    finally:
        try:
            worker.api.deregister(settings.worker_id)
        except (ApiUnavailable, ApiRejected):
            log.warning("could not deregister from the API")
    log.info("worker %s stopped", settings.worker_id)
