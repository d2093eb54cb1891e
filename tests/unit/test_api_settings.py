"""API settings (mlstack.settings) and the gunicorn configuration read through them."""

from __future__ import annotations

import runpy
from pathlib import Path

import mlstack.api
import pytest
from mlstack.settings import ApiSettings, SettingsError

GUNICORN_CONF = Path(mlstack.api.__file__).parent / "gunicorn_conf.py"
BASE = {"MLSTACK_ENV_FILE": "/nonexistent/unit.env", "MLSTACK_API_TOKEN": "a" * 20, "MLSTACK_WORKER_TOKEN": "b" * 20}


def test_defaults() -> None:
    s = ApiSettings.from_env(BASE)
    assert s.max_body_bytes == 1024 * 1024
    assert s.queue_full_retry_after_s == 5
    assert s.job_retention_days == 120
    assert s.feedback_max_label_bytes == 4096
    assert s.feedback_max_message_bytes == 8 * 1024 * 1024
    assert (s.bind, s.api_workers, s.access_log) == ("127.0.0.1:8000", 2, "")


def test_every_problem_in_one_message() -> None:
    env = {
        **BASE,
        "MLSTACK_JOB_RETENTION_DAYS": "30",  # shorter than get_feedback's 90-day span
        "MLSTACK_QUEUE_FULL_RETRY_AFTER_S": "soon",
        "MLSTACK_MAX_BODY_BYTES": "10",
        "MLSTACK_API_WORKERS": "0",
    }
    with pytest.raises(SettingsError) as info:
        ApiSettings.from_env(env)
    text = str(info.value)
    for name in ("JOB_RETENTION_DAYS", "QUEUE_FULL_RETRY_AFTER_S", "MAX_BODY_BYTES", "API_WORKERS"):
        assert f"MLSTACK_{name}" in text, text


def test_secrets_stay_out_of_repr() -> None:
    env = {**BASE, "MLSTACK_MONGODB_URI": "mongodb://user:hunter2@db:27017"}
    text = repr(ApiSettings.from_env(env))
    assert "a" * 20 not in text and "b" * 20 not in text and "hunter2" not in text


def test_gunicorn_reads_its_settings_through_mlstack_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**BASE, "MLSTACK_BIND": "127.0.0.1:9123", "MLSTACK_API_WORKERS": "3"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLSTACK_ACCESS_LOG", "-")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert (conf["bind"], conf["workers"], conf["accesslog"]) == ("127.0.0.1:9123", 3, "-")
    assert conf["worker_class"] == "uvicorn.workers.UvicornWorker"


def test_gunicorn_exits_with_one_clear_message_on_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLSTACK_ENV_FILE", "/nonexistent/unit.env")
    monkeypatch.delenv("MLSTACK_API_TOKEN", raising=False)
    monkeypatch.setenv("MLSTACK_WORKER_TOKEN", "b" * 20)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(GUNICORN_CONF))
    assert info.value.code == 2
    assert "MLSTACK_API_TOKEN: required secret is missing" in capsys.readouterr().err


def test_https_needs_both_the_certificate_and_the_key() -> None:
    with pytest.raises(SettingsError) as info:
        ApiSettings.from_env({**BASE, "MLSTACK_TLS_CERT_FILE": "/etc/mlstack/tls/host.crt"})
    assert "MLSTACK_TLS_KEY_FILE" in str(info.value)
    plain = ApiSettings.from_env(BASE)
    assert (plain.tls_cert_file, plain.tls_key_file) == ("", "")


def test_gunicorn_serves_https_with_the_host_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**BASE, "MLSTACK_TLS_CERT_FILE": "/c.crt", "MLSTACK_TLS_KEY_FILE": "/c.key"}.items():
        monkeypatch.setenv(name, value)
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert (conf["certfile"], conf["keyfile"]) == ("/c.crt", "/c.key")
