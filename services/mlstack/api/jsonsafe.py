"""What JSON and BSON can carry: checks for request values and a response class that never fails.

Python's json module accepts lone surrogates, NaN/Infinity and integers of any size, but
neither strict JSON output nor BSON can hold them; a value found here is refused with a 422
before anything is written. Stored documents are rendered through ``SafeJSONResponse``, so
whatever a worker or an operator put in the store, ``/status`` still answers.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Send

from mlstack import messages

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# MongoDB refuses documents nested over 100 levels; a request value sits at most 2 levels down.
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return messages.LONE_SURROGATE
    return None


def value_problem(value: Any) -> str | None:
    """Why ``value`` (a parsed JSON value) cannot be stored and sent back, or None.

    Iterative, so a deeply nested value cannot exhaust the stack.
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return messages.INT_OUT_OF_RANGE
        elif isinstance(item, float):
            if not math.isfinite(item):
                return messages.NOT_FINITE
        elif isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                return messages.nested_too_deep(MAX_DEPTH)
            if isinstance(item, dict):
                for key in item:
                    problem = _text_problem(key) if isinstance(key, str) else messages.NON_STRING_KEY
                    if problem or "\x00" in key:
                        return problem or messages.NUL_IN_KEY
                pending.extend((v, depth + 1) for v in item.values())
            else:
                pending.extend((v, depth + 1) for v in item)
        else:
            return messages.unsupported_type(type(item).__name__)
    return None


def sanitize(value: Any, _depth: int = 0) -> Any:
    """A copy that strict JSON can carry: NaN/Infinity become null, lone surrogates U+FFFD,
    unknown types their ``str``. Only used on the slow path, after a fast render failed."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    if _depth > 2 * MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(sanitize(str(k))): sanitize(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v, _depth + 1) for v in value]
    return sanitize(str(value))


def _dumps(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def dumps_safe(content: Any) -> bytes:
    """Compact UTF-8 JSON, the bytes Starlette's JSONResponse makes; never raises."""
    try:
        return _dumps(content)
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return _dumps(sanitize(content))


class SafeJSONResponse(JSONResponse):
    """Starlette's JSONResponse (same bytes) that renders any stored value instead of failing."""

    def render(self, content: Any) -> bytes:
        return dumps_safe(content)



async def send_json(send: Send, status_code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """A whole JSON answer (``body`` already encoded) straight from a pure ASGI middleware."""
    raw_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status_code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
