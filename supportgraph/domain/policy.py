"""The conversation policy: what a message means for the topic, and when a person takes over.

Pure rules over the pack, the conversation's memory and a reading of the latest message. The
nodes apply them (``classify_intent`` with :func:`on_message`, the others with
:func:`gives_up` and :func:`on_faq_miss`) and write the result as typed state; the graph's
routing functions then choose the next node from that state.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import TypedDict

from supportgraph.domain.pack import Pack
from supportgraph.domain.slots import extract_from, find_candidate, free_text
from supportgraph.domain.types import (
    Confirmation,
    EscalationReason,
    PendingAction,
    Sentiment,
    Status,
)

SWITCH_WORDS = 3
"""Words besides its values that a message needs to start another transaction."""


@dataclass(frozen=True)
class Reading:
    """What the latest customer message says, as the classifier (model or local) read it."""

    text: str
    intent: str
    """The intent read, ``other`` below the low-confidence threshold."""
    confidence: float
    sentiment: Sentiment
    confirmation: Confirmation
    """The answer to a pending yes/no question ("none" when nothing is pending)."""


class Memory(TypedDict, total=False):
    """The part of the conversation's memory the policy reads."""

    status: Status
    intent: str | None
    slots: dict[str, str]
    missing: list[str]
    pending_action: PendingAction | None
    low_confidence_turns: int
    negative_turns: int


class Transition(TypedDict, total=False):
    """How a message changes the conversation's memory (keys absent: unchanged)."""

    intent: str | None
    negative_turns: int
    low_confidence_turns: int
    pending_action: PendingAction | None
    slots: dict[str, str | None] | None
    """The slots kept for a new topic (``None``: none kept)."""
    missing: list[str]
    failures: int
    handoff_reason: EscalationReason
    """The message needs a person, and why."""


def collects(pack: Pack, intent: str | None) -> bool:
    """Whether an intent collects details and runs an action (else the FAQ answers it)."""
    spec = pack.intents.get(intent or "")
    return spec is not None and bool(spec.slots or spec.action)


def faq_answered(pack: Pack, intent: str) -> bool:
    """Whether the FAQ answers this intent: ``faq``, and the pack's intents with no action."""
    spec = pack.intents.get(intent)
    if spec is None:
        return intent == "faq"
    return not spec.slots and spec.action is None and not spec.human_only


def gives_value(pack: Pack, memory: Memory, text: str) -> bool:
    """Whether the message holds a candidate value for a slot still missing."""
    slots = pack.spec.slots
    return any(find_candidate(slots[s], text) is not None for s in memory.get("missing", []))


def starts_other_transaction(pack: Pack, memory: Memory, reading: Reading) -> bool:
    """Whether the message confidently asks for another transaction than the current one.

    "actually, where is order 1007?" while a refund is being collected holds an order
    number, but it is a new topic, not the refund's answer. Bare values ("email is
    x@example.com") are answers whatever they resemble.
    """
    if (
        reading.intent == memory.get("intent")
        or not collects(pack, reading.intent)
        or reading.confidence < pack.spec.escalation.switch_confidence
    ):
        return False
    slots = pack.spec.slots
    values = extract_from(slots, list(slots), [reading.text]).values()
    rest = free_text(reading.text, values) or ""
    return len(rest.split()) >= SWITCH_WORDS


def answers_missing(pack: Pack, memory: Memory, text: str, intent: str) -> bool:
    """Whether the message looks like an answer to what was asked for."""
    missing = memory.get("missing", [])
    if gives_value(pack, memory, text):
        return True
    if missing and pack.spec.slots[missing[0]].type == "text":
        # A free-text answer ("it arrived damaged", or a question for the team) is taken as
        # the answer unless it asks for another transaction.
        return not collects(pack, intent)
    return False


