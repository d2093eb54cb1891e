"""RabbitMQ client: the only module that imports pika.

Two roles:
- ``Publisher`` (API): one long-lived connection per process, driven by pika's
  asynchronous ``SelectConnection`` in its own thread, with publisher confirms
  pipelined (many messages in flight, acked in batches) and reconnection with
  backoff. Callers get a ``concurrent.futures.Future`` per publish. Every ioloop
  callback is guarded; a supervisor replaces a publisher thread that died or
  stopped turning its ioloop, and ``ready`` is False meanwhile.
- ``JobConsumer`` (worker): a blocking connection that consumes every served
  model's queue; jobs run in a separate thread so heartbeats keep flowing while
  a model computes (pika's ``basic_consumer_threaded`` pattern), and a message
  is settled only after the handler returns its ``Verdict``: ack, retry later
  (bounded), wait for another worker's lease, or dead-letter.

Queues (services/DESIGN.md, "Queues"):
- ``mlstack.model.<name>``: durable, ``x-max-length`` + ``x-overflow: reject-publish``
  (the API and the workers declare them with the same ``model_queue_arguments``);
- ``mlstack.retry`` (exchange, fanout) -> queue ``mlstack.retry``: a message waits
  ``RETRY_DELAY_MS`` there, then RabbitMQ dead-letters it back to the default
  exchange with its original routing key, i.e. its model queue;
- ``mlstack.dead``: messages that can never run, with the reason in a header.

Clusters: every client gets one URL per node and moves to the next node when a connection
attempt fails or an open connection is lost (a pause only once every node failed in a row).
With ``queue_type="quorum"`` every queue above is a quorum queue (replicated, it survives a
node loss): the retry and dead-letter queues too, because a classic queue whose node is down
cannot even be declared, and a worker that cannot declare them cannot consume at all.
``x-max-length``/``x-overflow``, ``x-message-ttl``, dead-lettering and per-message expiration
all work on quorum queues from RabbitMQ 3.10 (Debian 12's release). A queue that exists with
the other type is refused by RabbitMQ (PRECONDITION_FAILED): ``QueueTypeMismatch``.
We use nothing quorum queues lack (no exclusive/auto-delete queues, priorities or global QoS).
On RabbitMQ 4.x a quorum queue drops a message redelivered 20 times (its default delivery
limit; 3.x has none): a message whose workers were lost (or failed to settle it) 20 times;
its job then ends by TTL.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec

from mlstack.settings import QUEUE_TYPES

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_PREFIX = "mlstack.model."
DEFAULT_QUEUE_MAX_LENGTH = 10_000
DEAD_LETTER_QUEUE = "mlstack.dead"
DEAD_LETTER_MAX_LENGTH = 100_000  # oldest dead letters are dropped past this (default overflow: drop-head)
RETRY_EXCHANGE = "mlstack.retry"
RETRY_QUEUE = "mlstack.retry"
RETRY_DELAY_MS = 5_000  # one TTL for the whole queue keeps expiry in FIFO order
# Headers the worker sets when it republishes a message.
ATTEMPT_HEADER = "x-mlstack-attempt"  # transient failures so far
REPUBLISHED_HEADER = "x-mlstack-republished"  # this copy may have run before: check with the API first
REASON_HEADER = "x-mlstack-reason"
SOURCE_QUEUE_HEADER = "x-mlstack-queue"
_MAX_QUEUE_NAME_BYTES = 255  # AMQP shortstr
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0
_STABLE_CONNECTION_S = 30.0  # a connection that lasted this long resets the backoff
_PRECONDITION_FAILED = 406


def queue_name(model_name: str) -> str:
    """One durable queue per model: every worker serving the model consumes it."""
    return QUEUE_PREFIX + model_name


def _typed(arguments: dict[str, Any], queue_type: str) -> dict[str, Any]:
    """Classic queues carry no type argument: queues declared by older releases stay equivalent."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type {queue_type!r} is not one of {', '.join(QUEUE_TYPES)}")
    return {**arguments, "x-queue-type": "quorum"} if queue_type == "quorum" else arguments


def model_queue_arguments(max_length: int, queue_type: str = "classic") -> dict[str, Any]:
    """Arguments of every model queue: the API and the workers must declare identical ones."""
    return _typed({"x-max-length": max_length, "x-overflow": "reject-publish"}, queue_type)


