"""POST /status and POST /feedback."""

from __future__ import annotations

import secrets
import time

import pytest
from support import contract as c
from support.client import ApiClient
from support.stack import Stack


@pytest.fixture(scope="module")
def api(main_stack: Stack) -> ApiClient:
    return main_stack.client()


# -- /status ------------------------------------------------------------------------------------
def test_status_job_id_too_long(api: ApiClient) -> None:
    job_id = "a" * 101
    assert api.status(job_id) == c.plain_error(c.job_id_too_long(job_id))


@pytest.mark.parametrize("job_id", ["COLE_AQUI_O_JOB_ID", "f" * 64, "b" * 100, ""])
def test_status_unknown_job(api: ApiClient, job_id: str) -> None:
    assert api.status(job_id) == c.plain_error(c.job_not_found(job_id))


def test_status_of_predict_job_through_its_life(api: ApiClient) -> None:
    token = secrets.token_hex(4)
    before = time.time()
    job_id = api.submit("TEST_SLOW", "predict", [f"slow:1.5:{token}"])
    first = api.status(job_id)
    assert set(first) == c.PREDICT_STATUS_KEYS, first
    assert first["job_id"] == job_id
    assert first["model_name"] == "TEST_SLOW"
    assert first["method"] == "predict"
    assert first["status"] in ("Queued", "Running"), first
    assert type(first["datetime"]) is float, first
    assert before - 1 <= first["datetime"] <= time.time() + 1, first
    assert first["queue_response_time_sec"] == -1
    assert first["total_response_time_sec"] == -1
    assert first["response"] == ""
    assert first["feedback"] == ""
    assert first["has_feedback"] is False

    running = api.wait_status(job_id, ("Running",), timeout=10, interval=0.05)
    assert running["queue_response_time_sec"] == -1
    assert running["total_response_time_sec"] == -1
    assert running["response"] == ""

    done = api.wait_done(job_id)
    assert set(done) == c.PREDICT_STATUS_KEYS, done
    assert done["status"] == "Done", done
    assert done["response"] == [f"slept:{token}"]
    assert done["model_version"] == "slow-2"
    assert done["datetime"] == first["datetime"]
    queue_t, total_t = done["queue_response_time_sec"], done["total_response_time_sec"]
    assert isinstance(queue_t, float) and isinstance(total_t, float), done
    assert 0 <= queue_t <= total_t, done
    assert total_t >= 1.5, done  # the model slept 1.5 s
    assert done["feedback"] == ""
    assert done["has_feedback"] is False


def test_status_of_info_and_evaluate_jobs(api: ApiClient) -> None:
    info = api.run("TEST_ECHO", "info")
    assert set(info) == c.STATUS_KEYS, info
    assert info["status"] == "Done"
    assert info["method"] == "info"
    assert info["response"] == {"model_name": "TEST_ECHO", "description": "Modelo de eco para testes", "classes": []}
    assert info["model_version"] == "echo-3"

    ev = api.run("TEST_ECHO", "evaluate", ["a", "b"], ["a", "x"])
    assert set(ev) == c.STATUS_KEYS, ev
    assert ev["status"] == "Done"
    assert ev["response"] == {"Accuracy": "50.00%", "n": 2}
    assert ev["model_version"] == "echo-3"


# -- /feedback ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def done_predict(api: ApiClient) -> str:
    done = api.run("TEST_ECHO", "predict", ["a", 1, "c"])
    assert done["status"] == "Done" and done["response"] == ["a", 1, "c"], done
    return str(done["job_id"])


def test_feedback_empty_list(api: ApiClient, done_predict: str) -> None:
    assert api.feedback(done_predict, []) == c.error(c.empty_list("feedback"))


def test_feedback_too_many_items(api: ApiClient, done_predict: str) -> None:
    assert api.feedback(done_predict, ["x"] * 101) == c.error(c.too_many(101, "feedback"))


def test_feedback_unknown_job(api: ApiClient) -> None:
    assert api.feedback("COLE_AQUI_O_JOB_ID", ["a"]) == c.plain_error(c.job_not_found("COLE_AQUI_O_JOB_ID"))


def test_feedback_on_job_that_is_not_a_finished_predict(api: ApiClient) -> None:
    info = api.run("TEST_ECHO", "info")
    assert api.feedback(info["job_id"], ["a"]) == c.plain_error(c.feedback_not_allowed(info["job_id"], "info", "Done"))

    failed = api.run("TEST_BAD", "predict", ["raise"])
    assert failed["status"] == "Error", failed
    assert api.feedback(failed["job_id"], ["a"]) == c.plain_error(
        c.feedback_not_allowed(failed["job_id"], "predict", "Error")
    )

    job_id = api.submit("TEST_SLOW", "predict", [f"slow:2:{secrets.token_hex(4)}"])
    api.wait_status(job_id, ("Running",), timeout=10, interval=0.05)
    assert api.feedback(job_id, ["a"]) == c.plain_error(c.feedback_not_allowed(job_id, "predict", "Running"))
    api.wait_done(job_id)


def test_feedback_count_mismatch(api: ApiClient, done_predict: str) -> None:
    assert api.feedback(done_predict, ["a", 1]) == c.plain_error(c.feedback_count_mismatch(done_predict))


@pytest.mark.parametrize(
    ("feedback", "label", "pos", "label_type", "pred", "pred_type"),
    [
        (["a", "1", "c"], "1", 1, "str", "1", "int"),
        ([2, 1, "c"], "2", 0, "int", "a", "str"),
        (["a", 1.5, "c"], "1.5", 1, "float", "1", "int"),
        (["a", 1, None], "None", 2, "NoneType", "c", "str"),
    ],
    ids=["str-for-int", "int-for-str", "float-for-int", "null-for-str"],
)
def test_feedback_label_type_mismatch(
    api: ApiClient, done_predict: str, feedback: list, label: str, pos: int, label_type: str, pred: str, pred_type: str
) -> None:
    expected = c.feedback_type_mismatch(label, pos, label_type, pred, pred_type, done_predict)
    assert api.feedback(done_predict, feedback) == c.plain_error(expected)


def test_feedback_success_is_shown_by_status(api: ApiClient) -> None:
    done = api.run("TEST_ECHO", "predict", ["a", 1, "c"])
    job_id = done["job_id"]
    assert api.feedback(job_id, ["b", 7, "c"]) == c.FEEDBACK_OK
    st = api.status(job_id)
    assert set(st) == c.PREDICT_STATUS_KEYS, st
    assert st["feedback"] == ["b", 7, "c"]
    assert st["has_feedback"] is True, f"has_feedback must be the JSON boolean true, got {st['has_feedback']!r}"
    assert st["status"] == "Done"
    assert st["response"] == ["a", 1, "c"]
