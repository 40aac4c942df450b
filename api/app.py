"""``create_app(settings)``: the FastAPI app, its resources opened and closed in ``lifespan``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.agent_auth import AgentTokens
from api.auth import SessionTokens
from api.errors import error_response, install_error_handlers
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware
from api.openapi import install_openapi
from api.ratelimit import AGENT_LIMITS, CUSTOMER_LIMITS, RATE_LIMITED_RESPONSE, install_rate_limits
from api.routes import admin, agent, health, pages, sessions, stream, support
from checkpoints import open_persistence
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph.events import EventHub
from supportgraph.handoff import HandoffService
from supportgraph.logs import configure_logging
from supportgraph.pack import load_pack
from supportgraph.service import SessionBusy, SupportService
from supportgraph.settings import Settings
from supportgraph.webhooks import WebhookConfig, WebhookDispatcher


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the pack is validated now, so an invalid one fails at start-up."""
    settings = settings or Settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    pack = load_pack(settings.pack_path)
    webhooks = WebhookConfig.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_persistence(
            database_url=settings.database_url,
            sqlite_path=settings.sqlite_path,
            pool_min_size=settings.pool_min_size,
            pool_max_size=settings.pool_max_size,
            pool_timeout=settings.pool_timeout,
            pool_max_idle=settings.pool_max_idle,
            pool_max_lifetime=settings.pool_max_lifetime,
        ) as persistence:
            context = SupportContext.from_settings(settings, requests=persistence.store, pack=pack)
            graph = build_graph().compile(checkpointer=persistence.saver)
            hub = EventHub(
                persistence.store, webhooks=webhooks, heartbeat=settings.sse_heartbeat_seconds
            )
            app.state.service = SupportService(
                graph=graph,
                context=context,
                store=persistence.store,
                durability=settings.durability,
                events=hub,
                chunk_delay=settings.stream_chunk_delay,
                keep_checkpoints=settings.keep_checkpoints,
                busy_policy=settings.busy_policy,
                max_turns=settings.max_turns_per_session,
            )
            app.state.handoff = HandoffService(app.state.service)
            app.state.persistence = persistence
            dispatcher = (
                WebhookDispatcher(persistence.store, webhooks, wake=hub.outbox_added)
                if webhooks
                else None
            )
            await hub.start()
            if dispatcher is not None:
                await dispatcher.start()
            try:
                yield
            finally:
                if dispatcher is not None:
                    await dispatcher.stop()
                await app.state.service.aclose()
                await hub.stop()

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
    app.add_exception_handler(SessionBusy, _session_busy)  # type: ignore[arg-type]
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


async def _session_busy(_: object, exc: SessionBusy) -> JSONResponse:
    """409 with Retry-After: a turn of the session runs and the busy policy is ``reject``."""
    return error_response(
        409,
        "a message of this session is being answered; send this one after it",
        code="session_busy",
        headers={"Retry-After": str(exc.retry_after)},
    )
