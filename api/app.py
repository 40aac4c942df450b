"""``create_app(settings)``: the FastAPI app, its resources opened and closed in ``lifespan``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.agent_auth import AgentTokens
from api.auth import SessionTokens
from api.errors import install_error_handlers
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware
from api.openapi import install_openapi
from api.ratelimit import AGENT_LIMITS, CUSTOMER_LIMITS, RATE_LIMITED_RESPONSE, install_rate_limits
from api.routes import admin, agent, health, pages, sessions, stream, support
from supportgraph import wiring
from supportgraph.domain.loader import load_pack
from supportgraph.logs import configure_logging
from supportgraph.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the pack is validated now, so an invalid one fails at start-up."""
    settings = settings or Settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    pack = load_pack(settings.pack_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with wiring.running(settings, pack=pack) as services:
            app.state.service = services.support
            app.state.handoff = services.handoff
            app.state.persistence = services.persistence
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
    app.state.agent_tokens = AgentTokens.from_settings(settings)
    install_error_handlers(app)
    install_openapi(app)
    install_rate_limits(app, settings)
    # Customer and agent routes are rate limited (api/ratelimit.py); health and pages are not.
    for router in (support.router, stream.router, sessions.router, admin.router):
        app.include_router(router, dependencies=CUSTOMER_LIMITS, responses=RATE_LIMITED_RESPONSE)
    app.include_router(agent.router, dependencies=AGENT_LIMITS, responses=RATE_LIMITED_RESPONSE)
    app.include_router(health.router)
    pages.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "Last-Event-ID",
                "X-API-Key",
                "X-Customer-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        SecurityHeadersMiddleware, frame_ancestors=settings.frame_ancestors, hsts=settings.hsts
    )
    app.add_middleware(RequestIdMiddleware)
    if settings.trusted_proxies:
        # Outermost: every layer (logs, rate limits) sees the client the proxy names.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app
