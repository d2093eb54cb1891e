"""One job message, from delivery to verdict: validate, lease, run with a time limit, report.

Failure policy (services/DESIGN.md, "Worker failure handling"):
- a message that can never run (not JSON, missing or bad fields, wrong queue) and a result
  the API refuses (4xx) are dead-lettered at once; the job, when the message names one,
  ends ``Error`` with ``messages.worker_cannot_process``;
- a transient failure (the API unreachable or answering 5xx, an unexpected exception) is
  retried after the broker's retry delay, at most ``max_attempts`` times, then dead-lettered;
- a job another worker holds the lease of waits (re-checked after the retry delay, not counted):
  it ends when that worker reports, or runs here once the lease expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mlstack import messages
from mlstack.broker import ACK, WAIT, Delivery, Outcome, Verdict, queue_name
from mlstack.settings import WorkerSettings
from mlstack.worker.api_client import ApiClient, ApiRejected, ApiUnavailable, retry_api
from mlstack.worker.execution import JobResult, ModelRunner
from mlstack.worker.job_message import JobMessage, PoisonMessage, parse_job_message

log = logging.getLogger("mlstack.worker")

# A first-delivery job still running after this long is reported Running (and leased): most jobs
# take a millisecond, and a Running write for them would cost the API a write no client can observe.
RUNNING_REPORT_DELAY_S = 0.05
# How long to try telling the API that a job cannot run (the message is dead-lettered either way).
REPORT_FAILURE_DEADLINE_S = 10.0
API_UNREACHABLE = "a API do mlstack não respondeu"


class JobHandler:
    def __init__(
        self,
        settings: WorkerSettings,
        api: ApiClient,
        models: dict[str, Any],
        time_limits: dict[str, float],
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.api = api
        self.models = models  # shared with the version monitor, which swaps instances in
        self.time_limits = time_limits
        self.stopping = stopping
        self.runner = ModelRunner()

    def handle(self, delivery: Delivery) -> Verdict:
        try:
            job = parse_job_message(delivery.body)
            model = self.models.get(job.model_name)
            if model is None or queue_name(job.model_name) != delivery.queue:
                raise PoisonMessage(messages.poison_wrong_queue(job.model_name, delivery.queue), job.job_id)
        except PoisonMessage as exc:
            return self._dead_letter(delivery, exc.reason, exc.job_id, None)
        try:
            return self._handle(delivery, job, model)
        except Exception as exc:  # a bug: retried a bounded number of times, not in a hot loop
            log.exception("job %s: unexpected error", job.job_id)
            return self._retry_later(delivery, job, f"erro interno do worker ({exc.__class__.__name__})")

    # ---- one valid message -------------------------------------------------------------------
    def _handle(self, delivery: Delivery, job: JobMessage, model: Any) -> Verdict:
        queue_time = time.time() - job.datetime
        if delivery.redelivered:
            # It may have finished, expired, or be running elsewhere: take the lease first.
            try:
                started = self._call(
                    f"start {job.job_id}", lambda: self.api.start(job.job_id, self._wid, self._lease_s)
                )
            except ApiRejected as exc:
                return self._dead_letter(delivery, messages.result_rejected(exc.status), job.job_id, job)
            if started is None:
                return self._retry_later(delivery, job, API_UNREACHABLE)
            run, reason = started
            if not run:
                if reason == "leased":
                    log.info("job %s is leased to another worker; looking again later", job.job_id)
                    return WAIT
                log.info("job %s skipped: %s", job.job_id, reason)
                return ACK
            result = self._execute(job, model, report_running=False)
        else:
            if time.time() > job.datetime + job.ttl_ms / 1000:
                log.info("job %s skipped: expired while queued", job.job_id)
                return ACK
            result = self._execute(job, model, report_running=True)
        return self._report(delivery, job, result, queue_time)

    def _execute(self, job: JobMessage, model: Any, report_running: bool) -> JobResult:
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keep_lease, args=(job.job_id, done, report_running), name="lease", daemon=True
        )
        keeper.start()
        try:
            limit = self.time_limits.get(job.model_name, self.settings.model_time_limit_s)
            return self.runner.run(model, job.model_name, job.body, limit)
        finally:
            done.set()
            keeper.join()  # the Running report, if sent, lands before the result

    def _keep_lease(self, job_id: str, done: threading.Event, report_running: bool) -> None:
        """Report Running (taking the lease) once the job lasts, then renew the lease until it ends."""
        try:
            if report_running:
                if done.wait(RUNNING_REPORT_DELAY_S):
                    return
                run, reason = self.api.start(job_id, self._wid, self._lease_s)
                if not run:  # e.g. leased: a redelivered copy started elsewhere first (DESIGN.md, the 50 ms limit)
                    log.warning("job %s: running here, but the API says %s", job_id, reason)
            while not done.wait(self._lease_s / 3):
                if not self.api.renew(job_id, self._wid, self._lease_s):
                    log.warning("job %s: lease not renewed (finished or taken over)", job_id)
        except (ApiUnavailable, ApiRejected) as exc:
            log.warning("job %s: could not report Running or renew the lease: %s", job_id, exc)
        except Exception:  # this thread must never die silently
            log.exception("job %s: lease keeper failed", job_id)

    def _report(self, delivery: Delivery, job: JobMessage, result: JobResult, queue_time: float) -> Verdict:
        payload = {
            "status": result.status,
            "response": result.response,
            "model_version": result.model_version,
            "queue_response_time_sec": queue_time,
            "method": job.method,
            "datetime": job.datetime,
        }
        try:
            answered = self._call(f"result {job.job_id}", lambda: self.api.result(job.job_id, payload))
        except ApiRejected as exc:  # e.g. 413: the response is over the API's body limit
            log.error("job %s: the API refused the result (%s)", job.job_id, exc)
            return self._dead_letter(delivery, messages.result_rejected(exc.status), job.job_id, job)
        if answered is None:
            return self._retry_later(delivery, job, API_UNREACHABLE)
        accepted, reason = answered
        if not accepted:
            log.info("result of job %s not applied: %s", job.job_id, reason)
        return ACK

    # ---- failures --------------------------------------------------------------------------------
    def _retry_later(self, delivery: Delivery, job: JobMessage, reason: str) -> Verdict:
        attempts = delivery.attempt + 1
        if attempts < self.settings.max_attempts:
            log.warning("job %s: %s; retrying later (attempt %d of %d)", job.job_id, reason, attempts,
                        self.settings.max_attempts)  # fmt: skip
            return Verdict(Outcome.RETRY, reason)
        return self._dead_letter(delivery, messages.retries_exhausted(reason, attempts), job.job_id, job)

    def _dead_letter(self, delivery: Delivery, reason: str, job_id: str | None, job: JobMessage | None) -> Verdict:
        """One log line, the job ended Error when the message names one, the message to mlstack.dead."""
        log.error("dead-lettering a message from %s (job %s): %s", delivery.queue, job_id or "-", reason)
        if job_id is not None:
            payload = {
                "status": "Error",
                "response": messages.worker_cannot_process(reason),
                "model_version": "",
                "queue_response_time_sec": time.time() - job.datetime if job else -1.0,
                "method": job.method if job else "",
                "datetime": job.datetime if job else None,
            }
            try:
                retry_api(
                    f"error of job {job_id}",
                    lambda: self.api.result(job_id, payload),
                    REPORT_FAILURE_DEADLINE_S,
                    self.stopping,
                )
            except ApiRejected as exc:
                log.error("job %s: the API refused its Error result too (%s)", job_id, exc)
        return Verdict(Outcome.DEAD, reason)

    # ---- helpers ------------------------------------------------------------------------------------
    @property
    def _wid(self) -> str:
        return self.settings.worker_id

    @property
    def _lease_s(self) -> float:
        return self.settings.lease_s

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        return retry_api(what, call, self.settings.result_retry_s, self.stopping)
