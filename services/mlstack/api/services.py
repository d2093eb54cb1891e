"""Per-process services shared by the routes: settings, job store, publisher, small caches."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from mlstack import metrics
from mlstack.broker import BrokerUnavailable, Publisher
from mlstack.jobstore import JobStore
from mlstack.settings import ApiSettings

# The registry changes when workers register; a short cache keeps /inference off the database.
REGISTRY_CACHE_S = 2.0
# Consumer counts come from the broker; a short cache keeps /inference off a broker round trip.
CONSUMERS_CACHE_S = 1.0


@dataclass
class _Cached:
    value: object
    expires: float


@dataclass
class Services:
    settings: ApiSettings
    store: JobStore
    publisher: Publisher
    _queues: dict[str, _Cached] = field(default_factory=dict)
    _consumers: dict[str, _Cached] = field(default_factory=dict)

    async def model_queue(self, model_name: str) -> str | None:
        """Queue of a model some worker registered, or None. Raises StoreError."""
        now = time.monotonic()
        cached = self._queues.get(model_name)
        if cached is not None and cached.expires > now:
            return cached.value  # type: ignore[return-value]
        queue = await self.store.registered_queue(model_name)
        # Only hits are cached: a model registered a moment ago must be found at once, and
        # unknown names sent by clients must not grow this cache.
        if queue:
            self._queues[model_name] = _Cached(queue, now + REGISTRY_CACHE_S)
        return queue

    def forget_model(self, model_name: str) -> None:
        self._queues.pop(model_name, None)

    async def consumer_count(self, queue: str) -> int:
        """Workers consuming the queue now. Raises BrokerUnavailable."""
        now = time.monotonic()
        cached = self._consumers.get(queue)
        if cached is not None and cached.expires > now and cached.value:
            return cached.value  # type: ignore[return-value]
        count = await self._await(self.publisher.declare(queue))
        self._consumers[queue] = _Cached(count, now + CONSUMERS_CACHE_S)
        return count

    async def publish(self, queue: str, body: bytes, job_id: str, ttl_ms: int) -> None:
        """Resolves once the broker confirmed the message. Raises BrokerUnavailable or NoRoute."""
        started = time.perf_counter()
        await self._await(self.publisher.publish(queue, body, job_id, ttl_ms))
        metrics.PUBLISH_CONFIRM_SECONDS.observe(time.perf_counter() - started)

    async def _await(self, future):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.broker.confirm_timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable("no confirm from the broker in time") from exc


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
