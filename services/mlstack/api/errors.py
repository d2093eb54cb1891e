"""Contract answers raised from anywhere in a request and rendered by one exception handler."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from mlstack import messages
from mlstack.api.jsonsafe import SafeJSONResponse, sanitize

log = logging.getLogger(__name__)


class ContractError(Exception):
    """An answer of the contract that ends the request: a JSON body, HTTP 200 unless said otherwise."""

    def __init__(self, body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("response", ""))
        self.body = body
        self.status_code = status_code
        self.headers = headers


def job_error(response: str, **fields: Any) -> ContractError:
    """The ``{"job_id": "n/a", ..., "status": "Error", "response": ...}`` answer of /inference and friends."""
    return ContractError({"job_id": "n/a", **fields, "status": "Error", "response": response})


def plain_error(response: str) -> ContractError:
    """The ``{"status": "Error", "response": ...}`` answer of /status and /feedback."""
    return ContractError({"status": "Error", "response": response})


async def contract_error(_request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, ContractError)
    return SafeJSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)


async def validation_error(_request: Request, exc: Exception) -> SafeJSONResponse:
    # FastAPI's standard 422 answer, limited to the four keys the original clients see; the input
    # echoed back may hold what strict JSON cannot (that may be why it was refused): sanitized.
    assert isinstance(exc, RequestValidationError)
    detail = [{key: error.get(key) for key in ("type", "loc", "msg", "input")} for error in exc.errors()]
    return SafeJSONResponse({"detail": sanitize(detail)}, status_code=422)


async def unexpected_error(_request: Request, exc: Exception) -> SafeJSONResponse:
    log.error("unexpected error: %s", exc.__class__.__name__, exc_info=exc)
    return SafeJSONResponse({"status": "Error", "response": messages.INTERNAL_ERROR}, status_code=500)
