"""``SupportContext``: everything a node may use, injected through LangGraph's ``Runtime``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from langgraph.runtime import Runtime

from nodes.prompts import ANSWER_PROMPT, CLASSIFY_PROMPT, EXTRACT_PROMPT
from nodes.schemas import Schemas, build_schemas
from supportgraph.domain.actions import REGISTRY, ActionType
from supportgraph.domain.guard import Guard
from supportgraph.domain.llm import Models
from supportgraph.domain.local.intents import IntentClassifier
from supportgraph.domain.pack import Pack
from supportgraph.domain.ports import AuditSink, RecordSource, RequestSink
from supportgraph.domain.records import PackRecords
from supportgraph.domain.retrieval import FaqIndex


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
    records: Mapping[str, RecordSource] = field(default_factory=dict)
    """Record sources by the name actions use (``data/orders.csv``); default: the pack's files."""

    @property
    def auditor(self) -> AuditSink | None:
        """The audit sink: ``audit``, else the request sink when it audits too (our store)."""
        if self.audit is not None:
            return self.audit
        return self.requests if isinstance(self.requests, AuditSink) else None

    def record_source(self, name: str) -> RecordSource:
        """The records an action names: a configured source, else the pack's data file."""
        return self.records.get(name) or PackRecords(self.pack, name)

    @cached_property
    def guard(self) -> Guard:
        """The output guard of the pack (built once), knowing the nodes' prompts too."""
        return Guard.for_pack(self.pack, (CLASSIFY_PROMPT, EXTRACT_PROMPT, ANSWER_PROMPT))

    @cached_property
    def schemas(self) -> Schemas:
        """The pack's structured-output models (built once)."""
        return build_schemas(self.pack)


def deps(runtime: Runtime[SupportContext]) -> SupportContext:
    """The node's dependencies; a run without a :class:`SupportContext` is a wiring mistake."""
    ctx = runtime.context
    if not isinstance(ctx, SupportContext):
        raise TypeError(
            f"the support graph needs a SupportContext, got {type(ctx).__name__}: edges pass"
            " context=SupportContext(...), and the Studio graph builds one (supportgraph.studio)"
        )
    return ctx
