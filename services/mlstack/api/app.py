"""FastAPI application factory (run by gunicorn with uvicorn workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mlstack import __version__
from mlstack.api import routes_health, routes_public, routes_worker
from mlstack.api.body_limit import BodyLimitMiddleware
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
"""

TAGS = [
    {"name": "inference", "description": "Recebe itens para inferência ou avaliação."},
    {"name": "feedback", "description": "Recebe o feedback dos usuários em relação às inferências."},
    {"name": "get_feedback", "description": "Solicita as informações consolidadas sobre os feedbacks."},
    {"name": "status", "description": "Obtém o status de um job."},
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


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's standard 422 answer, limited to the four keys the original clients see.
    detail = [{key: error.get(key) for key in ("type", "loc", "msg", "input")} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error: %s", exc.__class__.__name__, exc_info=exc)
    return JSONResponse({"status": "Error", "response": "Erro interno na API"}, status_code=500)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Created here, after gunicorn forked: each API process owns its connections.
        store = JobStore(settings.mongodb_uri, settings.mongodb_db)
        publisher = Publisher(settings.broker.amqp_url)
        publisher.start()
        app.state.services = Services(settings=settings, store=store, publisher=publisher)
        indexes = asyncio.create_task(_ensure_indexes(store))
        try:
            yield
        finally:
            indexes.cancel()
            await asyncio.to_thread(publisher.stop)
            await store.close()

    app = FastAPI(
        title="API de ML",
        description=DESCRIPTION,
        version=__version__,
        openapi_tags=TAGS,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(routes_public.router)
    app.include_router(routes_worker.router)
    app.include_router(routes_health.router)
    return app
