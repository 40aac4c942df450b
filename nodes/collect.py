"""``collect_info``: gather the slots an intent needs, validate them, ask for what is missing."""

from __future__ import annotations

import logging
import re

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from graphs.state import StateUpdate, SupportState
from nodes.common import (
    customer_texts,
    latest_customer_text,
    model_messages,
    say,
    step,
    tried,
    usage_of,
)
from nodes.context import SupportContext, deps
from nodes.prompts import EXTRACT_PROMPT
from supportgraph.domain import policy
from supportgraph.domain.llm import structured
from supportgraph.domain.slots import extract_from, free_text, validate
from supportgraph.domain.types import Usage

log = logging.getLogger("supportgraph.collect")


async def collect_info(state: SupportState, runtime: Runtime[SupportContext]) -> StateUpdate:
    """Fill the current intent's slots from the conversation; ask for what is still missing."""
    ctx = deps(runtime)
    intent = ctx.pack.intents[str(state.get("intent"))]
    usage = usage_of(state)
    have = dict(state.get("slots") or {})
    candidates = await _candidates(state, ctx, intent.slots, have, usage)

    accepted: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, raw in candidates.items():
        checked = validate(ctx.pack.spec.slots[name], raw)
        if checked.error is None:
            accepted[name] = checked.value
        elif name not in have and raw in latest_customer_text(state):
            # Only a value given in this message is re-asked with a reason.
            errors[name] = checked.error
    have.update(accepted)
    missing = [s for s in intent.slots if s not in have]
    failures = state.get("failures", 0) + (1 if errors else 0)
    update: StateUpdate = {
        "route": step(state, "collect_info"),
        "usage": usage,
        "slots": dict(accepted),
        "missing": missing,
        "slot_errors": errors,
        "failures": failures,
    }
    if errors and policy.gives_up(ctx.pack, failures):
        what = f"{intent.name}: invalid {', '.join(errors)} {failures} times"
        return {
            **update,
            "tried": tried(state, what),
            "handoff_reason": "repeated_failure",
        }
    if not missing:
        return {**update, "status": "active", "outcome": "collected"}
    lines = [
        ctx.pack.message("invalid_value", slot=_label(ctx, n), reason=r) for n, r in errors.items()
    ]
    lines.append(" ".join(ctx.pack.spec.slots[n].prompt for n in missing))
    if state.get("route", [])[-1:] == ["handle_faq"]:
        lines.insert(0, ctx.pack.message("faq_miss"))
    return {
        **update,
        **say(state, ctx, "\n".join(lines)),
        "status": "awaiting_info",
        "outcome": "asked",
    }


def _label(ctx: SupportContext, slot: str) -> str:
    spec = ctx.pack.spec.slots[slot]
    return spec.description or slot.replace("_", " ")


async def _candidates(
    state: SupportState,
    ctx: SupportContext,
    names: list[str],
    have: dict[str, str],
    usage: Usage,
) -> dict[str, str]:
    """Raw values for the intent's slots: from the model, else the pack's patterns."""
    slots = ctx.pack.spec.slots
    text = latest_customer_text(state)
    if ctx.models is not None and not _patterns_suffice(ctx, names, have, text):
        wanted = "\n".join(f"- {n}: {slots[n].description or slots[n].prompt}" for n in names)
        result = await structured(
            ctx.models.extract,
            ctx.schemas.slots,
            model_messages(EXTRACT_PROMPT.format(wanted=wanted), state, ctx),
            usage,
            purpose="extract",
            method=ctx.models.method,
        )
        if result is not None:
            values = {n: getattr(result, n, None) for n in names}
            said = _said(state)
            out: dict[str, str] = {}
            for n, v in values.items():
                if v in (None, "") or str(v) == have.get(n):
                    continue
                if not _grounded(str(v), said, text_slot=slots[n].type == "text"):
                    # The model may only copy what the customer wrote: an order number or an
                    # email it "remembers" (another customer's, a poisoned article's) is
                    # dropped, as is free text the customer never typed.
                    log.warning("model value not in the customer's messages", extra={"slot": n})
                    continue
                out[n] = str(v)
            return out
    pattern_slots = [n for n in names if slots[n].type == "pattern" or slots[n].extract]
    found = extract_from(slots, pattern_slots, customer_texts(state))
    # The latest message's own values win over earlier turns'.
    latest = extract_from(slots, pattern_slots, [text])
    found.update(latest)
    asked = state.get("missing") or []
    if state.get("status") == "awaiting_info":
        text_slot = next((n for n in asked if slots[n].type == "text" and n not in found), None)
        # A correction of a value already given ("oops, the order is 1013") is no answer
        # to the free-text question; values for other questions asked at once are.
        corrects = any(n in have and have[n] != v for n, v in latest.items())
        answer = free_text(text, latest.values()) if text_slot and not corrects else None
        if text_slot and answer:
            found[text_slot] = answer
    return {n: v for n, v in found.items() if v != have.get(n)}


def _said(state: SupportState) -> list[str]:
    """Everything the customer wrote in the window (values may come from earlier topics)."""
    return [str(m.content) for m in state.get("messages", []) if isinstance(m, HumanMessage)]


_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SPOKEN = {
    "oh": "0",
    "at": "@",
    "dot": ".",
    **{w: str(i) for i, w in enumerate(_UNITS)},
    **{w: str(i + 10) for i, w in enumerate(_TEENS)},
    **{w: str(i + 2) + "0" for i, w in enumerate(_TENS)},
}


def _spoken(text: str) -> str:
    """The message with spelled-out digits and email words written out ("ten thirteen": 1013)."""
    out: list[str] = []
    after_tens = False
    for word in re.findall(r"[\w.@+']+", text.casefold()):
        if after_tens and word in _UNITS[1:]:
            out[-1] = out[-1][0] + _SPOKEN[word]  # "forty two": 42
        else:
            out.append(_SPOKEN.get(word, word))
        after_tens = word in _TENS
    return "".join(out)


def _grounded(value: str, said: list[str], *, text_slot: bool) -> bool:
    """Whether the customer wrote this value (an identifier as is, free text word for word).

    An identifier must appear in one message, ignoring case and spaces, or spelled out
    ("ten thirteen", "kim at example dot org"). Free text may be trimmed or reordered by the
    model, but each of its words must be the customer's.
    """
    if not text_slot:
        compact = "".join(value.split()).casefold()
        return any(compact in "".join(t.split()).casefold() or compact in _spoken(t) for t in said)
    theirs = {w for t in said for w in re.findall(r"\w+", t.casefold())}
    return set(re.findall(r"\w+", value.casefold())) <= theirs


def _patterns_suffice(
    ctx: SupportContext, names: list[str], have: dict[str, str], text: str
) -> bool:
    """Whether the pack's patterns answer this message without the model.

    True when every missing slot is a pattern slot (an identifier such as an order number
    or an email, which any value must match anyway) and the patterns find at least one
    valid value in the message. The model is still asked when a free-text slot is missing
    or when the patterns find nothing (the customer may have spelled a value out).
    """
    slots = ctx.pack.spec.slots
    missing = [n for n in names if n not in have]
    if not missing or any(slots[n].type != "pattern" for n in missing):
        return False
    found = extract_from(slots, missing, [text])
    return any(validate(slots[n], v).error is None for n, v in found.items())
