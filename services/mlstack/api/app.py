"""FastAPI application factory (run by gunicorn with uvicorn workers)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from mlstack import __version__
from mlstack.api import routes_health, routes_ops, routes_public, routes_worker
from mlstack.api.auth import AuthMiddleware
from mlstack.api.body_limit import BodyLimitMiddleware
from mlstack.api.errors import ContractError, contract_error, unexpected_error, validation_error
from mlstack.api.jsonsafe import SafeJSONResponse
from mlstack.api.result_metrics import ResultMetricsMiddleware
from mlstack.api.services import Services
from mlstack.broker import Publisher
from mlstack.jobstore import JobStore, StoreError
from mlstack.logging_setup import configure_logging
from mlstack.settings import ApiSettings

log = logging.getLogger(__name__)

DESCRIPTION = """
API para servir modelos de ML (Machine Learning).

### Endpoints principais
* **inference**: Recebe itens para inferência ou avaliação. Também retorna informações sobre um modelo publicado.
* **feedback**: Recebe o feedback dos usuários em relação às inferências feitas pelos modelos.
* **get_feedback**: Solicita as informações consolidadas sobre os feedbacks informados pelos usuários.
* **status**: Obtém o status de um job.
* **cancel**: Cancela um job que ainda está na fila.

Operadores: `/metrics` (Prometheus) e `/dashboard` (painel ao vivo).
"""

TAGS = [
    {"name": "inference", "description": "Recebe itens para inferência ou avaliação."},
    {"name": "feedback", "description": "Recebe o feedback dos usuários em relação às inferências."},
    {"name": "get_feedback", "description": "Solicita as informações consolidadas sobre os feedbacks."},
    {"name": "status", "description": "Obtém o status de um job."},
    {"name": "cancel", "description": "Cancela um job que ainda está na fila (status 'Queued')."},
    {"name": "version", "description": "Obtém a versão da stack."},
    {"name": "health", "description": "Prontidão e vida do processo da API."},
]


async def _ensure_indexes(store: JobStore) -> None:
    """Create indexes as soon as the database answers; the API serves meanwhile."""
    delay = 0.5
    while True:
        try:
            await store.ensure_indexes()
            return
        except StoreError as exc:
            log.warning("cannot create indexes yet (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _purge_expired_jobs(store: JobStore, interval_s: float) -> None:
    """Delete jobs past their retention period, every ``interval_s`` (each API process does it;
    the delete is idempotent, and the random first delay spreads the processes apart)."""
    await asyncio.sleep(random.uniform(0, interval_s))
    while True:
        try:
            deleted = await store.purge_expired_jobs(time.time())
            if deleted:
                log.info("retention: deleted %d expired jobs", deleted)
        except StoreError as exc:
            log.warning("retention purge failed (%s); next try in %.0fs", exc.__class__.__name__, interval_s)
        await asyncio.sleep(interval_s)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Created here, after gunicorn forked: each API process owns its connections.
        store = JobStore(settings.mongodb_uri, settings.mongodb_db, retention_days=settings.job_retention_days)
        broker = settings.broker
        publisher = Publisher(broker.amqp_urls, queue_max_length=broker.queue_max_length, queue_type=broker.queue_type)
        publisher.start()
        app.state.services = Services(settings=settings, store=store, publisher=publisher)
        indexes = asyncio.create_task(_ensure_indexes(store))
        purge = asyncio.create_task(_purge_expired_jobs(store, settings.job_purge_interval_s))
        try:
            yield
        finally:
            indexes.cancel()
            purge.cancel()
            await asyncio.to_thread(publisher.stop)
            await store.close()

    app = FastAPI(
        title="API de ML",
        description=DESCRIPTION,
        version=__version__,
        openapi_tags=TAGS,
        docs_url=None,  # served by routes_ops with the package's own Swagger UI files (no CDN)
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    # The last added runs first: the token is checked before the body limit reads a byte, and the
    # result figures see only requests that passed both.
    app.add_middleware(ResultMetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, api_token=settings.api_token, worker_token=settings.worker_token)
    app.add_exception_handler(ContractError, contract_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(routes_public.router)
    app.include_router(routes_worker.router)
    app.include_router(routes_health.router)
    app.include_router(routes_ops.router)
    app.mount("/static", StaticFiles(directory=routes_ops.STATIC_DIR), name="static")
    return app
