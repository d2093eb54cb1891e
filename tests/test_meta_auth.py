"""Transport, auth, schema and request-shape cases of api-contract.md."""

from __future__ import annotations

import re

import httpx
import pymongo
import pytest
from support import contract as c
from support.stack import Stack

UNKNOWN_JOB = "0" * 64

PUBLIC = [
    ("/inference", {"model_name": "TEST_ECHO", "method": "predict", "features": ["a"]}),
    ("/status", {"job_id": UNKNOWN_JOB}),
    ("/feedback", {"job_id": UNKNOWN_JOB, "feedback": ["a"]}),
    ("/get_feedback", {"model_name": "TEST_ECHO", "initial_date": "01/01/2024", "end_date": "02/01/2024"}),
]

WORKER_ENDPOINTS = [
    ("/worker/register", {"worker_id": "probe", "models": [{"name": "PROBE", "version": "1"}]}),
    ("/worker/deregister", {"worker_id": "probe"}),
    (f"/worker/jobs/{UNKNOWN_JOB}/start", {"worker_id": "probe"}),
    (
        f"/worker/jobs/{UNKNOWN_JOB}/result",
        {"status": "Done", "response": ["x"], "model_version": "1", "queue_response_time_sec": 0.1},
    ),
]


@pytest.fixture(scope="module")
def url(main_stack: Stack) -> str:
    return main_stack.apis[0].url


def test_root_greeting(url: str) -> None:
    r = httpx.get(f"{url}/")
    assert r.status_code == 200
    assert r.json() == c.GREETING


def test_version_format_without_auth(url: str) -> None:
    r = httpx.get(f"{url}/version")
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["Stack Version"], body
    assert re.fullmatch(r"r\S+ \(mllibprodest==\d+(\.\d+)+\)", body["Stack Version"]), body


def test_docs_and_openapi_without_worker_endpoints(url: str) -> None:
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text.lower()
    schema = httpx.get(f"{url}/openapi.json")
    assert schema.status_code == 200
    paths = set(schema.json()["paths"])
    assert {"/inference", "/status", "/feedback", "/get_feedback", "/version"} <= paths, paths
    assert not [p for p in paths if "worker" in p], f"worker endpoints leak into the schema: {paths}"


@pytest.mark.parametrize(("path", "body"), PUBLIC)
def test_missing_auth_header_is_fastapi_apikey_answer(url: str, path: str, body: dict) -> None:
    r = httpx.post(f"{url}{path}", json=body)
    assert r.status_code in (401, 403), r.text
    assert r.json() == c.NOT_AUTHENTICATED


