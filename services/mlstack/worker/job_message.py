"""Validates a job message from a model queue (pure, no I/O).

A message that fails here can never run, however often it is delivered: the worker
dead-letters it instead of requeueing it (services/DESIGN.md, "Worker failure handling").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from mlstack import messages

_MAX_JOB_ID = 100


class PoisonMessage(Exception):
    """The message can never run. ``reason`` is Portuguese (it may become the job's response)."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    model_name: str
    method: str
    datetime: float
    ttl_ms: float
    body: dict[str, Any]  # the whole message: run_job reads features/targets/y_pred/y_true from it


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_job_message(raw: bytes) -> JobMessage:
    """The message as the worker runs it; raises PoisonMessage (with the job_id when it has one)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonMessage(messages.POISON_NOT_JSON) from exc
    if not isinstance(body, dict):
        raise PoisonMessage(messages.POISON_NOT_OBJECT)
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= _MAX_JOB_ID:
        if "job_id" not in body:
            raise PoisonMessage(messages.poison_missing_field("job_id"))
        raise PoisonMessage(messages.poison_bad_field("job_id", f"texto de 1 a {_MAX_JOB_ID} caracteres"))
    for name in ("model_name", "method", "datetime", "ttl_ms"):
        if name not in body:
            raise PoisonMessage(messages.poison_missing_field(name), job_id)
    model_name, method = body["model_name"], body["method"]
    if not isinstance(model_name, str) or not model_name:
        raise PoisonMessage(messages.poison_bad_field("model_name", "texto"), job_id)
    if not isinstance(method, str):
        raise PoisonMessage(messages.poison_bad_field("method", "texto"), job_id)
    created = _number(body["datetime"])
    if created is None or created < 0:
        raise PoisonMessage(messages.poison_bad_field("datetime", "número de segundos desde 1970"), job_id)
    ttl_ms = _number(body["ttl_ms"])
    if ttl_ms is None or ttl_ms < 0:
        raise PoisonMessage(messages.poison_bad_field("ttl_ms", "número não negativo"), job_id)
    return JobMessage(job_id, model_name, method, created, ttl_ms, body)