def queue_type_mismatch(queue: str, wanted: str) -> str:
    """The operator's log line when a queue exists with the other type (one line, says what to do)."""
    existing = "classic" if wanted == "quorum" else "quorum"
    return (
        f"queue {queue} exists as a {existing} queue but MLSTACK_QUEUE_TYPE={wanted}: RabbitMQ cannot change"
        f" a queue's type; migrate by deleting it once it is empty (rabbitmqctl delete_queue -p <vhost> {queue}"
        f" --if-empty, with producers stopped; it is declared again as {wanted}), or set"
        f" MLSTACK_QUEUE_TYPE={existing}"
    )


class BrokerUnavailable(Exception):
    """The broker is unreachable or did not confirm the message."""


class NoRoute(BrokerUnavailable):
    """The message was returned: the model's queue does not exist."""


class QueueFull(BrokerUnavailable):
    """The broker refused the message: the model's queue is at its length limit (reject-publish)."""


class QueueTypeMismatch(BrokerUnavailable):
    """A queue exists with the other type (classic vs quorum); the text says how to migrate."""


def _check_queue_name(queue: str) -> None:
    if len(queue.encode()) > _MAX_QUEUE_NAME_BYTES:
        raise BrokerUnavailable(f"queue name longer than {_MAX_QUEUE_NAME_BYTES} bytes")


def _connection_parameters(amqp_url: str, heartbeat_s: int = 30, name: str = "") -> pika.URLParameters:
    params = pika.URLParameters(amqp_url)
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    if name:  # shown by `rabbitmqctl list_connections client_properties` and the management UI
        params.client_properties = {"connection_name": name}
    return params


def _node_parameters(amqp_urls: str | Sequence[str], heartbeat_s: int = 30, name: str = "") -> list[pika.URLParameters]:
    """One set of connection parameters per node (a single URL is a one-node cluster)."""
    urls = [amqp_urls] if isinstance(amqp_urls, str) else list(amqp_urls)
    if not urls:
        raise ValueError("no broker URL")
    return [_connection_parameters(url, heartbeat_s, name) for url in urls]


class _Nodes:
    """Which node to connect to next: after a failure or a lost connection the next node at once,
    a backoff pause only once every node failed in a row (one node: a pause after each failure)."""

    def __init__(self, params: pika.URLParameters | Sequence[pika.URLParameters]) -> None:
        self._params = [params] if isinstance(params, pika.URLParameters) else list(params)
        self._index = 0
        self._failures = 0  # connections in a row that failed or did not last
        self._backoff = _BACKOFF_START_S

    @property
    def current(self) -> pika.URLParameters:
        return self._params[self._index]

    def where(self) -> str:
        """host:port of the current node (never the credentials)."""
        return f"{self.current.host}:{self.current.port}"

    def ended(self, lasted_s: float) -> float:
        """A connection to the current node failed or ended: move on; return the seconds to pause."""
        if lasted_s > _STABLE_CONNECTION_S:  # it worked for a while: this is a new outage
            self._failures = 0
            self._backoff = _BACKOFF_START_S
        self._failures += 1
        self._index = (self._index + 1) % len(self._params)
        if self._failures % len(self._params):
            return 0.0
        pause, self._backoff = self._backoff, min(self._backoff * 2, _BACKOFF_MAX_S)
        return pause


def _precondition_failed(reason: BaseException) -> bool:
    return isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == _PRECONDITION_FAILED


def _type_conflict(reason: BaseException) -> bool:
    """PRECONDITION_FAILED because the queue exists with another x-queue-type (classic vs quorum)."""
    return _precondition_failed(reason) and "'x-queue-type'" in str(getattr(reason, "reply_text", ""))


# ==== API side ===========================================================================================
_BEAT_S = 1.0  # the ioloop stamps `beat` this often
_NOT_READY_AFTER_S = 5.0  # no beat for this long: not ready
_WEDGED_AFTER_S = 15.0  # no beat for this long: the thread is replaced
_MISMATCH_LOG_EVERY_S = 60.0


