"""The bench's own RabbitMQ clients: queue admin, a parking consumer, a depth watcher, the original publish path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pika
import pika.exceptions


def _params(amqp_url: str) -> pika.URLParameters:
    params = pika.URLParameters(amqp_url)
    # The bench's connections sit idle between phases; no heartbeat means no surprise disconnect.
    params.heartbeat = 0
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


class QueueAdmin:
    """Declare, measure, purge and delete queues (one thread at a time)."""

    def __init__(self, amqp_url: str) -> None:
        self._params = _params(amqp_url)
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def _ch(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(self._params)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def declare(self, queue: str) -> None:
        # The same arguments as the API's declare (durable, nothing else), or the broker refuses one of them.
        self._ch().queue_declare(queue, durable=True)

    def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of an existing queue."""
        method = self._ch().queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count

    def purge(self, queue: str) -> int:
        return int(self._ch().queue_purge(queue).method.message_count)

    def delete(self, queue: str) -> None:
        self._ch().queue_delete(queue)

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()


class ParkingConsumer:
    """Holds one consumer on a queue that takes one message and never acks it.

    The API accepts jobs only for a queue with consumers; this lets the accept
    phases measure the API alone, without workers competing for the CPU.
    """

    def __init__(self, amqp_url: str, queue: str) -> None:
        self._params = _params(amqp_url)
        self._queue = queue
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parking-consumer", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"parking consumer on {self._queue} did not start: {self._error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            connection = pika.BlockingConnection(self._params)
            channel = connection.channel()
            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(self._queue, lambda *_: None, auto_ack=False)
            self._ready.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.2)
            connection.close()  # the parked message goes back to the queue
        except BaseException as exc:
            self._error = exc
            raise


class DepthWatcher:
    """Polls a queue's ready-message count; estimates the backlog between polls from the submissions."""

    def __init__(self, amqp_url: str, queue: str, submitted: Callable[[], int], interval_s: float = 0.01) -> None:
        self._admin = QueueAdmin(amqp_url)
        self._queue = queue
        self._submitted = submitted
        self._interval_s = interval_s
        self._ready_messages = 0
        self._submitted_at_poll = 0
        self.polls = 0
        self.empty_polls = 0  # polls that found no message waiting: the workers may have idled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._admin.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def backlog(self) -> int:
        """Messages waiting in the queue, counting the ones submitted since the last poll as waiting too."""
        return self._ready_messages + self._submitted() - self._submitted_at_poll

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            before = self._submitted()
            ready, _ = self._admin.depth(self._queue)
            self._ready_messages, self._submitted_at_poll = ready, before
            self.polls += 1
            self.empty_polls += ready == 0


# ---- the original stack's publish path ---------------------------------------------------
def _original_process(amqp_url: str, queue: str, threads: int, start_at: float, stop_at: float) -> tuple[int, int]:
    """One process of `threads` clients; each job opens its own connection, as the original API did."""
    params = pika.URLParameters(amqp_url)
    body = b'{"job_id": "0000", "model_name": "BENCH", "method": "predict", "features": ["5.1;3.5;1.4;0.2"]}'
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    done = [0] * threads
    failed = [0] * threads

    def client(index: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop_at:
            try:
                connection = pika.BlockingConnection(params)
                channel = connection.channel()
                channel.queue_declare(queue, passive=True)
                channel.basic_publish("", queue, body, properties)
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                failed[index] += 1
                continue
            if time.time() <= stop_at:
                done[index] += 1

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done), sum(failed)


def original_publish_rate(
    amqp_url: str, queue: str, concurrency: int, duration_s: float, processes: int
) -> tuple[float, int]:
    """Jobs/s of connect + channel + passive declare + publish + close, `concurrency` clients in all.

    The clients are spread over `processes` processes, like the original's API
    workers, so the GIL of one process does not cap the old path below what it did.
    """
    processes = max(1, min(processes, concurrency))
    per_process = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    start_at = time.time() + 2.0  # time for the processes to start and import pika
    stop_at = start_at + duration_s
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_original_process, amqp_url, queue, n, start_at, stop_at) for n in per_process]
        results = [f.result() for f in futures]
    done = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    return done / duration_s, failed
