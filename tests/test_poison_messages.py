"""Poison messages: a message a worker can never run is dead-lettered at once (mlstack.dead, with the
reason), logged once, and the job it names ends Error; normal jobs behind it keep running."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from mlstack.broker import Delivery, JobConsumer, Outcome, Verdict
from support import contract as c
from support.amqp import (
    DEAD_LETTER_QUEUE,
    MODEL_QUEUE_PREFIX,
    channel,
    dead_letters,
    publish_raw,
    queue_messages,
    take_one,
)
from support.infra import RabbitVhost
from support.procs import wait_for
from support.stack import Stack

DEAD_LETTERING = "dead-lettering a message from "
REASON_HEADER = "x-mlstack-reason"  # services/DESIGN.md, "Queues"


def _log_count(stack: Stack, worker: str, needle: str) -> int:
    return stack.workers[worker].proc.log_path.read_text(errors="replace").count(needle)


def _count(stack: Stack, event: str, token: str) -> int:
    return sum(1 for e in stack.exec_events() if e["event"] == event and token in e["items"])


@pytest.fixture(scope="module")
def hostile(main_stack: Stack) -> Stack:
    """The main stack plus a worker of TEST_HOSTILE (answers too much or too long on request)."""
    if "hostile" not in main_stack.workers or not main_stack.workers["hostile"].proc.alive():
        main_stack.add_worker("hostile", "hostile")
    return main_stack


def test_garbage_leaves_the_queue_at_once_while_jobs_keep_running(main_stack: Stack) -> None:
    api = main_stack.client()
    vhost = main_stack.vhost
    queue = MODEL_QUEUE_PREFIX + "TEST_ECHO"
    marker = secrets.token_hex(6)
    now = time.time()
    base = {"model_name": "TEST_ECHO", "method": "predict", "features": [marker]}
    poison = [
        f"not json {marker}".encode(),
        json.dumps([marker, 1, 2]).encode(),
        b"\xff\xfe" + marker.encode(),  # not UTF-8
        json.dumps({**base, "datetime": now, "ttl_ms": 90000}).encode(),  # no job_id
        json.dumps({**base, "job_id": f"p-{marker}-1", "datetime": "ontem", "ttl_ms": 90000}).encode(),
        json.dumps({**base, "job_id": f"p-{marker}-2", "datetime": now}).encode(),  # no ttl_ms
        json.dumps({**base, "job_id": f"p-{marker}-3", "datetime": now, "ttl_ms": -5}).encode(),
        json.dumps({**base, "job_id": {"x": 1}, "datetime": now, "ttl_ms": 90000}).encode(),
    ]
    lines_before = _log_count(main_stack, "basic", DEAD_LETTERING + queue)
    tracebacks_before = _log_count(main_stack, "basic", "Traceback")
    dead_before = len(dead_letters(vhost))

    jobs = []
    for body in poison:
        publish_raw(vhost, "TEST_ECHO", body)
        jobs.append(api.submit("TEST_ECHO", "predict", [marker]))
    for job_id in jobs:
        done = api.wait_done(job_id, timeout=30)
        assert done["status"] == "Done" and done["response"] == [marker], done

    wait_for(lambda: queue_messages(vhost, queue) == 0, 15, f"{queue} to be empty")
    wait_for(
        lambda: _log_count(main_stack, "basic", DEAD_LETTERING + queue) - lines_before >= len(poison),
        10,
        "one log line per poison message",
    )
    letters = dead_letters(vhost)
    assert len(letters) - dead_before == len(poison), letters[dead_before:]
    mine = [(body, headers) for body, headers in letters if marker.encode() in body]
    assert sorted(body for body, _ in mine) == sorted(poison)
    for body, headers in mine:
        assert isinstance(headers.get(REASON_HEADER), bytes | str) and headers[REASON_HEADER], (body, headers)
        assert headers.get("x-mlstack-queue") in (queue, queue.encode()), headers
    # One line each, no traceback flood, and nothing comes back for another round.
    time.sleep(1)
    assert _log_count(main_stack, "basic", DEAD_LETTERING + queue) - lines_before == len(poison)
    assert _log_count(main_stack, "basic", "Traceback") == tracebacks_before
    assert queue_messages(vhost, queue) == 0
    assert queue_messages(vhost, DEAD_LETTER_QUEUE) == len(letters)


def test_a_known_job_with_a_broken_message_ends_error(main_stack: Stack) -> None:
    api = main_stack.client()
    vhost = main_stack.vhost
    blocker_token, victim_token = secrets.token_hex(6), secrets.token_hex(6)
    blocker = api.submit("TEST_SLOW", "predict", [f"slow:2:{blocker_token}"])
    wait_for(lambda: _count(main_stack, "start", blocker_token) == 1, 20, "the blocking job to start")
    # The slow worker (prefetch 1) is busy: the next job waits in the queue, where the test mangles it.
    victim = api.submit("TEST_SLOW", "predict", [f"slow:0:{victim_token}"])
    message = wait_for(lambda: take_one(vhost, "TEST_SLOW"), 5, "the queued job's message")
    assert message["job_id"] == victim, message
    message["datetime"] = "ontem"
    publish_raw(vhost, "TEST_SLOW", json.dumps(message).encode())

    failed = api.wait_done(victim, timeout=30)
    assert failed["status"] == "Error", failed
    assert failed["response"].startswith(c.WORKER_CANNOT_PROCESS_PREFIX), failed
    assert "'datetime'" in failed["response"], failed
    assert api.wait_done(blocker, timeout=30)["status"] == "Done"
    assert _count(main_stack, "start", victim_token) == 0, "a message that cannot run must never run"
    wait_for(lambda: queue_messages(vhost, MODEL_QUEUE_PREFIX + "TEST_SLOW") == 0, 10, "the slow queue to be empty")


def test_a_result_the_api_refuses_ends_the_job_error_instead_of_looping(hostile: Stack) -> None:
    api = hostile.client()
    lines_before = _log_count(hostile, "hostile", DEAD_LETTERING)
    # 2 MB answer: over the API's 1 MiB body limit, so /worker/jobs/<id>/result answers 413.
    job_id = api.submit("TEST_HOSTILE", "predict", ["big:2000000"])
    failed = api.wait_done(job_id, timeout=30)
    assert failed["status"] == "Error", {k: str(v)[:200] for k, v in failed.items()}
    assert failed["response"].startswith(c.WORKER_CANNOT_PROCESS_PREFIX), failed
    assert "413" in failed["response"], failed
    wait_for(
        lambda: queue_messages(hostile.vhost, MODEL_QUEUE_PREFIX + "TEST_HOSTILE") == 0, 10, "the queue to be empty"
    )
    assert any(job_id.encode() in body for body, _ in dead_letters(hostile.vhost))
    assert _log_count(hostile, "hostile", DEAD_LETTERING) - lines_before == 1
    # ... and the worker goes on.
    ok = api.run("TEST_HOSTILE", "predict", ["fine"])
    assert ok["status"] == "Done" and ok["response"] == ["fine"], ok


# ---- the consumer itself, in-process against a real broker -----------------------------------------
@pytest.fixture
def own_vhost() -> Iterator[RabbitVhost]:
    v = RabbitVhost("consumer").create()
    try:
        yield v
    finally:
        v.delete()


def _consume(vhost: RabbitVhost, queue: str, verdicts: list[Verdict]) -> tuple[JobConsumer, list[Delivery]]:
    """A JobConsumer on `queue` whose handler answers `verdicts` in turn (then ACK)."""
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> Verdict:
        seen.append(delivery)
        return verdicts[len(seen) - 1] if len(seen) <= len(verdicts) else Verdict(Outcome.ACK)

    consumer = JobConsumer(vhost.url, [queue], handler, queue_max_length=50, max_attempts=3)
    threading.Thread(target=consumer.run, daemon=True).start()
    wait_for(consumer.connected.is_set, 10, "the consumer to connect")
    return consumer, seen


def test_a_retried_message_comes_back_after_the_delay_counted_then_is_dead_lettered(own_vhost: RabbitVhost) -> None:
    queue = MODEL_QUEUE_PREFIX + "RETRY"
    retry = Verdict(Outcome.RETRY, "a API do mlstack não respondeu")
    consumer, seen = _consume(own_vhost, queue, [retry, retry, retry])
    try:
        publish_raw(own_vhost, "RETRY", b'{"n": 1}')
        wait_for(lambda: len(seen) == 3, 20, "two retries (5 s apart)")
        assert [d.attempt for d in seen] == [0, 1, 2] and [d.redelivered for d in seen] == [False, True, True]
        # The third transient failure is the last of max_attempts=3: dead-lettered, never seen again.
        wait_for(lambda: queue_messages(own_vhost, DEAD_LETTER_QUEUE) == 1, 10, "the dead letter")
        ((body, headers),) = dead_letters(own_vhost)
        assert body == b'{"n": 1}' and headers["x-mlstack-attempt"] == 2, headers  # retries that happened
        assert str(headers["x-mlstack-reason"]).startswith(retry.reason), headers
        assert queue_messages(own_vhost, queue) == 0 and queue_messages(own_vhost, "mlstack.retry") == 0
        assert len(seen) == 3
    finally:
        consumer.stop()


def test_a_queue_declared_without_the_limit_is_consumed_as_it_is(own_vhost: RabbitVhost) -> None:
    queue = MODEL_QUEUE_PREFIX + "OLD"
    with channel(own_vhost) as ch:
        ch.queue_declare(queue, durable=True)  # as a release without queue limits declared it
    consumer, seen = _consume(own_vhost, queue, [])
    try:
        publish_raw(own_vhost, "OLD", b"{}")
        wait_for(lambda: len(seen) == 1, 10, "the message on the old queue")
        wait_for(lambda: queue_messages(own_vhost, queue) == 0, 10, "the message to be acked")
    finally:
        consumer.stop()
