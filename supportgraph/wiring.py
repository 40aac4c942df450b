"""The composition root: which pack, model and adapters a service runs with, from the settings.

Only the edges (the API, the CLI, the eval harness, the benches, the Studio entry) call this
module; below it nothing reads settings or picks an adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from checkpoints import Persistence, open_persistence
from connectors.webhooks import WebhookDispatcher
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph.app.events import EventHub
from supportgraph.app.faults import CrashPoints
from supportgraph.app.graph import SupportGraph
from supportgraph.app.handoff import HandoffService
from supportgraph.app.service import SupportService
from supportgraph.domain.llm import BudgetedChatOpenAI, Models
from supportgraph.domain.loader import load_pack
from supportgraph.domain.local.intents import IntentClassifier
from supportgraph.domain.pack import Pack
from supportgraph.domain.ports import AuditSink, RequestSink
from supportgraph.domain.retrieval import FaqIndex
from supportgraph.domain.webhooks import WebhookConfig
from supportgraph.settings import Settings


def models(settings: Settings) -> Models | None:
    """The chat models per node, or ``None`` when no API key is set (local mode)."""
    if settings.openai_api_key is None:
        return None

    def make(name: str | None) -> BudgetedChatOpenAI:
        return BudgetedChatOpenAI(
            model=name or settings.model,
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            temperature=settings.llm_temperature,
            max_tokens=settings.llm_max_tokens,
            max_calls_per_turn=settings.llm_max_calls_per_turn,
            max_tokens_per_turn=settings.llm_max_tokens_per_turn,
        )

    return Models(
        classify=make(settings.model_classify),
        extract=make(settings.model_extract),
        answer=make(settings.model_answer),
        method=settings.structured_output_method,
    )


def support_context(
    settings: Settings,
    *,
    pack: Pack | None = None,
    requests: RequestSink | None = None,
    audit: AuditSink | None = None,
) -> SupportContext:
    """Load the pack, fit the local mode and build the models the settings name."""
    pack = pack or load_pack(settings.pack_path)
    threshold = settings.low_confidence
    if threshold is None:
        threshold = pack.spec.escalation.low_confidence
    return SupportContext(
        pack=pack,
        faq_index=FaqIndex(pack.faq, cache_dir=settings.index_cache_dir()),
        classifier=IntentClassifier(pack.intent_examples()),
        low_confidence=threshold,
        models=models(settings),
        requests=requests,
        audit=audit,
    )


def webhooks(settings: Settings) -> WebhookConfig | None:
    """Where webhooks go and how they are signed and retried; ``None`` when no URL is set."""
    if not settings.webhook_urls or settings.webhook_secret is None:
        return None  # the settings refuse URLs without a secret
    return WebhookConfig(
        urls=tuple(settings.webhook_urls),
        secret=settings.webhook_secret.get_secret_value(),
        events=frozenset(settings.webhook_events),
        max_age=timedelta(hours=settings.webhook_max_age_hours),
        timeout=settings.webhook_timeout,
        backoff_initial=settings.webhook_backoff_initial,
        backoff_max=settings.webhook_backoff_max,
        poll_seconds=settings.webhook_poll_seconds,
    )


def persistence(settings: Settings) -> AbstractAsyncContextManager[Persistence]:
    """The configured database (PostgreSQL when a URL is set, else the SQLite file)."""
    return open_persistence(
        database_url=settings.database_url,
        sqlite_path=settings.sqlite_path,
        pool_min_size=settings.pool_min_size,
        pool_max_size=settings.pool_max_size,
        pool_timeout=settings.pool_timeout,
        pool_max_idle=settings.pool_max_idle,
        pool_max_lifetime=settings.pool_max_lifetime,
        lease_seconds=settings.lease_seconds,
    )


def support_service(
    settings: Settings,
    persistence: Persistence,
    context: SupportContext,
    *,
    events: EventHub,
) -> SupportService:
    """The conversation service on this database, with the graph compiled on its saver."""
    return SupportService(
        graph=SupportGraph(build_graph().compile(checkpointer=persistence.saver)),
        context=context,
        store=persistence.store,
        retention=persistence.retention,
        durability=settings.durability,
        events=events,
        chunk_delay=settings.stream_chunk_delay,
        keep_checkpoints=settings.keep_checkpoints,
        busy_policy=settings.busy_policy,
        max_turns=settings.max_turns_per_session,
        crash=CrashPoints(settings.fault_crash_at),
    )


@dataclass
class Services:
    """A running service: the conversation and hand-off services on one database."""

    support: SupportService
    handoff: HandoffService
    persistence: Persistence


@asynccontextmanager
async def running(
    settings: Settings, *, pack: Pack | None = None, deliver_webhooks: bool = True
) -> AsyncIterator[Services]:
    """Open the database, build the services, follow other processes' events and (unless
    ``deliver_webhooks`` is off) deliver webhooks, until the block ends."""
    config = webhooks(settings)
    async with persistence(settings) as db:
        context = support_context(settings, pack=pack, requests=db.store, audit=db.store)
        hub = EventHub(db.store, webhooks=config, heartbeat=settings.sse_heartbeat_seconds)
        support = support_service(settings, db, context, events=hub)
        dispatcher = (
            WebhookDispatcher(db.store, config, wake=hub.outbox_added, crash=support.crash)
            if config is not None and deliver_webhooks
            else None
        )
        await hub.start()
        if dispatcher is not None:
            await dispatcher.start()
        try:
            yield Services(support=support, handoff=HandoffService(support), persistence=db)
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            await support.aclose()
            await hub.stop()
