"""Liveness and readiness probes (no auth: they reveal nothing but up/down)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mlstack.api.services import ServicesDep

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    mongodb = await services.store.ping()
    rabbitmq = services.publisher.ready
    ok = mongodb and rabbitmq
    body = {"status": "ok" if ok else "unavailable", "mongodb": mongodb, "rabbitmq": rabbitmq}
    return JSONResponse(body, status_code=200 if ok else 503)
