"""The worker's HTTP client for the API's /worker endpoints (stdlib only, keep-alive)."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

log = logging.getLogger("mlstack.worker")
T = TypeVar("T")


class ApiUnavailable(Exception):
    """The API could not be reached or answered 5xx: retry later."""


class ApiRejected(Exception):
    """The API refused the request (4xx): retrying will not help."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _job_path(job_id: str, action: str) -> str:
    # A job_id comes from a queue message: quoted, it cannot reach another path.
    return f"/worker/jobs/{quote(job_id, safe='')}/{action}"


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
            raise ApiRejected(f"{path}: HTTP {response.status}: {data[:200]!r}", response.status)
        try:
            return json.loads(data)  # type: ignore[no-any-return]
        except ValueError as exc:
            raise ApiUnavailable(f"{path}: answer is not JSON") from exc

    # ---- the worker protocol (services/DESIGN.md) ----------------------------------
    def register(self, worker_id: str, models: list[dict[str, str]]) -> dict[str, str]:
        """Register (and heartbeat): per model its ``name``, loaded ``version``, ``production_version``
        and ``state``; the answer maps each model to its queue."""
        answer = self.post("/worker/register", {"worker_id": worker_id, "models": models})
        return dict(answer["queues"])

    def deregister(self, worker_id: str) -> None:
        self.post("/worker/deregister", {"worker_id": worker_id})

    def start(self, job_id: str, worker_id: str, lease_s: float) -> tuple[bool, str]:
        """Take the job's lease (marks it Running); (False, "leased") while another worker holds it."""
        answer = self.post(_job_path(job_id, "start"), {"worker_id": worker_id, "lease_s": lease_s})
        return bool(answer.get("run")), str(answer.get("reason", ""))

    def start_many(self, job_ids: list[str], worker_id: str, lease_s: float) -> list[tuple[bool, str]]:
        """``start`` for a micro-batch in one call; one (run, reason) per job, in order."""
        answer = self.post("/worker/jobs/start", {"job_ids": job_ids, "worker_id": worker_id, "lease_s": lease_s})
        answers = answer.get("results")
        if not isinstance(answers, list) or len(answers) != len(job_ids):
            raise ApiUnavailable("/worker/jobs/start: not one answer per job")
        return [(bool(a.get("run")), str(a.get("reason", ""))) for a in answers]

    def renew(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        answer = self.post(_job_path(job_id, "lease"), {"worker_id": worker_id, "lease_s": lease_s})
        return bool(answer.get("renewed"))

    def result(self, job_id: str, payload: dict[str, Any]) -> tuple[bool, str]:
        answer = self.post(_job_path(job_id, "result"), payload)
        return bool(answer.get("accepted")), str(answer.get("reason", ""))

    def results(self, payloads: list[dict[str, Any]]) -> list[tuple[bool, str]]:
        """Report many jobs in one call (each payload names its ``job_id``); one answer per job, in order."""
        answer = self.post("/worker/results", {"results": payloads})
        answers = answer.get("results")
        if not isinstance(answers, list) or len(answers) != len(payloads):
            raise ApiUnavailable("/worker/results: not one answer per result")
        return [(bool(a.get("accepted")), str(a.get("reason", ""))) for a in answers]


def retry_api(what: str, call: Callable[[], T], deadline_s: float, stopping: threading.Event) -> T | None:
    """Retry while the API is unreachable (ApiUnavailable); None once the deadline passed or when stopping.

    ApiRejected is not retried: it propagates to the caller."""
    delay, give_up = 0.2, time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except ApiUnavailable as exc:
            if time.monotonic() > give_up or stopping.is_set():
                log.error("%s: API unreachable, giving up for now (%s)", what, exc)
                return None
            log.warning("%s: API unreachable (%s); retrying in %.1fs", what, exc, delay)
            stopping.wait(delay)
            delay = min(delay * 2, 5.0)
