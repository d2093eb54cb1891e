"""Job documents, messages and the /status view (api/jobs.py), with what a store may hand back."""

from __future__ import annotations

import json
import math

import pytest
from mlstack.api.jobs import encode_message, job_message, job_view, new_job
from mlstack.api.jsonsafe import SafeJSONResponse

JOB_ID_CHARS = set("0123456789abcdef")


def test_new_job_and_its_message() -> None:
    job = new_job("M", "predict", 90_000, "10.0.0.1", now=1000.0)
    assert len(job["_id"]) == 64 and set(job["_id"]) <= JOB_ID_CHARS and job["job_id"] == job["_id"]
    assert job["status"] == "Queued" and job["expires_at"] == 1090.0 and job["ttl_ms"] == 90_000
    message = job_message(job, features=["a", 1])
    assert message == {
        "job_id": job["_id"], "model_name": "M", "method": "predict", "datetime": 1000.0, "ttl_ms": 90_000,
        "features": ["a", 1],
    }  # fmt: skip
    assert json.loads(encode_message(message)) == message


@pytest.mark.parametrize("payload", [{"features": [math.nan]}, {"features": ["\ud800"]}])
def test_a_message_strict_json_cannot_carry_is_refused_before_anything_is_stored(payload: dict) -> None:
    job = new_job("M", "predict", 1000, "")
    with pytest.raises(ValueError):
        encode_message(job_message(job, **payload))


def test_status_view_of_a_job_holding_nan_renders_strict_json() -> None:
    stored = {
        "_id": "j", "model_name": "M", "method": "predict", "status": "Done", "datetime": math.nan,
        "expires_at": 0, "response": [math.nan, math.inf, 1.0], "feedback": [-math.inf, "a\ud800"],
        "has_feedback": True, "queue_response_time_sec": math.inf, "total_response_time_sec": 2**70,
    }  # fmt: skip
    body = SafeJSONResponse(job_view(stored, now=10.0)).body
    view = json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} rendered"))
    assert view["response"] == [None, None, 1.0]
    assert view["feedback"] == [None, "a\ufffd"]
    assert view["queue_response_time_sec"] is None and view["datetime"] is None
    assert view["total_response_time_sec"] == 2**70


@pytest.mark.parametrize(
    "stored",
    [
        {"_id": "j"},
        {"_id": "j", "status": "Queued", "expires_at": "garbage", "ttl_ms": None},
        {"_id": "j", "status": "Running", "expires_at": 1.0, "ttl_ms": "x", "method": "get_feedback"},
        {"_id": "j", "datetime": [1], "model_version": None, "method": "predict"},
    ],
)
def test_status_view_never_fails_on_odd_documents(stored: dict) -> None:
    view = job_view(stored, now=5.0)
    assert view["job_id"] == "j" and isinstance(view["datetime"], float)
    json.loads(SafeJSONResponse(view).body)


def test_expired_job_is_reported_as_error() -> None:
    stored = {"_id": "j", "status": "Queued", "expires_at": 4.0, "ttl_ms": 2000, "method": "info"}
    view = job_view(stored, now=5.0)
    assert view["status"] == "Error" and view["response"] == "Job expirou após 2000 ms sem ser processado."
