"""``mlstack stress``: load a running mlstack API the way its clients do, and report what it did.

Each round sends predict, evaluate and info for one model, follows the jobs with /status until
they end, and sends feedback on the finished predict; get_feedback is asked at most when its rate
limit allows (the answer's next_feedback_timestamp is honoured). Rounds start at a set rate (or
with a set delay), bounded by a count and a time; the run ends when either is reached and the
jobs already submitted are followed to the end (up to a job timeout).

Safety: the tool talks to the one base URL given and nothing else: only http(s) URLs without
credentials, query or fragment are accepted, redirects are never followed (a redirect stops the
run), and the target must first answer /version like an mlstack API.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

FINAL = ("Done", "Error")
ENDPOINTS = ("inference", "status", "feedback", "get_feedback")
MAX_ROUNDS = 1_000_000
MAX_DURATION_S = 24 * 3600.0


class StressError(Exception):
    """A reason to stop before or during a run (one line for the operator)."""


@dataclass(frozen=True)
class StressConfig:
    url: str
    token: str = field(repr=False)
    model: str
    features: list[Any]
    targets: list[Any]
    rounds: int = 20
    duration_s: float = 60.0
    rate: float | None = 2.0  # rounds started per second (None: use delay_s)
    delay_s: float = 0.0  # pause between the end of one round and the start of the next
    queue_limit_s: float = 5.0  # a job still Queued after this long counts as an overload
    job_timeout_s: float = 60.0
    poll_s: float = 0.2
    max_in_flight: int = 64
    get_feedback: bool = True
    methods: tuple[str, ...] = ("predict", "evaluate", "info")


def check_url(url: str) -> str:
    """The base URL, normalised; StressError for anything but a plain http(s) origin (+ path)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StressError(f"the URL must be http:// or https:// with a host, got {url!r}")
    if parts.username or parts.password:
        raise StressError("the URL must not hold credentials (give the token in MLSTACK_API_TOKEN)")
    if parts.query or parts.fragment:
        raise StressError("the URL must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    rounds_started: int = 0
    rounds_done: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    http_errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    jobs: Counter[str] = field(default_factory=Counter)  # accepted, refused, Done, Error, timeout
    refusals: Counter[str] = field(default_factory=Counter)
    job_latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    overloads: int = 0
    first_overload: float | None = None
    last_overload_end: float | None = None
    pending: int = 0
    get_feedback_asked: int = 0
    get_feedback_limited: int = 0
    submit_end: float | None = None
    drained: float | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def report(stats: Stats, config: StressConfig) -> dict[str, Any]:
    """The run's figures as plain data (printed as a table, or as JSON with --json)."""
    elapsed = max(stats.elapsed(), 1e-9)
    total_requests = sum(stats.requests.values())

    def lat(values: list[float]) -> dict[str, Any]:
        return {
            "count": len(values),
            "p50_ms": _ms(percentile(values, 0.5)),
            "p95_ms": _ms(percentile(values, 0.95)),
            "max_ms": _ms(max(values) if values else None),
        }

    recovery = None
    if stats.submit_end is not None and stats.drained is not None:
        recovery = round(max(0.0, stats.drained - stats.submit_end), 3)
    return {
        "target": config.url,
        "model": config.model,
        "elapsed_s": round(elapsed, 3),
        "rounds": {"started": stats.rounds_started, "done": stats.rounds_done},
        "requests": {"total": total_requests, "per_s": round(total_requests / elapsed, 2), **dict(stats.requests)},
        "http_errors": dict(stats.http_errors),
        "http_latency": {name: lat(values) for name, values in sorted(stats.latencies.items())},
        "jobs": dict(stats.jobs),
        "jobs_per_s": round(stats.jobs["accepted"] / elapsed, 2),
        "refusals": dict(stats.refusals),
        "job_latency": {name: lat(values) for name, values in sorted(stats.job_latency.items())},
        "overloads": {"jobs_queued_past_limit": stats.overloads, "limit_s": config.queue_limit_s},
        "recovery_s": recovery,
        "get_feedback": {"asked": stats.get_feedback_asked, "rate_limited": stats.get_feedback_limited},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Runner:
    def __init__(self, config: StressConfig, on_tick: Callable[[Stats], None] | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.on_tick = on_tick
        self.next_get_feedback = 0.0
        self._stop: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None

    # ---- HTTP --------------------------------------------------------------------------------
    async def _post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any] | None:
        assert self._client is not None
        started = time.monotonic()
        self.stats.requests[endpoint] += 1
        try:
            answer = await self._client.post(f"/{endpoint}", json=body)
        except httpx.HTTPError as exc:
            self.stats.http_errors[f"{endpoint}: {exc.__class__.__name__}"] += 1
            return None
        self.stats.latencies[endpoint].append(time.monotonic() - started)
        _refuse_redirect(answer)
        if answer.status_code == 401:
            raise StressError("the API refused the token (HTTP 401): check MLSTACK_API_TOKEN")
        if answer.status_code != 200:
            self.stats.http_errors[f"{endpoint}: HTTP {answer.status_code}"] += 1
            return None
        try:
            data = answer.json()
        except ValueError:
            self.stats.http_errors[f"{endpoint}: not JSON"] += 1
            return None
        return data if isinstance(data, dict) else None

    async def preflight(self) -> str:
        """The target must answer /version like an mlstack API before any load is sent."""
        assert self._client is not None
        try:
            answer = await self._client.get("/version")
        except httpx.HTTPError as exc:
            raise StressError(f"{self.config.url} did not answer /version: {exc.__class__.__name__}") from None
        _refuse_redirect(answer)
        version = answer.json().get("Stack Version", "") if answer.status_code == 200 else ""
        if not (isinstance(version, str) and version.startswith("r") and "(mllibprodest==" in version):
            raise StressError(f"{self.config.url} does not answer /version like an mlstack API; nothing sent")
        return version

    # ---- one round ---------------------------------------------------------------------------------
    async def _job(self, method: str) -> None:
        c = self.config
        body: dict[str, Any] = {"model_name": c.model, "method": method}
        if method in ("predict", "evaluate"):
            body["features"] = c.features
        if method == "evaluate":
            body["targets"] = c.targets
        submitted = time.monotonic()
        answer = await self._post("inference", body)
        if answer is None:
            return
        if answer.get("status") != "Queued":
            self.stats.jobs["refused"] += 1
            self.stats.refusals[str(answer.get("response", ""))[:120]] += 1
            return
        self.stats.jobs["accepted"] += 1
        final = await self._follow(str(answer["job_id"]), submitted)
        if final and method == "predict" and final.get("status") == "Done" and isinstance(final.get("response"), list):
            labels = final["response"]
            if labels:
                await self._post("feedback", {"job_id": final["job_id"], "feedback": labels})

    async def _follow(self, job_id: str, submitted: float) -> dict[str, Any] | None:
        c, s = self.config, self.stats
        s.pending += 1
        overloaded = False
        try:
            while True:
                status = await self._post("status", {"job_id": job_id})
                waited = time.monotonic() - submitted
                if status is not None and status.get("status") in FINAL:
                    s.jobs[str(status["status"])] += 1
                    s.job_latency["observed_total"].append(waited)
                    total = status.get("total_response_time_sec")
                    if isinstance(total, (int, float)) and total >= 0:
                        s.job_latency["stack_total"].append(float(total))
                    if overloaded:
                        s.last_overload_end = time.monotonic()
                    return status
                if (
                    status is not None
                    and status.get("status") == "Queued"
                    and waited > c.queue_limit_s
                    and not overloaded
                ):
                    overloaded = True
                    s.overloads += 1
                    s.first_overload = s.first_overload or time.monotonic()
                if waited > c.job_timeout_s:
                    s.jobs["timeout"] += 1
                    return None
                await asyncio.sleep(c.poll_s)
        finally:
            s.pending -= 1

    async def _maybe_get_feedback(self) -> None:
        if not self.config.get_feedback or time.time() < self.next_get_feedback:
            return
        self.next_get_feedback = time.time() + 3600  # until the API says when (or this call fails)
        today = time.strftime("%d/%m/%Y")
        self.stats.get_feedback_asked += 1
        answer = await self._post(
            "get_feedback", {"model_name": self.config.model, "initial_date": today, "end_date": today}
        )
        if answer is None:
            return
        next_ts = answer.get("next_feedback_timestamp")
        if isinstance(next_ts, (int, float)):
            self.stats.get_feedback_limited += 1
            self.next_get_feedback = float(next_ts)
        elif answer.get("status") == "Queued":
            self.stats.jobs["accepted"] += 1
            await self._follow(str(answer["job_id"]), time.monotonic())

    async def _round(self) -> None:
        await asyncio.gather(*(self._job(m) for m in self.config.methods), self._maybe_get_feedback())
        self.stats.rounds_done += 1

    # ---- the run ---------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        c = self.config
        limits = httpx.Limits(max_connections=c.max_in_flight, max_keepalive_connections=c.max_in_flight)
        headers = {"Authorization": f"Bearer {c.token}"}
        async with httpx.AsyncClient(
            base_url=c.url, headers=headers, follow_redirects=False, timeout=30.0, limits=limits, trust_env=False
        ) as client:
            self._client = client
            await self.preflight()
            self.stats = Stats()
            ticker = asyncio.create_task(self._tick())
            try:
                await self._submit_rounds()
            finally:
                ticker.cancel()
        return report(self.stats, c)

    async def _submit_rounds(self) -> None:
        c, s = self.config, self.stats
        deadline = time.monotonic() + c.duration_s
        in_flight: set[asyncio.Task[None]] = set()
        gate = asyncio.Semaphore(c.max_in_flight)
        failure: list[BaseException] = []

        async def guarded() -> None:
            try:
                await self._round()
            except StressError as exc:
                failure.append(exc)
            finally:
                gate.release()

        next_start = time.monotonic()
        while s.rounds_started < c.rounds and time.monotonic() < deadline and not failure:
            await gate.acquire()
            s.rounds_started += 1
            task = asyncio.create_task(guarded())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if c.rate:
                next_start += 1.0 / c.rate
                await asyncio.sleep(max(0.0, next_start - time.monotonic()))
            else:
                await task
                await asyncio.sleep(c.delay_s)
        s.submit_end = time.monotonic()
        if in_flight:
            await asyncio.wait(in_flight)
        s.drained = time.monotonic()
        if failure:
            raise StressError(str(failure[0]))

    async def _tick(self) -> None:
        while self.on_tick is not None:
            self.on_tick(self.stats)
            await asyncio.sleep(0.5)


def _refuse_redirect(answer: httpx.Response) -> None:
    if answer.is_redirect:
        target = answer.headers.get("location", "?")
        raise StressError(
            f"the API answered HTTP {answer.status_code} redirecting to {target}; "
            "mlstack stress only talks to the URL given: give the final URL instead"
        )


# ---- rich rendering -----------------------------------------------------------------------------
def live_table(stats: Stats, config: StressConfig) -> Any:
    from rich.table import Table

    r = report(stats, config)
    table = Table(title=f"mlstack stress → {config.url} ({config.model})", expand=False)
    columns = ("elapsed", "rounds", "req/s", "jobs/s", "accepted", "refused", "done", "error", "pending",
               "overloads", "p95 submit→end")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    p95 = r["job_latency"].get("observed_total", {}).get("p95_ms")
    table.add_row(
        f"{r['elapsed_s']:.1f}s",
        f"{stats.rounds_done}/{stats.rounds_started}",
        f"{r['requests']['per_s']}",
        f"{r['jobs_per_s']}",
        str(stats.jobs["accepted"]),
        str(stats.jobs["refused"]),
        str(stats.jobs["Done"]),
        str(stats.jobs["Error"]),
        str(stats.pending),
        str(stats.overloads),
        "—" if p95 is None else f"{p95} ms",
    )
    return table


def report_table(data: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    summary = Table(title=f"mlstack stress report: {data['target']} ({data['model']})", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    rows = [
        ("elapsed", f"{data['elapsed_s']} s"),
        ("rounds done / started", f"{data['rounds']['done']} / {data['rounds']['started']}"),
        ("requests (per s)", f"{data['requests']['total']} ({data['requests']['per_s']})"),
        ("jobs accepted (per s)", f"{data['jobs'].get('accepted', 0)} ({data['jobs_per_s']})"),
        ("jobs Done / Error / timeout", " / ".join(str(data["jobs"].get(k, 0)) for k in ("Done", "Error", "timeout"))),
        ("jobs refused", str(data["jobs"].get("refused", 0))),
        (f"overloads (Queued > {data['overloads']['limit_s']} s)", str(data["overloads"]["jobs_queued_past_limit"])),
        ("recovery (backlog drained after the last round)", _seconds(data["recovery_s"])),
        ("get_feedback asked / rate-limited", "{asked} / {rate_limited}".format(**data["get_feedback"])),
        ("HTTP errors", str(sum(data["http_errors"].values()))),
    ]
    for row in rows:
        summary.add_row(*row)
    latency = Table(title="latencies (ms)")
    for col in ("what", "count", "p50", "p95", "max"):
        latency.add_column(col, justify="right" if col != "what" else "left")
    for group, values in (("HTTP", data["http_latency"]), ("job", data["job_latency"])):
        for name, v in values.items():
            latency.add_row(f"{group} {name}", str(v["count"]), str(v["p50_ms"]), str(v["p95_ms"]), str(v["max_ms"]))
    parts: list[Any] = [summary, latency]
    if data["refusals"]:
        refused = Table(title="refusals")
        refused.add_column("response")
        refused.add_column("count", justify="right")
        for text, count in data["refusals"].items():
            refused.add_row(text, str(count))
        parts.append(refused)
    return Group(*parts)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value} s"
