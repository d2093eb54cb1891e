"""Worker-only endpoints (own token, hidden from the OpenAPI schema)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse

from mlstack import messages
from mlstack.api.auth import require_worker
from mlstack.api.schemas import (
    BatchResultsRequest,
    DeregisterRequest,
    RegisterRequest,
    ResultRequest,
    StartBatchRequest,
    StartRequest,
)
from mlstack.api.services import Services, ServicesDep
from mlstack.broker import queue_name
from mlstack.jobstore import StartOutcome, StoreError
from mlstack.settings import MODEL_NAME_PATTERN, WORKER_ID_PATTERN

log = logging.getLogger(__name__)
router = APIRouter(prefix="/worker", include_in_schema=False, dependencies=[Depends(require_worker)])
FINAL_STATUSES = ("Done", "Error")
JobId = Annotated[str, Path(min_length=1, max_length=100)]


def _unavailable() -> HTTPException:
    # 503 tells the worker to keep the message and retry later.
    return HTTPException(status_code=503, detail="job store unavailable")


@router.post("/register")
async def register(body: RegisterRequest, services: ServicesDep) -> JSONResponse:
    if not WORKER_ID_PATTERN.match(body.worker_id):
        raise HTTPException(status_code=422, detail="worker_id: use 1-100 characters from [A-Za-z0-9_-]")
    bad = [model.name for model in body.models if not MODEL_NAME_PATTERN.match(model.name)]
    if bad:
        # The name becomes a queue name: an AMQP shortstr, and one the API must be able to publish to.
        raise HTTPException(status_code=422, detail="models: a name uses 1-200 characters from [A-Za-z0-9_.-]")
    queues = {model.name: queue_name(model.name) for model in body.models}
    try:
        await services.store.register_worker(
            body.worker_id,
            [(m.name, m.version, m.production_version, m.state) for m in body.models],
            queues,
            time.time(),
        )
    except StoreError as exc:
        raise _unavailable() from exc
    for name in queues:
        services.forget_model(name)
    return JSONResponse({"queues": queues})


@router.post("/deregister")
async def deregister(body: DeregisterRequest, services: ServicesDep) -> JSONResponse:
    if not WORKER_ID_PATTERN.match(body.worker_id):
        raise HTTPException(status_code=422, detail="worker_id: use 1-100 characters from [A-Za-z0-9_-]")
    try:
        await services.store.deregister_worker(body.worker_id)
    except StoreError as exc:
        raise _unavailable() from exc
    return JSONResponse({"ok": True})


@router.post("/jobs/{job_id}/start")
async def start_job(job_id: JobId, body: StartRequest, services: ServicesDep) -> JSONResponse:
    now = time.time()
    try:
        outcome = await services.store.start_job(job_id, now, body.worker_id, body.lease_s)
        if outcome is StartOutcome.EXPIRED:
            job = await services.store.get_job(job_id)
            ttl_ms = int(job.get("ttl_ms", 0)) if job else 0
            await services.store.expire_job(job_id, messages.job_expired(ttl_ms), now)
    except StoreError as exc:
        raise _unavailable() from exc
    if outcome is StartOutcome.RUN:
        return JSONResponse({"run": True})
    log.info("job %s not started for worker %s: %s", job_id, body.worker_id, outcome.value)
    return JSONResponse({"run": False, "reason": outcome.value})


@router.post("/jobs/start")
async def start_jobs(body: StartBatchRequest, services: ServicesDep) -> JSONResponse:
    """A worker's micro-batch takes every lease in one request and one bulk write; one answer per job,
    in order, as /jobs/{job_id}/start gives it."""
    now = time.time()
    try:
        outcomes = await services.store.start_jobs(body.job_ids, now, body.worker_id, body.lease_s)
        for job_id, outcome in zip(body.job_ids, outcomes, strict=True):
            if outcome is StartOutcome.EXPIRED:
                await _expire(job_id, None, services, now)
    except StoreError as exc:
        raise _unavailable() from exc
    refused = [(j, o.value) for j, o in zip(body.job_ids, outcomes, strict=True) if o is not StartOutcome.RUN]
    if refused:
        log.info("jobs not started for worker %s: %s", body.worker_id, ", ".join(f"{j} ({r})" for j, r in refused))
    return JSONResponse(
        {"results": [{"run": True} if o is StartOutcome.RUN else {"run": False, "reason": o.value} for o in outcomes]}
    )


@router.post("/jobs/{job_id}/lease")
async def renew_lease(job_id: JobId, body: StartRequest, services: ServicesDep) -> JSONResponse:
    """A running job's worker extends its lease (every third of it), so nobody else runs the job."""
    try:
        renewed = await services.store.renew_lease(job_id, body.worker_id, time.time(), body.lease_s)
    except StoreError as exc:
        raise _unavailable() from exc
    return JSONResponse({"renewed": renewed})


