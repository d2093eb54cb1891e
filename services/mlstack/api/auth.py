"""Bearer-token checks: one token for client applications, another for workers.

``AuthMiddleware`` (pure ASGI) checks the token from the headers alone, before a byte of the
body is read, so a client without the token cannot make the API buffer or parse anything.
The ``APIKeyHeader`` dependencies stay on the routes for Swagger UI's "Authorize" button and
as a second check.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from mlstack import messages
from mlstack.api.jsonsafe import dumps_safe, send_json

# Paths of the public contract that take the client token; everything under WORKER_PREFIX takes
# the worker token. Other paths (/, /version, /docs, /openapi.json, /health/*, /dashboard, /static/*) are
# open; /metrics checks for itself (open on loopback).
CLIENT_PATHS = frozenset({"/inference", "/status", "/feedback", "/get_feedback", "/cancel", "/dashboard/data"})
WORKER_PREFIX = "/worker/"

client_auth_header = APIKeyHeader(name="Authorization", scheme_name="Bearer token")
worker_auth_header = APIKeyHeader(name="Authorization", scheme_name="Worker token", auto_error=True)


def _denied() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=messages.ACCESS_DENIED,
        headers={"WWW-Authenticate": "Bearer"},
    )


def token_matches(header_value: str, expected: str) -> bool:
    # "Bearer <token>"; like the original, the last word is the token. Constant-time comparison.
    parts = header_value.split()
    received = parts[-1] if parts else ""
    return hmac.compare_digest(received.encode("utf-8", "replace"), expected.encode())


# The dependencies are async on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
# which cost a fifth of the API's CPU per request under load.
async def require_client(request: Request, authorization: str = Depends(client_auth_header)) -> None:
    if not token_matches(authorization, request.app.state.services.settings.api_token):
        raise _denied()


async def require_worker(request: Request, authorization: str = Depends(worker_auth_header)) -> None:
    if not token_matches(authorization, request.app.state.services.settings.worker_token):
        raise _denied()


def expected_token(path: str, api_token: str, worker_token: str) -> str | None:
    """The token a path needs, or None for an open path."""
    if path in CLIENT_PATHS:
        return api_token
    if path.startswith(WORKER_PREFIX):
        return worker_token
    return None


def auth_failure(authorization: str | None, expected: str) -> tuple[int, dict[str, str], bytes] | None:
    """The answer to a request with this Authorization header (None: let it through).

    The same answers the dependencies gave: a missing header is FastAPI's APIKeyHeader answer
    (401, ``WWW-Authenticate: APIKey``), a wrong token the contract's 401 with ``Bearer``.
    """
    if not authorization:
        return 401, {"www-authenticate": "APIKey"}, dumps_safe({"detail": messages.NOT_AUTHENTICATED})
    if not token_matches(authorization, expected):
        return 401, {"www-authenticate": "Bearer"}, dumps_safe({"detail": messages.ACCESS_DENIED})
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, api_token: str, worker_token: str) -> None:
        self.app = app
        self.api_token = api_token
        self.worker_token = worker_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            expected = expected_token(scope["path"], self.api_token, self.worker_token)
            if expected is not None:
                raw = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
                failure = auth_failure(raw.decode("latin-1") if raw is not None else None, expected)
                if failure is not None:
                    status_code, headers, body = failure
                    await send_json(send, status_code, body, headers)
                    return
        await self.app(scope, receive, send)

