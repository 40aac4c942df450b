"""The two web pages, static files without a build step: ``/`` (chat widget) and ``/agent``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def chat_page() -> FileResponse:
    """The chat widget demo page."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/agent")
async def agent_page() -> FileResponse:
    """The agent console."""
    return FileResponse(STATIC / "agent.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Serve the pages and their assets (``/static/...``)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
