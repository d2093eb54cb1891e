"""Least privilege on the broker: the API and the workers each log in as their own RabbitMQ user,
with the exact permission regexes roles/rabbitmq sets (read from its defaults, so a change there is
tested here), and still serve jobs end to end, retries and dead letters included; what a user must
not do is refused by RabbitMQ (ACCESS_REFUSED)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.adapters.blocking_connection
import pika.exceptions
import pytest
import yaml
from mlstack.broker import Delivery, JobConsumer, Outcome, Verdict
from support.amqp import DEAD_LETTER_QUEUE, MODEL_QUEUE_PREFIX, dead_letters, publish_raw, queue_messages
from support.client import ApiClient
from support.infra import BUNDLES, REPO, ApiServer, MongoServer, RabbitVhost, Worker, rabbitmqctl
from support.procs import wait_for

ROLE_DEFAULTS = REPO / "roles" / "rabbitmq" / "defaults" / "main.yml"
ACCESS_REFUSED = 403
RETRY = "mlstack.retry"  # exchange and queue (services/DESIGN.md, "Queues")
Channel = pika.adapters.blocking_connection.BlockingChannel


def role_permissions(component: str) -> tuple[str, str, str]:
    """configure, write, read of rabbitmq_<component>_permissions, as the role sets them."""
    perms = yaml.safe_load(ROLE_DEFAULTS.read_text())[f"rabbitmq_{component}_permissions"]
    return perms["configure"], perms["write"], perms["read"]


@dataclass
class Split:
    vhost: RabbitVhost
    urls: dict[str, str]  # component -> amqp URL of its own user
    client: ApiClient


@pytest.fixture(scope="module")
def split(workdir: Path, mongo: MongoServer) -> Iterator[Split]:
    """A vhost where the API and a worker (TEST_ECHO) each use their own user; guest keeps every right
    there for the test's own probes and raw publishes."""
    vhost = RabbitVhost("leastpriv").create()
    users: list[str] = []
    procs: list[ApiServer | Worker] = []
    client: ApiClient | None = None
    try:
        urls = {}
        for component in ("api", "worker"):
            user, password = f"{vhost.name}-{component}", secrets.token_hex(16)
            rabbitmqctl("add_user", user, password)
            users.append(user)
            rabbitmqctl("set_permissions", "-p", vhost.name, user, *role_permissions(component))
            urls[component] = f"amqp://{user}:{password}@127.0.0.1:5672/{vhost.name}"
        tokens = {"api_token": secrets.token_urlsafe(24), "worker_token": secrets.token_urlsafe(24)}
        home = workdir / "stack-leastpriv"
        api = ApiServer("leastpriv", home, mongodb_uri=mongo.uri, mongodb_db="leastpriv_db", amqp_url=urls["api"],
                        **tokens)  # fmt: skip
        procs.append(api.start())
        worker = Worker("leastpriv", home, bundle_dir=BUNDLES / "basic" / "worker_pub", api_url=api.url,
                        worker_token=tokens["worker_token"], amqp_url=urls["worker"])  # fmt: skip
        procs.append(worker)
        worker.start(vhost)
        client = ApiClient(api.url, tokens["api_token"])
        yield Split(vhost, urls, client)
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            proc.stop()
        vhost.delete()
        for user in users:
            rabbitmqctl("delete_user", user)


def _refused(url: str, action: Callable[[Channel], object]) -> None:
    """`action` on a fresh channel of `url`'s user ends in ACCESS_REFUSED."""
    conn = pika.BlockingConnection(pika.URLParameters(url + "?connection_attempts=1&socket_timeout=3"))
    try:
        channel = conn.channel()
        channel.confirm_delivery()  # a refused publish then fails here, not silently
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            action(channel)
        assert closed.value.reply_code == ACCESS_REFUSED, closed.value
    finally:
        if conn.is_open:
            conn.close()


