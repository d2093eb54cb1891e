"""The public endpoints of the Prodest ML Stack contract."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from mlstack import SUPPORTED_MLLIBPRODEST, __version__, messages
from mlstack.api import examples
from mlstack.api.auth import require_client
from mlstack.api.feedback import DateRange, api_metrics, collect_labels, format_next_time, parse_range
from mlstack.api.schemas import FeedbackRequest, GetFeedbackRequest, InferenceRequest, StatusRequest
from mlstack.api.services import Services, ServicesDep
from mlstack.api.validation import feedback_list_error, feedback_mismatch, inference_error
from mlstack.broker import BrokerUnavailable, NoRoute
from mlstack.jobstore import UNFINISHED, StoreError

log = logging.getLogger(__name__)
router = APIRouter()
authenticated = [Depends(require_client)]


def new_job_id() -> str:
    return secrets.token_hex(32)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _error(response: str, **fields: Any) -> JSONResponse:
    return JSONResponse({"job_id": "n/a", **fields, "status": "Error", "response": response})


@router.get("/", include_in_schema=False)
async def root() -> JSONResponse:
    return JSONResponse({"response": messages.ROOT_GREETING})


@router.get("/version", tags=["version"])
async def version() -> JSONResponse:
    return JSONResponse({"Stack Version": f"r{__version__} (mllibprodest=={SUPPORTED_MLLIBPRODEST})"})


async def _enqueue(
    services: Services, queue: str, job: dict[str, Any], message: dict[str, Any], error_fields: dict[str, Any]
) -> JSONResponse | None:
    """Store the job, then publish it; on failure remove the job so no client holds a dead job_id."""
    model_name = job["model_name"]
    try:
        consumers = await services.consumer_count(queue)
    except BrokerUnavailable:
        log.warning("broker unreachable while checking consumers of %s", queue)
        return _error(messages.BROKER_UNREACHABLE, **error_fields)
    if consumers == 0:
        return _error(messages.no_workers(model_name), **error_fields)
    try:
        await services.store.insert_job(job)
    except StoreError as exc:
        log.error("cannot store job for model %s: %s", model_name, exc.__class__.__name__)
        return _error(messages.DB_JOB_CREATE_FAILED, model_name=model_name, method=job["method"])
    try:
        body = json.dumps(message, ensure_ascii=False).encode()
        await services.publish(queue, body, job["_id"], services.settings.job_ttl_ms)
    except BrokerUnavailable as exc:
        await _forget_job(services, job["_id"])
        if isinstance(exc, NoRoute):
            return _error(messages.no_workers(model_name), **error_fields)
        log.warning("publish to %s failed: %s", queue, exc)
        return _error(messages.BROKER_UNREACHABLE, **error_fields)
    return None


async def _forget_job(services: Services, job_id: str) -> None:
    try:
        await services.store.delete_job(job_id)
    except StoreError:
        log.error("could not remove unpublished job %s", job_id)


def _new_job(model_name: str, method: str, ttl_ms: int, source: str) -> dict[str, Any]:
    now = time.time()
    job_id = new_job_id()
    return {
        "_id": job_id,
        "job_id": job_id,
        "model_name": model_name,
        "model_version": "",
        "method": method,
        "status": "Queued",
        "datetime": now,
        "expires_at": now + ttl_ms / 1000,
        "ttl_ms": ttl_ms,
        "queue_response_time_sec": -1,
        "total_response_time_sec": -1,
        "response": "",
        "attempts": 0,
        "request_source": source,
    }


def _message(job: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return {
        "job_id": job["_id"],
        "model_name": job["model_name"],
        "method": job["method"],
        "datetime": job["datetime"],
        "ttl_ms": job["ttl_ms"],
        **payload,
    }


@router.post("/inference", tags=["inference"], dependencies=authenticated)
async def inference(
    request: Request,
    body: Annotated[InferenceRequest, Body(openapi_examples=examples.INFERENCE)],
    services: ServicesDep,
) -> JSONResponse:
    model_name, method = body.model_name, body.method
    try:
        queue = await services.model_queue(model_name)
    except StoreError:
        return _error(messages.DB_JOB_CREATE_FAILED, model_name=model_name, method=method)
    if not queue:
        return _error(messages.MODEL_NOT_FOUND, model_name=model_name, method=method)

    present = {name: getattr(body, name) for name in ("features", "targets") if name in body.model_fields_set}
    problem = inference_error(method, present)
    if problem:
        return _error(problem)

    job = _new_job(model_name, method, services.settings.job_ttl_ms, client_ip(request))
    if method == "predict":
        job.update(feedback="", has_feedback=False)
    payload = {k: v for k, v in present.items() if method != "info"}
    failure = await _enqueue(services, queue, job, _message(job, **payload), {})
    if failure:
        return failure
    return JSONResponse({"job_id": job["_id"], "model_name": model_name, "method": method, "status": "Queued"})


def job_view(job: dict[str, Any], now: float) -> dict[str, Any]:
    """A job as /status shows it, with JSON types fixed whatever the store handed back."""
    status, response = str(job.get("status", "")), job.get("response", "")
    if status in UNFINISHED and float(job.get("expires_at", now + 1)) <= now:
        status, response = "Error", messages.job_expired(int(job.get("ttl_ms", 0)))
    view: dict[str, Any] = {
        "job_id": job["_id"],
        "model_name": job.get("model_name", ""),
        "model_version": str(job.get("model_version", "")),
        "method": job.get("method", ""),
        "status": status,
        "datetime": float(job.get("datetime", 0.0)),
        "queue_response_time_sec": job.get("queue_response_time_sec", -1),
        "total_response_time_sec": job.get("total_response_time_sec", -1),
        "response": response,
    }
    if view["method"] == "predict":
        view["feedback"] = job.get("feedback", "")
        view["has_feedback"] = bool(job.get("has_feedback", False))
    elif view["method"] == "get_feedback":
        view["initial_date"] = job.get("initial_date", "")
        view["end_date"] = job.get("end_date", "")
        view["request_source"] = job.get("request_source", "")
    return view


@router.post("/status", tags=["status"], dependencies=authenticated)
async def job_status(
    body: Annotated[StatusRequest, Body(openapi_examples=examples.STATUS)],
    services: ServicesDep,
) -> JSONResponse:
    job_id = body.job_id
    if len(job_id) > 100:
        return JSONResponse({"status": "Error", "response": messages.job_id_too_long(job_id)})
    try:
        job = await services.store.get_job(job_id)
    except StoreError:
        return JSONResponse({"status": "Error", "response": messages.status_db_failed(job_id)})
    if job is None:
        return JSONResponse({"status": "Error", "response": messages.job_not_found(job_id)})
    now = time.time()
    view = job_view(job, now)
    if view["status"] == "Error" and job.get("status") in UNFINISHED:
        # Persist the expiry so a worker that picks the job up later is told not to run it.
        with contextlib.suppress(StoreError):
            await services.store.expire_job(job_id, view["response"], now)
    return JSONResponse(view)


@router.post("/feedback", tags=["feedback"], dependencies=authenticated)
async def feedback(
    body: Annotated[FeedbackRequest, Body(openapi_examples=examples.FEEDBACK)],
    services: ServicesDep,
) -> JSONResponse:
    job_id = body.job_id
    problem = feedback_list_error(body.feedback)
    if problem:
        return _error(problem)
    try:
        job = await services.store.get_job(job_id) if len(job_id) <= 100 else None
        if job is None:
            return JSONResponse({"status": "Error", "response": messages.job_not_found(job_id)})
        view = job_view(job, time.time())
        if view["method"] != "predict" or view["status"] != "Done":
            text = messages.feedback_not_allowed(job_id, view["method"], view["status"])
            return JSONResponse({"status": "Error", "response": text})
        predicted = view["response"] if isinstance(view["response"], list) else []
        problem = feedback_mismatch(job_id, body.feedback, predicted)
        if problem:
            return JSONResponse({"status": "Error", "response": problem})
        await services.store.set_feedback(job_id, body.feedback, time.time())
    except StoreError:
        return JSONResponse({"status": "Error", "response": messages.feedback_db_failed(job_id)})
    return JSONResponse({"status": "Done", "response": messages.FEEDBACK_OK})


@router.post("/get_feedback", tags=["get_feedback"], dependencies=authenticated)
async def get_feedback(
    request: Request,
    body: Annotated[GetFeedbackRequest, Body(openapi_examples=examples.GET_FEEDBACK)],
    services: ServicesDep,
) -> JSONResponse:
    model_name = body.model_name
    fields = {"model_name": model_name, "method": "get_feedback"}
    settings = services.settings
    try:
        queue = await services.model_queue(model_name)
        if not queue:
            return _error(messages.MODEL_NOT_FOUND, **fields)
        now = time.time()
        limits = await services.store.get_limits(model_name)
        if limits.model_next > now:
            text = messages.model_interval_not_respected(format_next_time(limits.model_next))
            return _error(text, **fields, next_feedback_timestamp=limits.model_next + 1)
        if limits.global_next > now:
            text = messages.global_interval_not_respected(
                format_next_time(limits.global_next), settings.feedback_global_interval_s
            )
            return _error(text, **fields, next_feedback_timestamp=limits.global_next + 1)

        dates = parse_range(body.initial_date, body.end_date)
        if not isinstance(dates, DateRange):
            return _error(dates, **fields)
        created = time.time()
        has_feedback = await services.store.count_feedback_jobs(model_name, dates.start, dates.end_exclusive)
        # The database was queried: from now on this model, and all models, wait their intervals.
        queried = time.time()
        await services.store.set_limits(
            model_name, queried + settings.feedback_model_interval_s, queried + settings.feedback_global_interval_s
        )
        if has_feedback == 0:
            return _error(messages.no_feedback_jobs(body.initial_date, body.end_date), **fields)
        if has_feedback > messages.MAX_FEEDBACK_LABELS and body.initial_date != body.end_date:
            text = messages.too_many_feedback_jobs(has_feedback, body.initial_date, body.end_date)
            return _error(text, **fields)
        predict_done = await services.store.count_predict_done(model_name)
        jobs = await services.store.feedback_jobs(
            model_name, dates.start, dates.end_exclusive, messages.MAX_FEEDBACK_LABELS
        )
    except StoreError:
        return _error(messages.feedback_query_db_failed(model_name), **fields)

    batch = collect_labels(jobs)
    job = _new_job(model_name, "get_feedback", settings.job_ttl_ms, client_ip(request))
    job.update(
        datetime=created,
        initial_date=body.initial_date,
        end_date=body.end_date,
        api_metrics=api_metrics(batch, predict_done, has_feedback),
    )
    message = _message(job, y_pred=batch.y_pred, y_true=batch.y_true)
    failure = await _enqueue(services, queue, job, message, fields)
    if failure:
        return failure
    return JSONResponse({"job_id": job["_id"], **fields, "status": "Queued"})