class _Link:
    """One publisher thread and its connections; all its state is owned by that thread."""

    def __init__(
        self,
        params: pika.URLParameters | Sequence[pika.URLParameters],
        queue_args: dict[str, Any],
        passive_queues: set[str],
        queue_type: str = "classic",
        probe_queues: set[str] | None = None,
    ) -> None:
        self._nodes = _Nodes(params)
        # Shared by links, quorum only: queues refused for an argument other than the type, declared
        # again with the type alone to learn whether they are classic.
        self._probe_queues = set() if probe_queues is None else probe_queues
        self._queue_args = queue_args
        self._queue_type = queue_type
        self._mismatch_logged: dict[str, float] = {}  # queue -> when its type conflict was last logged
        self._passive_queues = passive_queues  # shared by links: queues that exist with other arguments
        self.connection: pika.SelectConnection | None = None
        self.channel: pika.channel.Channel | None = None
        self.ready = threading.Event()
        self.stopping = False
        self.beat = time.monotonic()
        self.thread = threading.Thread(target=self.run, name="amqp-publisher", daemon=True)
        self.next_tag = 0
        self.pending: dict[int, Future[None]] = {}
        self.tag_by_message_id: dict[str, int] = {}
        self.returned: set[int] = set()
        self.pending_declares: list[tuple[str, Future[int]]] = []

    # ---- any thread ------------------------------------------------------------------------------------
    def healthy(self, now: float) -> bool:
        return self.ready.is_set() and self.thread.is_alive() and now - self.beat < _NOT_READY_AFTER_S

    def submit(self, future: Future[Any], action: Callable[[], None]) -> None:
        connection = self.connection
        if not self.ready.is_set() or connection is None:
            future.set_exception(BrokerUnavailable("not connected to the broker"))
            return
        try:
            connection.ioloop.add_callback_threadsafe(functools.partial(self._run_action, future, action))
        except Exception as exc:  # the ioloop is closing
            future.set_exception(BrokerUnavailable(str(exc)))

    def stop(self) -> None:
        self.stopping = True
        self.ready.clear()
        connection = self.connection
        if connection is not None:
            with contextlib.suppress(Exception):  # already closed
                connection.ioloop.add_callback_threadsafe(self._guard(self._close))

    def abandon(self) -> None:
        """Give up on a wedged thread: its callers get an error now, a new link takes over."""
        self.stop()
        self._fail_all(BrokerUnavailable("publisher thread restarted"))

    # ---- publisher thread ------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            opened_at = time.monotonic()
            self.beat = opened_at
            try:
                self.connection = pika.SelectConnection(
                    self._nodes.current,
                    on_open_callback=self._guard(self._on_connection_open),
                    on_open_error_callback=self._guard(self._on_connection_open_error),
                    on_close_callback=self._guard(self._on_connection_closed),
                )
                self.connection.ioloop.call_later(_BEAT_S, self._guard(self._on_beat))
                self.connection.ioloop.start()
            except Exception:  # a bug in a callback pika itself runs: start over with a new connection
                log.exception("publisher ioloop failed; reconnecting")
                self.ready.clear()
                self._fail_all(BrokerUnavailable("publisher ioloop failed"))
                with contextlib.suppress(Exception):
                    if self.connection is not None and not self.connection.is_closed:
                        self.connection.close()
            if self.stopping:
                break
            pause = self._nodes.ended(time.monotonic() - opened_at)  # the next node, if there are several
            self.beat = time.monotonic()
            if pause:
                time.sleep(pause)

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """An exception in a callback must not end the ioloop thread: log it and reconnect."""

        @functools.wraps(callback)
        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception:
                log.exception("publisher callback %s failed; reconnecting", callback.__name__)
                self._reset()

        return guarded

    def _reset(self) -> None:
        self.ready.clear()
        self._fail_all(BrokerUnavailable("publisher reset after an error"))
        connection = self.connection
        try:
            if connection is not None and connection.is_open:
                connection.close()
            elif connection is not None:
                connection.ioloop.stop()
        except Exception:
            log.exception("could not close the publisher connection")
            if connection is not None:
                connection.ioloop.stop()

    def _run_action(self, future: Future[Any], action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            log.exception("publisher action failed")
            if not future.done():
                future.set_exception(BrokerUnavailable(f"{exc.__class__.__name__}: {exc}"))
            # The channel's state (delivery tags) is unknown now: start a clean one.
            channel = self.channel
            if channel is not None and channel.is_open:
                channel.close()

    def _on_beat(self) -> None:
        self.beat = time.monotonic()
        connection = self.connection
        if connection is not None and not self.stopping:
            connection.ioloop.call_later(_BEAT_S, self._guard(self._on_beat))

    def _close(self) -> None:
        if self.connection is not None and not self.connection.is_closed:
            self.connection.close()

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        log.info("connected to the broker at %s", self._nodes.where())
        connection.channel(on_open_callback=self._guard(self._on_channel_open))

    def _on_connection_open_error(self, connection: pika.SelectConnection, error: BaseException) -> None:
        log.warning("cannot connect to the broker at %s: %s", self._nodes.where(), error.__class__.__name__)
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        if not self.stopping:
            log.warning("broker connection closed: %s", reason)
        self.ready.clear()
        self.channel = None
        self._fail_all(BrokerUnavailable("broker connection closed"))
        connection.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        self.next_tag = 0  # delivery tags count per channel
        channel.add_on_close_callback(self._guard(self._on_channel_closed))
        channel.add_on_return_callback(self._guard(self._on_return))
        channel.confirm_delivery(
            ack_nack_callback=self._guard(self._on_confirm), callback=self._guard(self._on_confirm_ok)
        )

    def _on_confirm_ok(self, _frame: pika.frame.Method) -> None:
        self.ready.set()

    def _on_channel_closed(self, channel: pika.channel.Channel, reason: BaseException) -> None:
        self.ready.clear()
        self.channel = None
        error = BrokerUnavailable(f"channel closed: {reason}")
        if _type_conflict(reason):
            # Not used as it is: the operator chose the type for the queue's availability.
            for queue, _ in self.pending_declares:
                self._log_mismatch(queue)
            error = QueueTypeMismatch(str(reason))
        elif _precondition_failed(reason):
            # A queue declared before limits existed keeps its arguments: use it as it is (DESIGN.md).
            for queue, _ in self.pending_declares:
                if self._queue_type == "quorum" and queue not in self._probe_queues:
                    # RabbitMQ names the first argument that differs: a classic queue from before queue
                    # limits is refused for x-max-length. The next declare sends the type alone.
                    self._probe_queues.add(queue)
                    continue
                log.warning("queue %s exists with other arguments (no length limit); using it as it is", queue)
                self._passive_queues.add(queue)
        self._fail_all(error)
        connection = self.connection
        if connection is not None and connection.is_open and not self.stopping:
            log.warning("broker channel closed (%s); reopening", reason)
            connection.channel(on_open_callback=self._guard(self._on_channel_open))

    def _log_mismatch(self, queue: str) -> None:
        """Once a minute per queue: every request for the model meets it until an operator acts."""
        now = time.monotonic()
        if now - self._mismatch_logged.get(queue, -_MISMATCH_LOG_EVERY_S) >= _MISMATCH_LOG_EVERY_S:
            self._mismatch_logged[queue] = now
            log.error("%s", queue_type_mismatch(queue, self._queue_type))

    def _fail_all(self, error: BrokerUnavailable) -> None:
        pending, self.pending = self.pending, {}
        declares, self.pending_declares = self.pending_declares, []
        self.tag_by_message_id.clear()
        self.returned.clear()
        for future in [*pending.values(), *(f for _, f in declares)]:
            with contextlib.suppress(Exception):  # done meanwhile (a race with an abandoned thread)
                if not future.done():
                    future.set_exception(error)

    def publish_now(self, queue: str, body: bytes, message_id: str, expiration_ms: int, future: Future[None]) -> None:
        channel = self.channel
        if channel is None or not channel.is_open:
            future.set_exception(BrokerUnavailable("no open channel"))
            return
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=message_id,
            expiration=str(expiration_ms),
        )
        # mandatory: a message with no queue to land in comes back instead of vanishing.
        channel.basic_publish("", queue, body, properties, mandatory=True)
        # Counted only once sent: a publish that raised used no delivery tag.
        self.next_tag += 1
        self.pending[self.next_tag] = future
        self.tag_by_message_id[message_id] = self.next_tag

    def declare_now(self, queue: str, future: Future[int]) -> None:
        channel = self.channel
        if channel is None or not channel.is_open:
            future.set_exception(BrokerUnavailable("no open channel"))
            return
        entry = (queue, future)
        self.pending_declares.append(entry)

        def on_declared(frame: pika.frame.Method) -> None:
            if entry in self.pending_declares:
                self.pending_declares.remove(entry)
            if not future.done():
                future.set_result(frame.method.consumer_count)

        passive = queue in self._passive_queues
        if passive:
            arguments = None
        elif queue in self._probe_queues:
            arguments = _typed({}, "quorum")
        else:
            arguments = self._queue_args
        channel.queue_declare(
            queue, passive=passive, durable=True, arguments=arguments, callback=self._guard(on_declared)
        )

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        tag = self.tag_by_message_id.get(properties.message_id or "")
        if tag is not None:
            self.returned.add(tag)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        last = method.delivery_tag
        tags = [t for t in self.pending if t <= last] if method.multiple else [last]
        for tag in tags:
            future = self.pending.pop(tag, None)
            if future is None or future.done():
                continue
            if not acked:
                # RabbitMQ nacks a routed message when a queue refused it: x-overflow reject-publish.
                future.set_exception(QueueFull("the model's queue is full"))
            elif tag in self.returned:
                future.set_exception(NoRoute("no queue for this model"))
            else:
                future.set_result(None)
            self.returned.discard(tag)
        if self.tag_by_message_id and len(self.tag_by_message_id) > 4 * (len(self.pending) + 64):
            live = set(self.pending)
            self.tag_by_message_id = {m: t for m, t in self.tag_by_message_id.items() if t in live}


