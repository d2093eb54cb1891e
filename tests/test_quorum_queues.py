"""MLSTACK_QUEUE_TYPE=quorum on the real local broker: every queue the stack declares is a quorum
queue, jobs run, poison messages are dead-lettered, a full queue refuses with Retry-After, and a queue
that exists with the other type is refused with one clear line (the API answers its contract error,
the worker exits) instead of being used or retried in silence.

RabbitMQ 3.10 (Debian 12) has everything this needs on quorum queues: x-max-length with
x-overflow reject-publish, x-message-ttl and dead-lettering (mlstack.retry), per-message expiration."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from mlstack.broker import Delivery, JobConsumer, Outcome, Verdict, model_queue_arguments
from support import contract as c
from support.amqp import (
    DEAD_LETTER_QUEUE,
    MODEL_QUEUE_PREFIX,
    channel,
    dead_letters,
    list_queues,
    publish_raw,
    queue_messages,
)
from support.infra import BUNDLES, MongoServer, RabbitVhost, Worker
from support.procs import wait_for
from support.stack import Stack

QUEUE_MAX_LENGTH = 2
RETRY_AFTER_S = 7
EXIT_QUEUE_TYPE_MISMATCH = 78  # mlstack.worker.main: EX_CONFIG
QUORUM = {"MLSTACK_QUEUE_TYPE": "quorum", "MLSTACK_QUEUE_MAX_LENGTH": str(QUEUE_MAX_LENGTH)}


@pytest.fixture(scope="module")
def quorum_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    stack = Stack(
        "quorum",
        workdir,
        mongo,
        db_name="ml_api_db_quorum",
        api_env={**QUORUM, "MLSTACK_QUEUE_FULL_RETRY_AFTER_S": str(RETRY_AFTER_S)},
    ).start()
    try:
        stack.add_worker("basic", "basic", extra_env=QUORUM)
        stack.add_worker("slow", "slow", extra_env=QUORUM)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def quorum_jobs(quorum_stack: Stack) -> Iterator[pymongo.collection.Collection]:
    with quorum_stack.jobs_collection() as jobs:
        yield jobs


def queue_types(vhost: RabbitVhost) -> dict[str, str]:
    return list_queues(vhost, "type")


def test_jobs_run_and_every_queue_is_quorum(quorum_stack: Stack) -> None:
    api = quorum_stack.client()
    done = api.run("TEST_ECHO", "predict", ["quorum"])
    assert done["status"] == "Done" and done["response"] == ["quorum"], done
    types = queue_types(quorum_stack.vhost)
    for queue in ("mlstack.model.TEST_ECHO", "mlstack.model.TEST_SLOW", "mlstack.retry", DEAD_LETTER_QUEUE):
        assert types.get(queue) == "quorum", types


def test_a_poison_message_reaches_the_dead_letter_queue(quorum_stack: Stack) -> None:
    vhost = quorum_stack.vhost
    marker = secrets.token_hex(6)
    publish_raw(vhost, "TEST_ECHO", f"not json {marker}".encode())

    def dead() -> list[dict] | None:
        found = [h for body, h in dead_letters(vhost) if marker.encode() in body]
        return found or None

    (headers,) = wait_for(dead, 20, "the poison message in mlstack.dead")
    assert headers["x-mlstack-queue"] == MODEL_QUEUE_PREFIX + "TEST_ECHO", headers
    assert headers["x-mlstack-reason"], headers
    done = quorum_stack.client().run("TEST_ECHO", "predict", ["after poison"])
    assert done["status"] == "Done", done


def test_a_retried_message_comes_back_through_the_quorum_retry_queue(quorum_stack: Stack) -> None:
    """mlstack.retry is a quorum queue too: its x-message-ttl and dead-lettering bring the copy back."""
    vhost = RabbitVhost("quorum-retry").create()
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> Verdict:
        seen.append(delivery)
        return Verdict(Outcome.RETRY, "a API do mlstack não respondeu") if len(seen) == 1 else Verdict(Outcome.ACK)

    queue = MODEL_QUEUE_PREFIX + "RETRY"
    consumer = JobConsumer(vhost.url, [queue], handler, queue_max_length=50, max_attempts=3, queue_type="quorum")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_for(consumer.connected.is_set, 10, "the consumer to connect")
        assert queue_types(vhost) == {queue: "quorum", "mlstack.retry": "quorum", DEAD_LETTER_QUEUE: "quorum"}
        publish_raw(vhost, "RETRY", b'{"n": 1}')
        wait_for(lambda: len(seen) == 2, 20, "the retried copy (5 s later)")
        assert [d.attempt for d in seen] == [0, 1] and seen[1].redelivered
        wait_for(lambda: queue_messages(vhost, queue) == 0, 10, "the copy to be acked")
        # Quorum queues report their counts with a delay: poll rather than read once.
        wait_for(lambda: queue_messages(vhost, "mlstack.retry") == 0, 15, "mlstack.retry to be empty")
        assert queue_messages(vhost, DEAD_LETTER_QUEUE) == 0 and len(seen) == 2
    finally:
        consumer.stop()
        thread.join(15)
        vhost.delete()


def _started(stack: Stack, token: str) -> bool:
    return any(e.get("event") == "start" and token in str(e) for e in stack.exec_events())


def test_full_quorum_queue_is_refused_with_retry_after_and_nothing_stored(
    quorum_stack: Stack, quorum_jobs: pymongo.collection.Collection
) -> None:
    """As tests/test_retention_backpressure.py, with one difference of quorum queues (RabbitMQ 3.10):
    the publish that takes the queue past x-max-length is still accepted, so the queue holds one
    more ready message than the limit before it refuses (a classic queue refuses at the limit)."""
    api = quorum_stack.client()
    token = secrets.token_hex(4)
    running = api.submit("TEST_SLOW", "predict", [f"slow:6:{token}-run"])
    # The worker holds one message (prefetch 1, unacked: not counted by x-max-length, as classic) ...
    wait_for(lambda: _started(quorum_stack, f"{token}-run"), 30, "the slow job to start")
    # ... so the queue takes QUEUE_MAX_LENGTH + 1 more.
    queued = [api.submit("TEST_SLOW", "predict", [f"slow:0.1:{token}-{i}"]) for i in range(QUEUE_MAX_LENGTH + 1)]
    stored = quorum_jobs.count_documents({"model_name": "TEST_SLOW"})

    r = api.post("/inference", {"model_name": "TEST_SLOW", "method": "predict", "features": ["slow:0.1:x"]})
    assert r.status_code == 200, r.text
    assert r.json() == c.model_error(
        "TEST_SLOW", "predict", "A fila do modelo 'TEST_SLOW' está cheia. Tente novamente em alguns segundos."
    )
    assert r.headers.get("retry-after") == str(RETRY_AFTER_S)
    assert quorum_jobs.count_documents({"model_name": "TEST_SLOW"}) == stored, "a refused job was stored"

    assert api.run("TEST_ECHO", "predict", ["ok"])["status"] == "Done"
    for job_id in [running, *queued]:
        assert api.wait_done(job_id, timeout=60)["status"] == "Done"
    assert api.run("TEST_SLOW", "predict", [f"slow:0.1:{token}-after"])["status"] == "Done"


def _worker(stack: Stack, name: str, bundle: str, env: dict[str, str]) -> Worker:
    """A worker started without waiting for it to consume (it is expected to exit)."""
    worker = Worker(
        name,
        stack.workdir,
        bundle_dir=BUNDLES / bundle / "worker_pub",
        api_url=stack.apis[0].url,
        worker_token=stack.worker_token,
        amqp_url=stack.vhost.url,
        extra_env=env,
    )
    stack.workers[name] = worker  # stopped with the stack
    worker.proc.start()
    return worker


def _exit_code(worker: Worker) -> int:
    wait_for(lambda: not worker.proc.alive(), 60, f"worker {worker.name} to exit")
    assert worker.proc.proc is not None
    return int(worker.proc.proc.returncode)


def test_a_classic_model_queue_is_refused_with_how_to_migrate(quorum_stack: Stack) -> None:
    queue = MODEL_QUEUE_PREFIX + "TEST_GONE"
    with channel(quorum_stack.vhost) as ch:  # as a classic deployment of this release declared it
        ch.queue_declare(queue, durable=True, arguments=model_queue_arguments(QUEUE_MAX_LENGTH))
    line = (
        f"queue {queue} exists as a classic queue but MLSTACK_QUEUE_TYPE=quorum: RabbitMQ cannot change a queue's"
        f" type; migrate by deleting it once it is empty (rabbitmqctl delete_queue -p <vhost> {queue} --if-empty"
    )

    worker = _worker(quorum_stack, "gone-quorum", "gone", QUORUM)
    assert _exit_code(worker) == EXIT_QUEUE_TYPE_MISMATCH, worker.proc.log_tail()
    log = worker.proc.log_path.read_text(errors="replace")
    assert log.count(line) == 1 and "Traceback" not in log, log[-3000:]

    # The worker registered the model before it exited: the API meets the classic queue too.
    api = quorum_stack.client()
    for _ in range(3):
        assert api.inference("TEST_GONE", "predict", ["x"]) == c.error(c.BROKER_DOWN)
    api_log = quorum_stack.apis[0].proc.log_path.read_text(errors="replace")
    assert line in api_log and "Traceback" not in api_log, api_log[-3000:]
    assert queue_types(quorum_stack.vhost)[queue] == "classic", "the queue must be left as it is"


def test_a_classic_worker_meets_the_quorum_queues_and_exits_with_the_reason(quorum_stack: Stack) -> None:
    worker = _worker(quorum_stack, "echo-classic", "basic", {"MLSTACK_QUEUE_MAX_LENGTH": str(QUEUE_MAX_LENGTH)})
    assert _exit_code(worker) == EXIT_QUEUE_TYPE_MISMATCH, worker.proc.log_tail()
    log = worker.proc.log_path.read_text(errors="replace")
    assert f"queue {DEAD_LETTER_QUEUE} exists as a quorum queue but MLSTACK_QUEUE_TYPE=classic" in log, log[-3000:]
    # The quorum workers were not disturbed.
    assert quorum_stack.client().run("TEST_ECHO", "predict", ["still"])["status"] == "Done"


def test_a_queue_from_before_queue_limits_is_refused_too(quorum_stack: Stack) -> None:
    """A classic queue without arguments: RabbitMQ names x-max-length as the first difference; the
    worker asks again with the type alone, and reports the type."""
    queue = MODEL_QUEUE_PREFIX + "TEST_ROWS"
    with channel(quorum_stack.vhost) as ch:
        ch.queue_declare(queue, durable=True)
    worker = _worker(quorum_stack, "rows-quorum", "batch", QUORUM)
    assert _exit_code(worker) == EXIT_QUEUE_TYPE_MISMATCH, worker.proc.log_tail()
    log = worker.proc.log_path.read_text(errors="replace")
    line = f"queue {queue} exists as a classic queue but MLSTACK_QUEUE_TYPE=quorum"
    assert line in log, log[-3000:]
    # The API asks again the same way: every answer is its contract error, never the queue used as it is.
    api = quorum_stack.client()
    for _ in range(4):
        assert api.inference("TEST_ROWS", "predict", [[1]]) == c.error(c.BROKER_DOWN)
    api_log = quorum_stack.apis[0].proc.log_path.read_text(errors="replace")
    assert line in api_log and "Traceback" not in api_log, api_log[-3000:]
    assert queue_types(quorum_stack.vhost)[queue] == "classic"
