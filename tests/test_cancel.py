"""POST /cancel (api-contract.md, "mlstack extensions"): a Queued job ends Error "Job cancelado pelo
cliente" and never gets a result; any other state is refused with its status; same checks as /status."""

from __future__ import annotations

import secrets

import httpx
from support.amqp import MODEL_QUEUE_PREFIX, queue_messages
from support.procs import wait_for
from support.stack import Stack

CANCELLED = "Job cancelado pelo cliente"


def _cancel(stack: Stack, job_id: str, token: str | None = None) -> httpx.Response:
    return stack.client(token=token).post("/cancel", {"job_id": job_id})


def _started(stack: Stack, token: str) -> bool:
    return any(e["event"] == "start" and token in e["items"] for e in stack.exec_events())


def _ran(stack: Stack, token: str) -> bool:
    return any(token in e.get("items", []) for e in stack.exec_events())


def _blocked_queue(stack: Stack, seconds: float) -> tuple[str, str, str]:
    """A slow job occupying TEST_SLOW's only worker (prefetch 1) and a second job queued behind it."""
    client = stack.client()
    blocker, queued = secrets.token_hex(4), secrets.token_hex(4)
    blocker_id = client.submit("TEST_SLOW", "predict", [f"slow:{seconds}:{blocker}"])
    wait_for(lambda: _started(stack, blocker), 20, "the blocking job to start")
    queued_id = client.submit("TEST_SLOW", "predict", [f"slow:0:{queued}"])
    assert client.status(queued_id)["status"] == "Queued"
    return blocker_id, queued_id, queued


def test_cancel_queued_job_ends_error_and_no_result_overwrites_it(main_stack: Stack) -> None:
    client = main_stack.client()
    blocker_id, queued_id, token = _blocked_queue(main_stack, 3)

    answer = _cancel(main_stack, queued_id)
    assert answer.status_code == 200
    assert answer.json() == {"status": "Done", "response": "Job cancelado com sucesso"}
    st = client.status(queued_id)
    assert (st["status"], st["response"]) == ("Error", CANCELLED)

    # A second cancel finds it Error now.
    again = _cancel(main_stack, queued_id).json()
    assert again == {
        "status": "Error",
        "response": f"O job {queued_id} não pode mais ser cancelado porque está com status 'Error'",
    }

    assert client.wait_done(blocker_id)["status"] == "Done"
    # The worker gets the cancelled message next: its start is refused, so it acks it without running.
    queue = MODEL_QUEUE_PREFIX + "TEST_SLOW"
    wait_for(lambda: queue_messages(main_stack.vhost, queue) == 0 or None, 30, "the queue to drain")
    st = client.status(queued_id)
    assert (st["status"], st["response"], st["total_response_time_sec"]) == ("Error", CANCELLED, -1)
    assert not _ran(main_stack, token)


def test_cancelled_job_is_never_executed(main_stack: Stack) -> None:
    client = main_stack.client()
    blocker_id, queued_id, token = _blocked_queue(main_stack, 2)
    assert _cancel(main_stack, queued_id).json()["status"] == "Done"
    client.wait_done(blocker_id)
    queue = MODEL_QUEUE_PREFIX + "TEST_SLOW"
    wait_for(lambda: queue_messages(main_stack.vhost, queue) == 0 or None, 30, "the queue to drain")
    assert not _ran(main_stack, token)


def test_cancel_running_and_done_jobs_is_refused(main_stack: Stack) -> None:
    client = main_stack.client()
    token = secrets.token_hex(4)
    running_id = client.submit("TEST_SLOW", "predict", [f"slow:2:{token}"])
    client.wait_status(running_id, ("Running",), timeout=20)
    assert _cancel(main_stack, running_id).json() == {
        "status": "Error",
        "response": f"O job {running_id} não pode mais ser cancelado porque está com status 'Running'",
    }
    assert client.wait_done(running_id)["status"] == "Done"

    done_id = client.run("TEST_ECHO", "predict", ["a"])["job_id"]
    assert _cancel(main_stack, done_id).json() == {
        "status": "Error",
        "response": f"O job {done_id} não pode mais ser cancelado porque está com status 'Done'",
    }
    assert client.status(done_id)["response"] == ["a"]


def test_cancel_answers_like_status_for_unknown_and_long_ids(main_stack: Stack) -> None:
    client = main_stack.client()
    unknown = secrets.token_hex(32)
    assert _cancel(main_stack, unknown).json() == client.status(unknown)
    assert _cancel(main_stack, unknown).json() == {
        "status": "Error",
        "response": f"Não foi possível encontrar o job {unknown}",
    }
    long_id = "x" * 101
    assert _cancel(main_stack, long_id).json() == client.status(long_id)


def test_cancel_needs_the_client_token(main_stack: Stack) -> None:
    client = main_stack.client()
    no_header = httpx.post(f"{main_stack.apis[0].url}/cancel", json={"job_id": "x"}, timeout=10)
    assert (no_header.status_code, no_header.json()) == (401, {"detail": "Not authenticated"})
    wrong = client.post("/cancel", {"job_id": "x"}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Acesso negado! Verifique as credenciais de acesso."}
    worker = client.post("/cancel", {"job_id": "x"}, headers={"Authorization": f"Bearer {main_stack.worker_token}"})
    assert worker.status_code == 401
    missing = client.post("/cancel", {})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "job_id"]


def test_cancel_is_in_the_openapi_schema(main_stack: Stack) -> None:
    schema = httpx.get(f"{main_stack.apis[0].url}/openapi.json", timeout=10).json()
    assert "/cancel" in schema["paths"]
    assert "post" in schema["paths"]["/cancel"]
