"""Publisher bookkeeping with a fake channel: confirms, returns, nacks (queue full), a publish that
raises, guarded callbacks, and the supervisor replacing a dead or wedged publisher thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
import pytest
from mlstack import broker
from mlstack.broker import BrokerUnavailable, NoRoute, Publisher, QueueFull, _Link

URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # never connected to in this file


class FakeChannel:
    def __init__(self) -> None:
        self.is_open = True
        self.published: list[tuple[str, str, bytes]] = []
        self.declared: list[tuple[str, bool, Any]] = []
        self.closed = False
        self.fail_on: set[str] = set()

    def basic_publish(self, exchange: str, queue: str, body: bytes, properties: Any, mandatory: bool = False) -> None:
        if queue in self.fail_on:
            raise ValueError("simulated encoding failure")
        self.published.append((exchange, queue, body))

    def queue_declare(self, queue: str, passive: bool = False, durable: bool = False, **kwargs: Any) -> None:
        self.declared.append((queue, passive, kwargs.get("arguments")))

    def close(self) -> None:
        self.closed = True
        self.is_open = False


class FakeConnection:
    def __init__(self) -> None:
        self.is_open = True
        self.is_closed = False
        self.close_calls = 0

    def close(self) -> None:
        self.close_calls += 1


def _link() -> tuple[_Link, FakeChannel]:
    link = _Link(pika.URLParameters(URL), broker.model_queue_arguments(3), set())
    channel = FakeChannel()
    link.channel = channel  # type: ignore[assignment]
    link.connection = FakeConnection()  # type: ignore[assignment]
    return link, channel


def _confirm(ack: bool, tag: int, multiple: bool = False) -> pika.frame.Method:
    method = pika.spec.Basic.Ack(tag, multiple) if ack else pika.spec.Basic.Nack(tag, multiple)
    return pika.frame.Method(1, method)


def _publish(link: _Link, queue: str, message_id: str) -> Future[None]:
    future: Future[None] = Future()
    link._run_action(future, lambda: link.publish_now(queue, b"{}", message_id, 1000, future))
    return future


def test_confirms_resolve_the_right_futures() -> None:
    link, _channel = _link()
    futures = [_publish(link, "q", f"m{i}") for i in range(1, 5)]
    assert sorted(link.pending) == [1, 2, 3, 4]
    link._on_confirm(_confirm(True, 2, multiple=True))
    assert [f.done() for f in futures] == [True, True, False, False]
    assert futures[0].result() is None
    link._on_confirm(_confirm(False, 3))  # RabbitMQ nacks what a reject-publish queue refused
    with pytest.raises(QueueFull):
        futures[2].result()
    assert isinstance(futures[2].exception(), BrokerUnavailable)  # callers that only know this still work
    link._on_return(None, None, pika.BasicProperties(message_id="m4"), b"")  # type: ignore[arg-type]
    link._on_confirm(_confirm(True, 4))
    with pytest.raises(NoRoute):
        futures[3].result()
    assert link.pending == {} and link.returned == set()


def test_a_publish_that_raises_fails_its_future_and_uses_no_delivery_tag() -> None:
    link, channel = _link()
    channel.fail_on.add("bad")
    first = _publish(link, "q", "m1")
    bad = _publish(link, "bad", "m2")
    assert isinstance(bad.exception(), BrokerUnavailable)
    assert channel.closed, "the channel is reopened clean after an unexpected failure"
    assert link.next_tag == 1 and list(link.pending) == [1]
    link._on_confirm(_confirm(True, 1))
    assert first.result() is None


def test_a_failing_callback_is_contained_and_fails_what_is_pending() -> None:
    link, _channel = _link()
    pending = _publish(link, "q", "m1")
    link.ready.set()

    def broken(*_args: Any) -> None:
        raise RuntimeError("bug in a callback")

    link._guard(broken)(object())  # must not raise
    assert not link.ready.is_set()
    assert isinstance(pending.exception(), BrokerUnavailable)
    assert link.connection.close_calls == 1  # type: ignore[union-attr]


def test_a_queue_with_other_arguments_is_used_passively_after_one_refusal() -> None:
    link, channel = _link()
    declared: Future[int] = Future()
    link.declare_now("mlstack.model.OLD", declared)
    assert channel.declared[-1] == ("mlstack.model.OLD", False, {"x-max-length": 3, "x-overflow": "reject-publish"})
    link.connection.is_open = False  # type: ignore[union-attr]  # no reopen in this test
    link._on_channel_closed(channel, pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED"))  # type: ignore[arg-type]
    assert isinstance(declared.exception(), BrokerUnavailable)
    link.channel = channel2 = FakeChannel()  # type: ignore[assignment]
    link.declare_now("mlstack.model.OLD", Future())
    assert channel2.declared[-1] == ("mlstack.model.OLD", True, None)


def test_queue_names_over_255_bytes_are_refused_without_touching_the_broker() -> None:
    publisher = Publisher(URL)
    future = publisher.publish(broker.queue_name("x" * 250), b"{}", "m", 1000)
    assert isinstance(future.exception(timeout=1), BrokerUnavailable)
    assert isinstance(publisher.declare(broker.queue_name("é" * 130)).exception(timeout=1), BrokerUnavailable)


def test_the_supervisor_replaces_a_dead_publisher_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(self: _Link) -> None:
        return  # the thread ends, as after an error no `except` caught

    monkeypatch.setattr(_Link, "run", dies)
    publisher = Publisher(URL)
    first = publisher._link
    publisher.start()
    try:
        first.thread.join(2)
        assert not publisher.ready
        assert publisher._link is not first, "a dead thread is replaced"
    finally:
        publisher.stop(timeout_s=1)


def test_the_supervisor_replaces_a_wedged_publisher_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def wedged(self: _Link) -> None:
        self.ready.set()
        release.wait(10)  # a callback that never returns: the ioloop stops turning

    monkeypatch.setattr(_Link, "run", wedged)
    monkeypatch.setattr(broker, "_WEDGED_AFTER_S", 0.5)
    publisher = Publisher(URL)
    first = publisher._link
    publisher.start()
    try:
        waiting: Future[None] = Future()
        first.pending[1] = waiting
        first.beat = time.monotonic() - 10  # the ioloop stopped stamping its beat
        assert not first.healthy(time.monotonic())
        current = publisher._current()
        assert current is not first and first.stopping
        assert isinstance(waiting.exception(timeout=1), BrokerUnavailable)
    finally:
        release.set()
        publisher.stop(timeout_s=1)
