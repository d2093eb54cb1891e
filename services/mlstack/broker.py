"""RabbitMQ client: the only module that imports pika.

Two roles:
- ``Publisher`` (API): one long-lived connection per process, driven by pika's
  asynchronous ``SelectConnection`` in its own thread, with publisher confirms
  pipelined (many messages in flight, acked in batches) and reconnection with
  backoff. Callers get a ``concurrent.futures.Future`` per publish.
- ``JobConsumer`` (worker): a blocking connection that consumes every served
  model's queue; jobs run in a separate thread so heartbeats keep flowing while
  a model computes (pika's ``basic_consumer_threaded`` pattern), and a message
  is acked only after the handler says its result reached the API.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec

log = logging.getLogger(__name__)

QUEUE_PREFIX = "mlstack.model."
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0


def queue_name(model_name: str) -> str:
    """One durable queue per model: every worker serving the model consumes it."""
    return QUEUE_PREFIX + model_name


class BrokerUnavailable(Exception):
    """The broker is unreachable or did not confirm the message."""


class NoRoute(BrokerUnavailable):
    """The message was returned: the model's queue does not exist."""


def _connection_parameters(amqp_url: str, heartbeat_s: int = 30) -> pika.URLParameters:
    params = pika.URLParameters(amqp_url)
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


class Publisher:
    """Publishes persistent job messages with confirms over one connection."""

    def __init__(self, amqp_url: str) -> None:
        self._params = _connection_parameters(amqp_url)
        self._connection: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="amqp-publisher", daemon=True)
        # Owned by the publisher thread only.
        self._next_tag = 0
        self._pending: dict[int, Future[None]] = {}
        self._tag_by_message_id: dict[str, int] = {}
        self._returned: set[int] = set()
        self._pending_declares: list[Future[int]] = []

    # ---- public API (any thread) -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # already closed
                connection.ioloop.add_callback_threadsafe(self._close)
        self._thread.join(timeout_s)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def publish(self, queue: str, body: bytes, message_id: str, expiration_ms: int) -> Future[None]:
        """Send one persistent message; the future resolves when the broker confirmed it."""
        future: Future[None] = Future()
        self._submit(future, functools.partial(self._publish_now, queue, body, message_id, expiration_ms, future))
        return future

    def declare(self, queue: str) -> Future[int]:
        """Declare the model's durable queue (idempotent) and return its consumer count."""
        future: Future[int] = Future()
        self._submit(future, functools.partial(self._declare_now, queue, future))
        return future

    # ---- publisher thread ----------------------------------------------------------
    def _submit(self, future: Future, action: Callable[[], None]) -> None:
        connection = self._connection
        if not self._ready.is_set() or connection is None:
            future.set_exception(BrokerUnavailable("not connected to the broker"))
            return
        try:
            connection.ioloop.add_callback_threadsafe(action)
        except Exception as exc:  # the ioloop is closing
            future.set_exception(BrokerUnavailable(str(exc)))

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        while not self._stopping:
            opened_at = time.monotonic()
            self._connection = pika.SelectConnection(
                self._params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_open_error,
                on_close_callback=self._on_connection_closed,
            )
            self._connection.ioloop.start()
            if self._stopping:
                break
            # A connection that lived a while resets the backoff: this is a new outage.
            if time.monotonic() - opened_at > 30:
                backoff = _BACKOFF_START_S
            time.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            self._connection.close()

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        log.info("connected to the broker")
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, connection: pika.SelectConnection, error: BaseException) -> None:
        log.warning("cannot connect to the broker: %s", error.__class__.__name__)
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        if not self._stopping:
            log.warning("broker connection closed: %s", reason)
        self._ready.clear()
        self._channel = None
        self._fail_all(BrokerUnavailable("broker connection closed"))
        connection.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        self._next_tag = 0  # delivery tags count per channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: self._ready.set())

    def _on_channel_closed(self, channel: pika.channel.Channel, reason: BaseException) -> None:
        self._ready.clear()
        self._channel = None
        self._fail_all(BrokerUnavailable(f"channel closed: {reason}"))
        connection = self._connection
        if connection is not None and connection.is_open and not self._stopping:
            log.warning("broker channel closed (%s); reopening", reason)
            connection.channel(on_open_callback=self._on_channel_open)

    def _fail_all(self, error: BrokerUnavailable) -> None:
        pending, self._pending = self._pending, {}
        declares, self._pending_declares = self._pending_declares, []
        self._tag_by_message_id.clear()
        self._returned.clear()
        for future in [*pending.values(), *declares]:
            if not future.done():
                future.set_exception(error)

    def _publish_now(
        self, queue: str, body: bytes, message_id: str, expiration_ms: int, future: Future[None]
    ) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            future.set_exception(BrokerUnavailable("no open channel"))
            return
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=message_id,
            expiration=str(expiration_ms),
        )
        self._next_tag += 1
        self._pending[self._next_tag] = future
        self._tag_by_message_id[message_id] = self._next_tag
        # mandatory: a message with no queue to land in comes back instead of vanishing.
        channel.basic_publish("", queue, body, properties, mandatory=True)

    def _declare_now(self, queue: str, future: Future[int]) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            future.set_exception(BrokerUnavailable("no open channel"))
            return
        self._pending_declares.append(future)

        def on_declared(frame: pika.frame.Method) -> None:
            if future in self._pending_declares:
                self._pending_declares.remove(future)
            if not future.done():
                future.set_result(frame.method.consumer_count)

        channel.queue_declare(queue, durable=True, callback=on_declared)

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        tag = self._tag_by_message_id.get(properties.message_id or "")
        if tag is not None:
            self._returned.add(tag)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        last = method.delivery_tag
        tags = [t for t in self._pending if t <= last] if method.multiple else [last]
        for tag in tags:
            future = self._pending.pop(tag, None)
            if future is None or future.done():
                continue
            if not acked:
                future.set_exception(BrokerUnavailable("the broker refused the message"))
            elif tag in self._returned:
                future.set_exception(NoRoute("no queue for this model"))
            else:
                future.set_result(None)
            self._returned.discard(tag)
        if self._tag_by_message_id and len(self._tag_by_message_id) > 4 * (len(self._pending) + 64):
            live = set(self._pending)
            self._tag_by_message_id = {m: t for m, t in self._tag_by_message_id.items() if t in live}


