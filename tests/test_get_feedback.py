"""POST /get_feedback on a stack with two API processes (two gunicorn masters, as on two
hosts) sharing one database. The stack runs with a 3 s global interval (the text
states its own interval; the default text is pinned in test_contract_texts.py) and a 600 s interval per model."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

import pytest
from support import contract as c
from support.client import JOB_ID, ApiClient
from support.knobs import FB_GLOBAL_INTERVAL_S, FB_MODEL_INTERVAL_S
from support.stack import Stack

TODAY = date.today()
START = (TODAY - timedelta(days=1)).strftime("%d/%m/%Y")
END = (TODAY + timedelta(days=1)).strftime("%d/%m/%Y")
LIMIT_KEYS = {"job_id", "model_name", "method", "status", "response", "next_feedback_timestamp"}


def strptime_error(text: str) -> str:
    try:
        datetime.strptime(text, "%d/%m/%Y")
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{text} is a valid date")


DATE_CASES = [
    ("dd/mm/yyyy", "01/01/2024", c.bad_initial_date("time data 'dd/mm/yyyy' does not match format '%d/%m/%Y'")),
    ("01/01/2023", "31/02/2023", c.bad_end_date("day is out of range for month")),
    ("2024-01-01", "01/01/2024", c.bad_initial_date(strptime_error("2024-01-01"))),
    ("01/01/2024", "01/13/2024", c.bad_end_date(strptime_error("01/13/2024"))),
    ("01/01/2024 ", "01/01/2024", c.bad_initial_date(strptime_error("01/01/2024 "))),
    ("dd/mm/yyyy", "31/02/2023", c.bad_initial_date("time data 'dd/mm/yyyy' does not match format '%d/%m/%Y'")),
    ("01/01/2200", "31/12/2199", c.initial_after_end("01/01/2200", "31/12/2199")),
    ("01/01/2200", "31/07/2200", c.span_too_long("01/01/2200", "31/07/2200", 211)),
    # N = days from initial to end + 1 day = 91 > 90, reported as N - 1
    ("01/01/2200", "01/04/2200", c.span_too_long("01/01/2200", "01/04/2200", 90)),
]


@pytest.fixture(scope="module")
def apis(fb_stack: Stack) -> tuple[ApiClient, ApiClient]:
    return fb_stack.client(0), fb_stack.client(1)


def test_unknown_model(apis: tuple[ApiClient, ApiClient]) -> None:
    for api in apis:
        answer = api.get_feedback("COLE_AQUI_O_NOME_DO_MODELO", START, END)
        assert answer == c.gf_error("COLE_AQUI_O_NOME_DO_MODELO", c.MODEL_NOT_FOUND)


@pytest.mark.parametrize(("initial", "end", "message"), DATE_CASES)
def test_date_errors(apis: tuple[ApiClient, ApiClient], initial: str, end: str, message: str) -> None:
    for api in apis:
        for model in ("TEST_ECHO", "TEST_SLOW", "TEST_BAD"):
            assert api.get_feedback(model, initial, end) == c.gf_error(model, message)


def _assert_limit(answer: dict, model: str, prefix: str, expected_next: float, texts: list[str]) -> float:
    """Checks a rate-limit answer; a wrong text goes to `texts` so the flow can go on and report all of them."""
    assert set(answer) == LIMIT_KEYS, answer
    assert (answer["job_id"], answer["model_name"], answer["method"], answer["status"]) == (
        "n/a", model, "get_feedback", "Error"), answer  # fmt: skip
    next_ts = answer["next_feedback_timestamp"]
    assert isinstance(next_ts, (int, float)), answer
    # <epoch + 1>: one second after the moment the limit ends
    assert abs((next_ts - 1) - expected_next) < 3, (next_ts, expected_next)
    allowed = {prefix + c.when(next_ts - 1 + d) for d in (-1, 0, 1)}
    if answer["response"] not in allowed:
        texts.append(f"got {answer['response']!r}, expected one of {sorted(allowed)}")
    return float(next_ts)


def _sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()) + 0.2)


def _seed(api: ApiClient, model: str, features: list, feedback: list | None) -> str:
    st = api.run(model, "predict", features)
    assert st["status"] == "Done", st
    if feedback is not None:
        assert api.feedback(st["job_id"], feedback) == c.FEEDBACK_OK
    return str(st["job_id"])


def test_rate_limits_are_shared_and_success(fb_stack: Stack, apis: tuple[ApiClient, ApiClient]) -> None:
    api1, api2 = apis
    wrong_texts: list[str] = []
    # Predict jobs of TEST_ECHO: two with feedback (oldest first), one without.
    _seed(api1, "TEST_ECHO", ["a", "b"], ["a", "c"])
    _seed(api2, "TEST_ECHO", ["b"], ["b"])
    _seed(api1, "TEST_ECHO", ["c"], None)
    _seed(api1, "TEST_BAD", ["ok"], ["fb_wrong_type"])

    # A date error right before does not start any limit ...
    assert api2.get_feedback("TEST_SLOW", "dd/mm/yyyy", END)["response"].startswith("A data inicial")
    # ... so the first real query runs: nothing found (TEST_SLOW has no feedback). It starts both limits.
    t0 = time.time()
    assert api1.get_feedback("TEST_SLOW", START, END) == c.gf_error("TEST_SLOW", c.nothing_found(START, END))

    # The other API process enforces both limits set by the first one.
    global_next = _assert_limit(
        api2.get_feedback("TEST_ECHO", START, END),
        "TEST_ECHO",
        c.global_limit_prefix(f"{FB_GLOBAL_INTERVAL_S} segundos"),
        t0 + FB_GLOBAL_INTERVAL_S,
        wrong_texts,
    )
    _assert_limit(
        api2.get_feedback("TEST_SLOW", START, END),
        "TEST_SLOW",
        c.MODEL_LIMIT_PREFIX,
        t0 + FB_MODEL_INTERVAL_S,
        wrong_texts,
    )
    # The global limit also holds on the process that set it.
    _assert_limit(
        api1.get_feedback("TEST_BAD", START, END),
        "TEST_BAD",
        c.global_limit_prefix(f"{FB_GLOBAL_INTERVAL_S} segundos"),
        t0 + FB_GLOBAL_INTERVAL_S,
        wrong_texts,
    )

    # After the global interval another model may ask.
    _sleep_until(global_next)
    t1 = time.time()
    answer = api1.get_feedback("TEST_ECHO", START, END)
    job_id = answer.get("job_id", "")
    assert answer == {"job_id": job_id, "model_name": "TEST_ECHO", "method": "get_feedback", "status": "Queued"}
    assert JOB_ID.match(job_id), job_id

    st = api2.wait_done(job_id)
    assert set(st) == c.GET_FEEDBACK_STATUS_KEYS, st
    assert st["status"] == "Done", st
    assert st["method"] == "get_feedback"
    assert st["model_version"] == "echo-3"
    assert (st["initial_date"], st["end_date"], st["request_source"]) == (START, END, "127.0.0.1"), st
    assert set(st["response"]) == {"model_metrics", "api_metrics"}, st["response"]
    # Newest job first: ["b"] (feedback ["b"]) then ["a", "b"] (feedback ["a", "c"]).
    assert st["response"]["model_metrics"] == {"y_pred": ["b", "a", "b"], "y_true": ["b", "a", "c"]}
    assert st["response"]["api_metrics"] == {
        "feedback_labels_types": ["a", "b", "c"],
        "qty_computed_labels": 3,
        "total_jobs_predict_done": 3,
        "total_jobs_has_feedback": 2,
        "total_jobs_computed_feedback": 2,
        "additional_info": c.additional_info(3, 2),
    }

    # The same model again, from the other process, after the global interval: the model limit.
    _sleep_until(t1 + FB_GLOBAL_INTERVAL_S + 1)
    _assert_limit(
        api2.get_feedback("TEST_ECHO", START, END),
        "TEST_ECHO",
        c.MODEL_LIMIT_PREFIX,
        t1 + FB_MODEL_INTERVAL_S,
        wrong_texts,
    )

    # A model whose get_feedback returns the wrong type.
    answer = api2.get_feedback("TEST_BAD", START, END)
    assert answer.get("status") == "Queued", answer
    st = api1.wait_done(answer["job_id"])
    assert st["status"] == "Error", st
    assert st["response"] == c.wrong_return_type("get_feedback", "dict", "int")
    assert not wrong_texts, "rate-limit texts differ from the contract:\n" + "\n".join(wrong_texts)
