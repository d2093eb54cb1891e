"""Fault tolerance: workers gone or killed mid-job, job TTL, database and broker outages."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from support import contract as c
from support.client import ApiClient
from support.infra import rabbitmqctl
from support.knobs import TTL_MS
from support.procs import wait_for
from support.stack import Stack


def _count(stack: Stack, event: str, token: str) -> int:
    return sum(1 for e in stack.exec_events() if e["event"] == event and token in e["items"])


def _worker_post(stack: Stack, path: str, body: dict) -> dict:
    r = httpx.post(f"{stack.apis[0].url}{path}", json=body, headers={"Authorization": f"Bearer {stack.worker_token}"})
    assert r.status_code == 200, f"{path}: HTTP {r.status_code} {r.text}"
    return dict(r.json())


LATE_RESULT = {"status": "Done", "response": ["tampered"], "model_version": "x", "queue_response_time_sec": 0.1}


def _submit_eventually(api: ApiClient, model: str, features: list, timeout: float) -> tuple[str, list[dict]]:
    """Retry /inference until accepted (a service is coming back); returns the job id and the refusals."""
    refusals: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        answer = api.inference(model, "predict", features)
        if answer.get("status") == "Queued":
            return str(answer["job_id"]), refusals
        refusals.append(answer)
        if time.monotonic() > deadline:
            raise AssertionError(f"/inference not accepted within {timeout}s; last answers: {refusals[-3:]}")
        time.sleep(0.5)


def test_model_without_consuming_worker(main_stack: Stack) -> None:
    api = main_stack.client()
    worker = main_stack.add_worker("gone", "gone")
    assert api.run("TEST_GONE", "predict", ["x"])["status"] == "Done"
    worker.kill()  # a crash: no goodbye to the API, the model stays registered
    main_stack.vhost.wait_no_consumers("TEST_GONE")
    # The API may cache a positive consumer count for about a second (mlstack.api.services); after
    # that, with the broker reporting no consumer, a job must not be accepted.
    time.sleep(1.5)
    assert api.inference("TEST_GONE", "predict", ["x"]) == c.error(c.no_workers("TEST_GONE"))
    assert api.inference("TEST_GONE", "info") == c.error(c.no_workers("TEST_GONE"))
    # validation still comes first
    assert api.inference("TEST_GONE", "predict", []) == c.error(c.empty_list("features"))


def test_worker_killed_mid_job_runs_it_to_completion_exactly_once(main_stack: Stack) -> None:
    api = main_stack.client()
    token = secrets.token_hex(6)
    job_id = api.submit("TEST_SLOW", "predict", [f"slow:3:{token}"])
    wait_for(lambda: _count(main_stack, "start", token) >= 1, 20, "the slow job to start")
    # Workers report Running once a job has run for a moment (fast jobs go straight to Done).
    wait_for(lambda: api.status(job_id)["status"] == "Running", 5, "the job to be reported Running")

    main_stack.workers["slow"].kill()
    main_stack.vhost.wait_no_consumers("TEST_SLOW")
    time.sleep(0.5)
    assert api.status(job_id)["status"] in ("Queued", "Running"), "the job must survive its worker"
    assert _count(main_stack, "end", token) == 0

    main_stack.add_worker("slow", "slow")
    done = api.wait_done(job_id, timeout=40)
    assert done["status"] == "Done", done
    assert done["response"] == [f"slept:{token}"]
    time.sleep(1)  # a duplicate delivery would show up here
    assert _count(main_stack, "end", token) == 1, main_stack.exec_events()
    assert _count(main_stack, "start", token) == 2, main_stack.exec_events()


def test_job_expires_after_ttl_and_never_runs(ttl_stack: Stack) -> None:
    api = ttl_stack.client()
    worker = ttl_stack.workers["slow"]
    warm = api.run("TEST_SLOW", "predict", [f"slow:0:{secrets.token_hex(4)}"])
    assert warm["status"] == "Done", warm

    tokens = [secrets.token_hex(6) for _ in range(3)]
    worker.proc.pause()  # the worker hangs: still connected, so jobs are accepted, but nothing is processed
    try:
        ids = [api.submit("TEST_SLOW", "predict", [f"slow:0.1:{t}"]) for t in tokens]
        fresh = api.status(ids[-1])
        assert fresh["status"] == "Queued", fresh
        time.sleep(TTL_MS / 1000 + 0.5)
        for job_id in ids:
            st = api.status(job_id)
            assert (st["status"], st["response"]) == ("Error", c.expired(TTL_MS)), st
    finally:
        worker.proc.resume()

    # The worker serves again: a new job runs, the expired ones never do.
    token = secrets.token_hex(6)
    done = api.run("TEST_SLOW", "predict", [f"slow:0:{token}"])
    assert done["status"] == "Done", done
    time.sleep(1)
    for job_id in ids:
        st = api.status(job_id)
        assert (st["status"], st["response"]) == ("Error", c.expired(TTL_MS)), st
    started = {tok for e in ttl_stack.exec_events() if e["event"] == "start" for tok in e["items"]}
    assert token in started
    assert not started & set(tokens), f"expired jobs ran: {started & set(tokens)}"

    # A worker that comes late is told not to run it, and its result is not applied.
    for job_id in ids:
        answer = _worker_post(ttl_stack, f"/worker/jobs/{job_id}/start", {"worker_id": "late"})
        # "finished": the expiry was already recorded as the job's final Error
        assert answer["run"] is False and answer.get("reason") in ("expired", "finished"), answer
        assert _worker_post(ttl_stack, f"/worker/jobs/{job_id}/result", LATE_RESULT)["accepted"] is False
        st = api.status(job_id)
        assert (st["status"], st["response"]) == ("Error", c.expired(TTL_MS)), st


def test_second_result_for_a_finished_job_is_not_applied(main_stack: Stack) -> None:
    api = main_stack.client()
    done = api.run("TEST_ECHO", "predict", ["original"])
    assert done["status"] == "Done", done
    job_id = done["job_id"]
    answer = _worker_post(main_stack, f"/worker/jobs/{job_id}/start", {"worker_id": "late"})
    assert answer == {"run": False, "reason": "finished"}, answer
    assert _worker_post(main_stack, f"/worker/jobs/{job_id}/result", LATE_RESULT)["accepted"] is False
    again = api.status(job_id)
    assert again == done, "a late result changed a finished job"


def test_database_down_and_back(fault_stack: Stack) -> None:
    api = ApiClient(fault_stack.apis[0].url, fault_stack.api_token, timeout=60)
    url = fault_stack.apis[0].url
    try:
        before = api.run("TEST_ECHO", "predict", ["before"])
        assert before["status"] == "Done", before

        fault_stack.mongo.kill()
        refused_token = f"refused-{secrets.token_hex(4)}"
        started = time.monotonic()
        answer = api.inference("TEST_ECHO", "predict", [refused_token])
        elapsed = time.monotonic() - started
        assert answer == c.model_error("TEST_ECHO", "predict", c.DB_DOWN), answer
        assert elapsed < 20, f"the database error took {elapsed:.1f}s to answer"
        # Not in the contract; the original's text for /status when the database fails.
        assert api.status(before["job_id"]) == c.plain_error(
            f"Não foi possível obter o status do job {before['job_id']}. Erro na conexão com o banco de dados"
        )
        assert httpx.get(f"{url}/health/ready", timeout=30).status_code == 503

        fault_stack.mongo.start()  # same port, same data dir
        job_id, _ = _submit_eventually(api, "TEST_ECHO", ["after"], timeout=30)
        done = api.wait_done(job_id)
        assert done["status"] == "Done" and done["response"] == ["after"], done
        assert api.status(before["job_id"])["response"] == ["before"], "jobs stored before the outage are kept"
        wait_for(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, 20, "ready again")
        assert _count(fault_stack, "predict", refused_token) == 0, "a job refused with the database error ran"
    finally:
        if not fault_stack.mongo.proc or not fault_stack.mongo.proc.alive():
            fault_stack.mongo.start()
        api.close()


@pytest.mark.destructive
def test_broker_down_and_back(fault_stack: Stack, main_stack: Stack) -> None:
    api = fault_stack.client()
    url = fault_stack.apis[0].url
    api_pid = fault_stack.apis[0].proc.pid
    before = api.run("TEST_ECHO", "predict", ["before"])
    assert before["status"] == "Done", before

    refused_token = f"refused-{secrets.token_hex(4)}"
    rabbitmqctl("stop_app")
    try:
        # Several requests, so that both gunicorn workers of the API answer.
        for _ in range(4):
            assert api.inference("TEST_ECHO", "predict", [refused_token]) == c.error(c.BROKER_DOWN)
        assert api.status(before["job_id"])["status"] == "Done", "reading jobs needs no broker"
        assert httpx.get(f"{url}/health/ready", timeout=30).status_code == 503
    finally:
        rabbitmqctl("start_app")

    # Back without restarting the API, and the workers reconnect by themselves.
    job_id, refusals = _submit_eventually(api, "TEST_ECHO", ["after"], timeout=60)
    assert all(r.get("job_id") == "n/a" for r in refusals), refusals
    done = api.wait_done(job_id, timeout=60)
    assert done["status"] == "Done" and done["response"] == ["after"], done
    assert fault_stack.apis[0].proc.alive() and fault_stack.apis[0].proc.pid == api_pid
    assert _count(fault_stack, "predict", refused_token) == 0, "a job refused with the broker error ran"

    main_api = main_stack.client()
    job_id, _ = _submit_eventually(main_api, "TEST_ECHO", ["main after"], timeout=60)
    done = main_api.wait_done(job_id, timeout=60)
    assert done["status"] == "Done" and done["response"] == ["main after"], done
