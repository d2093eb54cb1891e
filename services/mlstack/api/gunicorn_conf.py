"""Gunicorn settings for the mlstack API, read through mlstack.settings (see services/DESIGN.md)."""

from __future__ import annotations

import sys

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
