"""Model time limit (params.conf `time_limit_s`, here 1 s): past it the job ends Error and the worker goes
on; a call still stuck after the grace period makes the worker exit (status 70) so systemd restarts it."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path

from support import contract as c
from support.procs import wait_for
from support.stack import Stack

EXIT_MODEL_WEDGED = 70  # services/DESIGN.md, "Worker failure handling"


def _hostile(stack: Stack, name: str, **env: str) -> None:
    for other in [w for w in stack.workers if w.startswith("hostile")]:
        stack.workers[other].stop()
    stack.add_worker(name, "hostile", extra_env=env)


def test_a_model_past_its_time_limit_ends_error_and_the_worker_goes_on(main_stack: Stack) -> None:
    _hostile(main_stack, "hostile")
    api = main_stack.client()
    token = secrets.token_hex(6)
    job_id = api.submit("TEST_HOSTILE", "predict", [f"sleep:4:{token}"])
    failed = api.wait_done(job_id, timeout=10)
    assert failed == {**failed, "status": "Error", "response": c.model_time_limit("TEST_HOSTILE", "1", "predict")}
    # The abandoned call still sleeps; other jobs are served meanwhile.
    ok = api.run("TEST_HOSTILE", "predict", ["fine"], timeout=10)
    assert ok["status"] == "Done" and ok["response"] == ["fine"], ok
    assert not any(e["event"] == "end" and token in e["items"] for e in main_stack.exec_events())
    # Once the stuck call ends (within the default 30 s grace), nothing more happens: no restart.
    ended = lambda: any(e["event"] == "end" and token in e["items"] for e in main_stack.exec_events())  # noqa: E731
    wait_for(ended, 10, "the stuck call to end")
    assert main_stack.workers["hostile"].proc.alive()
    assert api.status(job_id)["response"] == failed["response"], "a late answer must not replace the Error"


def test_a_call_stuck_past_the_grace_period_makes_the_worker_exit_to_be_restarted(main_stack: Stack) -> None:
    _hostile(main_stack, "hostile-wedge", MLSTACK_MODEL_GRACE_S="4")
    worker = main_stack.workers["hostile-wedge"]
    api = main_stack.client()
    job_id = api.submit("TEST_HOSTILE", "predict", [f"sleep:120:{secrets.token_hex(6)}"])
    assert api.wait_done(job_id, timeout=10)["status"] == "Error"
    ok = api.run("TEST_HOSTILE", "predict", ["during grace"], timeout=10)
    assert ok["status"] == "Done", ok
    wait_for(lambda: not worker.proc.alive(), 30, "the wedged worker to exit")
    assert worker.proc.proc is not None and worker.proc.proc.returncode == EXIT_MODEL_WEDGED, worker.proc.log_tail()
    assert "still stuck" in worker.proc.log_tail(50)
    _hostile(main_stack, "hostile")  # what systemd's Restart= does
    assert api.run("TEST_HOSTILE", "predict", ["after restart"], timeout=20)["status"] == "Done"


class NotifySocket:
    """A stand-in for systemd's notify socket: records what the worker sends, with the time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode(errors="replace")))

    def pings_since(self, t: float) -> int:
        return sum(1 for at, text in self.received if at >= t and "WATCHDOG=1" in text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_the_watchdog_stops_being_fed_once_a_call_is_stuck_past_the_grace_period(
    main_stack: Stack, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    grace_s = 3.0
    try:
        # WatchdogSec=1 s: the worker pings every 0.5 s while it makes progress.
        _hostile(
            main_stack,
            "hostile-watchdog",
            NOTIFY_SOCKET=str(notify.path),
            WATCHDOG_USEC="1000000",
            MLSTACK_MODEL_GRACE_S=str(grace_s),
        )
        worker = main_stack.workers["hostile-watchdog"]
        api = main_stack.client()
        start = time.monotonic()
        wait_for(lambda: notify.pings_since(start) >= 2, 5, "watchdog pings while idle")

        job_id = api.submit("TEST_HOSTILE", "predict", [f"sleep:60:{secrets.token_hex(6)}"])
        assert api.wait_done(job_id, timeout=10)["status"] == "Error"
        abandoned = time.monotonic()  # within ~0.1 s of the time limit
        # Within the grace period the worker serves jobs and keeps feeding the watchdog.
        assert api.run("TEST_HOSTILE", "predict", ["still serving"], timeout=10)["status"] == "Done"
        wait_for(lambda: notify.pings_since(abandoned + 0.5) >= 2, 3, "pings during the grace period")
        # Past it: no more pings (systemd would kill a worker that cannot exit), and the worker exits.
        wait_for(lambda: not worker.proc.alive(), 15, "the wedged worker to exit")
        assert worker.proc.proc is not None and worker.proc.proc.returncode == EXIT_MODEL_WEDGED
        assert notify.pings_since(abandoned + grace_s + 1.0) == 0, notify.received[-5:]
        assert any("STOPPING=1" in text for _, text in notify.received)
    finally:
        notify.close()
        _hostile(main_stack, "hostile")
