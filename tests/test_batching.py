"""Micro-batching in the Pub worker (services/DESIGN.md, "Micro-batching"): queued predict jobs of a
batched model share one model call, yet every job gets exactly the answer it gets unbatched; a bad
job or message inside a batch fails alone; a worker killed mid-batch leaves every job Done once.

Bundle `batch`: TEST_ROWS (max_batch 16, max_wait_ms 400) and TEST_ROWS_PLAIN (not batched), the same
row-by-row model; it logs every call's rows ("start", "end") to $MLSTACK_TEST_EXEC_LOG."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.amqp import MODEL_QUEUE_PREFIX, dead_letters, publish_raw, queue_messages
from support.client import ApiClient
from support.infra import MongoServer
from support.procs import wait_for
from support.stack import Stack

LEASE_S = 6  # short, so that the jobs of a killed worker run again within seconds
BATCHED, PLAIN = "TEST_ROWS", "TEST_ROWS_PLAIN"
RETRY_QUEUE = "mlstack.retry"  # services/DESIGN.md, "Queues"


@pytest.fixture(scope="module")
def batch_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    stack = Stack("batch", workdir, mongo, db_name="ml_api_db_batch").start()
    try:
        stack.add_worker("rows", "batch", extra_env={"MLSTACK_JOB_LEASE_S": str(LEASE_S)})
        yield stack
    finally:
        stack.stop()


def _row(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _calls(stack: Stack, model: str, event: str = "start") -> list[list[str]]:
    return [e["items"] for e in stack.exec_events() if e["event"] == event and e["model"] == model]


def _merged_calls(stack: Stack, model: str, markers: list[str]) -> list[list[str]]:
    """Calls whose rows come from more than one of the jobs named by markers."""
    return [rows for rows in _calls(stack, model) if sum(_row(m) in rows for m in markers) > 1]


def _finals(api: ApiClient, job_ids: list[str]) -> list[tuple[str, Any]]:
    finals = [api.wait_done(job_id, timeout=60) for job_id in job_ids]
    return [(f["status"], f["response"]) for f in finals]


def _submit(api: ApiClient, model: str, jobs: list[tuple[str, list[Any]]]) -> list[str]:
    return [
        api.submit(model, method, features, features) if method == "evaluate" else api.submit(model, method, features)
        for method, features in jobs
    ]


def _as_batched(finals: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The plain model's answers as the batched one gives them (error texts name the model)."""
    return [(s, r.replace(f"'{PLAIN}'", f"'{BATCHED}'") if isinstance(r, str) else r) for s, r in finals]


def _jobs(token: str) -> list[tuple[str, list[Any]]]:
    """Each job's first row names it; the others cover JSON's kinds."""
    values: list[list[Any]] = [
        ["a"],
        [1, 2, 3],
        [{"x": [1, 2]}, None],
        ["ação", 2.5, -7],
        [[1, 2], [3, 4]],
        [True, False],
        ["z" * 50],
    ]
    jobs: list[tuple[str, list[Any]]] = [("predict", [f"{token}-{i}", *v]) for i, v in enumerate(values)]
    jobs.insert(3, ("evaluate", [f"{token}-e"]))  # evaluate stays per job, in the middle of a batch
    return jobs


def test_batched_answers_equal_unbatched_ones_in_order(batch_stack: Stack) -> None:
    api = batch_stack.client()
    token = secrets.token_hex(6)
    jobs = _jobs(token)
    markers = [features[0] for method, features in jobs if method == "predict"]

    plain = _as_batched(_finals(api, _submit(api, PLAIN, jobs)))
    batched = _finals(api, _submit(api, BATCHED, jobs))

    assert batched == plain
    assert [status for status, _ in batched] == ["Done"] * len(jobs), batched
    assert batched[0][1] == [f"row:{_row(f'{token}-0')}", 'row:"a"'], batched[0]
    # TEST_ROWS really merged jobs into one call; TEST_ROWS_PLAIN never did.
    assert _merged_calls(batch_stack, BATCHED, markers), _calls(batch_stack, BATCHED)
    assert not _merged_calls(batch_stack, PLAIN, markers), _calls(batch_stack, PLAIN)


def test_a_bad_job_or_message_inside_a_batch_fails_alone(batch_stack: Stack) -> None:
    api = batch_stack.client()
    vhost = batch_stack.vhost
    token = secrets.token_hex(6)
    jobs: list[tuple[str, list[Any]]] = [
        ("predict", [f"{token}-0", 1]),
        ("predict", [f"{token}-1", "raise"]),  # the model raises on the merged call too
        ("predict", [f"{token}-2", 2]),
        ("predict", [f"{token}-3", "short"]),  # one answer too few: the merged answer cannot be split
        ("predict", [f"{token}-4", "str_error"]),
        ("predict", [f"{token}-5", 3]),
    ]
    markers = [features[0] for _, features in jobs]
    plain = _as_batched(_finals(api, _submit(api, PLAIN, jobs)))

    dead_before = len(dead_letters(vhost))
    poison = f"not json {token}".encode()
    job_ids = _submit(api, BATCHED, jobs[:3])
    publish_raw(vhost, BATCHED, poison)  # a message that can never run, in the same batch
    job_ids += _submit(api, BATCHED, jobs[3:])
    batched = _finals(api, job_ids)

    assert batched == plain
    statuses = [status for status, _ in batched]
    assert statuses == ["Done", "Error", "Done", "Done", "Error", "Done"], batched
    assert batched[3][1] == [f"row:{_row(f'{token}-3')}"], "alone, 'short' drops its last row: as unbatched"
    # The merged call was tried, and the bad message was dead-lettered without holding the others back.
    assert _merged_calls(batch_stack, BATCHED, markers), _calls(batch_stack, BATCHED)
    wait_for(lambda: queue_messages(vhost, MODEL_QUEUE_PREFIX + BATCHED) == 0, 15, "the batched queue to empty")
    wait_for(lambda: len(dead_letters(vhost)) > dead_before, 15, "the dead letter")
    assert [body for body, _ in dead_letters(vhost)[dead_before:]] == [poison]


def test_worker_killed_mid_batch_every_job_ends_done_once(batch_stack: Stack) -> None:
    api = batch_stack.client()
    vhost = batch_stack.vhost
    token = secrets.token_hex(6)
    rows = [f"sleep:1.5:{token}-{i}" for i in range(5)]
    job_ids = [api.submit(BATCHED, "predict", [row]) for row in rows]
    # The merged call is running (and its jobs leased) when the worker dies.
    wait_for(lambda: _merged_calls(batch_stack, BATCHED, rows), 20, "a merged call of the jobs to start")
    wait_for(lambda: all(api.status(j)["status"] == "Running" for j in job_ids), 5, "the jobs to be Running")
    worker = batch_stack.workers["rows"]
    worker.kill()

    batch_stack.add_worker("rows", "batch", extra_env={"MLSTACK_JOB_LEASE_S": str(LEASE_S)})
    finals = _finals(api, job_ids)
    assert finals == [("Done", [f"row:{_row(row)}"]) for row in rows], finals
    ends = _calls(batch_stack, BATCHED, "end")
    for row in rows:
        assert sum(_row(row) in items for items in ends) == 1, (row, ends)
    wait_for(
        lambda: queue_messages(vhost, MODEL_QUEUE_PREFIX + BATCHED) == 0 and queue_messages(vhost, RETRY_QUEUE) == 0,
        30,
        "the queues to be settled",
    )
