"""``handle_faq``: answer from the best FAQ entries, citing them; never invent an answer."""

from __future__ import annotations

import logging

from langgraph.runtime import Runtime

from graphs.state import StateUpdate, SupportState
from nodes.common import (
    action_call,
    latest_customer_text,
    model_messages,
    say,
    step,
    tried,
    usage_of,
    window_texts,
)
from nodes.context import SupportContext, deps
from nodes.prompts import ANSWER_PROMPT
from supportgraph.domain import policy
from supportgraph.domain.actions import audit
from supportgraph.domain.llm import structured
from supportgraph.domain.retrieval import Hit
from supportgraph.domain.types import Citation, Usage

log = logging.getLogger("supportgraph.faq")


async def handle_faq(state: SupportState, runtime: Runtime[SupportContext]) -> StateUpdate:
    """Retrieve FAQ entries for the latest message and answer from them, or route on."""
    ctx = deps(runtime)
    settings = ctx.pack.spec.faq
    text = latest_customer_text(state)
    hits = ctx.faq_index.search(
        text, k=settings.top_k, min_score=settings.min_score, min_coverage=settings.min_coverage
    )
    usage = usage_of(state)
    update: StateUpdate = {"route": step(state, "handle_faq"), "usage": usage}
    answer, used = await _answer(state, ctx, hits, usage)
    if answer:
        citations = [Citation(id=h.entry.id, title=h.entry.title) for h in used]
        what = "faq: " + ", ".join(c["id"] for c in citations)
        return {
            **update,
            **say(state, ctx, answer),
            "citations": citations,
            "tried": tried(state, what),
            "summary": _summary(state, what),
            "status": "active",
            "failures": 0,
            "outcome": "answered",
        }
    if state.get("intent") == "other":
        return {
            **update,
            **say(state, ctx, ctx.pack.message("clarify")),
            "status": "active",
            "outcome": "clarified",
        }
    return {**update, **_miss(state, ctx)}


async def _answer(
    state: SupportState, ctx: SupportContext, hits: list[Hit], usage: Usage
) -> tuple[str, list[Hit]]:
    """The answer text and the entries it used ('' when the FAQ has no answer).

    The output guard checks in code what a model (or a poisoned article) wrote: an article
    holding another customer's data, a secret or a prompt is neither sent to the model nor
    shown, and a model's answer that holds one, or an identifier that neither the articles
    nor the conversation contain, gives way to the best article's own text.
    """
    conversation = window_texts(state)
    safe = [h for h in hits if _unsafe(ctx, h.entry.body, [h], conversation) is None]
    if len(safe) < len(hits):
        await _refused(state, ctx, "article")
    hits = safe
    if not hits:
        return "", []
    if ctx.models is not None:
        articles = "\n\n".join(f"[{h.entry.id}] {h.entry.title}\n{h.entry.body}" for h in hits)
        result = await structured(
            ctx.models.answer,
            ctx.schemas.faq_answer,
            model_messages(ANSWER_PROMPT.format(articles=articles), state, ctx),
            usage,
            purpose="faq_answer",
            method=ctx.models.method,
        )
        if result is not None:
            if not result.answerable or not result.answer.strip():
                return "", []
            used = [h for h in hits if h.entry.id in set(result.used_ids)] or hits[:1]
            reason = _unsafe(ctx, result.answer, hits, conversation)
            if reason is None:
                return result.answer.strip(), used
            await _refused(state, ctx, reason)
    best = hits[0]
    return best.entry.body, [best]


def _unsafe(ctx: SupportContext, text: str, hits: list[Hit], conversation: list[str]) -> str | None:
    sources = [f"{h.entry.title}\n{h.entry.body}" for h in hits]
    return ctx.guard.unsafe_answer(text, sources=sources, conversation=conversation)


async def _refused(state: SupportState, ctx: SupportContext, reason: str) -> None:
    """Log and audit a withheld answer (the reason names a check, never the text)."""
    log.warning("faq answer withheld", extra={"reason": reason})
    call = action_call(state, ctx, "faq_answer", {})
    await audit(call, kind="reply", outcome="refused", reason="refused_by_policy")


def _miss(state: SupportState, ctx: SupportContext) -> StateUpdate:
    """No answer in the FAQ: collect details for a ticket, or hand over, by the pack's rule."""
    failures = state.get("failures", 0) + 1
    what = f"faq: no answer for {state.get('intent')}"
    update: StateUpdate = {
        "failures": failures,
        "tried": tried(state, what),
        "summary": _summary(state, what),
        "outcome": "no_answer",
    }
    ticket = policy.on_faq_miss(ctx.pack, failures)
    if ticket is None:
        return {**update, "handoff_reason": "no_answer"}
    return {**update, "intent": ticket, "slots": None, "missing": []}


def _summary(state: SupportState, what: str) -> str:
    items = [*state.get("tried", [])[-4:], what]
    return "; ".join(items)