class Publisher:
    """Publishes persistent job messages with confirms over one connection."""

    def __init__(
        self,
        amqp_urls: str | Sequence[str],
        queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH,
        queue_type: str = "classic",
    ) -> None:
        self._params = _node_parameters(amqp_urls, name="mlstack-api")
        self._queue_type = queue_type
        self._queue_args = model_queue_arguments(queue_max_length, queue_type)
        self._passive_queues: set[str] = set()
        self._probe_queues: set[str] = set()
        self._lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._link = self._new_link()
        self._supervisor = threading.Thread(target=self._supervise, name="amqp-publisher-supervisor", daemon=True)

    # ---- public API (any thread) -------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._started = True
            self._link.thread.start()
        self._supervisor.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        link = self._link
        link.stop()
        if link.thread.is_alive():
            link.thread.join(timeout_s)

    @property
    def ready(self) -> bool:
        return self._current().healthy(time.monotonic())

    def publish(self, queue: str, body: bytes, message_id: str, expiration_ms: int) -> Future[None]:
        """Send one persistent message; the future resolves when the broker confirmed it.

        It raises ``QueueFull`` when the model's queue is at its limit, ``NoRoute`` when the queue
        does not exist, ``BrokerUnavailable`` otherwise."""
        future: Future[None] = Future()
        return self._for_queue(
            queue, future, lambda link: link.publish_now(queue, body, message_id, expiration_ms, future)
        )

    def declare(self, queue: str) -> Future[int]:
        """Declare the model's durable queue (idempotent) and return its consumer count."""
        future: Future[int] = Future()
        return self._for_queue(queue, future, lambda link: link.declare_now(queue, future))

    def _for_queue(self, queue: str, future: Future[T], action: Callable[[_Link], None]) -> Future[T]:
        """Run ``action`` on the current link's ioloop; a queue name the broker would refuse fails
        ``future`` at once instead."""
        try:
            _check_queue_name(queue)
        except BrokerUnavailable as exc:
            future.set_exception(exc)
            return future
        link = self._current()
        link.submit(future, lambda: action(link))
        return future

    # ---- supervision ----------------------------------------------------------------
    def _new_link(self) -> _Link:
        return _Link(self._params, self._queue_args, self._passive_queues, self._queue_type, self._probe_queues)

    def _current(self) -> _Link:
        """The live link; a dead or wedged publisher thread is replaced here."""
        with self._lock:
            link = self._link
            if not self._started or self._stopping.is_set():
                return link
            dead = not link.thread.is_alive()
            wedged = time.monotonic() - link.beat > _WEDGED_AFTER_S
            if dead or wedged:
                log.error("publisher thread %s; starting a new one", "died" if dead else "is not responding")
                link.abandon()
                link = self._link = self._new_link()
                link.thread.start()
            return link

    def _supervise(self) -> None:
        while not self._stopping.wait(_BEAT_S):
            try:
                self._current()
            except Exception:  # never let the supervisor die: it is what restarts the publisher
                log.exception("publisher supervisor check failed")


