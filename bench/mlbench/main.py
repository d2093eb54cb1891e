"""bin/bench: throughput, latency and memory of a running mlstack, next to the original stack's figures.

Phases, in order (each bounded in time):
 1. /inference accepted per second at 1, 8 and 64 concurrent clients. The jobs go to BENCH_ECHO's
    queue, held by a parking consumer that takes no work: this measures the API's accept path
    (validate, store the job, publish with confirm) without workers competing for the CPU.
 2. /status answered per second at 64 clients, over the jobs of phase 1.
 3. A FastAPI hello-world under gunicorn with the API's worker class and worker count, at 64
    clients: the API's CPU per accepted job (phase 1, 64 clients) is reported as a ratio of the
    hello-world's CPU per request.
 4. End-to-end jobs per second at saturation, twice: micro-batching off (max_batch 1), then on
    (--batch, default 32, max_wait_ms 2). N Pub workers serve the example bundle's scikit-learn
    CLF_IRIS (as BENCH_IRIS, bench/mlbench/models.py) when the dev stack built it, else BENCH_ECHO;
    clients submit as fast as they can while keeping at most a small backlog in the queue, so the
    workers never idle and the API is not flooded. Counted: jobs whose Done time falls in the
    window (every job is checked Done afterwards).
 5. submit-to-Done latency at half the batched rate, open loop (paced submissions). Done time is the
    moment the API took the worker's result (the job's datetime + total_response_time_sec, same
    clock as the client): no polling load during the run, and what a poller could at best see.
 6. The original stack's publish path against the same RabbitMQ: a new BlockingConnection per job
    (connect, channel, passive declare, publish, close) at 8 and 64 clients.
Memory of the API (gunicorn master + workers) and of a worker is read from /proc after phase 4.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pika.exceptions

from mlbench import amqp, hello, models, procs, report
from mlbench.httpload import Connection, Paced, Tally, Target, closed_loop, fetch_all, open_loop
from mlbench.workers import EchoWorker, dead_workers, start_workers, stop_workers

MODEL = "BENCH_ECHO"
PARKING_WORKER_ID = "bench-parking"
ORIGINAL_QUEUE = "mlstack.bench.original-path"
T = TypeVar("T")
DEFAULT_FEATURES = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]


class BenchError(Exception):
    """The bench cannot run; the message says why."""


@dataclass(frozen=True)
class Plan:
    warmup_s: float
    accept_s: float
    status_s: float
    e2e_s: float
    latency_s: float
    original_s: float
    accept_concurrency: tuple[int, ...] = (1, 8, 64)
    status_concurrency: int = 64
    e2e_clients: int = 32
    original_concurrency: tuple[int, ...] = (8, 64)


FULL = Plan(warmup_s=1.0, accept_s=7.0, status_s=7.0, e2e_s=10.0, latency_s=10.0, original_s=5.0)
QUICK = Plan(warmup_s=0.5, accept_s=2.0, status_s=2.0, e2e_s=3.0, latency_s=3.0, original_s=2.0)


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_token: str
    worker_token: str
    amqp_url: str
    features: list[Any]

    @classmethod
    def from_env(cls) -> Settings:
        missing = [n for n in ("MLSTACK_API_URL", "MLSTACK_API_TOKEN", "MLSTACK_WORKER_TOKEN") if not os.environ.get(n)]
        if missing:
            raise BenchError(f"missing settings: {', '.join(missing)} (start the dev stack: bin/mlstack-dev up)")
        features = DEFAULT_FEATURES
        if os.environ.get("MLSTACK_FEATURES"):
            try:
                features = json.loads(os.environ["MLSTACK_FEATURES"])
            except ValueError as exc:
                raise BenchError("MLSTACK_FEATURES is not a JSON list") from exc
        return cls(
            api_url=os.environ["MLSTACK_API_URL"].rstrip("/"),
            api_token=os.environ["MLSTACK_API_TOKEN"],
            worker_token=os.environ["MLSTACK_WORKER_TOKEN"],
            amqp_url=os.environ.get("MLSTACK_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/%2F",
            features=features,
        )


@dataclass
class Results:
    accept: dict[int, Tally] = field(default_factory=dict)
    status: Tally | None = None
    hello: Tally | None = None
    e2e_model: str = ""
    e2e_rate: float = 0.0
    e2e_rate_unbatched: float = 0.0
    e2e_batch: int = 1
    e2e_jobs: int = 0
    e2e_queue_empty: float = 0.0  # share of queue polls that found no job waiting
    e2e_problems: dict[str, int] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)
    latency_rate: float = 0.0
    latency_answer: list[float] = field(default_factory=list)
    latency_problems: dict[str, int] = field(default_factory=dict)
    latency_late: int = 0
    original: dict[int, tuple[float, int]] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process group -> % of a core
    rates: dict[str, float] = field(default_factory=dict)  # phase -> operations per second
    spread: dict[str, str] = field(default_factory=dict)  # phase -> open client connections per API process
    memory: dict[str, procs.Memory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---- small HTTP helpers ---------------------------------------------------------------------
def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _call(target: Target, path: str, payload: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    conn = await Connection.open(target)
    try:
        status, body = await conn.request(target.post(path, json.dumps(payload).encode(), token))
    finally:
        conn.close()
    return status, _json(body)


async def _ready(target: Target) -> None:
    conn = await Connection.open(target)
    try:
        raw = f"GET /health/ready HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n\r\n".encode()
        status, body = await conn.request(raw)
    finally:
        conn.close()
    if status != 200:
        raise BenchError(f"the API is not ready: HTTP {status} {body[:200]!r}")


def _job_id(body: bytes) -> str | None:
    at = body.find(b'"job_id":"')
    if at < 0:
        return None
    end = body.find(b'"', at + 10)
    return body[at + 10 : end].decode() if end > 0 else None


def _accept_check(ids: list[str]) -> Callable[[int, bytes], str | None]:
    def check(status: int, body: bytes) -> str | None:
        if status == 200 and b'"Queued"' in body:
            job_id = _job_id(body)
            if job_id and len(ids) < 200_000:
                ids.append(job_id)
            return None
        data = _json(body)
        text = data.get("response") if isinstance(data, dict) else None
        return f"HTTP {status}: {str(text or body[:80])[:100]}"

    return check


def _status_check(status: int, body: bytes) -> str | None:
    if status == 200 and body.startswith(b'{"job_id"'):
        return None
    return f"HTTP {status}: {body[:100]!r}"


class Bench:
    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        workers: int,
        prefetch: int,
        model_worker_pid: int | None,
        batch: int = 32,
        e2e_model: str = "example",
    ):
        self.settings = settings
        self.batch = batch
        self.e2e_choice = e2e_model
        self.e2e: models.E2eModel | None = None
        self.e2e_queue = ""
        self.plan = plan
        self.worker_count = workers
        self.prefetch = prefetch
        self.model_worker_pid = model_worker_pid
        self.client = Target.from_url(settings.api_url, settings.api_token)
        self.admin = amqp.QueueAdmin(settings.amqp_url)
        self.queue = ""
        self.owns_queue = False  # set once no other bench uses the queue: only then it is cleaned up
        self.results = Results()
        self.workers: list[EchoWorker] = []
        self.parking: amqp.ParkingConsumer | None = None
        self.state_dir: Path | None = None  # the workers' state and logs, made when they start
        self.keep_state = False
        self.stack = procs.StackPids([], [], [])
        self.hello_pids: list[int] = []
        self.inference_request = self.client.post(
            "/inference",
            json.dumps({"model_name": MODEL, "method": "predict", "features": settings.features}).encode(),
        )

    def _say(self, text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    def _meter(self) -> procs.CpuMeter:
        groups = {
            "api": self.stack.api,
            "mongodb": self.stack.mongodb,
            "rabbitmq": self.stack.rabbitmq,
            "workers": [w.pid for w in self.workers],
            "bench": [os.getpid()],
            **({"hello": self.hello_pids} if self.hello_pids else {}),
        }
        return procs.CpuMeter(groups)

    # ---- setup and teardown ------------------------------------------------------------
    async def setup(self) -> None:
        try:
            await _ready(self.client)
        except OSError as exc:
            raise BenchError(f"cannot reach the API at {self.settings.api_url}: {exc}") from exc
        status, answer = await _call(self.client, "/status", {"job_id": "bench-token-check"})
        if status == 401:
            raise BenchError("the API rejected MLSTACK_API_TOKEN")
        register = {"worker_id": PARKING_WORKER_ID, "models": [{"name": MODEL, "version": "1"}]}
        status, answer = await _call(self.client, "/worker/register", register, self.settings.worker_token)
        if status != 200 or not isinstance(answer, dict):
            raise BenchError(f"/worker/register answered HTTP {status} (is MLSTACK_WORKER_TOKEN right?)")
        self.queue = answer["queues"][MODEL]
        self.stack = procs.find_stack(self.client.port)
        if not self.stack.api:
            raise BenchError(f"no process listens on port {self.client.port} of this host")
        self.admin.declare(self.queue)
        _, consumers = self.admin.depth(self.queue)
        if consumers:
            raise BenchError(f"{self.queue} already has {consumers} consumer(s): is another bench running?")
        self.owns_queue = True
        self.admin.purge(self.queue)  # leftovers of an interrupted run

    async def teardown(self) -> None:
        """Undo what the run did, each step on its own so one failure does not hide the others."""
        if self.parking is not None:
            self._best_effort("stopping the parking consumer", self.parking.stop)
            self.parking = None
        if self.workers:
            killed = stop_workers(self.workers)
            if killed:
                self.results.notes.append(f"workers killed after not stopping in time: {', '.join(killed)}")
            self.workers = []
        if self.owns_queue:
            try:
                await self._deregister_parking()
            except (OSError, BenchError) as exc:
                self.results.notes.append(f"deregistering {PARKING_WORKER_ID} failed: {exc!r}")
            self._best_effort(f"purging {self.queue}", lambda: self.admin.purge(self.queue))
            self._best_effort(f"deleting {self.queue}", lambda: self.admin.delete(self.queue))
        if self.e2e_queue and self.e2e_queue != self.queue:
            self._best_effort(f"deleting {self.e2e_queue}", lambda: self.admin.delete(self.e2e_queue))
        self._best_effort("closing the broker connection", self.admin.close)
        if self.state_dir is not None:
            if self.keep_state:
                print(f"worker logs kept in {self.state_dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def _best_effort(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # cleanup: report and go on
            self.results.notes.append(f"{what} failed: {exc!r}")

    def _stop_workers(self) -> None:
        killed = stop_workers(self.workers)
        if killed:
            self.results.notes.append(f"workers killed after not stopping in time: {', '.join(killed)}")
        self.workers = []

    async def _deregister_parking(self) -> None:
        body = {"worker_id": PARKING_WORKER_ID}
        status, _ = await _call(self.client, "/worker/deregister", body, self.settings.worker_token)
        if status != 200:
            raise BenchError(f"/worker/deregister answered HTTP {status}")

    # ---- phases ------------------------------------------------------------------------------
    async def _measured(self, name: str, sample_after_s: float, load: Awaitable[T]) -> T:
        """Run one load phase and record the CPU of each process group and how the API spread its clients."""
        meter = self._meter()

        def sample() -> None:
            counts = procs.connections_per_pid(self.stack.api_workers, self.client.port)
            self.results.spread[name] = "/".join(str(counts[p]) for p in sorted(counts, key=lambda p: -counts[p]))

        timer = asyncio.get_running_loop().call_later(sample_after_s, sample)
        meter.start()
        try:
            return await load
        finally:
            timer.cancel()
            self.results.cpu[name] = meter.stop()

    async def accept_and_status(self) -> None:
        plan = self.plan
        self.parking = amqp.ParkingConsumer(self.settings.amqp_url, self.queue)
        self.parking.start()
        ids: list[str] = []
        for concurrency in plan.accept_concurrency:
            self._say(f"/inference, {concurrency} client(s), {plan.accept_s:g}s")
            request = self.inference_request
            name = f"/inference c={concurrency}"
            tally = await self._measured(
                name,
                plan.warmup_s + plan.accept_s / 2,
                closed_loop(
                    self.client, concurrency, lambda r=request: r, _accept_check(ids), plan.accept_s, plan.warmup_s
                ),
            )
            self.results.accept[concurrency] = tally
            self.results.rates[name] = tally.rate
        if not ids:
            raise BenchError("no job was accepted; see the failures above")
        requests = itertools.cycle(
            [self.client.post("/status", json.dumps({"job_id": i}).encode()) for i in ids[-20_000:]]
        )
        concurrency = plan.status_concurrency
        self._say(f"/status, {concurrency} clients, {plan.status_s:g}s")
        name = f"/status c={concurrency}"
        self.results.status = await self._measured(
            name,
            plan.warmup_s + plan.status_s / 2,
            closed_loop(self.client, concurrency, requests.__next__, _status_check, plan.status_s, plan.warmup_s),
        )
        self.results.rates[name] = self.results.status.rate
        self.parking.stop()
        self.parking = None
        self.admin.purge(self.queue)
        await self._deregister_parking()

    def _state_dir(self) -> Path:
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="mlstack-bench-"))
        return self.state_dir

    def choose_e2e_model(self) -> models.E2eModel:
        if self.e2e_choice == "example":
            found = models.example(self._state_dir())
            if found is not None:
                return found
            self.results.notes.append(
                "end to end ran BENCH_ECHO: the example model needs the dev stack's bundle venv and trained "
                "artifacts (bin/mlstack-dev up)"
            )
        return models.echo(sys.executable)

    async def start_e2e_workers(self, batch: int) -> None:
        assert self.e2e is not None
        self._say(f"starting {self.worker_count} {self.e2e.name} worker(s), max_batch {batch}")
        env = {**self.e2e.env, "MLSTACK_MAX_BATCH": str(batch), "MLSTACK_MAX_WAIT_MS": "2"}
        self.workers = start_workers(
            self.worker_count,
            self.e2e.bundle_dir,
            self._state_dir(),
            self.settings.api_url,
            self.settings.worker_token,
            self.settings.amqp_url,
            self.prefetch,
            python=self.e2e.python,
            extra_env=env,
            label=f"{self.e2e.name.lower().replace('_', '-')}-b{batch}",
        )
        queue = self.e2e_queue
        deadline = time.monotonic() + 60
        while True:
            dead = dead_workers(self.workers)
            if dead:
                self.keep_state = True
                tail = dead[0].log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"worker {dead[0].worker_id} exited:\n{tail}")
            try:
                _, consumers = self.admin.depth(queue)
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet: the workers are starting
                consumers = 0
            if consumers >= self.worker_count:
                return
            if time.monotonic() > deadline:
                self.keep_state = True
                raise BenchError(f"only {consumers} of {self.worker_count} workers consume {queue} after 60s")
            await asyncio.sleep(0.2)

    async def _outcomes(self, ids: list[str], timeout_s: float = 60.0) -> tuple[dict[str, float], dict[str, int]]:
        """Done time of every job (waiting for the unfinished ones), and what went wrong with the others."""
        done: dict[str, float] = {}
        problems: dict[str, int] = {}
        pending = list(ids)
        deadline = time.monotonic() + timeout_s
        while pending:
            requests = [self.client.post("/status", json.dumps({"job_id": i}).encode()) for i in pending]
            answers = await fetch_all(self.client, requests, 16)
            still: list[str] = []
            for job_id, (_, body) in zip(pending, answers, strict=True):
                job = _json(body)
                state = job.get("status") if isinstance(job, dict) else None
                if state == "Done":
                    done[job_id] = float(job["datetime"]) + float(job["total_response_time_sec"])
                elif state in ("Queued", "Running"):
                    still.append(job_id)
                else:
                    key = f"{state}: {str(job.get('response', ''))[:80] if isinstance(job, dict) else body[:80]!r}"
                    problems[key] = problems.get(key, 0) + 1
            pending = still
            if pending and time.monotonic() > deadline:
                problems["not Done after the run"] = len(pending)
                break
            if pending:
                await asyncio.sleep(0.5)
        return done, problems

    async def hello_world(self) -> None:
        """The yardstick: a FastAPI hello-world with the API's gunicorn worker class and worker count."""
        plan = self.plan
        workers = max(1, len(self.stack.api_workers))
        process, port = hello.start(workers, self._state_dir() / "hello-world.log")
        try:
            self.hello_pids = [process.pid, *procs.children(process.pid)]
            target = Target("127.0.0.1", port, "")
            request = target.post("/inference", self.inference_request.split(b"\r\n\r\n", 1)[1])
            concurrency = plan.accept_concurrency[-1]
            self._say(f"FastAPI hello-world ({workers} gunicorn workers), {concurrency} clients, {plan.accept_s:g}s")
            name = f"hello-world c={concurrency}"

            def check(status: int, body: bytes) -> str | None:
                return None if status == 200 else f"HTTP {status}: {body[:80]!r}"

            self.results.hello = await self._measured(
                name,
                plan.warmup_s + plan.accept_s / 2,
                closed_loop(target, concurrency, lambda: request, check, plan.accept_s, plan.warmup_s),
            )
            self.results.rates[name] = self.results.hello.rate
        finally:
            hello.stop(process)
            self.hello_pids = []

    async def saturation(self, batch: int) -> float:
        """End-to-end jobs per second with the workers running; returns the rate."""
        plan = self.plan
        prefetch = max(self.prefetch, 2 * batch) if batch > 1 else self.prefetch  # as the worker sets it
        backlog_limit = max(32, 8 * self.worker_count * prefetch)
        sent = 0
        ids: list[str] = []
        request = self.e2e_request

        def make_request() -> bytes:
            nonlocal sent
            sent += 1
            return request

        watcher = amqp.DepthWatcher(self.settings.amqp_url, self.e2e_queue, lambda: sent)

        async def gate() -> None:
            while watcher.backlog() >= backlog_limit:
                if not watcher.alive:
                    raise BenchError(f"lost the broker connection that watches {self.queue}")
                await asyncio.sleep(0.001)

        self._say(f"end to end at saturation, {plan.e2e_clients} clients, backlog <= {backlog_limit}, {plan.e2e_s:g}s")
        watcher.start()
        name = f"end to end, saturated, max_batch {batch}"
        try:
            tally = await self._measured(
                name,
                plan.warmup_s * 2 + plan.e2e_s / 2,
                closed_loop(
                    self.client, plan.e2e_clients, make_request, _accept_check(ids), plan.e2e_s, plan.warmup_s * 2, gate
                ),
            )
        finally:
            watcher.stop()
        self.results.e2e_queue_empty = watcher.empty_polls / max(1, watcher.polls)
        done, problems = await self._outcomes(ids)
        start, end = tally.window_start_wall, tally.window_start_wall + plan.e2e_s
        in_window = sum(1 for t in done.values() if start <= t <= end)
        rate = in_window / plan.e2e_s
        self.results.rates[name] = rate
        self.results.e2e_jobs += len(ids)
        for key, count in {**tally.failures, **problems}.items():
            self.results.e2e_problems[key] = self.results.e2e_problems.get(key, 0) + count
        return rate

    async def latency(self) -> None:
        rate = self.results.e2e_rate / 2
        if rate < 1:
            self.results.notes.append("latency phase skipped: no end-to-end throughput measured")
            return
        self.results.latency_rate = rate
        self._say(f"submit-to-Done latency at {rate:.0f} jobs/s (open loop), {self.plan.latency_s:g}s")
        request = self.e2e_request
        paced: Paced = await self._measured(
            "latency, half saturation",
            self.plan.latency_s / 2,
            open_loop(self.client, rate, self.plan.latency_s, lambda: request),
        )
        ids: list[str] = []
        sent_at: dict[str, float] = {}
        problems: dict[str, int] = {}
        for when, (status, body) in zip(paced.sent_at, paced.answers, strict=True):
            job_id = _job_id(body) if status == 200 and b'"Queued"' in body else None
            if job_id:
                ids.append(job_id)
                sent_at[job_id] = when
            else:
                key = f"not accepted: HTTP {status} {body[:80]!r}"
                problems[key] = problems.get(key, 0) + 1
        done, more = await self._outcomes(ids)
        problems.update(more)
        self.results.latency = sorted(done[i] - sent_at[i] for i in done)
        self.results.latency_answer = sorted(paced.answer_latency_s)
        self.results.latency_problems = problems
        self.results.latency_late = paced.late

    def memory(self) -> None:
        api = [p for p in self.stack.api if Path(f"/proc/{p}").exists()]
        self.results.memory[f"API (gunicorn master + {max(0, len(api) - 1)} workers)"] = procs.memory(api)
        if self.workers and self.e2e is not None:
            self.results.memory[f"Pub worker, {self.e2e.name}"] = procs.memory([self.workers[0].pid])
        if self.model_worker_pid and Path(f"/proc/{self.model_worker_pid}").exists():
            name = "Pub worker, example bundle (dev stack)"
            self.results.memory[name] = procs.memory([self.model_worker_pid])

    def original(self) -> None:
        self.admin.declare(ORIGINAL_QUEUE)
        try:
            for concurrency in self.plan.original_concurrency:
                self._say(f"original publish path, {concurrency} clients, {self.plan.original_s:g}s")
                meter = procs.CpuMeter({"rabbitmq": self.stack.rabbitmq, "bench": [os.getpid()]})
                meter.start()
                processes = max(1, len(self.stack.api_workers))  # as many as the API has workers
                rate, failed = amqp.original_publish_rate(
                    self.settings.amqp_url, ORIGINAL_QUEUE, concurrency, self.plan.original_s, processes
                )
                name = f"original path c={concurrency}"
                self.results.cpu[name] = meter.stop()
                self.results.original[concurrency] = (rate, failed)
                self.results.rates[name] = rate
                self.admin.purge(ORIGINAL_QUEUE)
        finally:
            self.admin.delete(ORIGINAL_QUEUE)

    async def run(self) -> Results:
        try:
            await self.setup()
            await self.accept_and_status()
            await self.hello_world()
            self.e2e = self.choose_e2e_model()
            self.results.e2e_model = self.e2e.description
            self.e2e_queue = self.queue.removesuffix(MODEL) + self.e2e.name  # the workers declare it
            with contextlib.suppress(pika.exceptions.AMQPError):
                self.admin.purge(self.e2e_queue)  # leftovers of an interrupted run
            body = {"model_name": self.e2e.name, "method": "predict", "features": self.settings.features}
            self.e2e_request = self.client.post("/inference", json.dumps(body).encode())
            await self.start_e2e_workers(1)
            self.results.e2e_rate_unbatched = await self.saturation(1)
            self._stop_workers()
            self.results.e2e_batch = self.batch
            await self.start_e2e_workers(self.batch)
            self.results.e2e_rate = await self.saturation(self.batch)
            await self.latency()
            self.memory()
            self._stop_workers()
            self.original()
        finally:
            await self.teardown()
        return self.results


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke run of about 30 s")
    parser.add_argument("--workers", type=int, default=4, help="BENCH_ECHO Pub workers to start (default 4)")
    parser.add_argument("--prefetch", type=int, default=1, help="MLSTACK_PREFETCH of those workers (default 1)")
    parser.add_argument("--model-worker-pid", type=int, help="pid of a Pub worker of a real bundle, for its memory")
    parser.add_argument("--batch", type=int, default=32, help="max_batch of the batched end-to-end run (default 32)")
    parser.add_argument(
        "--e2e-model",
        choices=("example", "echo"),
        default="example",
        help="end-to-end model: the example bundle's CLF_IRIS (default; BENCH_ECHO when not built) or BENCH_ECHO",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.workers < 1 or args.prefetch < 1 or not 1 < args.batch <= 1024:
        print("bin/bench: --workers and --prefetch must be at least 1, --batch from 2 to 1024", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        plan = QUICK if args.quick else FULL
        bench = Bench(settings, plan, args.workers, args.prefetch, args.model_worker_pid, args.batch, args.e2e_model)
        print(f"bin/bench: {settings.api_url}, {'quick' if args.quick else 'full'} run", file=sys.stderr)
        started = time.monotonic()
        results = _run(bench.run())
    except BenchError as exc:
        print(f"bin/bench: {exc}", file=sys.stderr)
        return 1
    except (pika.exceptions.AMQPError, OSError) as exc:
        print(f"bin/bench: lost a connection to the stack: {exc!r}", file=sys.stderr)
        return 1
    print(report.render(results, bench, time.monotonic() - started))
    return 0


def _run(coro: Any) -> Results:
    try:
        import uvloop  # the event loop costs the generator less CPU
    except ImportError:
        return asyncio.run(coro)  # type: ignore[no-any-return]
    return uvloop.run(coro)  # type: ignore[no-any-return]
