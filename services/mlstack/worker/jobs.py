"""One job message, from delivery to verdict: validate, lease, run with a time limit, report.

Every job takes its lease (the API's conditional start) BEFORE its model runs, so a cancelled,
finished or expired job is acked without running, and a job runs on one worker at a time;
a micro-batch takes all its leases in one call (``/worker/jobs/start``).

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

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlstack import messages
from mlstack.broker import ACK, WAIT, Delivery, Outcome, Verdict, queue_name
from mlstack.settings import WorkerSettings
from mlstack.worker.api_client import ApiClient, ApiRejected, ApiUnavailable, retry_api
from mlstack.worker.batch import batchable, split_result
from mlstack.worker.execution import JobResult, ModelRunner
from mlstack.worker.job_message import JobMessage, PoisonMessage, parse_job_message

log = logging.getLogger("mlstack.worker")

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
        if not delivery.redelivered and time.time() > job.datetime + job.ttl_ms / 1000:
            log.info("job %s skipped: expired while queued", job.job_id)  # no API call needed
            return ACK
        # It may have been cancelled, finished, expired, or be running elsewhere: take the lease first.
        try:
            started = self._call(f"start {job.job_id}", lambda: self.api.start(job.job_id, self._wid, self._lease_s))
        except ApiRejected as exc:
            return self._dead_letter(delivery, messages.result_rejected(exc.status), job.job_id, job)
        if started is None:
            return self._retry_later(delivery, job, API_UNREACHABLE)
        refused = self._refused(job.job_id, *started)
        if refused is not None:
            return refused
        with self._leases([job.job_id]):
            result = self.runner.run(model, job.model_name, job.body, self._time_limit(job.model_name))
        return self._report(delivery, job, result, queue_time)

    @staticmethod
    def _refused(job_id: str, run: bool, reason: str) -> Verdict | None:
        """The verdict for a job whose lease the API refused; None when it was granted."""
        if run:
            return None
        if reason == "leased":
            log.info("job %s is leased to another worker; looking again later", job_id)
            return WAIT
        log.info("job %s skipped: %s", job_id, reason)  # cancelled or finished, expired, unknown
        return ACK

    def _time_limit(self, model_name: str) -> float:
        return self.time_limits.get(model_name, self.settings.model_time_limit_s)

    @contextlib.contextmanager
    def _leases(self, job_ids: list[str]) -> Iterator[None]:
        """While the block runs, a thread renews the leases of the (already started) jobs."""
        done = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(job_ids, done), name="lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()  # no renewal lands after the result

    def _keep_lease(self, job_ids: list[str], done: threading.Event) -> None:
        """Renew the leases every third of their length until the jobs end."""
        try:
            while not done.wait(self._lease_s / 3):
                for job_id in job_ids:
                    if not self.api.renew(job_id, self._wid, self._lease_s):
                        log.warning("job %s: lease not renewed (finished or taken over)", job_id)
        except (ApiUnavailable, ApiRejected) as exc:
            log.warning("jobs %s: could not renew the lease: %s", ", ".join(job_ids), exc)
        except Exception:  # this thread must never die silently
            log.exception("jobs %s: lease keeper failed", ", ".join(job_ids))

    # ---- a micro-batch (broker.BatchLimit) ------------------------------------------------------
    def handle_batch(self, deliveries: list[Delivery]) -> list[Verdict]:
        """One verdict per delivery. Fresh ``predict`` jobs with list features share one model call;
        every other message (poison, redelivered, other methods) goes through ``handle`` alone."""
        verdicts: list[Verdict | None] = [None] * len(deliveries)
        group: list[tuple[int, Delivery, JobMessage]] = []
        for index, delivery in enumerate(deliveries):
            try:
                job = parse_job_message(delivery.body)
            except PoisonMessage:
                job = None
            fresh = job is not None and not delivery.redelivered and job.method == "predict"
            if not (fresh and job and queue_name(job.model_name) == delivery.queue and job.model_name in self.models
                    and batchable(job.body.get("features"))):  # fmt: skip
                verdicts[index] = self.handle(delivery)
            elif time.time() > job.datetime + job.ttl_ms / 1000:
                log.info("job %s skipped: expired while queued", job.job_id)
                verdicts[index] = ACK
            else:
                group.append((index, delivery, job))
        if group:
            try:
                for (index, _, _), verdict in zip(group, self._handle_group(group), strict=True):
                    verdicts[index] = verdict
            except Exception as exc:  # a bug: every job of the group is retried later
                log.exception("batch of %d jobs: unexpected error", len(group))
                for index, delivery, job in group:
                    verdicts[index] = self._retry_later(
                        delivery, job, f"erro interno do worker ({exc.__class__.__name__})"
                    )
        return [v if v is not None else ACK for v in verdicts]

    def _handle_group(self, group: list[tuple[int, Delivery, JobMessage]]) -> list[Verdict]:
        """Take every lease in one call, run the granted jobs in one model call, report them together."""
        try:
            answers = self._call(
                f"start of {len(group)} jobs",
                lambda: self.api.start_many([job.job_id for _, _, job in group], self._wid, self._lease_s),
            )
        except ApiRejected as exc:  # e.g. an older API without the batch call: each job alone
            log.warning("the API refused to start a batch of %d jobs (%s); one by one", len(group), exc)
            return [self.handle(delivery) for _, delivery, _ in group]
        if answers is None:
            return [self._retry_later(delivery, job, API_UNREACHABLE) for _, delivery, job in group]
        verdicts: dict[int, Verdict] = {}
        granted: list[tuple[int, Delivery, JobMessage]] = []
        for entry, (run, reason) in zip(group, answers, strict=True):
            refused = self._refused(entry[2].job_id, run, reason)
            if refused is None:
                granted.append(entry)
            else:
                verdicts[entry[0]] = refused
        if granted:
            for (index, _, _), verdict in zip(granted, self._run_group(granted), strict=True):
                verdicts[index] = verdict
        return [verdicts[index] for index, _, _ in group]

    def _run_group(self, group: list[tuple[int, Delivery, JobMessage]]) -> list[Verdict]:
        started = time.time()
        jobs = [job for _, _, job in group]
        model_name = jobs[0].model_name
        model = self.models[model_name]
        limit = self._time_limit(model_name)
        sizes = [len(job.body["features"]) for job in jobs]
        with self._leases([job.job_id for job in jobs]):
            rows = [row for job in jobs for row in job.body["features"]]
            merged = self.runner.run(model, model_name, {"method": "predict", "features": rows}, limit)
            results = split_result(merged, sizes) if len(jobs) > 1 else None
            if results is None:  # raised, timed out, wrong type or length: each job alone, as unbatched
                if len(jobs) > 1:
                    log.info("batch of %d %s jobs not split (%s); running them one by one", len(jobs), model_name,
                             merged.status if merged.status != "Done" else "wrong answer")  # fmt: skip
                    results = [self.runner.run(model, model_name, job.body, limit) for job in jobs]
                else:
                    results = [merged]
        return self._report_group(group, results, started)

    def _report_group(self, group: list[tuple[int, Delivery, JobMessage]], results: list[JobResult],
                      started: float) -> list[Verdict]:  # fmt: skip
        """One API call for the whole group; a refused batch is reported job by job (each its own verdict)."""
        payloads = [
            {"job_id": job.job_id, **self._payload(job, result, started - job.datetime)}
            for (_, _, job), result in zip(group, results, strict=True)
        ]
        try:
            answered = self._call(f"results of {len(group)} jobs", lambda: self.api.results(payloads))
        except ApiRejected as exc:  # e.g. 413 or a response BSON cannot store: find the culprit job by job
            log.warning("the API refused a batch of %d results (%s); reporting them one by one", len(group), exc)
            return [
                self._report(delivery, job, result, started - job.datetime)
                for (_, delivery, job), result in zip(group, results, strict=True)
            ]
        if answered is None:
            return [self._retry_later(delivery, job, API_UNREACHABLE) for _, delivery, job in group]
        for (_, _, job), (accepted, reason) in zip(group, answered, strict=True):
            if not accepted:
                log.info("result of job %s not applied: %s", job.job_id, reason)
        return [ACK] * len(group)

    @staticmethod
    def _payload(job: JobMessage, result: JobResult, queue_time: float) -> dict[str, Any]:
        return {
            "status": result.status,
            "response": result.response,
            "model_version": result.model_version,
            "queue_response_time_sec": queue_time,
            "method": job.method,
            "datetime": job.datetime,
            "model_name": job.model_name,  # labels the API's latency figures (/metrics)
        }

    def _report(self, delivery: Delivery, job: JobMessage, result: JobResult, queue_time: float) -> Verdict:
        payload = self._payload(job, result, queue_time)
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
