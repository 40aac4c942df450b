"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServiceDep
from api.errors import documented, error_response
from api.schemas import Health
from supportgraph.domain.ports import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, response_model_exclude_none=True)
async def health() -> Health:
    """The process is up."""
    return Health(status="healthy")


@router.get("/ready", response_model=Health, responses=documented({503: "Database unavailable"}))
async def ready(service: ServiceDep) -> Health | JSONResponse:
    """The database answers."""
    try:
        backend = await service.ready()
    except StoreUnavailable:
        return error_response(503, "the database is unavailable", details={"database": "down"})
    return Health(status="ready", database=backend)