def kept_slots(pack: Pack, memory: Memory, intent: str) -> dict[str, str | None] | None:
    """On a new topic, keep the identifiers the new intent also needs and drop the rest.

    Free-text answers (a reason, a description) belong to the old topic and are dropped.
    """
    spec = pack.intents.get(intent)
    slots = pack.spec.slots
    wanted = {s for s in spec.slots if slots[s].type == "pattern"} if spec else set()
    old = memory.get("slots") or {}
    if not old:
        return None
    return {name: (value if name in wanted else None) for name, value in old.items()}


def may_answer_open_question(pack: Pack, memory: Memory, text: str) -> bool:
    """Whether the message holds a value for what was just asked.

    It answers the question unless it also asks for another transaction
    (:func:`starts_other_transaction`, which needs the message's intent).
    """
    return (
        memory.get("status") == "awaiting_info"
        and memory.get("intent") in pack.intents
        and not memory.get("pending_action")
        and gives_value(pack, memory, text)
    )


def on_message(pack: Pack, memory: Memory, reading: Reading) -> tuple[Transition, bool]:
    """The topic after this message, and whether it starts a new topic (its slots start here).

    In order: an answer to a pending yes/no question; a value for what was asked; a request
    for a person; repeated negative sentiment; a message that stays on the topic being
    collected; a message not understood (a person after too many in a row); a topic only
    people handle; a new topic.
    """
    esc = pack.spec.escalation
    intent = reading.intent
    confident = reading.confidence >= esc.switch_confidence and intent != "other"
    current = memory.get("intent")
    negative = memory.get("negative_turns", 0) + (reading.sentiment == "negative")
    out: Transition = {"negative_turns": negative}

    pending = memory.get("pending_action")
    if pending is not None:
        moved_on = intent not in ("other", pending["intent"]) and (confident or "?" in reading.text)
        if reading.confirmation in ("yes", "no") or not moved_on:
            return {**out, "intent": pending["intent"]}, False
        out["pending_action"] = None  # a change of topic cancels the pending action

    awaiting = memory.get("status") == "awaiting_info" and current in pack.intents
    switching = starts_other_transaction(pack, memory, reading)
    if awaiting and gives_value(pack, memory, reading.text) and not switching:
        return {**out, "intent": current, "low_confidence_turns": 0}, False
    if intent == "human":
        return {**out, "intent": "human", "handoff_reason": "requested_human"}, False
    if reading.sentiment == "negative" and negative >= esc.negative_sentiment_turns:
        return {**out, "intent": current or intent, "handoff_reason": "negative_sentiment"}, False

    if awaiting:
        asks_question = "?" in reading.text and intent != "other"
        stays = not confident and not asks_question
        answers = not switching and answers_missing(pack, memory, reading.text, intent)
        if answers or stays or intent == current:
            return {**out, "intent": current, "low_confidence_turns": 0}, False
        out = {**out, "slots": kept_slots(pack, memory, intent), "missing": [], "failures": 0}

    if intent == "other":
        low = memory.get("low_confidence_turns", 0) + 1
        out = {**out, "intent": "other", "low_confidence_turns": low}
        if low >= esc.max_low_confidence_turns:
            out["handoff_reason"] = "low_confidence"
        return out, False

    out = {**out, "intent": intent, "low_confidence_turns": 0}
    spec = pack.intents.get(intent)
    if spec is not None and spec.human_only:
        return {**out, "handoff_reason": "human_only_intent"}, False
    if not collects(pack, intent):
        return out, False
    new_topic = intent != current or memory.get("status") == "active"
    if new_topic:
        out.setdefault("slots", kept_slots(pack, memory, intent))
        out.setdefault("failures", 0)
    return out, new_topic


def gives_up(pack: Pack, failures: int) -> bool:
    """Whether this many failed attempts on one topic go to a person."""
    return failures >= pack.spec.escalation.max_failures


def on_faq_miss(pack: Pack, failures: int) -> str | None:
    """The intent that collects a question for the team when the FAQ has no answer, if the
    pack says so and the topic has not failed too often; ``None``: a person takes over."""
    esc = pack.spec.escalation
    if esc.faq_miss == "collect_info" and esc.faq_miss_intent and not gives_up(pack, failures):
        return esc.faq_miss_intent
    return None
