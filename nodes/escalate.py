"""``escalate_human``: hand the conversation to a person with a typed reason and a summary."""

from __future__ import annotations

from datetime import UTC, datetime

from langgraph.runtime import Runtime

from graphs.state import StateUpdate, SupportState
from nodes.common import say, step
from nodes.context import SupportContext, deps
from supportgraph.domain.types import Escalation, EscalationReason

REASON_TEXT: dict[EscalationReason, str] = {
    "requested_human": "the customer asked for a person",
    "low_confidence": "the assistant did not understand the customer {n} times in a row",
    "human_only_intent": "the topic ({intent}) is handled by people only",
    "repeated_failure": "{n} failed attempts on {intent}",
    "negative_sentiment": "the customer is unhappy",
    "no_answer": "the help articles have no answer for {intent}",
}


async def escalate_human(state: SupportState, runtime: Runtime[SupportContext]) -> StateUpdate:
    """Record the hand-off packet and tell the customer what happens next.

    Later messages in an escalated thread reach this node too: they are kept in the transcript
    by the service and in the window here, and the bot does not answer them.
    """
    ctx = deps(runtime)
    route = step(state, "escalate_human")
    if state.get("status") == "escalated":
        return {"route": route, "reply": "", "outcome": "with_person"}
    reason = state.get("handoff_reason")
    if reason is None:
        raise ValueError("escalate_human reached without a hand-off reason")
    intent = state.get("intent")
    slots = dict(state.get("slots") or {})
    tried_list = list(state.get("tried", []))
    n = (
        state.get("failures", 0)
        if reason == "repeated_failure"
        else state.get("low_confidence_turns", 0)
    )
    detail = REASON_TEXT[reason].format(n=n, intent=intent or "this topic")
    shown = ", ".join(f"{k}={v}" for k, v in slots.items()) or "none"
    summary = (
        f"Escalated because {detail}. Intent: {intent or 'unknown'}. Details collected: {shown}. "
        f"Tried: {'; '.join(tried_list) or 'nothing yet'}."
    )
    packet: Escalation = {
        "reason": reason,
        "detail": detail,
        "summary": summary,
        "intent": intent,
        "slots": slots,
        "tried": tried_list,
        "at": datetime.now(UTC).isoformat(),
    }
    return {
        "route": route,
        **say(state, ctx, ctx.pack.message("escalated")),
        "status": "escalated",
        "escalation": packet,
        "pending_action": None,
        "summary": summary,
        "outcome": "handed_off",
    }