@router.post("/jobs/{job_id}/result")
async def job_result(job_id: JobId, body: ResultRequest, services: ServicesDep) -> JSONResponse:
    if body.status not in FINAL_STATUSES:
        raise HTTPException(status_code=422, detail=f"status must be one of {list(FINAL_STATUSES)}")
    try:
        outcome = await _store_result(job_id, body, services, time.time())
    except StoreError as exc:
        raise _unavailable() from exc
    return JSONResponse(_answer(outcome))


@router.post("/results")
async def job_results(body: BatchResultsRequest, services: ServicesDep) -> JSONResponse:
    """A worker's micro-batch: the results of many jobs in one request and (mostly) one write."""
    if any(result.status not in FINAL_STATUSES for result in body.results):
        raise HTTPException(status_code=422, detail=f"status must be one of {list(FINAL_STATUSES)}")
    now = time.time()
    outcomes: dict[int, StartOutcome] = {}
    # Results that need no read of their job first are written together (see _store_result).
    plain = [(i, r) for i, r in enumerate(body.results) if r.datetime is not None and r.method != "get_feedback"]
    try:
        if plain:
            batch = [(r.job_id, _final_fields(r, r.response, r.datetime or now, now)) for _, r in plain]
            for (index, result), outcome in zip(plain, await services.store.finish_jobs(batch, now), strict=True):
                if outcome is StartOutcome.EXPIRED:
                    await _expire(result.job_id, None, services, now)
                outcomes[index] = outcome
        for index, result in enumerate(body.results):
            if index not in outcomes:
                outcomes[index] = await _store_result(result.job_id, result, services, now)
    except StoreError as exc:
        raise _unavailable() from exc
    return JSONResponse({"results": [_answer(outcomes[i]) for i in range(len(body.results))]})


def _answer(outcome: StartOutcome) -> dict[str, Any]:
    if outcome is StartOutcome.RUN:
        return {"accepted": True}
    return {"accepted": False, "reason": outcome.value}


def _final_fields(body: ResultRequest, response: Any, created: float, now: float) -> dict[str, Any]:
    return {
        "status": body.status,
        "response": response,
        "model_version": body.model_version,
        "queue_response_time_sec": body.queue_response_time_sec,
        "total_response_time_sec": now - created,
        "finished_at": now,
    }


async def _expire(job_id: str, job: dict[str, Any] | None, services: Services, now: float) -> None:
    expired = job or await services.store.get_job(job_id) or {}
    await services.store.expire_job(job_id, messages.job_expired(int(expired.get("ttl_ms", 0))), now)


async def _store_result(job_id: str, body: ResultRequest, services: Services, now: float) -> StartOutcome:
    """Store one final result (raises StoreError)."""
    job: dict[str, Any] | None = None
    if body.datetime is None or body.method == "get_feedback":
        job = await services.store.get_job(job_id)  # older workers, or api_metrics to merge
        if job is None:
            return StartOutcome.UNKNOWN
    created = body.datetime if body.datetime is not None else float((job or {}).get("datetime", now))
    response: Any = body.response
    if job is not None and job.get("method") == "get_feedback" and body.status == "Done":
        response = {"model_metrics": response, "api_metrics": job.get("api_metrics", {})}
    outcome = await services.store.finish_job(job_id, _final_fields(body, response, created, now), now)
    if outcome is StartOutcome.EXPIRED:
        await _expire(job_id, job, services, now)
    return outcome
