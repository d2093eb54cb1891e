"""Job latency figures, observed where workers hand their results in.

A pure ASGI middleware around the worker result endpoints (one result, or a worker's batch of
them): it keeps a copy of the request and response bodies as they pass and, for each result the
API accepted, observes queue, run and total time. The routes stay untouched, and every other
request pays one string comparison.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlstack import metrics

log = logging.getLogger(__name__)
RESULT_PATHS = ("/worker/results",)
RESULT_PREFIX, RESULT_SUFFIX = "/worker/jobs/", "/result"
# Larger bodies are passed through without a copy (their figures are skipped, not the results).
MAX_COPY_BYTES = 4 * 1024 * 1024
UNKNOWN_MODEL = "unknown"
# What routes_worker answers for one accepted result (JSONResponse's compact separators).
ACCEPTED = b'{"accepted":true}'


def _is_result_path(path: str) -> bool:
    return path in RESULT_PATHS or (path.startswith(RESULT_PREFIX) and path.endswith(RESULT_SUFFIX))


def observe(request_body: bytes, response_body: bytes, now: float) -> int:
    """Observe the accepted results of one exchange; returns how many were observed."""
    if response_body == ACCEPTED:  # one result, the common case: no need to parse the answer
        answer: Any = {"accepted": True}
    elif b'"accepted":true' not in response_body.replace(b" ", b""):
        return 0
    else:
        try:
            answer = json.loads(response_body)
        except ValueError:
            return 0
    try:
        sent = json.loads(request_body)
    except ValueError:
        return 0
    if isinstance(sent, dict) and isinstance(sent.get("results"), list) and isinstance(answer, dict):
        pairs = zip(sent["results"], answer.get("results") or [], strict=False)
    else:
        pairs = zip([sent], [answer], strict=False)
    observed = 0
    for result, outcome in pairs:
        if not (isinstance(result, dict) and isinstance(outcome, dict) and outcome.get("accepted") is True):
            continue
        created = _number(result.get("datetime"))
        if created is None:
            continue
        metrics.job_finished(
            str(result.get("model_name") or UNKNOWN_MODEL),
            str(result.get("method") or ""),
            str(result.get("status") or ""),
            _number(result.get("queue_response_time_sec")) or -1.0,
            now - created,
        )
        observed += 1
    return observed


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class ResultMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not _is_result_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        response: list[bytes] = []
        status = [0]

        async def copying_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and sum(map(len, request)) < MAX_COPY_BYTES:
                request.append(message.get("body", b""))
            return message

        async def copying_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                response.append(message.get("body", b""))
            await send(message)

        await self.app(scope, copying_receive, copying_send)
        if status[0] == 200:
            try:
                observe(b"".join(request), b"".join(response), time.time())
            except Exception:  # figures must never cost a worker its result
                log.exception("result metrics")