def test_api_and_worker_with_their_own_users_serve_a_job(split: Split) -> None:
    marker = secrets.token_hex(6)
    answer = split.client.run("TEST_ECHO", "predict", [marker])
    assert answer["status"] == "Done" and answer["response"] == [marker], answer


def test_the_worker_user_retries_and_dead_letters(split: Split) -> None:
    """The worker's whole settle path (retry exchange, its TTL queue back to the model queue, the
    dead-letter queue) under the worker user's rights, in-process with the production consumer."""
    queue = MODEL_QUEUE_PREFIX + "LP_RETRY"
    seen: list[Delivery] = []
    verdicts = [Verdict(Outcome.RETRY, "a API do mlstack não respondeu"), Verdict(Outcome.DEAD, "lp")]

    def handler(delivery: Delivery) -> Verdict:
        seen.append(delivery)
        return verdicts[min(len(seen), len(verdicts)) - 1]

    consumer = JobConsumer(split.urls["worker"], [queue], handler, queue_max_length=50, max_attempts=5)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_for(consumer.connected.is_set, 10, "the worker user's consumer to connect")
        body = b'{"lp": "' + secrets.token_hex(6).encode() + b'"}'
        publish_raw(split.vhost, "LP_RETRY", body)
        wait_for(lambda: len(seen) == 2, 20, "the message back from the retry queue")
        assert [d.attempt for d in seen] == [0, 1], [d.headers for d in seen]
        wait_for(lambda: queue_messages(split.vhost, DEAD_LETTER_QUEUE) >= 1, 10, "the dead letter")
        assert any(b == body for b, _ in dead_letters(split.vhost))
        assert thread.is_alive(), "the consumer stopped (a refused operation closes its channel)"
    finally:
        consumer.stop()
        thread.join(15)


def test_the_api_user_can_neither_consume_nor_touch_the_retry_and_dead_letter_path(split: Split) -> None:
    url, model_queue = split.urls["api"], MODEL_QUEUE_PREFIX + "TEST_ECHO"
    _refused(url, lambda ch: ch.basic_get(model_queue, auto_ack=False))
    _refused(url, lambda ch: ch.basic_consume(model_queue, lambda *_: None))
    _refused(url, lambda ch: ch.basic_get(DEAD_LETTER_QUEUE, auto_ack=False))
    _refused(url, lambda ch: ch.queue_declare(DEAD_LETTER_QUEUE, durable=True))
    _refused(url, lambda ch: ch.exchange_declare(RETRY, exchange_type="fanout", durable=True))
    _refused(url, lambda ch: ch.basic_publish(RETRY, model_queue, b"{}"))
    _refused(url, lambda ch: ch.queue_declare("other.queue", durable=True))


def test_the_worker_user_cannot_read_dead_letters_or_declare_other_resources(split: Split) -> None:
    url = split.urls["worker"]
    _refused(url, lambda ch: ch.basic_get(DEAD_LETTER_QUEUE, auto_ack=False))
    _refused(url, lambda ch: ch.queue_declare("other.queue", durable=True))
    _refused(url, lambda ch: ch.exchange_declare("mlstack.other", exchange_type="fanout", durable=True))
    _refused(url, lambda ch: ch.basic_publish("amq.topic", "x", b"{}"))


def test_what_the_regexes_cannot_prevent(split: Split) -> None:
    """README.md, "Who can do what": a publish by queue name is a write on amq.default, which both users
    need, so the worker user can put a message into any model's queue (and the retry exchange would
    route it there too). If RabbitMQ ever refuses this, the README's limits are out of date."""
    other = MODEL_QUEUE_PREFIX + "LP_OTHER"
    with pika.BlockingConnection(pika.URLParameters(split.vhost.url)) as conn:
        conn.channel().queue_declare(other, durable=True)
    conn = pika.BlockingConnection(pika.URLParameters(split.urls["worker"]))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("", other, b"{}", mandatory=True)
    finally:
        conn.close()
    assert queue_messages(split.vhost, other) == 1
