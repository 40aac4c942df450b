"""``resolve``: run the intent's action with the slots; data-changing actions need a yes first.

The yes is read in code: a pending action runs only when the customer's own message is an
unambiguous yes by the pack's confirmation words, whatever the model made of it (a model
talked into answering "yes" for the customer gets the question asked again).
"""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from graphs.state import SupportState
from nodes.common import (
    AFTER,
    action_call,
    audit_intent,
    latest_customer_id,
    latest_customer_text,
    say,
    step,
    tried,
)
from nodes.context import SupportContext, deps
from supportgraph.actions import ActionResult, audit
from supportgraph.local import text as local_text

log = logging.getLogger("supportgraph.resolve")


async def resolve(state: SupportState, runtime: Runtime[SupportContext]) -> dict[str, Any]:
    """Confirm, cancel or run the pending action, or prepare the intent's action."""
    ctx = deps(runtime)
    update: dict[str, Any] = {"route": step(state, "resolve")}
    pending = state.get("pending_action")
    if pending is not None:
        answer = _confirmation(state, ctx)
        if answer == "no":
            await audit_intent(state, ctx, pending["intent"], "refused", "cancelled")
            reply = ctx.pack.message("cancelled")
            what = f"{pending['intent']}: cancelled by the customer"
            return {
                **update,
                **say(state, ctx, reply),
                "pending_action": None,
                "slots": None,
                "status": "active",
                "tried": tried(state, what),
                "next_node": "end",
            }
        if answer != "yes":
            await audit_intent(state, ctx, pending["intent"], "refused", "not_confirmed")
            reply = f"{pending['description']}\n{ctx.pack.message('confirm_unclear')}"
            return {
                **update,
                **say(state, ctx, reply),
                "status": "awaiting_info",
                "next_node": "end",
            }
        result = await _run(state, ctx, pending["intent"], pending["slots"], execute=True)
        return {**update, "pending_action": None, **_outcome(state, ctx, pending["intent"], result)}
    intent = str(state.get("intent"))
    result = await _run(state, ctx, intent, dict(state.get("slots") or {}), execute=False)
    if result.status == "confirm":
        action = ctx.pack.intents[intent].action or ""
        pending = {
            "intent": intent,
            "action": action,
            "slots": dict(state.get("slots") or {}),
            "description": result.reply,
        }
        return {
            **update,
            **say(state, ctx, result.reply),
            "pending_action": pending,
            "status": "awaiting_info",
            "missing": [],
            "next_node": "end",
        }
    return {**update, **_outcome(state, ctx, intent, result)}


def _confirmation(state: SupportState, ctx: SupportContext) -> str:
    """The customer's answer to the pending question: a yes only if their words say yes.

    The model's reading may turn a yes into a no or "unclear" (the safe direction), never
    the other way: "yes" needs the pack's own reading of the message to be yes too, and a
    model's yes over the customer's no is a no.
    """
    answer = state.get("confirmation", "none")
    if answer != "yes":
        return answer
    conf = ctx.pack.spec.confirmation
    said = local_text.confirmation(latest_customer_text(state), yes=conf.yes, no=conf.no)
    return said if said in ("yes", "no") else "none"


async def _run(
    state: SupportState, ctx: SupportContext, intent: str, slots: dict[str, str], *, execute: bool
) -> ActionResult:
    """Prepare or execute the intent's action; any error becomes a 'failed' result."""
    spec = ctx.pack.intents[intent]
    if spec.action is None:
        return ActionResult("done", ctx.pack.message("cancelled"))
    named = ctx.pack.spec.actions[spec.action]
    kind = ctx.actions[named.uses]
    params = kind.params_model.model_validate(named.params)
    call = action_call(state, ctx, spec.action, slots)
    try:
        return await (kind.execute(params, call) if execute else kind.prepare(params, call))
    except Exception:  # noqa: BLE001 - an action failure must not fail the customer's turn
        log.exception("action failed", extra={"action": spec.action})
        try:
            await audit(call, kind=named.uses, outcome="failed", reason="error")
        except Exception:  # noqa: BLE001 - the store may be what failed; the log has it
            log.warning("could not audit a failed action", extra={"action": spec.action})
        return ActionResult("failed", ctx.pack.message("action_failed"))


def _outcome(
    state: SupportState, ctx: SupportContext, intent: str, result: ActionResult
) -> dict[str, Any]:
    """The update for a finished action: resolved, or a failure to retry or hand over."""
    what = f"{intent}: {result.status}"
    if result.status == "done":
        return {
            **say(state, ctx, result.reply),
            "status": "resolved",
            "failures": 0,
            "missing": [],
            "tried": tried(state, what),
            "summary": f"{intent} resolved",
            "next_node": "end",
        }
    failures = state.get("failures", 0) + 1
    base = {"failures": failures, "tried": tried(state, what)}
    if failures >= ctx.pack.spec.escalation.max_failures:
        return {**base, "handoff_reason": "repeated_failure", "next_node": "escalate_human"}
    spec = ctx.pack.intents[intent]
    # Unknown or refused: forget the values so the customer can give them again.
    retry = [s for s in spec.slots]
    prompt = " ".join(ctx.pack.spec.slots[s].prompt for s in retry)
    reply = f"{result.reply}\n{prompt}" if retry and result.status == "not_found" else result.reply
    status = "awaiting_info" if retry and result.status == "not_found" else "active"
    slots = None if result.status == "not_found" else {}
    if result.status == "not_found":
        # Forget the values for good: later turns must not read them back from the window.
        base["topic_start"] = AFTER + (latest_customer_id(state) or "")
    return {
        **base,
        **say(state, ctx, reply),
        "slots": slots,
        "missing": retry if status == "awaiting_info" else [],
        "status": status,
        "next_node": "end",
    }
