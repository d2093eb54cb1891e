"""Jobs: the documents the API stores, the messages it publishes, and how a job is queued.

A job is accepted only when its message is built, its document stored and the broker confirmed
the message; any failure on the way removes the document again, so no client ever holds a
job_id that no worker will see, and nothing half-made stays in the store.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from mlstack import messages
from mlstack.api.errors import ContractError, job_error
from mlstack.api.services import Services
from mlstack.broker import BrokerUnavailable, NoRoute, QueueFull, QueueTypeMismatch
from mlstack.jobstore import UNFINISHED, StoreError

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return secrets.token_hex(32)


def new_job(model_name: str, method: str, ttl_ms: int, source: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
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


def job_message(job: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """The broker message of a job: what a worker needs to run it without reading the store."""
    return {
        "job_id": job["_id"],
        "model_name": job["model_name"],
        "method": job["method"],
        "datetime": job["datetime"],
        "ttl_ms": job["ttl_ms"],
        **payload,
    }


def encode_message(message: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN, no lone surrogates); raises ValueError for what the checks let through."""
    return json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")


def job_view(job: dict[str, Any], now: float) -> dict[str, Any]:
    """A job as /status shows it, with JSON types fixed whatever the store handed back."""
    status, response = str(job.get("status", "")), job.get("response", "")
    expires_at = _number(job.get("expires_at"), now + 1)
    if status in UNFINISHED and expires_at <= now:
        status, response = "Error", messages.job_expired(int(_number(job.get("ttl_ms"), 0)))
    view: dict[str, Any] = {
        "job_id": job["_id"],
        "model_name": job.get("model_name", ""),
        "model_version": str(job.get("model_version", "")),
        "method": job.get("method", ""),
        "status": status,
        "datetime": _number(job.get("datetime"), 0.0),
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


def _number(value: Any, default: float) -> float:
    """A stored number as float; whatever else an operator or an old version stored, the default."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


async def enqueue(
    services: Services, queue: str, job: dict[str, Any], message: dict[str, Any], error_fields: dict[str, Any]
) -> None:
    """Queue a job or raise the contract's ContractError; nothing stays stored on failure."""
    model_name, method = job["model_name"], job["method"]
    # Built first: a message that cannot be encoded must not leave a job behind.
    try:
        body = encode_message(message)
    except (ValueError, TypeError) as exc:
        log.error("cannot encode the message of a %s job for %s: %s", method, model_name, exc)
        raise job_error(messages.DB_JOB_CREATE_FAILED, model_name=model_name, method=method) from None
    try:
        consumers = await services.consumer_count(queue)
    except QueueTypeMismatch:  # the publisher logged how to migrate the queue
        raise job_error(messages.BROKER_UNREACHABLE, **error_fields) from None
    except BrokerUnavailable:
        log.warning("broker unreachable while checking consumers of %s", queue)
        raise job_error(messages.BROKER_UNREACHABLE, **error_fields) from None
    if consumers == 0:
        raise job_error(messages.no_workers(model_name), **error_fields)
    try:
        await services.store.insert_job(job)
    except StoreError as exc:
        log.error("cannot store job for model %s: %s", model_name, exc.__class__.__name__)
        raise job_error(messages.DB_JOB_CREATE_FAILED, model_name=model_name, method=method) from None
    try:
        await services.publish(queue, body, job["_id"], services.settings.job_ttl_ms)
    except QueueFull:
        await forget_job(services, job["_id"])
        log.warning("queue %s is full; job refused", queue)
        raise ContractError(
            {"job_id": "n/a", "model_name": model_name, "method": method, "status": "Error",
             "response": messages.queue_full(model_name)},
            headers={"Retry-After": str(services.settings.queue_full_retry_after_s)},
        ) from None  # fmt: skip
    except NoRoute:
        await forget_job(services, job["_id"])
        raise job_error(messages.no_workers(model_name), **error_fields) from None
    except BrokerUnavailable as exc:
        await forget_job(services, job["_id"])
        log.warning("publish to %s failed: %s", queue, exc)
        raise job_error(messages.BROKER_UNREACHABLE, **error_fields) from None


async def forget_job(services: Services, job_id: str) -> None:
    try:
        await services.store.delete_job(job_id)
    except StoreError:
        log.error("could not remove unpublished job %s", job_id)
