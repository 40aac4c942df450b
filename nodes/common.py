"""Small helpers the nodes share: the reply, the route, the usage and the conversation texts."""

from __future__ import annotations

import logging

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage

from graphs.state import NodeName, StateUpdate, SupportState
from nodes.context import SupportContext
from supportgraph.domain.actions import ActionCall, AuditOutcome, Reason, audit
from supportgraph.domain.types import Usage, empty_usage

log = logging.getLogger("supportgraph.nodes")

MAX_TRIED = 10
AFTER = "after:"
"""``topic_start`` prefix: values come only from messages after this one."""


def say(state: SupportState, ctx: SupportContext, text: str) -> StateUpdate:
    """The update that answers the customer with ``text`` (greeting first on a new thread).

    The last line of defence: a reply holding one of the pack's secrets or quoting a prompt
    is replaced by the pack's ``withheld`` message, whatever produced it.
    """
    reason = ctx.guard.withheld(text)
    if reason is not None:
        log.warning("reply withheld", extra={"reason": reason})
        text = ctx.pack.message("withheld")
    if not state.get("greeted"):
        text = f"{ctx.pack.spec.greeting}\n\n{text}"
    return {"reply": text, "greeted": True, "messages": [AIMessage(content=text)]}


def step(state: SupportState, name: NodeName) -> list[NodeName]:
    """The route so far with this node appended."""
    return [*state.get("route", []), name]


def usage_of(state: SupportState) -> Usage:
    """A mutable copy of this turn's usage."""
    usage = state.get("usage")
    return Usage(**usage) if usage else empty_usage()


def tried(state: SupportState, what: str) -> list[str]:
    """The bounded list of what the bot tried, with ``what`` added."""
    return [*state.get("tried", []), what][-MAX_TRIED:]


def latest_customer_text(state: SupportState) -> str:
    """The customer's latest message."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def latest_customer_id(state: SupportState) -> str | None:
    """The id of the customer's latest message."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return message.id
    return None


def window_texts(state: SupportState) -> list[str]:
    """Every customer and assistant message in the window: what this customer has seen."""
    return [
        str(m.content) for m in state.get("messages", []) if isinstance(m, HumanMessage | AIMessage)
    ]


def customer_texts(state: SupportState) -> list[str]:
    """The customer's messages of the current topic in the window, oldest first."""
    humans = [m for m in state.get("messages", []) if isinstance(m, HumanMessage)]
    start = state.get("topic_start") or ""
    ids = [m.id for m in humans]
    if start.startswith(AFTER) and start[len(AFTER) :] in ids:
        humans = humans[ids.index(start[len(AFTER) :]) + 1 :]
    elif start in ids:
        humans = humans[ids.index(start) :]
    return [str(m.content) for m in humans]


def model_messages(
    system: str, state: SupportState, ctx: SupportContext, *, extra: str = ""
) -> list[AnyMessage]:
    """System prompt (pack prompt, summary, slots) followed by the recent window."""
    parts = [system]
    if ctx.pack.spec.system_prompt:
        parts.append(ctx.pack.spec.system_prompt)
    if state.get("summary"):
        parts.append(f"Conversation summary: {state['summary']}")
    if extra:
        parts.append(extra)
    window = [m for m in state.get("messages", []) if isinstance(m, HumanMessage | AIMessage)]
    return [SystemMessage(content="\n\n".join(parts)), *window]


def action_call(
    state: SupportState, ctx: SupportContext, action: str, slots: dict[str, str]
) -> ActionCall:
    """What an action run gets: the slots, the session, and where to write and audit."""
    session_id = str(state.get("session_id", ""))
    return ActionCall(
        pack=ctx.pack,
        slots=slots,
        session_id=session_id,
        idempotency_key=f"{session_id}:{state.get('turn', 0)}:{action}",
        requests=ctx.requests,
        action=action,
        audit=ctx.auditor,
        records=ctx.record_source,
    )


async def audit_intent(
    state: SupportState, ctx: SupportContext, intent: str, outcome: AuditOutcome, reason: Reason
) -> None:
    """Audit a decision about an intent's action taken outside it (a no, an unclear answer)."""
    action = ctx.pack.intents[intent].action or ""
    kind = ctx.pack.spec.actions[action].uses if action in ctx.pack.spec.actions else ""
    await audit(action_call(state, ctx, action, {}), kind=kind, outcome=outcome, reason=reason)
