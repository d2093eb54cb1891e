"""The public endpoints of the Prodest ML Stack contract (job logic lives in ``jobs``)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from mlstack import SUPPORTED_MLLIBPRODEST, __version__, messages, metrics
from mlstack.api import examples
from mlstack.api.auth import require_client
from mlstack.api.errors import ContractError, job_error, plain_error
from mlstack.api.feedback import DateRange, FeedbackTooLarge, api_metrics, collect_labels, format_next_time, parse_range
from mlstack.api.jobs import enqueue, job_message, job_view, new_job
from mlstack.api.jsonsafe import SafeJSONResponse
from mlstack.api.schemas import CancelRequest, FeedbackRequest, GetFeedbackRequest, InferenceRequest, StatusRequest
from mlstack.api.services import Services, ServicesDep
from mlstack.api.validation import feedback_label_error, feedback_list_error, feedback_mismatch, inference_error
from mlstack.jobstore import UNFINISHED, LimitTaken, StoreError

log = logging.getLogger(__name__)
router = APIRouter()
authenticated = [Depends(require_client)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/", include_in_schema=False)
async def root() -> SafeJSONResponse:
    return SafeJSONResponse({"response": messages.ROOT_GREETING})


@router.get("/version", tags=["version"])
async def version() -> SafeJSONResponse:
    return SafeJSONResponse({"Stack Version": f"r{__version__} (mllibprodest=={SUPPORTED_MLLIBPRODEST})"})


@router.post("/inference", tags=["inference"], dependencies=authenticated)
async def inference(
    request: Request,
    body: Annotated[InferenceRequest, Body(openapi_examples=examples.INFERENCE)],
    services: ServicesDep,
) -> SafeJSONResponse:
    try:
        answer = await _inference(request, body, services)
    except ContractError as exc:
        reason = metrics.refusal_reason(str(exc.body.get("response", "")))
        metrics.job_refused(body.model_name, body.method, reason)
        raise
    metrics.job_accepted(body.model_name, body.method)
    return answer


async def _inference(request: Request, body: InferenceRequest, services: Services) -> SafeJSONResponse:
    model_name, method = body.model_name, body.method
    try:
        queue = await services.model_queue(model_name)
    except StoreError:
        raise job_error(messages.DB_JOB_CREATE_FAILED, model_name=model_name, method=method) from None
    if not queue:
        raise job_error(messages.MODEL_NOT_FOUND, model_name=model_name, method=method)

    present = {name: getattr(body, name) for name in ("features", "targets") if name in body.model_fields_set}
    problem = inference_error(method, present)
    if problem:
        raise job_error(problem)

    job = new_job(model_name, method, services.settings.job_ttl_ms, client_ip(request))
    if method == "predict":
        job.update(feedback="", has_feedback=False)
    payload = {k: v for k, v in present.items() if method != "info"}
    await enqueue(services, queue, job, job_message(job, **payload), {})
    return SafeJSONResponse({"job_id": job["_id"], "model_name": model_name, "method": method, "status": "Queued"})


async def _known_job(services: Services, job_id: str) -> dict[str, Any]:
    """The stored job, or the contract's answer for a too-long, unknown or unreadable job_id."""
    if len(job_id) > 100:
        raise plain_error(messages.job_id_too_long(job_id))
    try:
        job = await services.store.get_job(job_id)
    except StoreError:
        raise plain_error(messages.status_db_failed(job_id)) from None
    if job is None:
        raise plain_error(messages.job_not_found(job_id))
    return job


@router.post("/status", tags=["status"], dependencies=authenticated)
async def job_status(
    body: Annotated[StatusRequest, Body(openapi_examples=examples.STATUS)],
    services: ServicesDep,
) -> SafeJSONResponse:
    job_id = body.job_id
    job = await _known_job(services, job_id)
    now = time.time()
    view = job_view(job, now)
    if view["status"] == "Error" and job.get("status") in UNFINISHED:
        # Persist the expiry so a worker that picks the job up later is told not to run it.
        with contextlib.suppress(*StoreError):
            await services.store.expire_job(job_id, view["response"], now)
    return SafeJSONResponse(view)


@router.post("/cancel", tags=["cancel"], dependencies=authenticated)
async def cancel(
    body: Annotated[CancelRequest, Body(openapi_examples=examples.CANCEL)],
    services: ServicesDep,
) -> SafeJSONResponse:
    """Cancela um job que ainda está na fila (status 'Queued'): ele nunca será executado."""
    job_id = body.job_id
    job = await _known_job(services, job_id)
    try:
        now = time.time()
        view = job_view(job, now)
        if view["status"] == "Queued":
            if await services.store.cancel_job(job_id, messages.JOB_CANCELLED, now):
                metrics.JOBS_CANCELLED.labels(view["model_name"], metrics.method_label(view["method"])).inc()
                return SafeJSONResponse({"status": "Done", "response": messages.CANCEL_OK})
            # A worker started it (or it expired) between the read and the update: say what it is now.
            view = job_view(await services.store.get_job(job_id) or job, time.time())
    except StoreError:
        raise plain_error(messages.status_db_failed(job_id)) from None
    raise plain_error(messages.cannot_cancel(job_id, view["status"]))


