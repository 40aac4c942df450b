"""``SupportContext``: everything a node may use, injected through LangGraph's ``Runtime``."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any

from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from pydantic import BaseModel
from typing_extensions import TypedDict

from supportgraph.actions import REGISTRY, ActionType, AuditSink, RequestSink
from supportgraph.guard import Guard
from supportgraph.llm import Models
from supportgraph.local.intents import IntentClassifier
from supportgraph.pack import Pack, load_pack
from supportgraph.retrieval import FaqIndex
from supportgraph.settings import Settings


@dataclass(kw_only=True)
class SupportContext:
    """The domain pack, the brains (model and local mode), retrieval, actions and storage."""

    pack: Pack
    faq_index: FaqIndex
    classifier: IntentClassifier
    low_confidence: float
    models: Models | None = None
    requests: RequestSink | None = None
    audit: AuditSink | None = None
    """Where action decisions are audited (default: the request sink, when it can)."""
    actions: Mapping[str, ActionType] = field(default_factory=lambda: dict(REGISTRY))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, requests: RequestSink | None = None, pack: Pack | None = None
    ) -> SupportContext:
        """Load the pack, fit the local mode and build the models the settings name."""
        pack = pack or load_pack(settings.pack_path)
        threshold = settings.low_confidence
        if threshold is None:
            threshold = pack.spec.escalation.low_confidence
        return cls(
            pack=pack,
            faq_index=FaqIndex(pack.faq, cache_dir=settings.index_cache_dir()),
            classifier=IntentClassifier(pack.intent_examples()),
            low_confidence=threshold,
            models=Models.from_settings(settings),
            requests=requests,
        )

    @property
    def auditor(self) -> AuditSink | None:
        """The audit sink: ``audit``, else the request sink (the service's store audits too)."""
        if self.audit is not None:
            return self.audit
        return self.requests if hasattr(self.requests, "audit_action") else None  # type: ignore[return-value]

    @cached_property
    def guard(self) -> Guard:
        """The output guard of the pack (built once), knowing the nodes' prompts too."""
        from nodes.classify import CLASSIFY_PROMPT
        from nodes.collect import EXTRACT_PROMPT
        from nodes.faq import ANSWER_PROMPT

        return Guard.for_pack(self.pack, (CLASSIFY_PROMPT, EXTRACT_PROMPT, ANSWER_PROMPT))

    @cached_property
    def schemas(self) -> dict[str, type[BaseModel]]:
        """The pack's structured-output models (built once)."""
        from nodes.schemas import build_schemas

        return build_schemas(self.pack)


class ServerContext(TypedDict, total=False):
    """The run context the LangGraph server (Studio) sends: JSON, read by no node.

    The Studio graph declares this schema instead of :class:`SupportContext`. LangGraph turns
    a dict context into an instance of a dataclass schema (``SupportContext(**context)``,
    which fails on every run), but passes it through unchanged for a ``TypedDict``; and the
    server can publish this schema (Studio's schemas endpoint fails on ``SupportContext``).
    It comes from ``typing_extensions`` because pydantic needs that on Python < 3.12.
    """


def deps(runtime: Runtime[Any]) -> SupportContext:
    """The node's dependencies.

    Edges pass ``context=SupportContext(...)``. A run without one (LangGraph Studio, whose
    server builds the context from the run's JSON) gets a context built lazily from the
    environment's settings, with requests written to the server's store.
    """
    ctx = runtime.context
    if isinstance(ctx, SupportContext):
        return ctx
    if ctx is not None and not isinstance(ctx, dict):
        raise TypeError(f"the support graph needs a SupportContext, got {type(ctx).__name__}")
    ctx = _default_context()
    if ctx.requests is None and runtime.store is not None:
        return replace(ctx, requests=StoreRequestSink(runtime.store))
    return ctx


async def load_default_context() -> SupportContext:
    """Build (once) the context ``deps()`` falls back to, in a worker thread.

    Loading the pack and fitting the local mode reads files and takes seconds: done inside a
    node it would stall the LangGraph server's event loop (``langgraph dev`` rejects it
    with a ``BlockingError``), so the Studio graph awaits this before its first run.
    """
    return await asyncio.to_thread(_default_context)


def pseudonym(session_id: str) -> str:
    """The session's name in audit entries (as ``checkpoints.store.pseudonym``)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@lru_cache(maxsize=1)
def _default_context() -> SupportContext:
    return SupportContext.from_settings(Settings())


class StoreRequestSink:
    """Requests written to a LangGraph store (used where the LangGraph server owns storage)."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, Any], idempotency_key: str
    ) -> str:
        """Store the request once per idempotency key; return its id."""
        namespace = ("supportgraph", "requests", session_id or "unknown")
        existing = await self.store.aget(namespace, idempotency_key)
        if existing is not None:
            return str(existing.value["id"])
        request_id = "R-" + secrets.token_hex(4).upper()
        value = {"id": request_id, "kind": kind, "data": data, "status": "open"}
        await self.store.aput(namespace, idempotency_key, value)
        return request_id

    async def audit_action(
        self,
        *,
        session_id: str,
        action: str,
        kind: str,
        outcome: str,
        reason: str,
        record_ref: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Append an audit entry under the session's pseudonym."""
        namespace = ("supportgraph", "audit", pseudonym(session_id))
        entry = {
            "action": action,
            "kind": kind,
            "outcome": outcome,
            "reason": reason,
            "record_ref": record_ref,
            "request_id": request_id,
            "at": datetime.now(UTC).isoformat(),
        }
        await self.store.aput(namespace, secrets.token_hex(8), entry)
