"""``classify_intent``: read the latest customer message and apply the policy to the topic."""

from __future__ import annotations

from langgraph.runtime import Runtime

from graphs.state import StateUpdate, SupportState
from nodes.common import (
    audit_intent,
    latest_customer_id,
    latest_customer_text,
    model_messages,
)
from nodes.context import SupportContext, deps
from nodes.prompts import CLASSIFY_PROMPT
from supportgraph.domain import policy
from supportgraph.domain.llm import structured
from supportgraph.domain.local import text as local_text
from supportgraph.domain.policy import Memory, Reading
from supportgraph.domain.types import Confirmation, Sentiment, Usage, empty_usage

LONG_TEXT = 1500
"""Characters of a long message the local classifier reads (its start and its end)."""


async def classify_intent(state: SupportState, runtime: Runtime[SupportContext]) -> StateUpdate:
    """Read the latest message (intent, confidence, sentiment, yes/no) and move the topic."""
    ctx = deps(runtime)
    text = latest_customer_text(state)
    usage = empty_usage()
    update: StateUpdate = {
        "route": ["classify_intent"],
        "turn": state.get("turn", 0) + 1,
        "usage": usage,
        "pack_version": state.get("pack_version") or ctx.pack.version,
    }
    if state.get("status") == "escalated":
        # A person has the conversation: nothing to read, nothing to answer.
        return update
    memory = _memory(state)
    local = None
    awaited = False
    if policy.may_answer_open_question(ctx.pack, memory, text):
        local = await _local_reading(ctx, text)
        awaited = not policy.starts_other_transaction(ctx.pack, memory, local)
    # A value for what was just asked decides the turn by itself: no model call needed.
    reading = await _read(state, ctx, text, usage, local, use_model=not awaited)
    update = {
        **update,
        "confidence": reading.confidence,
        "sentiment": reading.sentiment,
        "confirmation": reading.confirmation,
    }
    if state.get("status") == "resolved":
        reset: StateUpdate = {"status": "active", "missing": [], "failures": 0}
        update = {**update, **reset, "pending_action": None}
    transition, new_topic = policy.on_message(ctx.pack, memory, reading)
    update = {**update, **transition}
    if new_topic:
        update["topic_start"] = latest_customer_id(state)
    pending = memory.get("pending_action")
    if (
        pending is not None
        and "pending_action" in transition
        and transition["pending_action"] is None
    ):
        # A change of topic dropped a stated action before any yes: it was not taken.
        await audit_intent(state, ctx, pending["intent"], "refused", "abandoned")
    return update


def _memory(state: SupportState) -> Memory:
    """What the policy reads of the conversation: a resolved one starts a new topic."""
    if state.get("status") != "resolved":
        return state
    return Memory(
        status="active",
        intent=state.get("intent"),
        slots=state.get("slots") or {},
        missing=state.get("missing") or [],
        pending_action=None,
        low_confidence_turns=state.get("low_confidence_turns", 0),
        negative_turns=state.get("negative_turns", 0),
    )


async def _local_reading(ctx: SupportContext, text: str) -> Reading:
    """The local classifier's reading of the intent (sentiment and yes/no come later)."""
    intent, confidence = await _local_intent(ctx, text)
    return Reading(text, intent, confidence, "neutral", "none")


async def _read(
    state: SupportState,
    ctx: SupportContext,
    text: str,
    usage: Usage,
    local: Reading | None,
    *,
    use_model: bool,
) -> Reading:
    """Intent, confidence, sentiment and yes/no answer: from the model, else the local mode.

    ``local``: the local classifier's reading, when it was already taken.
    """
    esc = ctx.pack.spec.escalation
    conf = ctx.pack.spec.confirmation
    result = None
    if ctx.models is not None and use_model:
        intents = "\n".join(
            f"- {i.name}: {i.description or i.examples[0]}" for i in ctx.pack.spec.intents
        )
        result = await structured(
            ctx.models.classify,
            ctx.schemas.classification,
            model_messages(CLASSIFY_PROMPT.format(intents=intents), state, ctx),
            usage,
            purpose="classify",
            method=ctx.models.method,
        )
    sentiment: Sentiment
    answer: Confirmation
    if result is not None:
        intent, confidence = result.intent, result.confidence
        sentiment, answer = result.sentiment, result.confirmation
    else:
        if local is None:
            local = await _local_reading(ctx, text)
        intent, confidence = local.intent, local.confidence
        sentiment = local_text.sentiment(text, esc.negative_words)
        answer = local_text.confirmation(text, yes=conf.yes, no=conf.no)
    if confidence < ctx.low_confidence:
        intent = "other"
    if sentiment != "negative" and local_text.sentiment(text, esc.negative_words) == "negative":
        sentiment = "negative"
    if not state.get("pending_action"):
        answer = "none"
    return Reading(text, intent, confidence, sentiment, answer)


async def _local_intent(ctx: SupportContext, text: str) -> tuple[str, float]:
    """The local classifier's intent; FAQ-answered intents pool their confidence.

    ``faq`` and the pack's intents with no slots and no action all go to handle_faq, so when
    the best one is among them their scores add up: "do you ship to Canada?" split between
    ``faq`` and ``shipping_question`` is still clearly a FAQ question.
    """
    if len(text) > LONG_TEXT:
        # A pasted thread puts the request at the end: read its start and its end.
        text = f"{text[: LONG_TEXT // 2]} {text[-LONG_TEXT // 2 :]}"
    ranked = await ctx.classifier.arank(text, k=5)
    if not ranked:
        return "other", 0.0
    best = ranked[0]
    if not policy.faq_answered(ctx.pack, best.intent):
        return best.intent, best.score
    pooled = sum(r.score for r in ranked if policy.faq_answered(ctx.pack, r.intent))
    return best.intent, min(1.0, pooled)
