"""A small client of the public API, the way an application uses it."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

JOB_ID = re.compile(r"^[0-9a-f]{64}$")
FINAL = ("Done", "Error")
_ABSENT: Any = object()


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30) -> None:
        self.base_url = base_url
        self.token = token
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token if token is None else token}"}

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.auth() if headers is None else headers)

    def call(self, path: str, body: Any) -> dict[str, Any]:
        """A contract answer: always HTTP 200 with a JSON object, errors included (as the original)."""
        r = self.post(path, body)
        assert r.status_code == 200, f"POST {path} {body!r} -> HTTP {r.status_code}: {r.text[:500]}"
        data = r.json()
        assert isinstance(data, dict), data
        return data

    # -- endpoints -------------------------------------------------------------------------------
    def inference(
        self, model_name: str, method: str, features: Any = _ABSENT, targets: Any = _ABSENT, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model_name": model_name, "method": method, **extra}
        if features is not _ABSENT:
            body["features"] = features
        if targets is not _ABSENT:
            body["targets"] = targets
        return self.call("/inference", body)

    def submit(self, model_name: str, method: str, features: Any = _ABSENT, targets: Any = _ABSENT) -> str:
        answer = self.inference(model_name, method, features, targets)
        job_id = answer.get("job_id", "")
        assert answer == {"job_id": job_id, "model_name": model_name, "method": method, "status": "Queued"}, answer
        assert JOB_ID.match(job_id), f"job_id is not 64 lowercase hex characters: {job_id!r}"
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        return self.call("/status", {"job_id": job_id})

    def feedback(self, job_id: str, feedback: Any) -> dict[str, Any]:
        return self.call("/feedback", {"job_id": job_id, "feedback": feedback})

    def get_feedback(self, model_name: str, initial_date: str, end_date: str) -> dict[str, Any]:
        return self.call(
            "/get_feedback", {"model_name": model_name, "initial_date": initial_date, "end_date": end_date}
        )

    # -- waiting ---------------------------------------------------------------------------------
    def wait_status(
        self, job_id: str, wanted: tuple[str, ...], timeout: float = 30, interval: float = 0.1
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if st.get("status") in wanted:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {wanted} after {timeout}s; last status: {st}")
            time.sleep(interval)

    def wait_done(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for a final status (Done or Error) and return the whole /status answer."""
        return self.wait_status(job_id, FINAL, timeout)

    def run(
        self, model_name: str, method: str, features: Any = _ABSENT, targets: Any = _ABSENT, timeout: float = 30
    ) -> dict[str, Any]:
        return self.wait_done(self.submit(model_name, method, features, targets), timeout)
