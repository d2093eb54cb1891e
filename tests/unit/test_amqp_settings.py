"""MLSTACK_AMQP_URL as a list of cluster nodes, MLSTACK_QUEUE_TYPE, and how the broker client turns
them into queue arguments and an order of nodes to try."""

from __future__ import annotations

from pathlib import Path

import pika
import pika.exceptions
import pytest
from mlstack import broker
from mlstack.settings import ApiSettings, SettingsError, WorkerSettings

SECRET = "s3cr3t-pw"
BASE = {"MLSTACK_ENV_FILE": "/nonexistent/unit.env", "MLSTACK_API_TOKEN": "a" * 20, "MLSTACK_WORKER_TOKEN": "b" * 20}
NODES = [f"amqp://mlstack:{SECRET}@rabbit-{i}.internal:5672/mlstack" for i in (1, 2, 3)]


def _problems(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        ApiSettings.from_env({**BASE, **env})
    return str(info.value)


def test_one_url_stays_valid_and_the_default_is_the_local_broker() -> None:
    assert ApiSettings.from_env(BASE).broker.amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/%2F",)
    one = ApiSettings.from_env({**BASE, "MLSTACK_AMQP_URL": NODES[0]}).broker
    assert (one.amqp_urls, one.queue_type) == ((NODES[0],), "classic")


def test_comma_separated_urls_are_every_node_in_order() -> None:
    s = ApiSettings.from_env({**BASE, "MLSTACK_AMQP_URL": " , ".join(NODES), "MLSTACK_QUEUE_TYPE": "Quorum"})
    assert s.broker.amqp_urls == tuple(NODES)
    assert s.broker.queue_type == "quorum"
    assert SECRET not in repr(s) and SECRET not in repr(s.broker)


def test_worker_reads_the_same_variables(tmp_path: Path) -> None:
    (tmp_path / "params.conf").write_text("")
    env = {
        "MLSTACK_ENV_FILE": "/nonexistent/unit.env",
        "MLSTACK_WORKER_TOKEN": "b" * 20,
        "MLSTACK_API_URL": "http://127.0.0.1:8000",
        "MLSTACK_BUNDLE_DIR": str(tmp_path),
        "MLSTACK_AMQP_URL": ",".join(NODES[:2]),
        "MLSTACK_QUEUE_TYPE": "quorum",
        "MLSTACK_STATE_DIR": str(tmp_path / "state"),
    }
    s = WorkerSettings.from_env(env)
    assert (s.broker.amqp_urls, s.broker.queue_type) == (tuple(NODES[:2]), "quorum")
    assert SECRET not in repr(s)


def test_every_bad_url_is_named_by_position_in_one_message_without_its_password() -> None:
    urls = [
        NODES[0],
        f"http://mlstack:{SECRET}@rabbit-2:5672/mlstack",  # wrong scheme
        "",  # a doubled comma
        f"amqp://mlstack:{SECRET}@rabbit-4:56x72/mlstack",  # port not a number
        f"amqp://mlstack:{SECRET}@:5672/mlstack",  # no host
    ]
    text = _problems({"MLSTACK_AMQP_URL": ",".join(urls), "MLSTACK_QUEUE_TYPE": "stream", "MLSTACK_JOB_TTL_MS": "0"})
    assert "MLSTACK_AMQP_URL: URL 2 of 5 must start with one of amqp://, amqps://" in text, text
    assert "MLSTACK_AMQP_URL: URL 3 of 5 is empty" in text, text
    assert "MLSTACK_AMQP_URL: URL 4 of 5 has a port that is not a number" in text, text
    assert "MLSTACK_AMQP_URL: URL 5 of 5 names no host" in text, text
    assert "MLSTACK_QUEUE_TYPE: 'stream' is not one of classic, quorum" in text, text
    assert "MLSTACK_JOB_TTL_MS" in text, text  # the other settings' problems come in the same message
    assert SECRET not in text


@pytest.mark.parametrize(
    "other",
    [
        f"amqp://mlstack:{SECRET}@rabbit-2:5672/other",  # another vhost
        f"amqp://admin:{SECRET}@rabbit-2:5672/mlstack",  # another user
    ],
)
def test_nodes_must_share_user_and_vhost(other: str) -> None:
    text = _problems({"MLSTACK_AMQP_URL": f"{NODES[0]},{other}"})
    assert "MLSTACK_AMQP_URL: every URL must name the same user and vhost (one URL per node)" in text, text
    assert SECRET not in text


def test_quorum_adds_only_the_queue_type_to_the_model_queue_arguments() -> None:
    classic = broker.model_queue_arguments(7)
    assert classic == {"x-max-length": 7, "x-overflow": "reject-publish"}  # as older releases declared them
    assert broker.model_queue_arguments(7, "quorum") == {**classic, "x-queue-type": "quorum"}
    with pytest.raises(ValueError):
        broker.model_queue_arguments(7, "stream")


def _nodes(count: int) -> broker._Nodes:
    return broker._Nodes([pika.URLParameters(f"amqp://u:p@node-{i}:5672/v") for i in range(count)])


def test_the_next_node_is_tried_at_once_and_a_pause_comes_only_after_a_full_round() -> None:
    nodes = _nodes(3)
    assert nodes.where() == "node-0:5672"
    assert [nodes.ended(0.1) for _ in range(3)] == [0.0, 0.0, broker._BACKOFF_START_S]
    assert nodes.where() == "node-0:5672"
    assert [nodes.ended(0.1) for _ in range(3)] == [0.0, 0.0, 2 * broker._BACKOFF_START_S]
    # A connection that lasted is a new outage: the next node at once, and the backoff starts over.
    assert nodes.ended(broker._STABLE_CONNECTION_S + 1) == 0.0
    assert nodes.where() == "node-1:5672"
    assert [nodes.ended(0.1), nodes.ended(0.1)] == [0.0, broker._BACKOFF_START_S]


def test_one_node_pauses_after_every_failure_with_a_capped_backoff() -> None:
    nodes = _nodes(1)
    pauses = [nodes.ended(0.1) for _ in range(6)]
    assert pauses[0] == broker._BACKOFF_START_S
    assert pauses == sorted(pauses) and pauses[-1] == broker._BACKOFF_MAX_S
    assert nodes.where() == "node-0:5672"


def test_a_type_conflict_is_told_apart_from_other_argument_conflicts() -> None:
    conflict = pika.exceptions.ChannelClosedByBroker(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'mlstack.model.M' in vhost 'v':"
        " received the value 'quorum' of type 'longstr' but current is none",
    )
    limit = pika.exceptions.ChannelClosedByBroker(
        406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'mlstack.model.M' in vhost 'v'"
    )
    assert broker._type_conflict(conflict)
    assert not broker._type_conflict(limit) and broker._precondition_failed(limit)
    text = broker.queue_type_mismatch("mlstack.model.M", "quorum")
    assert "mlstack.model.M exists as a classic queue but MLSTACK_QUEUE_TYPE=quorum" in text
    assert "rabbitmqctl delete_queue -p <vhost> mlstack.model.M --if-empty" in text
    assert "\n" not in text
