"""Prometheus figures of the API (prometheus_client; multiprocess mode under gunicorn).

Under gunicorn every worker process writes its counters to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` (set by gunicorn_conf before any worker starts), and ``/metrics``
merges them. Run without that variable (a single uvicorn process, the unit tests) the default
in-process registry is used. Updating a figure is a dict lookup and an add: cheap on the hot path.

Label values come from a bounded set: the method is one of the contract's or ``other``, and a
model that no worker serves is counted under ``model=""`` (a client could otherwise send
endless names and grow the series without bound).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlstack import messages

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client picks its value storage when imported (just above): files in multiprocess mode.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
METHODS = frozenset({"predict", "evaluate", "info", "get_feedback"})
# Job latencies: from a millisecond (an echo model) to the default job TTL (90 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90)
CONFIRM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

JOBS_ACCEPTED = Counter("mlstack_jobs_accepted", "Jobs queued by the API", ["model", "method"])
JOBS_REFUSED = Counter("mlstack_jobs_refused", "Jobs the API refused, by reason", ["model", "method", "reason"])
JOBS_FINISHED = Counter("mlstack_jobs_finished", "Job results stored", ["model", "method", "status"])
JOBS_CANCELLED = Counter("mlstack_jobs_cancelled", "Jobs cancelled by clients", ["model", "method"])
QUEUE_SECONDS = Histogram(
    "mlstack_job_queue_seconds", "Submit to worker pick-up", ["model", "method"], buckets=LATENCY_BUCKETS
)
RUN_SECONDS = Histogram(
    "mlstack_job_run_seconds", "Worker pick-up to result", ["model", "method"], buckets=LATENCY_BUCKETS
)
TOTAL_SECONDS = Histogram(
    "mlstack_job_total_seconds", "Submit to result stored (Done or Error)", ["model", "method"], buckets=LATENCY_BUCKETS
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "mlstack_publish_confirm_seconds", "Publish to broker confirm", buckets=CONFIRM_BUCKETS
)
GET_FEEDBACK_CALLS = Counter("mlstack_get_feedback_calls", "get_feedback requests", ["model", "outcome"])


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def refusal_reason(response: str, status_code: int = 200) -> str:
    """A refusal's reason from its contract text (only refusals pay for this)."""
    if response == messages.MODEL_NOT_FOUND:
        return "model_not_found"
    if response == messages.BROKER_UNREACHABLE:
        return "broker_unreachable"
    if response == messages.DB_JOB_CREATE_FAILED:
        return "database"
    if response.startswith("Não foi possível enviar o job para a fila porque não há workers"):
        return "no_workers"
    if response.startswith("A fila do modelo"):
        return "queue_full"
    if response.startswith(("O intervalo entre feedbacks", "O intervalo global")):
        return "rate_limited"
    return "invalid_request"


def job_accepted(model: str, method: str) -> None:
    JOBS_ACCEPTED.labels(model, method_label(method)).inc()


def job_refused(model: str, method: str, reason: str) -> None:
    JOBS_REFUSED.labels("" if reason == "model_not_found" else model, method_label(method), reason).inc()


# Children of the per-result figures by (model, method): ``labels()`` costs as much as an update.
_FINISHED_CHILDREN: dict[tuple[str, str], tuple[Any, Any, Any, Any, Any]] = {}
MAX_CACHED_CHILDREN = 1000


def _finished_children(model: str, method: str) -> tuple[Any, Any, Any, Any, Any]:
    key = (model, method)
    children = _FINISHED_CHILDREN.get(key)
    if children is None:
        children = (
            JOBS_FINISHED.labels(model, method, "Done"),
            JOBS_FINISHED.labels(model, method, "Error"),
            QUEUE_SECONDS.labels(model, method),
            RUN_SECONDS.labels(model, method),
            TOTAL_SECONDS.labels(model, method),
        )
        if len(_FINISHED_CHILDREN) < MAX_CACHED_CHILDREN:
            _FINISHED_CHILDREN[key] = children
    return children


def job_finished(model: str, method: str, status: str, queue_s: float, total_s: float) -> None:
    method = method_label(method)
    done, error, queue, run, total = _finished_children(model, method)
    if status == "Done":
        done.inc()
    elif status == "Error":
        error.inc()
    if total_s >= 0:
        total.observe(total_s)
        if 0 <= queue_s <= total_s:
            queue.observe(queue_s)
            run.observe(total_s - queue_s)


# ---- figures read at scrape time (queue depth, consumers, workers) ------------------------------
@dataclass
class WorkerFigure:
    worker_id: str
    loaded_version: str
    production_version: str
    state: str


@dataclass
class ModelFigures:
    model: str
    queued: int
    consumers: int | None  # None: the broker did not answer
    workers: list[WorkerFigure] = field(default_factory=list)


class _SnapshotCollector(Collector):
    def __init__(self, models: Iterable[ModelFigures]) -> None:
        self.models = list(models)

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("mlstack_queue_depth", "Jobs still Queued, per model", labels=["model"])
        consumers = GaugeMetricFamily(
            "mlstack_queue_consumers", "Workers consuming the model's queue", labels=["model"]
        )
        workers = GaugeMetricFamily(
            "mlstack_worker_info",
            "Workers per model with their loaded and production version (1 = heard from lately)",
            labels=["model", "worker", "loaded_version", "production_version", "state"],
        )
        for m in self.models:
            queued.add_metric([m.model], m.queued)
            if m.consumers is not None:
                consumers.add_metric([m.model], m.consumers)
            for w in m.workers:
                workers.add_metric([m.model, w.worker_id, w.loaded_version, w.production_version, w.state], 1)
        yield from (queued, consumers, workers)


def exposition(models: Iterable[ModelFigures]) -> bytes:
    """The text a scrape gets: every process's counters plus figures read now."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_SnapshotCollector(models))
    return body + generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters stay, as they should)."""
    if os.environ.get(MULTIPROC_ENV):  # the master's environment (set by gunicorn_conf.on_starting)
        multiprocess.mark_process_dead(pid)
