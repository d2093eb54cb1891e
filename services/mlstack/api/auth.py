"""Bearer-token checks: one token for client applications, another for workers."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from mlstack import messages

# APIKeyHeader gives Swagger UI its "Authorize" button and the standard answer for a missing header.
client_auth_header = APIKeyHeader(name="Authorization", scheme_name="Bearer token")
worker_auth_header = APIKeyHeader(name="Authorization", scheme_name="Worker token", auto_error=True)


def _denied() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=messages.ACCESS_DENIED,
        headers={"WWW-Authenticate": "Bearer"},
    )


# The dependencies are async on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
# which cost a fifth of the API's CPU per request under load.
def token_matches(header_value: str, expected: str) -> bool:
    # "Bearer <token>"; like the original, the last word is the token. Constant-time comparison.
    parts = header_value.split()
    received = parts[-1] if parts else ""
    return hmac.compare_digest(received.encode(), expected.encode())


async def require_client(request: Request, authorization: str = Depends(client_auth_header)) -> None:
    if not token_matches(authorization, request.app.state.services.settings.api_token):
        raise _denied()


async def require_worker(request: Request, authorization: str = Depends(worker_auth_header)) -> None:
    if not token_matches(authorization, request.app.state.services.settings.worker_token):
        raise _denied()
