"""Direct broker access for tests: publish raw messages, read queue depths and dead letters."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.adapters.blocking_connection

from .infra import RabbitVhost

MODEL_QUEUE_PREFIX = "mlstack.model."  # services/DESIGN.md, "Queues"
DEAD_LETTER_QUEUE = "mlstack.dead"


@contextmanager
def channel(vhost: RabbitVhost) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(vhost.url + "?connection_attempts=1&socket_timeout=3"))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def publish_raw(vhost: RabbitVhost, model_name: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
    """Put a message straight into a model's queue, as a buggy or hostile publisher would."""
    with channel(vhost) as ch:
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=headers)
        ch.basic_publish("", MODEL_QUEUE_PREFIX + model_name, body, props, mandatory=True)


def take_one(vhost: RabbitVhost, model_name: str) -> dict[str, Any] | None:
    """Remove the next ready message of a model's queue; its body as JSON (None if the queue is empty)."""
    import json

    with channel(vhost) as ch:
        method, _props, body = ch.basic_get(MODEL_QUEUE_PREFIX + model_name, auto_ack=True)
        return None if method is None else dict(json.loads(body))


def list_queues(vhost: RabbitVhost, column: str) -> dict[str, str]:
    """One `rabbitmqctl list_queues` column (e.g. messages, type) of every queue of the vhost, by name."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost.name, "--no-table-headers", "name", column],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return dict(parts for line in out.splitlines() if len(parts := line.split()) == 2)


def queue_messages(vhost: RabbitVhost, queue: str) -> int:
    """Ready plus unacknowledged messages of a queue (what `rabbitmqctl list_queues messages` says)."""
    counts = list_queues(vhost, "messages")
    assert queue in counts, f"queue {queue} not found in vhost {vhost.name}: {counts}"
    return int(counts[queue])


def dead_letters(vhost: RabbitVhost) -> list[tuple[bytes, dict[str, Any]]]:
    """Bodies and headers of the dead-letter queue; read without removing them (never acked)."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    with channel(vhost) as ch:
        while True:
            method, props, body = ch.basic_get(DEAD_LETTER_QUEUE, auto_ack=False)
            if method is None:
                return found
            found.append((body, dict(props.headers or {})))
