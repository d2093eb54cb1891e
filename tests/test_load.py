"""200 concurrent clients, each submitting a job and polling until it is done."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter

import httpx
from support.client import JOB_ID
from support.stack import Stack

CLIENTS = 200
TIME_BOUND_S = 120


async def _one_client(http: httpx.AsyncClient, i: int, token: str, deadline: float) -> dict:
    features = [f"{token}-{i}", i]
    await asyncio.sleep(random.uniform(0, 0.5))
    r = await http.post("/inference", json={"model_name": "TEST_ECHO", "method": "predict", "features": features})
    r.raise_for_status()
    answer = r.json()
    result = {"features": features, "answer": answer, "final": None}
    if answer.get("status") != "Queued":
        return result
    while time.monotonic() < deadline:
        await asyncio.sleep(random.uniform(0.3, 0.8))
        st = (await http.post("/status", json={"job_id": answer["job_id"]})).json()
        if st.get("status") in ("Done", "Error"):
            result["final"] = st
            return result
    return result


async def _run_all(url: str, api_token: str, token: str) -> list[dict]:
    deadline = time.monotonic() + TIME_BOUND_S
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {api_token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
        return await asyncio.gather(*(_one_client(http, i, token, deadline) for i in range(CLIENTS)))


def test_200_concurrent_clients(main_stack: Stack) -> None:
    extra = main_stack.add_worker("basic-load", "basic")  # a second consumer of TEST_ECHO's queue
    try:
        token = secrets.token_hex(6)
        started = time.monotonic()
        results = asyncio.run(_run_all(main_stack.apis[0].url, main_stack.api_token, token))
        elapsed = time.monotonic() - started
    finally:
        extra.stop()

    refused = [r["answer"] for r in results if r["answer"].get("status") != "Queued"]
    assert not refused, f"{len(refused)} submissions refused, e.g. {refused[:3]}"
    ids = [r["answer"]["job_id"] for r in results]
    assert all(JOB_ID.match(j) for j in ids)
    assert len(set(ids)) == CLIENTS, "duplicated job ids"
    unfinished = [r for r in results if r["final"] is None]
    assert not unfinished, f"{len(unfinished)} jobs unfinished after {TIME_BOUND_S}s ({elapsed:.0f}s elapsed)"
    not_done = [r["final"] for r in results if r["final"]["status"] != "Done"]
    assert not not_done, f"{len(not_done)} jobs not Done, e.g. {not_done[:3]}"
    wrong = [r for r in results if r["final"]["response"] != r["features"] or r["final"]["job_id"] not in ids]
    assert not wrong, f"{len(wrong)} jobs answered another job's input, e.g. {wrong[:2]}"

    runs = Counter(
        item
        for e in main_stack.exec_events()
        if e["event"] == "predict"
        for item in e["items"]
        if isinstance(item, str) and item.startswith(f"{token}-")
    )
    assert len(runs) == CLIENTS and set(runs.values()) == {1}, (
        f"executions per job should be exactly 1: {sorted(Counter(runs.values()).items())}"
    )
    print(f"\n{CLIENTS} clients done in {elapsed:.1f}s")
