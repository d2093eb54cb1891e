"""Gunicorn settings for the mlstack API, read through mlstack.settings (see services/DESIGN.md)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlstack.settings import ApiSettings, SettingsError

# Parsed once in the master, so a bad setting gives one clear message instead of a crash per worker.
try:
    _settings = ApiSettings.from_env()
except SettingsError as exc:
    print(f"mlstack-api: {exc}", file=sys.stderr)
    sys.exit(2)

bind = _settings.bind
workers = _settings.api_workers
worker_class = "uvicorn.workers.UvicornWorker"
keepalive = 75
graceful_timeout = 20
timeout = 60
accesslog = _settings.access_log or None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "mlstack-api"

# Prometheus multiprocess mode: every worker writes its figures under this directory, which must
# be set before a worker imports prometheus_client. Emptied at start (figures of a previous run
# would be added to this one's); a directory made here is removed on exit.
_metrics_dir = Path(_settings.metrics_dir) if _settings.metrics_dir else None
_made_metrics_dir = _metrics_dir is None
if _metrics_dir is None:
    _metrics_dir = Path(tempfile.mkdtemp(prefix="mlstack-metrics-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def on_starting(_server: Any) -> None:
    assert _metrics_dir is not None
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(_server: Any, worker: Any) -> None:
    from mlstack.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    if _made_metrics_dir and _metrics_dir is not None:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
