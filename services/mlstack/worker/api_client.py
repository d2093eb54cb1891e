"""The worker's HTTP client for the API's /worker endpoints (stdlib only, keep-alive)."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit


class ApiUnavailable(Exception):
    """The API could not be reached or answered 5xx: retry later."""


class ApiRejected(Exception):
    """The API refused the request (4xx): retrying will not help."""


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout_s = timeout_s
        # One keep-alive connection per thread (job thread and heartbeat thread).
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout_s)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, ensure_ascii=False).encode()
        for attempt in (1, 2):  # a keep-alive connection the server closed fails once; reconnect
            try:
                conn = self._connection()
                conn.request("POST", self._prefix + path, body=body, headers=self._headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise ApiUnavailable(f"{path}: {exc.__class__.__name__}: {exc}") from exc
        if response.status >= 500:
            raise ApiUnavailable(f"{path}: HTTP {response.status}")
        if response.status >= 400:
            raise ApiRejected(f"{path}: HTTP {response.status}: {data[:200]!r}")
        try:
            return json.loads(data)  # type: ignore[no-any-return]
        except ValueError as exc:
            raise ApiUnavailable(f"{path}: answer is not JSON") from exc

    # ---- the worker protocol (services/DESIGN.md) ----------------------------------
    def register(self, worker_id: str, versions: dict[str, str]) -> dict[str, str]:
        models = [{"name": name, "version": version} for name, version in versions.items()]
        answer = self.post("/worker/register", {"worker_id": worker_id, "models": models})
        return dict(answer["queues"])

    def deregister(self, worker_id: str) -> None:
        self.post("/worker/deregister", {"worker_id": worker_id})

    def start(self, job_id: str, worker_id: str) -> tuple[bool, str]:
        answer = self.post(f"/worker/jobs/{job_id}/start", {"worker_id": worker_id})
        return bool(answer.get("run")), str(answer.get("reason", ""))

    def result(self, job_id: str, payload: dict[str, Any]) -> tuple[bool, str]:
        answer = self.post(f"/worker/jobs/{job_id}/result", payload)
        return bool(answer.get("accepted")), str(answer.get("reason", ""))
