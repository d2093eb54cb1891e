"""Backpressure (a full model queue refuses jobs with Retry-After, nothing stored), get_feedback's
message byte cap, and job retention (the API's purge of col_jobs)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pymongo
import pytest
from support import contract as c
from support.infra import MongoServer
from support.procs import wait_for
from support.stack import Stack

QUEUE_MAX_LENGTH = 2
MAX_MESSAGE_BYTES = 1024
RETRY_AFTER_S = 7
PURGE_INTERVAL_S = 1
RETENTION_DAYS = 120  # MLSTACK_JOB_RETENTION_DAYS default


def _today() -> str:
    """Read when needed, not at import: a suite that runs past midnight must ask for the day its jobs were made."""
    return datetime.now().strftime("%d/%m/%Y")


@pytest.fixture(scope="module")
def bounds_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    """Model queues of 2 messages, get_feedback messages of at most 1 KiB, a retention purge every second."""
    queue_env = {"MLSTACK_QUEUE_MAX_LENGTH": str(QUEUE_MAX_LENGTH)}
    stack = Stack(
        "bounds",
        workdir,
        mongo,
        db_name="ml_api_db_bounds",
        api_env={
            **queue_env,
            "MLSTACK_FEEDBACK_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            "MLSTACK_QUEUE_FULL_RETRY_AFTER_S": str(RETRY_AFTER_S),
            "MLSTACK_JOB_PURGE_INTERVAL_S": str(PURGE_INTERVAL_S),
        },
    ).start()
    try:
        stack.add_worker("slow", "slow", extra_env=queue_env)
        stack.add_worker("basic", "basic", extra_env=queue_env)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def bounds_jobs(bounds_stack: Stack) -> Iterator[pymongo.collection.Collection]:
    with bounds_stack.jobs_collection() as jobs:
        yield jobs


def _started(stack: Stack, token: str) -> bool:
    return any(e.get("event") == "start" and token in str(e) for e in stack.exec_events())


def test_full_model_queue_is_refused_with_retry_after_and_nothing_stored(
    bounds_stack: Stack, bounds_jobs: pymongo.collection.Collection
) -> None:
    api = bounds_stack.client()
    token = secrets.token_hex(4)
    running = api.submit("TEST_SLOW", "predict", [f"slow:6:{token}-run"])
    # The worker holds one message (prefetch 1, unacked: not counted by x-max-length) ...
    wait_for(lambda: _started(bounds_stack, f"{token}-run"), 30, "the slow job to start")
    # ... so the queue takes exactly QUEUE_MAX_LENGTH more.
    queued = [api.submit("TEST_SLOW", "predict", [f"slow:0.1:{token}-{i}"]) for i in range(QUEUE_MAX_LENGTH)]
    stored = bounds_jobs.count_documents({"model_name": "TEST_SLOW"})

    r = api.post("/inference", {"model_name": "TEST_SLOW", "method": "predict", "features": ["slow:0.1:x"]})
    assert r.status_code == 200, r.text
    assert r.json() == c.model_error(
        "TEST_SLOW", "predict", "A fila do modelo 'TEST_SLOW' está cheia. Tente novamente em alguns segundos."
    )
    assert r.headers.get("retry-after") == str(RETRY_AFTER_S)
    assert bounds_jobs.count_documents({"model_name": "TEST_SLOW"}) == stored, "a refused job was stored"

    # Other models are not affected, and the queued jobs all run once the queue drains.
    assert api.run("TEST_ECHO", "predict", ["ok"])["status"] == "Done"
    for job_id in [running, *queued]:
        assert api.wait_done(job_id, timeout=60)["status"] == "Done"
    assert api.run("TEST_SLOW", "predict", [f"slow:0.1:{token}-after"])["status"] == "Done"


def test_get_feedback_message_over_the_byte_cap_is_refused_in_portuguese(bounds_stack: Stack) -> None:
    api = bounds_stack.client()
    first_day = _today()
    for i in range(3):  # 3 jobs x 2 labels x ~300 bytes > 1 KiB
        st = api.run("TEST_ECHO", "predict", [f"{i}" * 300])
        assert api.feedback(st["job_id"], [f"{i + 1}" * 300]) == c.FEEDBACK_OK
    last_day = _today()
    answer = api.get_feedback("TEST_ECHO", first_day, last_day)
    assert answer == c.gf_error(
        "TEST_ECHO",
        f"Os labels dos jobs com feedback entre as datas {first_day} e {last_day} ultrapassaram o tamanho máximo "
        f"({MAX_MESSAGE_BYTES} bytes) permitido para a consulta de feedback. Escolha um intervalo menor entre "
        "datas e consulte novamente após 30 minutos",
    ), answer


def test_jobs_past_retention_are_purged_and_recent_ones_kept(
    bounds_stack: Stack, bounds_jobs: pymongo.collection.Collection
) -> None:
    api = bounds_stack.client()
    recent_id = api.submit("TEST_ECHO", "info")
    doc = bounds_jobs.find_one({"_id": recent_id})
    assert doc is not None and isinstance(doc["created_at"], datetime), doc
    created = doc["created_at"].replace(tzinfo=timezone.utc).timestamp()
    assert abs(created - doc["datetime"]) < 0.01, (doc["created_at"], doc["datetime"])
    assert abs(created - time.time()) < 60

    # Two jobs as the API stores them, one just past the retention period and one just inside it.
    old_id, kept_id = secrets.token_hex(32), secrets.token_hex(32)
    for job_id, age_days in ((old_id, RETENTION_DAYS + 1), (kept_id, RETENTION_DAYS - 1)):
        stamp = time.time() - age_days * 86400
        copy = {k: v for k, v in doc.items() if k != "_id"}
        created_at = datetime.fromtimestamp(stamp, timezone.utc)
        bounds_jobs.insert_one({**copy, "_id": job_id, "job_id": job_id, "datetime": stamp, "created_at": created_at})
    wait_for(lambda: bounds_jobs.find_one({"_id": old_id}) is None or None, 30, "the purge of the expired job")
    assert bounds_jobs.find_one({"_id": kept_id}) is not None
    assert bounds_jobs.find_one({"_id": recent_id}) is not None
    assert "Não foi possível encontrar o job" in str(api.status(old_id))
