"""A lean HTTP/1.1 load generator on raw asyncio protocols.

On a 2-core machine the generator competes with the API for CPU, so it does as
little as possible per request: request bytes are built by the caller, the
connection is kept alive, and a response is cut out of the stream by its
Content-Length without parsing anything else. Bodies are returned as bytes;
callers look inside only when they must.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"content-length:"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    token: str

    @classmethod
    def from_url(cls, url: str, token: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// API URLs are supported, got {parts.scheme}://")
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, token)

    def post(self, path: str, body: bytes, token: str | None = None) -> bytes:
        """The complete bytes of one keep-alive POST with a JSON body."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token or self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, target.host, target.port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None:
            return
        buffer = self._buffer
        end = buffer.find(_HEAD_END)
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(_CONTENT_LENGTH)
        if at < 0:
            waiter.set_exception(ValueError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at)
        length = int(head[at + len(_CONTENT_LENGTH) : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buffer) < total:
            return
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        self._waiter = None
        waiter.set_result((int(head[9:12]), body))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one request; the future gives (status, body)."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError("connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_connections(target: Target, count: int, gap_s: float = 0.002) -> list[Connection]:
    """Connect like independent clients would, one after the other rather than in one burst.

    The API's worker processes share one listening socket; a burst of connections tends to be
    accepted by whichever process wakes first, leaving the other idle for the whole phase.
    """
    conns = []
    for _ in range(count):
        conns.append(await Connection.open(target))
        await asyncio.sleep(gap_s)
    return conns


@dataclass
class Tally:
    """What a phase counted inside its measuring window."""

    ok: int = 0
    failed: int = 0
    window_s: float = 0.0
    window_start_wall: float = 0.0  # time.time() when counting began
    latencies_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.failed += 1
        self.failures[what] = self.failures.get(what, 0) + 1

    @property
    def rate(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else 0.0


# make_request() -> request bytes; check(status, body) -> None when the answer counts as a success,
# else a short description of the failure.
MakeRequest = Callable[[], bytes]
Check = Callable[[int, bytes], "str | None"]


async def closed_loop(
    target: Target,
    concurrency: int,
    make_request: MakeRequest,
    check: Check,
    duration_s: float,
    warmup_s: float,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> Tally:
    """`concurrency` clients, each sending its next request as soon as the previous one was answered.

    Only answers that arrive inside [warmup, warmup + duration] are counted. `gate`, when given, is
    awaited before every request (to hold clients back, e.g. while the queue is full).
    """
    tally = Tally(window_s=duration_s)
    conns = await open_connections(target, concurrency)
    start = time.perf_counter()
    tally.window_start_wall = time.time() + warmup_s
    counting_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies = tally.latencies_s

    async def client(index: int) -> None:
        clock = time.perf_counter
        while True:
            if gate is not None:
                await gate()
            sent = clock()
            if sent >= stop_at:
                return
            try:
                status, body = await conns[index].request(make_request())
            except (ConnectionError, OSError) as exc:
                tally.fail(f"connection: {exc.__class__.__name__}")
                conns[index].close()
                conns[index] = await Connection.open(target)
                continue
            done = clock()
            if done < counting_from or done > stop_at:
                continue
            problem = check(status, body)
            if problem is None:
                tally.ok += 1
                latencies.append(done - sent)
            else:
                tally.fail(problem)

    try:
        await asyncio.gather(*(client(i) for i in range(concurrency)))
    finally:
        for conn in conns:
            conn.close()
    return tally


async def fetch_all(target: Target, requests: list[bytes], concurrency: int) -> list[tuple[int, bytes]]:
    """Send every request once (in order of the list, `concurrency` at a time); answers in the same order."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    conns = [await Connection.open(target) for _ in range(min(concurrency, max(1, len(requests))))]
    next_index = 0

    async def client(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(requests):
            index = next_index
            next_index += 1
            answers[index] = await conn.request(requests[index])

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return answers


@dataclass
class Paced:
    """Open-loop submissions: when each was sent (wall clock) and what came back."""

    sent_at: list[float] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=list)
    answer_latency_s: list[float] = field(default_factory=list)
    late: int = 0  # submissions that found no idle connection on time
    duration_s: float = 0.0


async def open_loop(
    target: Target, rate: float, duration_s: float, make_request: MakeRequest, connections: int = 64
) -> Paced:
    """Send requests at a fixed rate whatever the answers do (submission i at start + i/rate)."""
    result = Paced()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    conns = await open_connections(target, connections)
    for conn in conns:
        pool.put_nowait(conn)
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * duration_s)
    result.sent_at = [0.0] * total
    result.answers = [(0, b"")] * total
    result.answer_latency_s = [0.0] * total
    result.duration_s = duration_s

    async def one(index: int, conn: Connection, request: bytes) -> None:
        result.sent_at[index] = time.time()
        sent = time.perf_counter()
        try:
            result.answers[index] = await conn.request(request)
        except (ConnectionError, OSError) as exc:
            result.answers[index] = (0, f"connection: {exc.__class__.__name__}".encode())
            conn.close()
            conn = await Connection.open(target)
            conns.append(conn)
        finally:
            result.answer_latency_s[index] = time.perf_counter() - sent
            pool.put_nowait(conn)

    start = time.perf_counter()
    try:
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if pool.empty():
                result.late += 1
            conn = await pool.get()
            tasks.append(asyncio.create_task(one(index, conn, make_request())))
        await asyncio.gather(*tasks)
    finally:
        for conn in conns:
            conn.close()
    return result
