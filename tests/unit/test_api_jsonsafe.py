"""What JSON/BSON can carry (jsonsafe): the checks on request values and the never-failing render."""

from __future__ import annotations

import json
import math

import pytest
from mlstack.api.jsonsafe import INT64_MAX, INT64_MIN, MAX_DEPTH, SafeJSONResponse, dumps_safe, sanitize, value_problem
from starlette.responses import JSONResponse

GOOD = [
    "texto", "ção ✓ 😀", "", 0, -1, INT64_MAX, INT64_MIN, 1.5, -0.0, 1e308, True, False, None,
    [1, "a", [2.5, {"k": None}]], {"a": {"b": [1, 2]}, "$odd.key": 1},
]  # fmt: skip
BAD = [
    ("\ud800", "surrogate"),
    (["ok", "\udfff"], "surrogate"),
    ({"k": ["x", {"y": "a\ud83dz"}]}, "surrogate"),
    ({"\ud800": 1}, "surrogate"),
    ({"a\x00b": 1}, "NUL"),
    (math.nan, "NaN"),
    ([math.inf], "NaN or Infinity"),
    ({"x": -math.inf}, "NaN or Infinity"),
    (2**63, "64-bit"),
    ([-(2**63) - 1], "64-bit"),
    ({"n": 10**30}, "64-bit"),
    (b"bytes", "bytes"),
]


@pytest.mark.parametrize("value", GOOD)
def test_storable_values_pass(value: object) -> None:
    assert value_problem(value) is None


@pytest.mark.parametrize(("value", "why"), BAD)
def test_unstorable_values_are_named(value: object, why: str) -> None:
    problem = value_problem(value)
    assert problem is not None and why in problem


def test_nesting_is_limited_without_recursion() -> None:
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert "nested" in (value_problem(deep) or "")
    very_deep: list = []
    for _ in range(100_000):  # far past the interpreter's recursion limit
        very_deep = [very_deep]
    assert value_problem(very_deep) is not None
    ok: list = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert value_problem(ok) is None


def test_dumps_safe_is_starlettes_bytes_on_the_fast_path() -> None:
    content = {"a": [1, 2.5, "ção"], "b": None, "c": True}
    assert dumps_safe(content) == JSONResponse(content).body


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"response": [math.nan, 1.0]}, {"response": [None, 1.0]}),
        ({"response": {"x": math.inf}}, {"response": {"x": None}}),
        ({"feedback": ["a\ud800b"]}, {"feedback": ["a\ufffdb"]}),
        ({"\udc00": 1}, {"\ufffd": 1}),
        ({"when": object}, {"when": str(object)}),
    ],
)
def test_anything_stored_renders_as_strict_json(content: dict, expected: dict) -> None:
    body = SafeJSONResponse(content).body
    assert json.loads(body) == expected
    assert sanitize(content) == expected
