"""Property-based runs against a real API process (main_stack): no input gets a 5xx.

- hypothesis: bodies built from hostile JSON values (lone surrogates, NaN/Infinity, integers
  past 64 bits, deep nesting, wrong types, unknown keys) sent as raw bytes to every public
  endpoint; every answer is < 500 and strict JSON.
- schemathesis: cases generated from /openapi.json (positive and negative), with the token.

Both are bounded (max examples below) so the file runs in well under two minutes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from support.stack import Stack

pytestmark = pytest.mark.property

MODELS = ["TEST_ECHO", "TEST_BAD", "NO_SUCH_MODEL", "\ud800", ""]
METHODS = ["predict", "evaluate", "info", "Predict", "\udfff"]
HOSTILE_STRINGS = ["\ud800", "a\udfffb", "\x00", "ção", "x" * 300, "01/01/2024", "31/02/2024", "f" * 64]

KEYS = st.sampled_from(["k", "\ud800", "a.b", "$x", "a\x00b"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=12,
)
lists = st.lists(values, min_size=0, max_size=5) | values


def _body(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]):  # type: ignore[no-untyped-def]
    return st.fixed_dictionaries(required, optional={**optional, "extra": values})


def _text(choices: list[str]) -> st.SearchStrategy[Any]:
    return st.sampled_from(choices) | values


BODIES = {
    "/inference": _body(
        {"model_name": _text(MODELS), "method": _text(METHODS)}, {"features": lists, "targets": lists}
    ),
    "/status": _body({}, {"job_id": _text(HOSTILE_STRINGS)}),
    "/feedback": _body({"job_id": _text(HOSTILE_STRINGS)}, {"feedback": lists}),
    "/get_feedback": _body(
        {"model_name": _text(MODELS)}, {"initial_date": _text(HOSTILE_STRINGS), "end_date": _text(HOSTILE_STRINGS)}
    ),
}


def _strict_json(r: httpx.Response) -> None:
    json.loads(r.content, parse_constant=lambda name: pytest.fail(f"{name} in an answer: {r.text[:300]}"))


@pytest.fixture(scope="module")
def http(main_stack: Stack) -> httpx.Client:
    client = httpx.Client(
        base_url=main_stack.apis[0].url,
        headers={"Authorization": f"Bearer {main_stack.api_token}", "Content-Type": "application/json"},
        timeout=30,
    )
    yield client  # type: ignore[misc]
    client.close()


@pytest.mark.parametrize("path", sorted(BODIES))
def test_hostile_bodies_never_get_a_5xx(http: httpx.Client, path: str) -> None:
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=BODIES[path])
    def check(body: dict) -> None:
        raw = json.dumps(body, allow_nan=True).encode()  # escapes lone surrogates, writes NaN
        r = http.post(path, content=raw)
        assert r.status_code < 500, f"{path} {raw[:300]!r}: HTTP {r.status_code} {r.text[:300]}"
        assert r.status_code in (200, 422), f"{path} {raw[:300]!r}: HTTP {r.status_code} {r.text[:300]}"
        _strict_json(r)

    check()


@pytest.fixture(scope="module")
def openapi_schema(main_stack: Stack) -> schemathesis.BaseSchema:
    url = main_stack.apis[0].url
    config = SchemathesisConfig.from_dict({"base-url": url})
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' own pytest plugin does not run under this pytest (9.x); its strategies do.
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_openapi_cases_never_get_a_5xx(
    openapi_schema: schemathesis.BaseSchema, main_stack: Stack, mode: schemathesis.GenerationMode
) -> None:
    operations = _operations(openapi_schema)
    paths = {op.path for op in operations}
    assert {"/inference", "/status", "/feedback", "/get_feedback"} <= paths, paths
    auth = {"Authorization": f"Bearer {main_stack.api_token}"}
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for op in operations])

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=auth, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.path} {case.body!r:.300}: HTTP {response.status_code} {response.text[:300]}"
        )

    check()
