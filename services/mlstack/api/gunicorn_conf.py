"""Gunicorn settings for the mlstack API (values from the environment, see services/DESIGN.md)."""

from __future__ import annotations

import os
import sys

from mlstack.settings import ApiSettings, SettingsError

bind = os.environ.get("MLSTACK_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MLSTACK_API_WORKERS", "2"))
worker_class = "uvicorn.workers.UvicornWorker"
keepalive = 75
graceful_timeout = 20
timeout = 60
accesslog = os.environ.get("MLSTACK_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("MLSTACK_LOG_LEVEL", "info").lower()
proc_name = "mlstack-api"


def on_starting(_server: object) -> None:
    # Validate once in the master, so a bad setting gives one clear message instead of a crash per worker.
    try:
        ApiSettings.from_env()
    except SettingsError as exc:
        print(f"mlstack-api: {exc}", file=sys.stderr)
        sys.exit(2)
