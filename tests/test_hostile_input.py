"""Hostile but well-formed input against a real API: 422 before any write, never a 5xx; whatever
the store holds, /status answers strict JSON; the token is checked before the body is read."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator

import httpx
import pymongo
import pytest
from support import contract as c
from support.client import ApiClient
from support.stack import Stack

E = "TEST_ECHO"
D = "01/01/2024"


@pytest.fixture(scope="module")
def api(main_stack: Stack) -> ApiClient:
    return main_stack.client()


@pytest.fixture(scope="module")
def jobs(main_stack: Stack) -> Iterator[pymongo.collection.Collection]:
    with main_stack.jobs_collection() as jobs:
        yield jobs


def raw(body: object) -> bytes:
    """What a hostile client sends: Python's json writes NaN/Infinity, escapes lone surrogates
    (``"\\ud800"``) and writes integers of any size."""
    return json.dumps(body, allow_nan=True).encode()


def post_raw(api: ApiClient, path: str, body: bytes) -> httpx.Response:
    return api.http.post(path, content=body, headers={**api.auth(), "Content-Type": "application/json"})


J = "f" * 64
HOSTILE = [
    ("/inference", {"model_name": "\ud800", "method": "info"}),
    ("/inference", {"model_name": E, "method": "predict\udfff"}),
    ("/inference", {"model_name": E, "method": "predict", "features": ["ok", "\ud800"]}),
    ("/inference", {"model_name": E, "method": "predict", "features": [math.nan]}),
    ("/inference", {"model_name": E, "method": "predict", "features": [{"x": math.inf}]}),
    ("/inference", {"model_name": E, "method": "predict", "features": [-math.inf]}),
    ("/inference", {"model_name": E, "method": "predict", "features": [2**63]}),
    ("/inference", {"model_name": E, "method": "evaluate", "features": [1], "targets": [-(2**63) - 1]}),
    ("/inference", {"model_name": E, "method": "evaluate", "features": [1], "targets": ["\udc00"]}),
    ("/status", {"job_id": "\ud800"}),
    ("/feedback", {"job_id": J, "feedback": [math.nan]}),
    ("/feedback", {"job_id": J, "feedback": [2**64]}),
    ("/feedback", {"job_id": "\ud800" + J, "feedback": ["a"]}),
    ("/get_feedback", {"model_name": "\ud800", "initial_date": D, "end_date": D}),
    ("/get_feedback", {"model_name": E, "initial_date": D, "end_date": "\udfff"}),
]


@pytest.mark.parametrize(("path", "body"), HOSTILE)
def test_unstorable_values_are_422_and_nothing_is_stored(
    api: ApiClient, jobs: pymongo.collection.Collection, path: str, body: dict
) -> None:
    before = jobs.count_documents({})
    r = post_raw(api, path, raw(body))
    assert r.status_code == 422, f"{path}: HTTP {r.status_code} {r.text[:300]}"
    detail = r.json()["detail"]
    assert detail and all(sorted(d) == ["input", "loc", "msg", "type"] for d in detail), detail
    assert detail[0]["loc"][0] == "body"
    assert jobs.count_documents({}) == before, "a refused request left a document behind"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model_name": NaN, "method": "info"}',
        b'{"model_name": ["\\ud800"], "method": "info"}',
        b'{"model_name": "TEST_ECHO", "method": Infinity}',
        b'{"job_id": 123456789012345678901234567890}',
    ],
)
def test_shape_errors_echoing_unstorable_input_are_strict_json(api: ApiClient, body: bytes) -> None:
    path = "/status" if b"job_id" in body else "/inference"
    r = post_raw(api, path, body)
    assert r.status_code == 422, r.text
    json.loads(r.content, parse_constant=lambda name: pytest.fail(f"{name} in a 422 answer"))


def test_feedback_of_nan_is_422_and_status_still_answers(api: ApiClient) -> None:
    job_id = api.submit(E, "predict", [1.5, "a"])
    assert api.wait_done(job_id)["status"] == "Done"
    r = post_raw(api, "/feedback", raw({"job_id": job_id, "feedback": [math.nan, "a"]}))
    assert r.status_code == 422, r.text
    status = api.status(job_id)
    assert status["status"] == "Done" and status["has_feedback"] is False, status
    assert api.feedback(job_id, [2.5, "b"]) == c.FEEDBACK_OK
    assert api.status(job_id)["feedback"] == [2.5, "b"]


def test_status_answers_whatever_the_store_holds(api: ApiClient, jobs: pymongo.collection.Collection) -> None:
    """A worker or an operator may store values of the wrong type; /status still answers.

    NaN/Infinity in a stored job are covered in tests/unit/test_api_jobs.py: nx-27017 (SQLite
    JSON) cannot store them at all, a real MongoDB can.
    """
    job_id = api.submit(E, "predict", ["x", "y"])
    api.wait_done(job_id)
    jobs.update_one(
        {"_id": job_id},
        {
            "$set": {
                "response": {"not": "a list"},
                "feedback": [{"k": [1, None]}],
                "queue_response_time_sec": "slow",
                "datetime": "not a number",
                "expires_at": None,
                "model_version": {"odd": True},
                "has_feedback": "yes",
            }
        },
    )
    r = api.post("/status", {"job_id": job_id})
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["datetime"] == 0.0 and st["model_version"] == "{'odd': True}" and st["has_feedback"] is True, st
    # /feedback on such a job compares against what it finds and answers, never 500s.
    answer = api.feedback(job_id, ["a", "b"])
    assert answer["status"] == "Error", answer


def test_token_is_checked_before_the_body_is_read(main_stack: Stack) -> None:
    url = main_stack.apis[0].url
    huge = b"{" * (3 * 1024 * 1024)  # over the body limit, and not JSON
    missing = httpx.post(f"{url}/inference", content=huge, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and missing.content == b'{"detail":"Not authenticated"}', missing.text
    wrong = httpx.post(f"{url}/status", content=huge, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json() == c.ACCESS_DENIED
    assert wrong.headers["www-authenticate"] == "Bearer"
    worker = httpx.post(
        f"{url}/worker/register", content=huge, headers={"Authorization": f"Bearer {main_stack.api_token}"}
    )
    assert worker.status_code == 401, worker.text


def test_default_body_limit_is_one_mib(api: ApiClient) -> None:
    body = json.dumps({"job_id": "a" * (1024 * 1024)}).encode()
    r = post_raw(api, "/status", body)
    assert r.status_code == 413, r.text
    fits = post_raw(api, "/status", json.dumps({"job_id": "b" * (1000 * 1024)}).encode())
    assert fits.status_code == 200 and fits.json()["status"] == "Error", fits.text[:200]


def test_oversize_feedback_label_is_refused_in_portuguese(api: ApiClient) -> None:
    label = "l" * 5000  # over the default 4096-byte label cap
    job_id = api.submit(E, "predict", [label])
    api.wait_done(job_id)
    other = "m" * 5000
    answer = api.feedback(job_id, [other])
    assert answer == c.plain_error(
        "O label na posição 0 da lista de feedbacks tem 5002 bytes, porém o tamanho máximo permitido "
        "para um label é de 4096 bytes"
    ), answer
    assert api.status(job_id)["has_feedback"] is False
    assert api.feedback(job_id, [secrets.token_hex(8)]) == c.FEEDBACK_OK
