"""get_feedback's rate limit under concurrency, through the two API processes of fb_stack.

Runs after test_get_feedback.py (file order) on the same stack: it uses models of its own,
registered through the worker endpoint, so the limits of that file's models are not touched.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pymongo
import pytest
from support import contract as c
from support.procs import wait_for
from support.stack import Stack

# Any day will do: these models never have jobs, so every answer that passes is "nothing found".
DAY = "01/01/2026"
GLOBAL_PREFIX = "O intervalo global de "
CONCURRENT = 8


@pytest.fixture(scope="module")
def limits(fb_stack: Stack) -> Iterator[pymongo.collection.Collection]:
    client: pymongo.MongoClient = pymongo.MongoClient(fb_stack.mongo.uri, serverSelectionTimeoutMS=5000)
    try:
        yield client[fb_stack.db_name]["col_feedback_limits"]
    finally:
        client.close()


def _register(stack: Stack, *models: str) -> None:
    r = httpx.post(
        f"{stack.apis[0].url}/worker/register",
        json={"worker_id": "race-probe", "models": [{"name": m} for m in models]},
        headers={"Authorization": f"Bearer {stack.worker_token}"},
    )
    assert r.status_code == 200, r.text


def _wait_global_free(limits: pymongo.collection.Collection) -> None:
    """Other tests of the session may have just taken the global slot (3 s on this stack)."""

    def free() -> bool:
        doc = limits.find_one({"_id": "global"})
        return doc is None or float(doc.get("next", 0)) <= time.time()

    wait_for(free, 30, "the global get_feedback interval to pass", interval=0.2)


def _ask_all_at_once(stack: Stack, models: list[str]) -> list[dict]:
    """One request per model in `models`, all released together, alternating the two API processes."""
    barrier = threading.Barrier(len(models))
    answers: list[dict] = [{} for _ in models]

    def ask(i: int, model: str) -> None:
        with httpx.Client(base_url=stack.apis[i % 2].url, timeout=30) as http:
            body = {"model_name": model, "initial_date": DAY, "end_date": DAY}
            headers = {"Authorization": f"Bearer {stack.api_token}"}
            barrier.wait()
            r = http.post("/get_feedback", json=body, headers=headers)
            assert r.status_code == 200, r.text
            answers[i] = r.json()

    threads = [threading.Thread(target=ask, args=(i, m)) for i, m in enumerate(models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(answers), f"some requests got no answer: {answers}"
    return answers


def _passed(answer: dict) -> bool:
    return "next_feedback_timestamp" not in answer


def test_concurrent_requests_for_one_model_exactly_one_passes(fb_stack: Stack, limits) -> None:  # type: ignore[no-untyped-def]
    assert len(fb_stack.apis) == 2, "fb_stack runs two API processes"
    model = f"TEST_RACE_{secrets.token_hex(3)}"
    _register(fb_stack, model)
    _wait_global_free(limits)
    answers = _ask_all_at_once(fb_stack, [model] * CONCURRENT)
    passed = [a for a in answers if _passed(a)]
    assert passed == [c.gf_error(model, c.nothing_found(DAY, DAY))], answers
    refused = [a for a in answers if not _passed(a)]
    # Mostly the model's limit; a request that read both limits while the winner was between
    # taking the model's and the global one may be told about the global one instead.
    assert all(a["response"].startswith((c.MODEL_LIMIT_PREFIX, GLOBAL_PREFIX)) for a in refused), refused


def test_concurrent_requests_for_two_models_one_passes_and_the_other_model_is_not_charged(
    fb_stack: Stack,
    limits,  # type: ignore[no-untyped-def]
) -> None:
    first, second = (f"TEST_RACE_{secrets.token_hex(3)}" for _ in range(2))
    _register(fb_stack, first, second)
    _wait_global_free(limits)
    answers = _ask_all_at_once(fb_stack, [first, second])
    passed = [a for a in answers if _passed(a)]
    assert len(passed) == 1, answers
    loser = next(a for a in answers if not _passed(a))
    assert loser["response"].startswith(GLOBAL_PREFIX), loser
    # The refused model's own interval was given back: once the global interval passes it is served.
    _wait_global_free(limits)
    with httpx.Client(base_url=fb_stack.apis[1].url, timeout=30) as http:
        r = http.post(
            "/get_feedback",
            json={"model_name": loser["model_name"], "initial_date": DAY, "end_date": DAY},
            headers={"Authorization": f"Bearer {fb_stack.api_token}"},
        )
    assert r.json() == c.gf_error(loser["model_name"], c.nothing_found(DAY, DAY)), r.text
