"""Contract answers: ContractError rendered by one handler, the extension texts, auth decisions."""

from __future__ import annotations

import asyncio
import json

from mlstack import messages
from mlstack.api.auth import auth_failure, expected_token
from mlstack.api.errors import ContractError, contract_error, job_error, plain_error


def _render(exc: ContractError) -> tuple[int, dict[str, str], dict]:
    response = asyncio.run(contract_error(None, exc))  # type: ignore[arg-type]
    return response.status_code, dict(response.headers), json.loads(response.body)


def test_job_error_shape() -> None:
    status, _, body = _render(job_error("texto", model_name="M", method="predict"))
    assert status == 200
    assert body == {"job_id": "n/a", "model_name": "M", "method": "predict", "status": "Error", "response": "texto"}
    assert list(body) == ["job_id", "model_name", "method", "status", "response"]  # the original's key order


def test_plain_error_shape() -> None:
    assert _render(plain_error("x"))[2] == {"status": "Error", "response": "x"}


def test_queue_full_text_and_retry_after_header() -> None:
    assert messages.queue_full("M") == "A fila do modelo 'M' está cheia. Tente novamente em alguns segundos."
    exc = ContractError({"status": "Error"}, headers={"Retry-After": "5"})
    assert _render(exc)[1]["retry-after"] == "5"


def test_tokens_per_path() -> None:
    assert expected_token("/inference", "api", "wk") == "api"
    assert expected_token("/cancel", "api", "wk") == "api"
    assert expected_token("/worker/jobs/x/start", "api", "wk") == "wk"
    for open_path in ("/", "/version", "/docs", "/openapi.json", "/health/ready", "/workers"):
        assert expected_token(open_path, "api", "wk") is None


def test_auth_answers() -> None:
    assert auth_failure("Bearer tok", "tok") is None
    assert auth_failure("tok", "tok") is None  # the last word is the token, as in the original
    missing = auth_failure(None, "tok")
    assert missing == (401, {"www-authenticate": "APIKey"}, b'{"detail":"Not authenticated"}')
    assert auth_failure("", "tok") == missing
    wrong = auth_failure("Bearer nope", "tok")
    assert wrong is not None and wrong[:2] == (401, {"www-authenticate": "Bearer"})
    assert json.loads(wrong[2]) == {"detail": "Acesso negado! Verifique as credenciais de acesso."}
    assert auth_failure("Bearer \u00e9\u00e9", "tok") is not None  # non-ASCII header bytes: refused, no crash