class Outcome(enum.Enum):
    """What the consumer does with a message once its handler returns."""

    ACK = "ack"
    REQUEUE = "requeue"


class Delivery:
    """One received job message, as the handler sees it."""

    def __init__(self, queue: str, body: bytes, redelivered: bool) -> None:
        self.queue = queue
        self.body = body
        self.redelivered = redelivered


class JobConsumer:
    """Consumes model queues; runs ``handler`` off the I/O thread; acks late."""

    def __init__(
        self,
        amqp_url: str,
        queues: list[str],
        handler: Callable[[Delivery], Outcome],
        prefetch: int = 1,
    ) -> None:
        self._params = _connection_parameters(amqp_url, heartbeat_s=30)
        self._queues = queues
        self._handler = handler
        self._prefetch = prefetch
        self._executor: ThreadPoolExecutor | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        """Consume until ``stop()``; reconnect with backoff when the broker goes away."""
        backoff = _BACKOFF_START_S
        while not self._stopping.is_set():
            try:
                self._consume_once()
                backoff = _BACKOFF_START_S
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.connected.clear()
                if self._stopping.is_set():
                    break
                log.warning("broker connection lost (%s); retrying in %.1fs", exc.__class__.__name__, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def stop(self) -> None:
        """Stop consuming: the job in progress finishes and is acked first."""
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # already closed
                connection.add_callback_threadsafe(self._stop_consuming)

    def _stop_consuming(self) -> None:
        if self._channel is not None and self._channel.is_open:
            self._channel.stop_consuming()

    def _consume_once(self) -> None:
        self._connection = pika.BlockingConnection(self._params)
        # One job at a time per process: models are not assumed thread-safe.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        try:
            channel = self._connection.channel()
            self._channel = channel
            channel.basic_qos(prefetch_count=self._prefetch)
            for queue in self._queues:
                channel.queue_declare(queue, durable=True)
                channel.basic_consume(queue, self._on_message)
            self.connected.set()
            log.info("consuming %s", ", ".join(self._queues))
            if self._stopping.is_set():
                return
            channel.start_consuming()
            # stop_consuming() returned: let in-flight jobs finish and be acked before closing.
            self._drain()
        finally:
            self.connected.clear()
            # Never run two jobs at once: a job still running on a lost connection finishes first
            # (its message is redelivered; the API tells the next worker it is already finished).
            self._executor.shutdown(wait=True)
            if self._connection.is_open:
                self._connection.close()

    def _drain(self) -> None:
        assert self._executor is not None and self._connection is not None
        self._executor.shutdown(wait=True)
        self._connection.process_data_events(time_limit=0)

    def _on_message(
        self,
        channel: pika.adapters.blocking_connection.BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(method.routing_key, body, bool(method.redelivered))
        connection = self._connection
        assert connection is not None
        tag = method.delivery_tag

        def work() -> None:
            try:
                outcome = self._handler(delivery)
            except Exception:
                log.exception("job handler failed; requeueing the message")
                outcome = Outcome.REQUEUE
            try:
                connection.add_callback_threadsafe(functools.partial(self._settle, channel, tag, outcome))
            except Exception:
                # Connection gone: the broker redelivers the unacked message; the API makes that idempotent.
                log.warning("could not settle message: connection closed")

        assert self._executor is not None
        self._executor.submit(work)

    @staticmethod
    def _settle(
        channel: pika.adapters.blocking_connection.BlockingChannel, tag: int, outcome: Outcome
    ) -> None:
        if not channel.is_open:
            return
        if outcome is Outcome.ACK:
            channel.basic_ack(tag)
        else:
            channel.basic_nack(tag, requeue=True)
