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
# HTTPS with the host's certificate (the site CA's, roles/mlstack/tasks/pki.yml) when both are set.
certfile = _settings.tls_cert_file or None
keyfile = _settings.tls_key_file or None
# gunicorn 27's control socket wants a writable home; the hardened unit has none, and nothing uses it.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes its figures under this directory, which must
# be in the environment before a worker imports prometheus_client. Set in the master when gunicorn
# starts (workers fork from it; importing this file sets nothing), emptied then (figures of a
# previous run would add to this one's); a directory made here is removed on exit.
_made_metrics_dir: list[Path] = []


def on_starting(_server: Any) -> None:
    if _settings.metrics_dir:
        metrics_dir = Path(_settings.metrics_dir)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        metrics_dir = Path(tempfile.mkdtemp(prefix="mlstack-metrics-"))
        _made_metrics_dir.append(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def child_exit(_server: Any, worker: Any) -> None:
    from mlstack.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    for made in _made_metrics_dir:
        shutil.rmtree(made, ignore_errors=True)
