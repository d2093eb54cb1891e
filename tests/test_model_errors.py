"""What a finished job holds when the model misbehaves (TEST_BAD, TEST_SLOW's info)."""

from __future__ import annotations

import pytest
from support import contract as c
from support.client import ApiClient
from support.stack import Stack

# Texts of tests/bundles/basic/worker_pub/models/bad_model.py
STR_ERROR = "Falha simulada pelo modelo de teste"
RAISED = "falha proposital no predict"


@pytest.fixture(scope="module")
def api(main_stack: Stack) -> ApiClient:
    return main_stack.client()


CASES = [
    ("predict-str", "predict", ["str_error"], None, STR_ERROR),
    ("predict-wrong-type", "predict", ["wrong_type"], None, c.wrong_return_type("predict", "list", "dict")),
    ("predict-raise", "predict", ["raise"], None, c.model_raised("TEST_BAD", "ValueError", RAISED)),
    ("evaluate-str", "evaluate", ["str_error"], ["a"], STR_ERROR),
    ("evaluate-wrong-type", "evaluate", ["wrong_type"], ["a"], c.wrong_return_type("evaluate", "dict", "list")),
    ("evaluate-raise", "evaluate", ["raise"], ["a"], c.model_raised("TEST_BAD", "KeyError", "'chave_ausente'")),
    ("info-wrong-type", "info", None, None, c.wrong_return_type("get_model_info", "dict", "list")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "features", "targets", "message"), [x[1:] for x in CASES], ids=[x[0] for x in CASES]
)
def test_model_misbehaviour_becomes_job_error(
    api: ApiClient, method: str, features: list | None, targets: list | None, message: str
) -> None:
    args: list = [] if features is None else [features] if targets is None else [features, targets]
    st = api.run("TEST_BAD", method, *args)
    assert st["status"] == "Error", st
    assert st["response"] == message
    assert st["total_response_time_sec"] >= 0, st


def test_info_returning_str_is_an_error_with_that_text(api: ApiClient) -> None:
    st = api.run("TEST_SLOW", "info")
    assert st["status"] == "Error", st
    assert st["response"] == "Informação indisponível para o modelo lento"


def test_worker_keeps_serving_after_model_raised(main_stack: Stack, api: ApiClient) -> None:
    worker = main_stack.workers["basic"]
    pid = worker.proc.pid
    for _ in range(3):
        assert api.run("TEST_BAD", "predict", ["raise"])["status"] == "Error"
    ok = api.run("TEST_BAD", "predict", ["ok", "x"])
    assert ok["status"] == "Done", ok
    assert ok["response"] == ["ok", "ok"]
    assert ok["model_version"] == "bad-7"
    assert worker.proc.alive() and worker.proc.pid == pid, "the worker process died or was replaced"
    # the same worker still serves its other model too
    echo = api.run("TEST_ECHO", "predict", ["still here"])
    assert echo["status"] == "Done" and echo["response"] == ["still here"], echo
