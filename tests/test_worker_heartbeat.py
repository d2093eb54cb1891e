"""The worker heartbeat (/worker/register) carries, per model, the production version and state the
worker sees (worker/status.py); the API stores them under workers.<id> and the dashboard shows them."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
from support.procs import wait_for
from support.stack import Stack


def _dashboard_worker(stack: Stack, model: str, worker_id: str) -> dict[str, Any] | None:
    answer = httpx.get(
        f"{stack.apis[0].url}/dashboard/data", headers={"Authorization": f"Bearer {stack.api_token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    for entry in answer.json()["models"]:
        if entry["model"] == model:
            return next((w for w in entry["workers"] if w["worker_id"] == worker_id), None)
    return None


def _register(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.worker_token}"}
    return httpx.post(f"{stack.apis[0].url}{path}", json=body, headers=headers, timeout=10)


def test_the_dashboard_shows_what_test_echos_worker_reports(main_stack: Stack) -> None:
    worker = main_stack.workers["basic"]
    status = json.loads((worker.home / "state" / "status.json").read_text(encoding="utf-8"))
    reported = status["models"]["TEST_ECHO"]
    shown = wait_for(lambda: _dashboard_worker(main_stack, "TEST_ECHO", "test-basic"), 20, "TEST_ECHO's worker")
    assert shown["loaded_version"] == reported["loaded_version"]
    assert shown["production_version"] == (reported["production_version"] or "")
    assert shown["state"] == reported["state"]


def test_a_heartbeat_stores_the_production_version_and_state(main_stack: Stack) -> None:
    worker_id = f"hb-{secrets.token_hex(4)}"
    model = {"name": "TEST_ECHO", "version": "3", "production_version": "4", "state": "stale"}
    try:
        answer = _register(main_stack, "/worker/register", {"worker_id": worker_id, "models": [model]})
        assert answer.status_code == 200, answer.text
        shown = _dashboard_worker(main_stack, "TEST_ECHO", worker_id)
        assert shown is not None
        assert (shown["loaded_version"], shown["production_version"], shown["state"]) == ("3", "4", "stale")
        # The next heartbeat replaces them: production v4 loaded, the worker is ok again.
        model.update(version="4", state="ok")
        assert _register(main_stack, "/worker/register", {"worker_id": worker_id, "models": [model]}).status_code == 200
        shown = _dashboard_worker(main_stack, "TEST_ECHO", worker_id)
        assert shown is not None
        assert (shown["loaded_version"], shown["production_version"], shown["state"]) == ("4", "4", "ok")
    finally:
        assert _register(main_stack, "/worker/deregister", {"worker_id": worker_id}).status_code == 200
    assert _dashboard_worker(main_stack, "TEST_ECHO", worker_id) is None
