"""``classify_intent``: intents, hand-offs, pending confirmations and per-turn fields.

Offline tests use the store pack's real local mode; model tests stub only the provider's
HTTP endpoint, so the real ``langchain-openai`` client parses the scripted answers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nodes.classify import classify_intent
from tests.utils.orders import order

DELIVERED = order("delivered")


def classification(intent: str, confidence: float = 0.9, **extra: Any) -> dict[str, Any]:
    """What the model answers to a classification call."""
    return {"intent": intent, "confidence": confidence, "sentiment": "neutral", **extra}


def pending_refund() -> dict[str, Any]:
    """A refund stated to the customer and waiting for a yes."""
    slots = {"order_number": DELIVERED["order_id"], "email": DELIVERED["email"], "reason": "torn"}
    return {
        "intent": "refund_request",
        "action": "request_refund",
        "slots": slots,
        "description": "Here's what I'll do: open a refund request. Shall I go ahead?",
    }


@pytest.mark.parametrize(
    ("message", "intent", "goes_to"),
    [
        ("where is my order, it has not arrived", "order_status", "collect_info"),
        ("I want to return my order for a refund", "refund_request", "collect_info"),
        ("please cancel my order before it ships", "cancel_order", "collect_info"),
        ("I need to change the delivery address on my order", "change_address", "collect_info"),
        ("I was charged twice for my order", "billing", "collect_info"),
        ("please open a ticket for me", "support_ticket", "collect_info"),
        ("do you ship to Canada?", "shipping_question", "handle_faq"),
        ("I want to talk to a human", "human", "escalate_human"),
        ("my account has been hacked", "account_access", "escalate_human"),
    ],
)
async def test_typical_messages_get_the_pack_intent(
    run: Any, state: Any, ctx: Any, message: str, intent: str, goes_to: str
) -> None:
    out = await run(classify_intent, state(message), ctx)
    assert (out["intent"], out["goes_to"]) == (intent, goes_to)
    assert out["confidence"] >= ctx.low_confidence


async def test_new_topic_starts_collecting_from_this_message(
    run: Any, state: Any, ctx: Any
) -> None:
    values = state("where is my order, it has not arrived")
    out = await run(classify_intent, values, ctx)
    assert out["topic_start"] == values["messages"][-1].id
    assert out["failures"] == 0 and out["low_confidence_turns"] == 0


async def test_asking_for_a_person_escalates(chat: Any) -> None:
    conv = chat()
    await conv.say("where is my order?")
    out = await conv.say("I want to talk to a human")
    assert out["status"] == "escalated"
    assert out["route"] == ["classify_intent", "escalate_human"]
    assert out["escalation"]["reason"] == "requested_human"


async def test_human_only_intent_goes_straight_to_a_person(chat: Any) -> None:
    conv = chat()
    out = await conv.say("I cannot log into my account")
    assert out["intent"] == "account_access"
    assert conv.ctx.pack.intents["account_access"].human_only
    assert out["status"] == "escalated"
    assert out["escalation"]["reason"] == "human_only_intent"
    assert out["reply"].endswith(conv.ctx.pack.message("escalated"))


async def test_low_confidence_is_other_then_escalates(chat: Any) -> None:
    conv = chat()
    limit = conv.ctx.pack.spec.escalation.max_low_confidence_turns
    unclear = ["?", "...", "??", "!!", "-"]
    assert limit <= len(unclear)
    for i, text in enumerate(unclear[:limit], start=1):
        assert conv.ctx.classifier.classify(text).score < conv.ctx.low_confidence
        out = await conv.say(text)
        assert out["intent"] == "other"
        if i < limit:
            assert out["route"] == ["classify_intent", "handle_faq"]
            assert out["reply"].endswith(conv.ctx.pack.message("clarify"))
            assert (await conv.state())["low_confidence_turns"] == i
    assert out["status"] == "escalated"
    assert out["escalation"]["reason"] == "low_confidence"
    assert str(limit) in out["escalation"]["detail"]


async def test_a_confident_turn_resets_the_low_confidence_count(
    run: Any, state: Any, ctx: Any
) -> None:
    out = await run(classify_intent, state("has my order shipped?", low_confidence_turns=1), ctx)
    assert out["intent"] == "order_status"
    assert out["low_confidence_turns"] == 0


async def test_negative_sentiment_is_counted_then_escalates(chat: Any) -> None:
    conv = chat()
    threshold = conv.ctx.pack.spec.escalation.negative_sentiment_turns
    assert threshold == 2, "this conversation is written for the store pack's threshold"
    first = await conv.say("This is ridiculous, where is my order?")
    assert first["status"] != "escalated"
    assert (await conv.state())["negative_turns"] == 1
    second = await conv.say("your service is useless")
    assert second["status"] == "escalated"
    assert second["escalation"]["reason"] == "negative_sentiment"


@pytest.mark.parametrize("pack", ["store", "isp"])
async def test_negative_threshold_comes_from_the_pack(
    run: Any, state: Any, make_ctx: Any, pack: str
) -> None:
    ctx = make_ctx(pack)
    threshold = ctx.pack.spec.escalation.negative_sentiment_turns
    angry = "this is ridiculous and unacceptable"
    below = await run(classify_intent, state(angry, negative_turns=threshold - 2), ctx)
    at = await run(classify_intent, state(angry, negative_turns=threshold - 1), ctx)
    assert below["negative_turns"] == threshold - 1
    assert below.get("handoff_reason") != "negative_sentiment"
    assert at["negative_turns"] == threshold
    assert (at["goes_to"], at["handoff_reason"]) == ("escalate_human", "negative_sentiment")


async def test_neutral_message_does_not_count_as_negative(run: Any, state: Any, ctx: Any) -> None:
    out = await run(classify_intent, state("has my order shipped?", negative_turns=1), ctx)
    assert out["sentiment"] == "neutral"
    assert out["negative_turns"] == 1


@pytest.mark.parametrize(
    ("answer", "reading"),
    [("yes please", "yes"), ("no thanks", "no"), ("hmm", "none")],
)
async def test_pending_confirmation_goes_to_resolve(
    run: Any, state: Any, ctx: Any, answer: str, reading: str
) -> None:
    pending = pending_refund()
    values = state(
        "it arrived torn",
        pending["description"],
        answer,
        intent="refund_request",
        status="awaiting_info",
        pending_action=pending,
    )
    out = await run(classify_intent, values, ctx)
    assert out["confirmation"] == reading
    assert (out["intent"], out["goes_to"]) == ("refund_request", "resolve")
    assert "pending_action" not in out, "the pending action is resolve's to settle"


async def test_yes_without_a_pending_action_is_not_a_confirmation(
    run: Any, state: Any, ctx: Any
) -> None:
    out = await run(classify_intent, state("yes"), ctx)
    assert out["confirmation"] == "none"
    assert out["goes_to"] != "resolve"


async def test_a_value_while_awaiting_info_stays_in_collect_info(
    run: Any, state: Any, ctx: Any
) -> None:
    # Read alone, this looks like a cancellation; as the email that was asked for, it is one.
    text = "cancel.my.order@example.com"
    assert ctx.classifier.classify(text).intent == "cancel_order"
    values = state(
        "I want to return my order for a refund",
        "What's your email address?",
        text,
        intent="refund_request",
        status="awaiting_info",
        missing=["email", "reason"],
        slots={"order_number": DELIVERED["order_id"]},
    )
    out = await run(classify_intent, values, ctx)
    assert (out["intent"], out["goes_to"]) == ("refund_request", "collect_info")
    assert "slots" not in out, "the slots collected so far are kept"


async def test_a_new_transaction_while_awaiting_info_switches_topic(
    run: Any, state: Any, ctx: Any
) -> None:
    values = state(
        "where is my order?",
        "What's your order number?",
        "actually I was charged twice for my order",
        intent="order_status",
        status="awaiting_info",
        missing=["order_number", "email"],
        slots={"email": DELIVERED["email"]},
    )
    out = await run(classify_intent, values, ctx)
    assert (out["intent"], out["goes_to"]) == ("billing", "collect_info")
    assert out["slots"] == {"email": DELIVERED["email"]}, "identifiers billing needs are kept"


async def test_classify_writes_only_this_turns_output(run: Any, state: Any, ctx: Any) -> None:
    out = await run(classify_intent, state("has my order shipped?", turn=4), ctx)
    assert out["route"] == ["classify_intent"]
    assert out["usage"] == {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "degraded": 0}
    assert "handoff_reason" not in out and "reply" not in out
    assert out["turn"] == 5


async def test_this_turns_output_is_never_checkpointed(chat: Any) -> None:
    conv = chat()
    await conv.say("How many days do I have to return something?")
    await conv.say("I want to talk to a human")
    saved = await conv.saver.aget_tuple(conv.config)
    assert saved is not None
    channels = saved.checkpoint["channel_values"]
    per_turn = ("reply", "route", "citations", "usage", "slot_errors", "outcome", "handoff_reason")
    assert channels["status"] == "escalated"
    assert not set(per_turn) & set(channels), sorted(channels)
    assert "next_node" not in channels


async def test_per_turn_fields_reset_between_graph_turns(chat: Any) -> None:
    conv = chat()
    faq = await conv.say("How many days do I have to return something?")
    assert faq["citations"]
    out = await conv.say("where is my order, it has not arrived")
    assert "citations" not in out, "no citation carried over from the last turn"
    assert out["route"] == ["classify_intent", "collect_info"]


async def test_an_escalated_thread_is_not_classified(run: Any, state: Any, ctx: Any) -> None:
    values = state("I was charged twice for my order", status="escalated", intent="human")
    out = await run(classify_intent, values, ctx)
    assert out["goes_to"] == "escalate_human"
    assert "intent" not in out and "confidence" not in out


async def test_a_message_after_resolution_starts_a_new_topic(
    run: Any, state: Any, ctx: Any
) -> None:
    values = state("I was charged twice for my order", status="resolved", failures=2)
    out = await run(classify_intent, values, ctx)
    assert out["status"] == "active"
    assert out["failures"] == 0 and out["pending_action"] is None
    assert out["intent"] == "billing"


# --- with the model (stubbed HTTP endpoint) ------------------------------------------------


async def test_model_classification_is_used_and_counted(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    model = llm({"Classification": [classification("billing", 0.88)]})
    out = await run(classify_intent, state("where is my order, it has not arrived"), model_ctx)
    assert model.calls == ["Classification"]
    assert (out["intent"], out["confidence"]) == ("billing", 0.88)
    assert out["goes_to"] == "collect_info"
    assert out["usage"] == {"llm_calls": 1, "input_tokens": 50, "output_tokens": 10, "degraded": 0}


async def test_model_confidence_below_threshold_is_other(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    low = model_ctx.low_confidence / 2
    llm({"Classification": [classification("order_status", low)]})
    out = await run(classify_intent, state("where is my order, it has not arrived"), model_ctx)
    assert out["intent"] == "other"
    assert out["confidence"] == low
    assert out["low_confidence_turns"] == 1


async def test_model_confirmation_counts_only_with_a_pending_action(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    llm({"Classification": [classification("other", 0.9, confirmation="yes")]})
    texts = ("it arrived torn", "Shall I go ahead?", "go on then")
    pending = await run(
        classify_intent,
        state(*texts, intent="refund_request", pending_action=pending_refund()),
        model_ctx,
    )
    idle = await run(classify_intent, state(*texts), model_ctx)
    assert (pending["confirmation"], pending["goes_to"]) == ("yes", "resolve")
    assert idle["confirmation"] == "none"


async def test_negative_words_override_a_neutral_model_reading(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    llm({"Classification": [classification("order_status", sentiment="neutral")]})
    out = await run(classify_intent, state("this is unacceptable, where is my order"), model_ctx)
    assert out["sentiment"] == "negative"
    assert out["negative_turns"] == 1


async def test_an_awaited_value_skips_the_model(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    model = llm({"Classification": [classification("billing")]})
    values = state(
        "where is my order?",
        "What's your order number?",
        DELIVERED["order_id"],
        intent="order_status",
        status="awaiting_info",
        missing=["order_number", "email"],
    )
    out = await run(classify_intent, values, model_ctx)
    assert model.calls == []
    assert (out["intent"], out["goes_to"]) == ("order_status", "collect_info")
    assert out["usage"]["llm_calls"] == 0


async def test_model_failure_falls_back_to_the_local_mode(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    llm({"Classification": [httpx.Response(500, json={"error": {"message": "down"}})]})
    out = await run(classify_intent, state("I was charged twice for my order"), model_ctx)
    assert out["intent"] == "billing"
    assert out["usage"]["llm_calls"] == 1 and out["usage"]["degraded"] == 1