# ==== worker side ========================================================================================
class Outcome(enum.Enum):
    """What the consumer does with a message once its handler returns."""

    ACK = "ack"  # done with it (result stored, or nothing to do)
    RETRY = "retry"  # a transient failure: back to the queue after RETRY_DELAY_MS, attempt counted
    WAIT = "wait"  # another worker holds the job's lease: look again after RETRY_DELAY_MS, not counted
    DEAD = "dead"  # can never succeed: to mlstack.dead with the reason


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""


ACK = Verdict(Outcome.ACK)
WAIT = Verdict(Outcome.WAIT)


class Delivery:
    """One received job message, as the handler sees it."""

    def __init__(self, queue: str, body: bytes, redelivered: bool, headers: dict[str, Any] | None = None) -> None:
        self.queue = queue
        self.body = body
        self.headers = headers or {}
        attempt = self.headers.get(ATTEMPT_HEADER, 0)
        self.attempt = attempt if isinstance(attempt, int) and attempt >= 0 else 0
        # A republished copy may have run before, like a redelivered message: the API decides.
        self.redelivered = redelivered or REPUBLISHED_HEADER in self.headers or "x-death" in self.headers


@dataclass(frozen=True)
class BatchLimit:
    """Micro-batching of one queue: up to ``max_batch`` messages, waiting at most ``max_wait_s``
    after the first one for more (under load a batch fills without waiting)."""

    max_batch: int
    max_wait_s: float


