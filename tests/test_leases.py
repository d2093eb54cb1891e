"""At most one execution: a job runs under a lease its worker renews; a redelivered job whose lease
is alive waits instead of running again, and runs elsewhere only once the lease has expired."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.amqp import MODEL_QUEUE_PREFIX, queue_messages
from support.infra import MongoServer, Worker
from support.procs import wait_for
from support.stack import Stack

LEASE_S = 6  # short, so that an expired lease shows within seconds
RETRY_QUEUE = "mlstack.retry"  # services/DESIGN.md, "Queues"


@pytest.fixture(scope="module")
def lease_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    """Two workers of TEST_SLOW on one queue, with a short job lease."""
    stack = Stack("lease", workdir, mongo, db_name="ml_api_db_lease").start()
    try:
        for name in ("slow-a", "slow-b"):
            stack.add_worker(name, "slow", extra_env={"MLSTACK_JOB_LEASE_S": str(LEASE_S)})
        stack.vhost.wait_consumers("TEST_SLOW", 2)
        yield stack
    finally:
        stack.stop()


def _events(stack: Stack, event: str, token: str) -> list[dict]:
    found = [e for e in stack.exec_events() if e["event"] == event and token in e["items"]]
    return sorted(found, key=lambda e: float(e["t"]))


def _holder(stack: Stack, token: str) -> Worker:
    """The worker whose model started the job (the model logs its pid; the worker is that process)."""
    pid = wait_for(lambda: next((e["pid"] for e in _events(stack, "start", token)), None), 20, "the job to start")
    return next(w for w in stack.workers.values() if w.proc.alive() and w.proc.pid == pid)


def _connection_of(stack: Stack, worker_id: str) -> str:
    """The broker's pid of a worker's connection (the worker names it `mlstack-worker <id>`)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "vhost", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == stack.vhost.name and f"mlstack-worker {worker_id}" in fields[2]:
            return fields[0]
    raise AssertionError(f"no connection of {worker_id} in vhost {stack.vhost.name}:\n{out}")


def _settled(stack: Stack) -> bool:
    return queue_messages(stack.vhost, MODEL_QUEUE_PREFIX + "TEST_SLOW") == 0 and (
        queue_messages(stack.vhost, RETRY_QUEUE) == 0
    )


def test_connection_cut_mid_job_runs_it_once(lease_stack: Stack) -> None:
    api = lease_stack.client()
    token = secrets.token_hex(6)
    job_id = api.submit("TEST_SLOW", "predict", [f"slow:8:{token}"])
    holder = _holder(lease_stack, token)
    wait_for(lambda: api.status(job_id)["status"] == "Running", 5, "the job to be reported Running (leased)")

    pid = _connection_of(lease_stack, f"test-{holder.name}")
    subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: cut mid-job"], check=True, timeout=60)
    # The broker redelivers the unacked job to the other worker, which must find the lease alive.
    done = api.wait_done(job_id, timeout=40)
    assert done["status"] == "Done", done
    assert done["response"] == [f"slept:{token}"], done
    wait_for(lambda: _settled(lease_stack), 30, "the redelivered message to be settled")
    assert len(_events(lease_stack, "start", token)) == 1, lease_stack.exec_events()
    assert len(_events(lease_stack, "end", token)) == 1, lease_stack.exec_events()
    # The cut worker came back.
    lease_stack.vhost.wait_consumers("TEST_SLOW", 2, timeout=30)
    assert api.run("TEST_SLOW", "predict", ["slow:0:after"])["status"] == "Done"


def test_holder_killed_mid_job_the_lease_expires_and_another_worker_runs_it(lease_stack: Stack) -> None:
    api = lease_stack.client()
    token = secrets.token_hex(6)
    job_id = api.submit("TEST_SLOW", "predict", [f"slow:3:{token}"])
    holder = _holder(lease_stack, token)
    wait_for(lambda: api.status(job_id)["status"] == "Running", 5, "the job to be reported Running (leased)")
    holder.kill()

    done = api.wait_done(job_id, timeout=60)
    assert done["status"] == "Done", done
    assert done["response"] == [f"slept:{token}"], done
    starts = _events(lease_stack, "start", token)
    assert len(starts) == 2 and starts[1]["pid"] != holder.proc.pid, starts
    # Not before the killed worker's lease ran out.
    assert starts[1]["t"] - starts[0]["t"] >= LEASE_S - 2 * 0.5, starts
    assert len(_events(lease_stack, "end", token)) == 1
    wait_for(lambda: _settled(lease_stack), 30, "the queues to be settled")
    lease_stack.add_worker(holder.name, "slow", extra_env={"MLSTACK_JOB_LEASE_S": str(LEASE_S)})