@router.post("/feedback", tags=["feedback"], dependencies=authenticated)
async def feedback(
    body: Annotated[FeedbackRequest, Body(openapi_examples=examples.FEEDBACK)],
    services: ServicesDep,
) -> SafeJSONResponse:
    job_id = body.job_id
    problem = feedback_list_error(body.feedback)
    if problem:
        raise job_error(problem)
    try:
        job = await services.store.get_job(job_id) if len(job_id) <= 100 else None
        if job is None:
            raise plain_error(messages.job_not_found(job_id))
        view = job_view(job, time.time())
        if view["method"] != "predict" or view["status"] != "Done":
            raise plain_error(messages.feedback_not_allowed(job_id, view["method"], view["status"]))
        predicted = view["response"] if isinstance(view["response"], list) else []
        problem = feedback_mismatch(job_id, body.feedback, predicted) or feedback_label_error(
            body.feedback, services.settings.feedback_max_label_bytes
        )
        if problem:
            raise plain_error(problem)
        await services.store.set_feedback(job_id, body.feedback, time.time())
    except StoreError:
        raise plain_error(messages.feedback_db_failed(job_id)) from None
    return SafeJSONResponse({"status": "Done", "response": messages.FEEDBACK_OK})


@router.post("/get_feedback", tags=["get_feedback"], dependencies=authenticated)
async def get_feedback(
    request: Request,
    body: Annotated[GetFeedbackRequest, Body(openapi_examples=examples.GET_FEEDBACK)],
    services: ServicesDep,
) -> SafeJSONResponse:
    try:
        answer = await _get_feedback(request, body, services)
    except ContractError as exc:
        reason = metrics.refusal_reason(str(exc.body.get("response", "")))
        metrics.job_refused(body.model_name, "get_feedback", reason)
        metrics.GET_FEEDBACK_CALLS.labels("" if reason == "model_not_found" else body.model_name, reason).inc()
        raise
    metrics.job_accepted(body.model_name, "get_feedback")
    metrics.GET_FEEDBACK_CALLS.labels(body.model_name, "accepted").inc()
    return answer


async def _get_feedback(request: Request, body: GetFeedbackRequest, services: Services) -> SafeJSONResponse:
    model_name = body.model_name
    fields: dict[str, Any] = {"model_name": model_name, "method": "get_feedback"}
    settings = services.settings
    try:
        queue = await services.model_queue(model_name)
        if not queue:
            raise job_error(messages.MODEL_NOT_FOUND, **fields)
        now = time.time()
        limits = await services.store.get_limits(model_name)
        if limits.model_next > now:
            raise _model_limited(limits.model_next, fields)
        if limits.global_next > now:
            raise _global_limited(limits.global_next, settings.feedback_global_interval_s, fields)

        dates = parse_range(body.initial_date, body.end_date)
        if not isinstance(dates, DateRange):
            raise job_error(dates, **fields)
        # The database is about to be queried: from now on this model, and all models, wait their
        # intervals. Taken atomically, so of concurrent requests on any API process one passes.
        now = time.time()
        taken = await services.store.take_feedback_limits(
            model_name,
            now,
            now + settings.feedback_model_interval_s,
            now + settings.feedback_global_interval_s,
            model_before=limits.model_next,
        )
        if taken is not LimitTaken.TAKEN:
            limits = await services.store.get_limits(model_name)
            if taken is LimitTaken.MODEL:
                raise _model_limited(limits.model_next, fields)
            raise _global_limited(limits.global_next, settings.feedback_global_interval_s, fields)
        created = time.time()
        has_feedback = await services.store.count_feedback_jobs(model_name, dates.start, dates.end_exclusive)
        if has_feedback == 0:
            raise job_error(messages.no_feedback_jobs(body.initial_date, body.end_date), **fields)
        if has_feedback > messages.MAX_FEEDBACK_LABELS and body.initial_date != body.end_date:
            text = messages.too_many_feedback_jobs(has_feedback, body.initial_date, body.end_date)
            raise job_error(text, **fields)
        predict_done = await services.store.count_predict_done(model_name)
        jobs = services.store.feedback_jobs(model_name, dates.start, dates.end_exclusive, messages.MAX_FEEDBACK_LABELS)
        batch = await collect_labels(jobs, max_bytes=settings.feedback_max_message_bytes)
    except StoreError:
        raise job_error(messages.feedback_query_db_failed(model_name), **fields) from None
    except FeedbackTooLarge:
        cap = settings.feedback_max_message_bytes
        text = messages.feedback_message_too_large(body.initial_date, body.end_date, cap)
        raise job_error(text, **fields) from None

    job = new_job(model_name, "get_feedback", settings.job_ttl_ms, client_ip(request), now=created)
    job.update(
        initial_date=body.initial_date,
        end_date=body.end_date,
        api_metrics=api_metrics(batch, predict_done, has_feedback),
    )
    await enqueue(services, queue, job, job_message(job, y_pred=batch.y_pred, y_true=batch.y_true), fields)
    return SafeJSONResponse({"job_id": job["_id"], **fields, "status": "Queued"})


def _model_limited(next_time: float, fields: dict[str, Any]) -> Exception:
    text = messages.model_interval_not_respected(format_next_time(next_time))
    return job_error(text, **fields, next_feedback_timestamp=next_time + 1)


def _global_limited(next_time: float, interval_s: float, fields: dict[str, Any]) -> Exception:
    text = messages.global_interval_not_respected(format_next_time(next_time), interval_s)
    return job_error(text, **fields, next_feedback_timestamp=next_time + 1)
