"""The worker feeds systemd's watchdog only while its job loop makes progress, exits (status 70) when a
timed-out model call stays stuck past the grace period, and keeps guarded threads alive."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlstack.settings import WorkerSettings
from mlstack.worker import main as worker_main
from mlstack.worker.main import EXIT_MODEL_WEDGED, PubWorker, guarded_thread, model_time_limits


def _settings(tmp_path: Path, params: str = "[M]\n", **env: str) -> WorkerSettings:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "params.conf").write_text(params)
    return WorkerSettings.from_env(
        {
            "MLSTACK_ENV_FILE": "/nonexistent/unit.env",
            "MLSTACK_API_URL": "http://127.0.0.1:1",
            "MLSTACK_WORKER_TOKEN": "t",
            "MLSTACK_BUNDLE_DIR": str(bundle),
            "MLSTACK_WORKER_ID": "w1",
            "MLSTACK_STATE_DIR": str(tmp_path / "state"),
            **env,
        }
    )


class Stuck:
    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, dataset: list) -> list:
        self.release.wait(10)
        return dataset

    def get_model_version(self) -> str:
        return "1"


def test_the_watchdog_is_fed_only_while_the_loop_turns_and_no_call_is_stuck(tmp_path: Path) -> None:
    worker = PubWorker(_settings(tmp_path, MLSTACK_MODEL_GRACE_S="0"), {}, {})
    worker.consumer = SimpleNamespace(last_tick=time.monotonic(), stop=lambda: None)  # type: ignore[assignment]
    assert worker.making_progress()
    worker.consumer.last_tick = time.monotonic() - 60  # type: ignore[union-attr]
    assert not worker.making_progress(), "a consuming loop that stopped turning must not feed the watchdog"
    worker.consumer.last_tick = time.monotonic()  # type: ignore[union-attr]

    stuck = Stuck()
    message = {"job_id": "j", "model_name": "M", "method": "predict", "features": [1]}
    assert worker.jobs.runner.run(stuck, "M", message, 0.05).status == "Error"
    time.sleep(0.01)
    assert not worker.making_progress(), "a model call stuck past the grace period must not feed the watchdog"
    worker._check_wedged()  # grace 0: past it already
    assert worker.exit_code == EXIT_MODEL_WEDGED and worker.stopping.is_set()
    stuck.release.set()


def test_within_the_grace_period_a_stuck_call_still_counts_as_progress(tmp_path: Path) -> None:
    worker = PubWorker(_settings(tmp_path, MLSTACK_MODEL_GRACE_S="60"), {}, {})
    stuck = Stuck()
    message = {"job_id": "j", "model_name": "M", "method": "predict", "features": [1]}
    assert worker.jobs.runner.run(stuck, "M", message, 0.05).status == "Error"
    assert worker.making_progress()  # it goes on serving jobs meanwhile
    worker._check_wedged()
    assert worker.exit_code == 0 and not worker.stopping.is_set()
    stuck.release.set()


def test_a_failing_thread_is_logged_and_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    stopping = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    real_wait = stopping.wait
    monkeypatch.setattr(stopping, "wait", lambda seconds: real_wait(min(seconds, 0.01)))
    guarded_thread("flaky", flaky, stopping).join(2)
    assert len(calls) == 2


def test_time_limits_per_model_from_params_conf(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, "[A]\ntime_limit_s = 2.5\n[B]\n[C]\ntime_limit_s = -1\n[D]\ntime_limit_s = x\n")
    assert model_time_limits(settings) == {"A": 2.5}
    assert "[C]" in caplog.text and "[D]" in caplog.text
    assert worker_main.TIME_LIMIT_KEY == "time_limit_s"
