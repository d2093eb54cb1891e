"""`mlstack stress` against a real stack (small bounds): rounds over every endpoint, get_feedback within
its limit, overloads and recovery, the live display's final report, and refusal of any other target."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.infra import MongoServer
from support.stack import Stack

MLSTACK = Path(os.environ.get("MLSTACK_TEST_VENV", ".venv")) / "bin" / "mlstack"


@pytest.fixture(scope="module")
def stress_stack(workdir: Path, mongo: MongoServer) -> Iterator[Stack]:
    """A database of its own: get_feedback's limits taken here must not reach other tests."""
    stack = Stack("stress", workdir, mongo, db_name="ml_api_db_stress").start()
    try:
        stack.add_worker("basic", "basic")
        stack.add_worker("slow", "slow")
        yield stack
    finally:
        stack.stop()


def _stress(url: str, token: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLSTACK_API_TOKEN": token, "MLSTACK_ENV_FILE": "/nonexistent/mlstack.env"}
    return subprocess.run(
        [str(MLSTACK), "stress", "--url", url, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_rounds_over_every_endpoint(stress_stack: Stack) -> None:
    run = _stress(
        stress_stack.apis[0].url,
        stress_stack.api_token,
        "--model",
        "TEST_ECHO",
        "--features",
        '["a", "b"]',
        "--targets",
        '["a", "b"]',
        "--rounds",
        "6",
        "--rate",
        "6",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["rounds"] == {"started": 6, "done": 6}
    assert report["jobs"]["accepted"] == 18 and report["jobs"]["Done"] == 18
    requests = report["requests"]
    assert requests["inference"] == 18 and requests["feedback"] == 6 and requests["status"] >= 18
    # Asked once: the database was queried, so the next ask waits for the limit (none in this run).
    assert report["get_feedback"]["asked"] == 1
    assert report["overloads"]["jobs_queued_past_limit"] == 0
    assert report["http_errors"] == {}
    assert report["job_latency"]["stack_total"]["count"] == 18

    again = _stress(
        stress_stack.apis[0].url,
        stress_stack.api_token,
        "--model",
        "TEST_ECHO",
        "--features",
        '["a"]',
        "--targets",
        '["a"]',
        "--rounds",
        "1",
        "--json",
    )
    limited = json.loads(again.stdout)["get_feedback"]
    assert limited == {"asked": 1, "rate_limited": 1}  # the API's next_feedback_timestamp is honoured


def test_overloads_and_recovery_with_the_live_display(stress_stack: Stack) -> None:
    run = _stress(
        stress_stack.apis[0].url,
        stress_stack.api_token,
        "--model",
        "TEST_SLOW",
        "--features",
        '["slow:0.4:s"]',
        "--targets",
        '["x"]',
        "--rounds",
        "5",
        "--rate",
        "20",
        "--queue-limit",
        "0.5",
        "--no-get-feedback",
    )
    assert run.returncode == 0, run.stderr
    assert "mlstack stress report" in run.stdout
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in run.stdout.splitlines()
        if line.count("│") == 3
    }
    assert int(lines["overloads (Queued > 0.5 s)"]) >= 1
    assert float(lines["recovery (backlog drained after the last round)"].split()[0]) > 0


class _Handler(BaseHTTPRequestHandler):
    mode = "redirect"

    def do_GET(self) -> None:
        if self.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://elsewhere.invalid/version")
            self.end_headers()
        else:
            body = b'{"hello": "not mlstack"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        type(self).hits += 1  # type: ignore[attr-defined]

    do_POST = do_GET
    hits = 0

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["redirect", "not-mlstack"])
def test_refuses_any_other_target(mode: str) -> None:
    handler = type("H", (_Handler,), {"mode": mode, "hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run = _stress(f"http://127.0.0.1:{server.server_port}", "token", "--rounds", "3", "--json", timeout=30)
    finally:
        server.shutdown()
    assert run.returncode == 1
    assert run.stdout == ""
    wanted = "redirecting to http://elsewhere.invalid/version" if mode == "redirect" else "like an mlstack API"
    assert wanted in run.stderr
    assert handler.hits == 1  # only the /version check: no load sent


@pytest.mark.parametrize(
    ("url", "wanted"),
    [
        ("ftp://127.0.0.1/", "http:// or https://"),
        ("http://u:p@127.0.0.1:1/", "credentials"),
        ("http://127.0.0.1:1/?x=1", "query"),
    ],
)
def test_refuses_bad_urls_and_a_missing_token(url: str, wanted: str) -> None:
    run = _stress(url, "token", "--json", timeout=30)
    assert run.returncode == 1 and wanted in run.stderr
    no_token = _stress("http://127.0.0.1:1", "", "--json", timeout=30)
    assert no_token.returncode == 1 and "MLSTACK_API_TOKEN" in no_token.stderr


def test_delay_mode_runs_one_round_at_a_time(stress_stack: Stack) -> None:
    run = _stress(
        stress_stack.apis[0].url,
        stress_stack.api_token,
        "--model",
        "TEST_ECHO",
        "--features",
        '["d"]',
        "--targets",
        '["d"]',
        "--rounds",
        "3",
        "--delay",
        "0.2",
        "--no-get-feedback",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["rounds"] == {"started": 3, "done": 3}
    assert report["jobs"]["Done"] == 9 and "get_feedback" not in report["requests"]
    assert report["elapsed_s"] >= 0.4  # two pauses between three rounds
