"""Request bodies through the real app, in process: shape errors and unstorable values are 422s
in FastAPI's four-key shape, auth is checked before the body is read, and the body limit holds."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from mlstack.api.schemas import INVALID_VALUE_TYPE

# The tokens of the unit tier's settings (tests/unit/conftest.py).
API_TOKEN = "client-token-for-unit-tests"
WORKER_TOKEN = "worker-token-for-unit-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
J = "a" * 64


def _raw(body: dict) -> bytes:
    # Python's json writes NaN/Infinity and escapes lone surrogates: what a hostile client sends.
    return json.dumps(body, allow_nan=True).encode()


HOSTILE = [
    ("/inference", {"model_name": "\ud800", "method": "info"}, "model_name"),
    ("/inference", {"model_name": "M", "method": "x\udfff"}, "method"),
    ("/inference", {"model_name": "M", "method": "predict", "features": ["\ud800"]}, "features"),
    ("/inference", {"model_name": "M", "method": "predict", "features": [float("nan")]}, "features"),
    ("/inference", {"model_name": "M", "method": "evaluate", "features": [1], "targets": [2**64]}, "targets"),
    ("/inference", {"model_name": "M", "method": "predict", "features": [{"a": [float("inf")]}]}, "features"),
    ("/status", {"job_id": "\ud800"}, "job_id"),
    ("/feedback", {"job_id": J, "feedback": [float("nan")]}, "feedback"),
    ("/feedback", {"job_id": J, "feedback": [2**63]}, "feedback"),
    ("/feedback", {"job_id": J, "feedback": ["\udc00"]}, "feedback"),
    ("/feedback", {"job_id": "\ud800", "feedback": ["a"]}, "job_id"),
    ("/get_feedback", {"model_name": "M", "initial_date": "\ud800", "end_date": "01/01/2024"}, "initial_date"),
]


@pytest.mark.parametrize(("path", "body", "field"), HOSTILE)
def test_unstorable_values_are_422_in_fastapi_shape(offline_app, path: str, body: dict, field: str) -> None:
    r = TestClient(offline_app).post(path, content=_raw(body), headers=AUTH)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [sorted(d) for d in detail] == [["input", "loc", "msg", "type"]], detail
    assert detail[0]["type"] == INVALID_VALUE_TYPE
    assert detail[0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    "raw",
    [b'{"model_name": NaN, "method": "info"}', b'{"model_name": "\\ud800", "method": 1e999}', b'{"job_id": -Infinity}'],
)
def test_unstorable_inputs_echoed_in_a_shape_error_do_not_break_the_answer(offline_app, raw: bytes) -> None:
    path = "/status" if b"job_id" in raw else "/inference"
    r = TestClient(offline_app).post(path, content=raw, headers=AUTH)
    assert r.status_code == 422, r.text
    json.loads(r.text)  # strict JSON: the echoed NaN/Infinity became null, the surrogate U+FFFD


def test_missing_token_is_apikeyheader_answer_before_the_body_is_read(offline_app) -> None:
    r = TestClient(offline_app).post("/inference", content=b"not json at all")
    assert r.status_code == 401
    assert r.content == b'{"detail":"Not authenticated"}'
    assert r.headers["www-authenticate"] == "APIKey"


def test_wrong_token_is_401_bearer_before_the_body_limit(offline_app, api_settings) -> None:
    big = b"x" * (api_settings.max_body_bytes + 10)
    r = TestClient(offline_app).post("/status", content=big, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json() == {"detail": "Acesso negado! Verifique as credenciais de acesso."}
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("path", "token"), [("/status", WORKER_TOKEN), ("/worker/register", API_TOKEN)])
def test_tokens_never_cross(offline_app, path: str, token: str) -> None:
    r = TestClient(offline_app).post(path, json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_default_body_limit_is_one_mib(offline_app, api_settings) -> None:
    assert api_settings.max_body_bytes == 1024 * 1024
    body = b'{"job_id": "' + b"a" * (1024 * 1024) + b'"}'
    r = TestClient(offline_app).post("/status", content=body, headers=AUTH)
    assert r.status_code == 413


@pytest.mark.parametrize("path", ["/", "/version", "/openapi.json", "/health/live"])
def test_open_paths_need_no_token(offline_app, path: str) -> None:
    assert TestClient(offline_app).get(path).status_code == 200