@dataclass(frozen=True)
class _Waiting:
    tag: int
    delivery: Delivery
    properties: pika.spec.BasicProperties
    arrived: float


class JobConsumer:
    """Consumes model queues; runs ``handler`` off the I/O thread; settles late.

    A queue with a ``BatchLimit`` (max_batch > 1) hands ``batch_handler`` lists of deliveries
    instead; their acks go out as one ``basic_ack(multiple=True)`` up to the lowest tag still
    unsettled that is not theirs, the rest one by one."""

    def __init__(
        self,
        amqp_urls: str | Sequence[str],
        queues: list[str],
        handler: Callable[[Delivery], Verdict],
        prefetch: int = 1,
        *,
        queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH,
        max_attempts: int = 5,
        name: str = "mlstack-worker",
        batch_handler: Callable[[list[Delivery]], list[Verdict]] | None = None,
        batch_limits: dict[str, BatchLimit] | None = None,
        queue_type: str = "classic",
    ) -> None:
        self._nodes = _Nodes(_node_parameters(amqp_urls, heartbeat_s=30, name=name))
        self._queue_type = queue_type
        self._batch_handler = batch_handler
        self._batch_limits = {q: b for q, b in (batch_limits or {}).items() if b.max_batch > 1 and batch_handler}
        # Deliveries of batched queues waiting for the job thread (filled by the I/O thread).
        self._waiting: dict[str, list[_Waiting]] = {}
        self._arrivals = threading.Condition()
        self._unsettled: set[int] = set()  # delivery tags not yet acked or nacked (I/O thread only)
        self._queues = queues
        self._handler = handler
        self._prefetch = prefetch
        self._queue_args = model_queue_arguments(queue_max_length, queue_type)
        self._max_attempts = max_attempts
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: set[Future[None]] = set()
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()
        # Stamped by the consuming thread every loop turn: the systemd watchdog is fed only while it moves.
        self.last_tick = time.monotonic()

    def run(self) -> None:
        """Consume until ``stop()``; move to the next node (with backoff once all failed) when the
        broker goes away. Raises ``QueueTypeMismatch``: retrying cannot fix it, an operator must."""
        while not self._stopping.is_set():
            started = time.monotonic()
            node = self._nodes.where()
            try:
                self._consume_once()
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.connected.clear()
                if self._stopping.is_set():
                    break
                pause = self._nodes.ended(time.monotonic() - started)
                log.warning("broker connection to %s lost or refused (%s); trying %s in %.1fs", node,
                            exc.__class__.__name__, self._nodes.where(), pause)  # fmt: skip
                self._wait(pause)

    def stop(self) -> None:
        """Stop consuming: the job in progress finishes and is settled first."""
        self._stopping.set()
        with self._arrivals:
            self._arrivals.notify_all()  # a batch waiting for more messages goes now

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self.last_tick = time.monotonic()
            self._stopping.wait(min(1.0, max(deadline - time.monotonic(), 0)))

    def _declare(self, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
        assert self._connection is not None
        dead_args = _typed({"x-max-length": DEAD_LETTER_MAX_LENGTH}, self._queue_type)
        self._declare_typed(channel, DEAD_LETTER_QUEUE, dead_args)
        channel.exchange_declare(RETRY_EXCHANGE, exchange_type="fanout", durable=True)
        retry_args = _typed({"x-message-ttl": RETRY_DELAY_MS, "x-dead-letter-exchange": ""}, self._queue_type)
        self._declare_typed(channel, RETRY_QUEUE, retry_args)
        channel.queue_bind(RETRY_QUEUE, RETRY_EXCHANGE)

    def _declare_typed(
        self, channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, arguments: dict[str, Any]
    ) -> None:
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if _type_conflict(exc):
                raise QueueTypeMismatch(queue_type_mismatch(queue, self._queue_type)) from None
            raise

    def _declare_model_queue(
        self, channel: pika.adapters.blocking_connection.BlockingChannel, queue: str
    ) -> pika.adapters.blocking_connection.BlockingChannel:
        """Declare with the limit; a queue that exists with other arguments is used as it is,
        one of the other type is not (``QueueTypeMismatch``)."""
        try:
            self._declare_typed(channel, queue, self._queue_args)
            return channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise
        assert self._connection is not None
        if self._queue_type == "quorum":
            # RabbitMQ names the first argument that differs: a classic queue of a release before
            # queue limits is refused for x-max-length. With the type alone, the type is compared.
            probe = self._connection.channel()
            try:
                self._declare_typed(probe, queue, _typed({}, "quorum"))
                probe.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _PRECONDITION_FAILED:
                    raise
        log.warning("queue %s exists with other arguments (no length limit); using it as it is", queue)
        channel = self._connection.channel()
        channel.queue_declare(queue, passive=True)
        return channel

    def _consume_once(self) -> None:
        self._connection = pika.BlockingConnection(self._nodes.current)
        # One job at a time per process: models are not assumed thread-safe.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        try:
            channel = self._connection.channel()
            self._declare(channel)
            for queue in self._queues:
                channel = self._declare_model_queue(channel, queue)
            channel.basic_qos(prefetch_count=self._prefetch)
            self._unsettled.clear()  # delivery tags count per channel
            with self._arrivals:
                self._waiting = {}  # a lost channel's messages are redelivered
            channel.confirm_delivery()  # a republished copy must be safe before the original is acked
            self._channel = channel
            for queue in self._queues:
                channel.basic_consume(queue, self._on_message)
            self.connected.set()
            log.info("consuming %s", ", ".join(self._queues))
            while not self._stopping.is_set():
                self._connection.process_data_events(time_limit=1)
                self.last_tick = time.monotonic()
            channel.stop_consuming()  # no new deliveries; in-flight jobs finish and are settled below
            self._drain()
        finally:
            self.connected.clear()
            # Never run two jobs at once: a job still running on a lost connection finishes first
            # (its message is redelivered; its lease tells the next worker to wait).
            self._wait_inflight(lambda: None)
            self._executor.shutdown(wait=True)
            if self._connection.is_open:
                self._connection.close()

    def _wait_inflight(self, pump: Callable[[], None]) -> None:
        while any(not f.done() for f in self._inflight):
            self.last_tick = time.monotonic()
            pump()
            if any(not f.done() for f in self._inflight):
                time.sleep(0.1)
        self._inflight = {f for f in self._inflight if not f.done()}

    def _drain(self) -> None:
        connection = self._connection
        assert connection is not None
        self._wait_inflight(lambda: connection.process_data_events(time_limit=0.5))
        connection.process_data_events(time_limit=0)

    def _on_message(
        self,
        channel: pika.adapters.blocking_connection.BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(method.routing_key, body, bool(method.redelivered), properties.headers)
        connection = self._connection
        assert connection is not None
        tag = method.delivery_tag
        self._unsettled.add(tag)
        assert self._executor is not None
        if delivery.queue in self._batch_limits:
            with self._arrivals:
                waiting = self._waiting.setdefault(delivery.queue, [])
                waiting.append(_Waiting(tag, delivery, properties, time.monotonic()))
                self._arrivals.notify_all()
            # One task per message: the first takes a batch, later ones find it gone and return.
            future = self._executor.submit(self._run_batch, channel, delivery.queue)
            self._inflight = {f for f in self._inflight if not f.done()} | {future}
            return

        def work() -> None:
            try:
                verdict = self._handler(delivery)
            except Exception as exc:
                log.exception("job handler failed on a message from %s", delivery.queue)
                verdict = Verdict(Outcome.RETRY, f"erro interno do worker ({exc.__class__.__name__})")
            verdict = self._bounded(delivery, verdict)
            settle = functools.partial(self._settle, channel, tag, delivery, properties, verdict)
            try:
                connection.add_callback_threadsafe(settle)
            except Exception:
                # Connection gone: the broker redelivers the unacked message; the API makes that idempotent.
                log.warning("could not settle message: connection closed")

        future = self._executor.submit(work)
        self._inflight = {f for f in self._inflight if not f.done()} | {future}

    def _bounded(self, delivery: Delivery, verdict: Verdict) -> Verdict:
        if verdict.outcome is Outcome.RETRY and delivery.attempt + 1 >= self._max_attempts:
            return Verdict(Outcome.DEAD, f"{verdict.reason}; tentativas esgotadas ({self._max_attempts})")
        return verdict

    def _take_batch(self, queue: str) -> list[_Waiting]:
        """Job thread: up to max_batch waiting messages, once full or max_wait_s after the first arrived."""
        limit = self._batch_limits[queue]
        with self._arrivals:
            waiting = self._waiting.get(queue, [])
            if not waiting:
                return []
            deadline = waiting[0].arrived + limit.max_wait_s
            while len(waiting) < limit.max_batch and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrivals.wait(left)
                waiting = self._waiting.get(queue, [])
            batch = waiting[: limit.max_batch]
            del waiting[: limit.max_batch]
            return batch

    def _run_batch(self, channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
        batch = self._take_batch(queue)
        if not batch:
            return
        assert self._batch_handler is not None
        deliveries = [w.delivery for w in batch]
        try:
            verdicts = self._batch_handler(deliveries)
            if len(verdicts) != len(batch):
                raise RuntimeError(f"{len(verdicts)} verdicts for {len(batch)} messages")
        except Exception as exc:
            log.exception("batch handler failed on %d messages from %s", len(batch), queue)
            verdicts = [Verdict(Outcome.RETRY, f"erro interno do worker ({exc.__class__.__name__})")] * len(batch)
        settled = [(w, self._bounded(w.delivery, v)) for w, v in zip(batch, verdicts, strict=True)]
        connection = self._connection
        try:
            assert connection is not None
            connection.add_callback_threadsafe(functools.partial(self._settle_batch, channel, settled))
        except Exception:
            log.warning("could not settle %d messages: connection closed", len(batch))

    def _settle_batch(
        self, channel: pika.adapters.blocking_connection.BlockingChannel, settled: list[tuple[_Waiting, Verdict]]
    ) -> None:
        """I/O thread: republish/ack the others one by one, then the acks (``multiple`` when contiguous)."""
        if not channel.is_open:
            return  # redelivered by the broker
        acks: list[int] = []
        for waiting, verdict in settled:
            if verdict.outcome is Outcome.ACK:
                acks.append(waiting.tag)
            else:
                self._settle(channel, waiting.tag, waiting.delivery, waiting.properties, verdict)
        if not acks or not channel.is_open:
            return
        acks.sort()
        # A `multiple` ack up to tag T settles every unsettled tag <= T: only safe below the lowest
        # unsettled tag that is not ours (another queue's message, a job still running).
        others = self._unsettled.difference(acks)
        bound = min(others) if others else acks[-1] + 1
        run = sum(1 for tag in acks if tag < bound)
        try:
            if run > 1:
                channel.basic_ack(acks[run - 1], multiple=True)
            for tag in acks if run <= 1 else acks[run:]:
                channel.basic_ack(tag)
        except pika.exceptions.AMQPError as exc:
            log.error("could not ack %d messages from %s (%s): the broker redelivers them", len(acks),
                      settled[0][0].delivery.queue, exc)  # fmt: skip
        self._unsettled.difference_update(acks)

    def _settle(
        self,
        channel: pika.adapters.blocking_connection.BlockingChannel,
        tag: int,
        delivery: Delivery,
        properties: pika.spec.BasicProperties,
        verdict: Verdict,
    ) -> None:
        self._unsettled.discard(tag)
        if not channel.is_open:
            return  # redelivered by the broker
        try:
            republish_and_ack(channel, tag, delivery, properties, verdict)
        except pika.exceptions.AMQPError as exc:
            # Not republished: leave the message to the broker (nack + requeue) rather than lose it.
            log.error("could not settle a message from %s (%s): requeued", delivery.queue, exc)
            if channel.is_open:
                channel.basic_nack(tag, requeue=True)


def republish_and_ack(
    channel: Any, tag: int, delivery: Delivery, properties: pika.spec.BasicProperties, verdict: Verdict
) -> None:
    """Settle one message: a copy goes to the retry exchange or the dead-letter queue, then the ack.

    The channel is in confirm mode, so ``basic_publish`` returns only once the copy is safe."""
    outcome = verdict.outcome
    if outcome is not Outcome.ACK:
        headers = dict(delivery.headers)
        headers[REPUBLISHED_HEADER] = 1
        if outcome is Outcome.RETRY:
            headers[ATTEMPT_HEADER] = delivery.attempt + 1
        if verdict.reason:
            headers[REASON_HEADER] = verdict.reason
        copy = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type=properties.content_type,
            message_id=properties.message_id,
            headers=headers,
        )
        if outcome is Outcome.DEAD:
            headers[SOURCE_QUEUE_HEADER] = delivery.queue
            channel.basic_publish("", DEAD_LETTER_QUEUE, delivery.body, copy)
        else:
            # Routed by the fanout to mlstack.retry; dead-lettered back to `delivery.queue` after the delay.
            channel.basic_publish(RETRY_EXCHANGE, delivery.queue, delivery.body, copy)
    channel.basic_ack(tag)
