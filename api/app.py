"""``create_app(settings)``: the FastAPI app, its resources opened and closed in ``lifespan``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.auth import SessionTokens
from api.errors import install_error_handlers
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from api.routes import health, support
from checkpoints import open_persistence
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph.logs import configure_logging
from supportgraph.pack import load_pack
from supportgraph.service import SupportService
from supportgraph.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the pack is validated now, so an invalid one fails at start-up."""
    settings = settings or Settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    pack = load_pack(settings.pack_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_persistence(
            database_url=settings.database_url,
            sqlite_path=settings.sqlite_path,
            pool_min_size=settings.pool_min_size,
            pool_max_size=settings.pool_max_size,
            pool_timeout=settings.pool_timeout,
        ) as persistence:
            context = SupportContext.from_settings(settings, requests=persistence.store, pack=pack)
            graph = build_graph().compile(checkpointer=persistence.saver)
            app.state.service = SupportService(
                graph=graph,
                context=context,
                store=persistence.store,
                durability=settings.durability,
            )
            app.state.persistence = persistence
            yield

    app = FastAPI(
        title="supportgraph",
        version="0.1.0",
        description="Customer-support agent service: chat with the bot, read a session.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = SessionTokens(
        settings.signing_key(), ttl=timedelta(days=settings.session_token_ttl_days)
    )
    install_error_handlers(app)
    app.include_router(support.router)
    app.include_router(health.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
