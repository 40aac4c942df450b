"""``resolve``: run the intent's action with the slots; data-changing actions need a yes first.

The yes is read in code: a pending action runs only when the customer's own message is an
unambiguous yes by the pack's confirmation words, whatever the model made of it (a model
talked into answering "yes" for the customer gets the question asked again).
"""

from __future__ import annotations

import logging

from langgraph.runtime import Runtime

from graphs.state import Outcome, StateUpdate, SupportState
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
from supportgraph.domain import policy
from supportgraph.domain.actions import ActionResult, audit
from supportgraph.domain.local import text as local_text
from supportgraph.domain.types import Confirmation, PendingAction

log = logging.getLogger("supportgraph.resolve")


async def resolve(state: SupportState, runtime: Runtime[SupportContext]) -> StateUpdate:
    """Confirm, cancel or run the pending action, or prepare the intent's action."""
    ctx = deps(runtime)
    update: StateUpdate = {"route": step(state, "resolve")}
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
                "outcome": "cancelled",
            }
        if answer != "yes":
            await audit_intent(state, ctx, pending["intent"], "refused", "not_confirmed")
            reply = f"{pending['description']}\n{ctx.pack.message('confirm_unclear')}"
            return {
                **update,
                **say(state, ctx, reply),
                "status": "awaiting_info",
                "outcome": "unclear",
            }
        result = await _run(state, ctx, pending["intent"], pending["slots"], execute=True)
        return {**update, "pending_action": None, **_outcome(state, ctx, pending["intent"], result)}
    intent = str(state.get("intent"))
    result = await _run(state, ctx, intent, dict(state.get("slots") or {}), execute=False)
    if result.status == "confirm":
        stated = PendingAction(
            intent=intent,
            action=ctx.pack.intents[intent].action or "",
            slots=dict(state.get("slots") or {}),
            description=result.reply,
        )
        return {
            **update,
            **say(state, ctx, result.reply),
            "pending_action": stated,
            "status": "awaiting_info",
            "missing": [],
            "outcome": "confirm",
        }
    return {**update, **_outcome(state, ctx, intent, result)}


def _confirmation(state: SupportState, ctx: SupportContext) -> Confirmation:
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


OUTCOMES: dict[str, Outcome] = {
    "done": "done",
    "confirm": "confirm",
    "not_found": "not_found",
    "ineligible": "ineligible",
    "failed": "failed",
}


def _outcome(
    state: SupportState, ctx: SupportContext, intent: str, result: ActionResult
) -> StateUpdate:
    """The update for a finished action: resolved, or a failure to retry or hand over."""
    what = f"{intent}: {result.status}"
    outcome = OUTCOMES[result.status]
    if result.status == "done":
        return {
            **say(state, ctx, result.reply),
            "status": "resolved",
            "failures": 0,
            "missing": [],
            "tried": tried(state, what),
            "summary": f"{intent} resolved",
            "outcome": outcome,
        }
    failures = state.get("failures", 0) + 1
    update: StateUpdate = {"failures": failures, "tried": tried(state, what), "outcome": outcome}
    if policy.gives_up(ctx.pack, failures):
        return {**update, "handoff_reason": "repeated_failure"}
    if result.status != "not_found":
        return {**update, **say(state, ctx, result.reply), "missing": [], "status": "active"}
    # Unknown: forget the values for good (later turns must not read them back from the
    # window), and ask for them again.
    retry = list(ctx.pack.intents[intent].slots)
    prompt = " ".join(ctx.pack.spec.slots[s].prompt for s in retry)
    return {
        **update,
        **say(state, ctx, f"{result.reply}\n{prompt}" if retry else result.reply),
        "slots": None,
        "topic_start": AFTER + (latest_customer_id(state) or ""),
        "missing": retry,
        "status": "awaiting_info" if retry else "active",
    }