@pytest.mark.parametrize(("path", "body"), PUBLIC)
def test_wrong_token_is_denied(url: str, path: str, body: dict) -> None:
    r = httpx.post(f"{url}{path}", json=body, headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401, r.text
    assert r.json() == c.ACCESS_DENIED
    assert r.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize(("path", "body"), PUBLIC)
def test_worker_token_does_not_open_public_endpoints(main_stack: Stack, url: str, path: str, body: dict) -> None:
    r = httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {main_stack.worker_token}"})
    assert r.status_code == 401, r.text
    assert r.json() == c.ACCESS_DENIED


@pytest.mark.parametrize(("path", "body"), WORKER_ENDPOINTS)
def test_client_token_does_not_open_worker_endpoints(main_stack: Stack, url: str, path: str, body: dict) -> None:
    for headers in ({"Authorization": f"Bearer {main_stack.api_token}"}, {}, {"Authorization": "Bearer x"}):
        r = httpx.post(f"{url}{path}", json=body, headers=headers)
        assert r.status_code in (401, 403), f"{path} with {list(headers)}: HTTP {r.status_code} {r.text}"


def test_worker_token_opens_worker_endpoints(main_stack: Stack, url: str) -> None:
    # Proves the rejections above come from auth, not from a missing route.
    r = httpx.post(
        f"{url}/worker/jobs/{UNKNOWN_JOB}/start",
        json={"worker_id": "probe"},
        headers={"Authorization": f"Bearer {main_stack.worker_token}"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"run": False, "reason": "unknown"}


def _missing(field: str, body: dict) -> dict:
    return {"type": "missing", "loc": ["body", field], "msg": "Field required", "input": body}


def _string(field: str, value: object) -> dict:
    return {"type": "string_type", "loc": ["body", field], "msg": "Input should be a valid string", "input": value}


def _list(field: str, value: object) -> dict:
    return {"type": "list_type", "loc": ["body", field], "msg": "Input should be a valid list", "input": value}


E = "TEST_ECHO"
D = "01/01/2024"
NO_MODEL = {"features": ["a"], "method": "predict"}
MISSPELT = {"model_name_errado": E, "method": "info"}
NO_END = {"model_name": E, "initial_date": D}
SHAPE_CASES = [
    ("/inference", NO_MODEL, [_missing("model_name", NO_MODEL)]),
    ("/inference", MISSPELT, [_missing("model_name", MISSPELT)]),
    ("/inference", {"model_name": [], "method": "info"}, [_string("model_name", [])]),
    ("/inference", {"model_name": E}, [_missing("method", {"model_name": E})]),
    ("/inference", {"model_name": E, "method": {}}, [_string("method", {})]),
    ("/inference", {"model_name": E, "method": "predict", "features": "string"}, [_list("features", "string")]),
    ("/inference", {"model_name": E, "method": "predict", "features": 1}, [_list("features", 1)]),
    ("/inference", {"model_name": E, "method": "evaluate", "features": ["a"], "targets": "s"}, [_list("targets", "s")]),
    ("/status", {}, [_missing("job_id", {})]),
    ("/status", {"job_id": []}, [_string("job_id", [])]),
    ("/feedback", {"job_id": UNKNOWN_JOB}, [_missing("feedback", {"job_id": UNKNOWN_JOB})]),
    ("/feedback", {"job_id": UNKNOWN_JOB, "feedback": "string"}, [_list("feedback", "string")]),
    ("/feedback", {"job_id": [], "feedback": ["a"]}, [_string("job_id", [])]),
    ("/get_feedback", {"model_name": {}, "initial_date": D, "end_date": D}, [_string("model_name", {})]),
    ("/get_feedback", {"model_name": E, "initial_date": {}, "end_date": D}, [_string("initial_date", {})]),
    ("/get_feedback", NO_END, [_missing("end_date", NO_END)]),
]


@pytest.mark.parametrize(("path", "body", "detail"), SHAPE_CASES)
def test_body_shape_errors_are_fastapi_422(main_stack: Stack, path: str, body: dict, detail: list) -> None:
    api = main_stack.client()
    r = api.post(path, body)
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": detail}


@pytest.mark.parametrize("path", ["/inference", "/status", "/feedback", "/get_feedback"])
@pytest.mark.parametrize("raw", [b"not json", b"[]", b'"text"', b"null"])
def test_non_object_bodies_never_500(main_stack: Stack, path: str, raw: bytes) -> None:
    api = main_stack.client()
    r = api.http.post(path, content=raw, headers={**api.auth(), "Content-Type": "application/json"})
    assert r.status_code == 422, f"{path} {raw!r}: HTTP {r.status_code} {r.text[:300]}"


def test_job_store_keeps_the_original_names(main_stack: Stack) -> None:
    """Operators inspect `ml_api_db.col_jobs` and `col_queue_registry` with mongosh."""
    api = main_stack.client()
    job_id = api.submit("TEST_ECHO", "info")
    api.wait_done(job_id)
    client: pymongo.MongoClient = pymongo.MongoClient(main_stack.mongo.uri, serverSelectionTimeoutMS=5000)
    try:
        db = client["ml_api_db"]
        names = set(db.list_collection_names())
        assert {"col_jobs", "col_queue_registry"} <= names, names
        doc = db.col_jobs.find_one({"_id": job_id}) or db.col_jobs.find_one({"job_id": job_id})
        assert doc is not None, f"job {job_id} not found in ml_api_db.col_jobs"
        registry = list(db.col_queue_registry.find())
        assert "TEST_ECHO" in repr(registry), registry
    finally:
        client.close()
