"""What operators see: per model, its workers, queue and the last hour of jobs.

Read from the job store and the broker, so every API process and host shows the same picture
(Prometheus counters are per host). Used by ``/dashboard/data`` and by ``/metrics``' gauges.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mlstack.api.services import Services
from mlstack.broker import BrokerUnavailable
from mlstack.metrics import ModelFigures, WorkerFigure

WINDOW_S = 3600
BUCKET_S = 60
# At most this many of a model's newest jobs are charted (a busy hour is sampled from its end).
RECENT_LIMIT = 20_000
# A worker re-registers every MLSTACK_HEARTBEAT_INTERVAL_S (15 s by default): silent after this.
SILENT_AFTER_S = 60.0


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def workers_of(doc: dict[str, Any], now: float) -> list[WorkerFigure]:
    found = []
    workers = doc.get("workers")
    for worker_id, info in sorted((workers if isinstance(workers, dict) else {}).items()):
        info = info if isinstance(info, dict) else {}
        silent = now - _float(info.get("seen"), 0.0) > SILENT_AFTER_S
        found.append(
            WorkerFigure(
                worker_id=str(worker_id),
                loaded_version=str(info.get("version", "")),
                production_version=str(info.get("production_version", "")),
                state="silent" if silent else str(info.get("state") or "ok"),
            )
        )
    return found


def series(jobs: list[dict[str, Any]], now: float) -> dict[str, list[Any]]:
    """Per minute of the last hour (oldest first): jobs submitted, errors, p95 total latency."""
    buckets = WINDOW_S // BUCKET_S
    start = now - WINDOW_S
    counts = [0] * buckets
    errors = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for job in jobs:
        created = _float(job.get("datetime"), -1.0)
        if created < start:
            continue
        i = min(buckets - 1, int((created - start) // BUCKET_S))
        counts[i] += 1
        status = job.get("status")
        expired = status in ("Queued", "Running") and _float(job.get("expires_at"), now + 1) <= now
        if status == "Error" or expired:
            errors[i] += 1
        total = _float(job.get("total_response_time_sec"), -1.0)
        if total >= 0:
            latencies[i].append(total)
    return {"jobs": counts, "errors": errors, "p95_s": [p95(values) for values in latencies]}


def _queued(jobs: list[dict[str, Any]], now: float) -> int:
    return sum(1 for j in jobs if j.get("status") == "Queued" and _float(j.get("expires_at"), 0.0) > now)


async def _consumers(services: Services, queue: str) -> int | None:
    if not queue:
        return None
    try:
        return await services.consumer_count(queue)
    except BrokerUnavailable:
        return None


async def model_figures(services: Services, now: float | None = None) -> list[ModelFigures]:
    """Queue depth, consumers and workers of every registered model (raises StoreError)."""
    now = time.time() if now is None else now
    figures = []
    for doc in await services.store.registered_models():
        name = str(doc.get("_id", ""))
        queued = await services.store.count_queued(name, now)  # a count: a scrape reads no job documents
        consumers = await _consumers(services, str(doc.get("queue") or ""))
        figures.append(ModelFigures(name, queued, consumers, workers_of(doc, now)))
    return figures


async def dashboard(services: Services, now: float | None = None) -> dict[str, Any]:
    """The dashboard's JSON (raises StoreError)."""
    now = time.time() if now is None else now
    models = []
    for doc in await services.store.registered_models():
        name = str(doc.get("_id", ""))
        jobs = await services.store.recent_jobs(name, now - WINDOW_S, RECENT_LIMIT)
        workers = workers_of(doc, now)
        chart = series(jobs, now)
        productions = sorted({w.production_version for w in workers if w.production_version})
        finished = [_float(j.get("total_response_time_sec"), -1.0) for j in jobs]
        models.append(
            {
                "model": name,
                "production_version": productions[-1] if productions else None,
                "workers": [w.__dict__ for w in workers],
                "queue_depth": _queued(jobs, now),
                "consumers": await _consumers(services, str(doc.get("queue") or "")),
                "jobs_last_hour": sum(chart["jobs"]),
                "jobs_per_min": round(sum(chart["jobs"][-5:]) / 5, 2),
                "errors_last_hour": sum(chart["errors"]),
                "p95_s_last_hour": p95([t for t in finished if t >= 0]),
                "series": chart,
            }
        )
    return {"generated_at": now, "window_s": WINDOW_S, "bucket_s": BUCKET_S, "models": models}
