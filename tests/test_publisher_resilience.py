"""The API's publisher against a real RabbitMQ: the queue length limit (QueueFull), a publisher
thread that dies or wedges (not ready meanwhile, then replaced), and queues from before the limit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pika
import pytest
from mlstack import broker
from mlstack.broker import BrokerUnavailable, Publisher, QueueFull
from support.infra import RabbitVhost
from support.procs import wait_for
from support.stack import Stack


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    v = RabbitVhost("publisher").create()
    try:
        yield v
    finally:
        v.delete()


@pytest.fixture
def publisher(vhost: RabbitVhost) -> Iterator[Publisher]:
    p = Publisher(vhost.url, queue_max_length=2)
    p.start()
    try:
        wait_for(lambda: p.ready, 10, "the publisher to be ready")
        yield p
    finally:
        p.stop()


def _publish_ok(publisher: Publisher, queue: str) -> None:
    publisher.declare(queue).result(5)
    publisher.publish(queue, b"{}", f"m-{time.monotonic_ns()}", 60_000).result(5)


def test_a_full_queue_refuses_the_message(publisher: Publisher) -> None:
    queue = broker.queue_name("FULL")
    assert publisher.declare(queue).result(5) == 0
    for n in range(2):
        publisher.publish(queue, b"{}", f"m{n}", 60_000).result(5)
    with pytest.raises(QueueFull):
        publisher.publish(queue, b"{}", "m2", 60_000).result(5)
    assert publisher.ready, "a full queue is not a broker failure"


def _inject(publisher: Publisher, callback: object) -> None:
    """Run `callback` on the publisher's ioloop, as pika would run a buggy callback of ours."""
    connection = publisher._link.connection
    assert connection is not None
    connection.ioloop.add_callback_threadsafe(callback)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the SystemExit below
def test_a_dead_publisher_thread_is_not_ready_then_replaced(publisher: Publisher) -> None:
    first = publisher._link

    def kill_thread() -> None:
        raise SystemExit  # escapes every `except Exception`: the thread ends

    _inject(publisher, kill_thread)
    first.thread.join(5)
    assert not first.thread.is_alive()
    assert not first.healthy(time.monotonic())
    wait_for(lambda: publisher.ready and publisher._link is not first, 15, "a new publisher thread")
    _publish_ok(publisher, broker.queue_name("AFTER_DEATH"))


def test_an_exception_on_the_ioloop_reconnects(publisher: Publisher) -> None:
    first = publisher._link

    def bug() -> None:
        raise RuntimeError("simulated bug in an unguarded callback")

    _inject(publisher, bug)
    wait_for(lambda: not publisher.ready, 5, "readiness to drop")
    wait_for(lambda: publisher.ready, 15, "the publisher to reconnect")
    assert publisher._link is first and first.thread.is_alive()
    _publish_ok(publisher, broker.queue_name("AFTER_BUG"))


def test_a_wedged_publisher_thread_is_not_ready_then_replaced(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "_NOT_READY_AFTER_S", 1.0)
    monkeypatch.setattr(broker, "_WEDGED_AFTER_S", 2.5)
    first = publisher._link
    _inject(publisher, lambda: time.sleep(6))  # a callback that blocks the ioloop
    wait_for(lambda: not first.healthy(time.monotonic()), 3, "a wedged thread to be seen as not ready")
    wait_for(lambda: publisher._link is not first and publisher.ready, 15, "a new publisher thread")
    _publish_ok(publisher, broker.queue_name("AFTER_WEDGE"))
    first.thread.join(10)  # once unwedged, the old thread closes its connection and ends
    assert not first.thread.is_alive()


def test_a_queue_declared_before_limits_existed_is_still_used(vhost: RabbitVhost, publisher: Publisher) -> None:
    queue = broker.queue_name("OLD")
    conn = pika.BlockingConnection(pika.URLParameters(vhost.url))
    try:
        conn.channel().queue_declare(queue, durable=True)  # no x-max-length: as an older release made it
    finally:
        conn.close()
    with pytest.raises(BrokerUnavailable):
        publisher.declare(queue).result(5)  # refused once (PRECONDITION_FAILED), then declared passively
    wait_for(lambda: publisher.ready, 10, "the channel to reopen")
    assert publisher.declare(queue).result(5) == 0
    publisher.publish(queue, b"{}", "old-1", 60_000).result(5)


@pytest.mark.parametrize("name", ["x" * 201, "com espaço", "a/b", "é", ""])
def test_register_refuses_model_names_that_cannot_be_queue_names(main_stack: Stack, name: str) -> None:
    body = {"worker_id": "test-names", "models": [{"name": name, "version": "1"}]}
    headers = {"Authorization": f"Bearer {main_stack.worker_token}"}
    r = httpx.post(f"{main_stack.apis[0].url}/worker/register", json=body, headers=headers)
    assert r.status_code == 422, r.text
    ok = {"worker_id": "test-names", "models": [{"name": "A-b_c.9" + "x" * 193, "version": "1"}]}
    assert httpx.post(f"{main_stack.apis[0].url}/worker/register", json=ok, headers=headers).status_code == 200
    httpx.post(f"{main_stack.apis[0].url}/worker/deregister", json={"worker_id": "test-names"}, headers=headers)
