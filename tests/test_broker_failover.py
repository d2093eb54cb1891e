"""Clients that know every RabbitMQ node (MLSTACK_AMQP_URL lists them, comma-separated): the API's
publisher and the worker's consumer skip a node that is down, and move on to the next node when an
open connection is lost. One real broker here: the other "node" is a closed port on loopback, first
in the list, so every client meets it before the live one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.infra import MongoServer, RabbitVhost
from support.procs import free_port, wait_for
from support.stack import Stack

LIVE = "127.0.0.1:5672"


def _node_urls(vhost: RabbitVhost, dead_port: int) -> str:
    """The dead node first: a client that only tried the first URL would never connect."""
    assert f"@{LIVE}/" in vhost.url, vhost.url
    return f"{vhost.url.replace(f'@{LIVE}/', f'@127.0.0.1:{dead_port}/')},{vhost.url}"


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()  # nothing listens there: connections are refused, as by a node that is down


@pytest.fixture(scope="module")
def failover_stack(workdir: Path, mongo: MongoServer, dead_port: int) -> Iterator[Stack]:
    stack = Stack("failover", workdir, mongo, db_name="ml_api_db_failover")
    urls = {"MLSTACK_AMQP_URL": _node_urls(stack.vhost, dead_port)}
    stack.api_env.update(urls)
    stack.start()
    try:
        stack.add_worker("basic", "basic", extra_env=urls)
        yield stack
    finally:
        stack.stop()


def _log(stack: Stack, name: str) -> str:
    proc = stack.apis[0].proc if name == "api" else stack.workers[name].proc
    return proc.log_path.read_text(errors="replace")


def test_the_dead_node_first_in_the_list_is_skipped(failover_stack: Stack, dead_port: int) -> None:
    api = failover_stack.client()
    done = api.run("TEST_ECHO", "predict", ["via the second node"])
    assert done["status"] == "Done" and done["response"] == ["via the second node"], done
    # Both really met the dead node first, and said which node (never the credentials).
    api_log, worker_log = _log(failover_stack, "api"), _log(failover_stack, "basic")
    assert f"cannot connect to the broker at 127.0.0.1:{dead_port}" in api_log, api_log[-3000:]
    assert f"connected to the broker at {LIVE}" in api_log, api_log[-3000:]
    assert f"broker connection to 127.0.0.1:{dead_port} lost or refused" in worker_log, worker_log[-3000:]
    assert "guest:guest" not in api_log + worker_log


def test_a_lost_connection_moves_on_and_comes_back(failover_stack: Stack, dead_port: int) -> None:
    """The broker closes every connection of the vhost (as a node going away does): the clients try
    the next node (the dead one), then the live one again, and serve without a restart."""
    api = failover_stack.client()
    api_pid, worker_pid = failover_stack.apis[0].proc.pid, failover_stack.workers["basic"].proc.pid
    refused_before = _log(failover_stack, "api").count(f"cannot connect to the broker at 127.0.0.1:{dead_port}")
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", failover_stack.vhost.name, "failover test"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(
        lambda: _log(failover_stack, "api").count(f"cannot connect to the broker at 127.0.0.1:{dead_port}")
        > refused_before,
        30,
        "the API to try the next node after losing its connection",
    )
    failover_stack.vhost.wait_consumers("TEST_ECHO", timeout=60)

    def accepted() -> str | None:
        answer = api.inference("TEST_ECHO", "predict", ["after the loss"])
        return str(answer["job_id"]) if answer.get("status") == "Queued" else None

    job_id = wait_for(accepted, 30, "/inference to accept a job again", interval=0.5)
    done = api.wait_done(job_id, timeout=30)
    assert done["status"] == "Done" and done["response"] == ["after the loss"], done
    assert failover_stack.apis[0].proc.pid == api_pid and failover_stack.workers["basic"].proc.pid == worker_pid
    assert failover_stack.workers["basic"].proc.alive()
