"""Steady client load on the deployed API hosts, recorded: which jobs were accepted, when, and
what every refusal looked like. The multi-host tests read it after a fault (a host powered off,
a rolling restart) to check that no accepted job was lost and that some API always answered."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field

import httpx

MODEL = "CLF_IRIS"
IRIS = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]


@dataclass
class Attempt:
    at: float
    api: str
    job_id: str = ""  # empty: refused or unanswered
    error: str = ""


@dataclass
class Load:
    """Submits one job every `interval_s`, to the API hosts in turn; when one does not accept it,
    the same job goes to the next at once (what a client behind a load balancer sees)."""

    apis: list[str]  # base URLs
    token: str
    ca_file: str | None = None  # https: the site CA (the control node's pki/ca.crt)
    interval_s: float = 0.1
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"model_name": MODEL, "method": "predict", "features": IRIS}
        with httpx.Client(timeout=5, headers=headers, verify=trust(self.ca_file)) as http:
            turn = 0
            while not self._stop.wait(self.interval_s):
                for step in range(len(self.apis)):
                    api = self.apis[(turn + step) % len(self.apis)]
                    attempt = self._submit(http, api, body)
                    self.attempts.append(attempt)
                    if attempt.job_id:
                        break
                turn += 1

    @staticmethod
    def _submit(http: httpx.Client, api: str, body: dict[str, object]) -> Attempt:
        at = time.time()
        try:
            r = http.post(f"{api}/inference", json=body)
            answer = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            return Attempt(at, api, error=f"{exc.__class__.__name__}: {exc}")
        if answer.get("status") == "Queued" and answer.get("job_id"):
            return Attempt(at, api, job_id=str(answer["job_id"]))
        return Attempt(at, api, error=f"HTTP {r.status_code}: {r.text[:200]}")

    # ---------------------------------------------------------------- after the run
    def accepted(self, since: float = 0.0) -> list[str]:
        return [a.job_id for a in self.attempts if a.job_id and a.at >= since]

    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.job_id]

    def unserved_rounds(self) -> list[float]:
        """Times at which no API host accepted the job of a round (every host refused it in turn)."""
        out: list[float] = []
        streak: list[Attempt] = []
        for a in self.attempts:
            if a.job_id:
                streak = []
                continue
            streak.append(a)
            if len(streak) == len(self.apis):
                out.append(streak[0].at)
                streak = []
        return out


def trust(ca_file: str | None) -> ssl.SSLContext | bool:
    """What an https client checks the API's certificate against: the site CA alone."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def statuses(apis: list[str], token: str, job_ids: list[str], ca_file: str | None = None) -> dict[str, str]:
    """The status of each job, read from the first API host that answers."""
    out: dict[str, str] = {}
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}, verify=trust(ca_file)) as http:
        for job_id in job_ids:
            for api in apis:
                try:
                    out[job_id] = str(http.post(f"{api}/status", json={"job_id": job_id}).json().get("status"))
                    break
                except (httpx.HTTPError, ValueError):
                    continue
    return out


def wait_all_final(
    apis: list[str], token: str, job_ids: list[str], timeout: float, ca_file: str | None = None
) -> dict[str, str]:
    """Polls until every job is Done or Error (or the time is up): their last statuses."""
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    final: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        now = statuses(apis, token, pending, ca_file)
        final.update({j: s for j, s in now.items() if s in ("Done", "Error")})
        pending = [j for j in pending if j not in final]
        if pending:
            time.sleep(2)
    if pending:
        final.update(statuses(apis, token, pending, ca_file))
    return final
