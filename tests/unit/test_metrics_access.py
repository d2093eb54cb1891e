"""/metrics: open on loopback or with MLSTACK_METRICS_PUBLIC, the client token elsewhere; the figures
read from the store at scrape time are left out (not a 500) when the store fails."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from fastapi.testclient import TestClient
from mlstack.api.app import create_app
from mlstack.settings import ApiSettings
from pymongo.errors import ServerSelectionTimeoutError


class _DownStore:
    async def registered_models(self) -> list[dict]:
        raise ServerSelectionTimeoutError("no database in unit tests")


def _client(settings: ApiSettings, host: str) -> TestClient:
    app = create_app(settings)
    app.state.services = SimpleNamespace(settings=settings, store=_DownStore())
    return TestClient(app, client=(host, 40000))


def test_remote_scrape_needs_the_client_token(api_settings: ApiSettings) -> None:
    client = _client(api_settings, "192.0.2.7")
    missing = client.get("/metrics")
    assert (missing.status_code, missing.json()) == (401, {"detail": "Not authenticated"})
    worker = client.get("/metrics", headers={"Authorization": f"Bearer {api_settings.worker_token}"})
    assert worker.status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {api_settings.api_token}"})
    assert ok.status_code == 200
    assert "mlstack_jobs_accepted" in ok.text


def test_loopback_and_public_scrapes_are_open(api_settings: ApiSettings) -> None:
    for host in ("127.0.0.1", "::1"):
        r = _client(api_settings, host).get("/metrics")
        assert r.status_code == 200, host
        assert r.headers["content-type"].startswith("text/plain")
        assert "mlstack_publish_confirm_seconds" in r.text
        assert "mlstack_queue_depth{" not in r.text  # store down: no per-model figures, still a scrape
    public = dataclasses.replace(api_settings, metrics_public=True)
    assert _client(public, "192.0.2.7").get("/metrics").status_code == 200


def test_metrics_public_setting_is_parsed() -> None:
    base = {"MLSTACK_ENV_FILE": "/nonexistent/x.env", "MLSTACK_API_TOKEN": "a" * 20, "MLSTACK_WORKER_TOKEN": "b" * 20}
    assert ApiSettings.from_env({**base, "MLSTACK_METRICS_PUBLIC": "yes"}).metrics_public is True
    assert ApiSettings.from_env(base).metrics_public is False
    try:
        ApiSettings.from_env({**base, "MLSTACK_METRICS_PUBLIC": "maybe"})
    except Exception as exc:
        assert "MLSTACK_METRICS_PUBLIC" in str(exc)
    else:
        raise AssertionError("a bad MLSTACK_METRICS_PUBLIC must be refused")
