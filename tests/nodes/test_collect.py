"""``collect_info``: slots kept across turns, validated by the pack, re-asked with its reasons."""

from __future__ import annotations

from typing import Any

from nodes.collect import collect_info
from tests.utils.orders import order

DELIVERED = order("delivered")
SHIPPED = order("shipped")


def invalid_line(ctx: Any, slot: str) -> str:
    """The pack's re-ask line for an invalid value of ``slot``."""
    spec = ctx.pack.spec.slots[slot]
    return ctx.pack.message("invalid_value", slot=spec.description, reason=spec.invalid)


async def test_slots_from_an_earlier_turn_are_kept(chat: Any) -> None:
    conv = chat()
    first = await conv.say(f"where is my order {SHIPPED['order_id']}?")
    assert first["slots"] == {"order_number": SHIPPED["order_id"]}
    assert conv.ctx.pack.spec.slots["email"].prompt in first["reply"]
    assert conv.ctx.pack.spec.slots["order_number"].prompt not in first["reply"]
    done = await conv.say(SHIPPED["email"])
    assert done["slots"] == {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    assert done["status"] == "resolved"


async def test_a_new_value_merges_with_the_collected_ones(run: Any, state: Any, ctx: Any) -> None:
    values = state(
        "where is my order?",
        "What's your email address?",
        f"it's {SHIPPED['email']}",
        intent="order_status",
        status="awaiting_info",
        slots={"order_number": SHIPPED["order_id"]},
        missing=["email"],
    )
    out = await run(collect_info, values, ctx)
    assert out["slots"] == {"email": SHIPPED["email"]}, "a partial update for merge_dict"
    assert (out["missing"], out["goes_to"], out["status"]) == ([], "resolve", "active")


async def test_several_slots_from_one_message(run: Any, state: Any, ctx: Any) -> None:
    text = f"Order #{DELIVERED['order_id']}, email {DELIVERED['email'].upper()}, it's torn"
    out = await run(collect_info, state(text, intent="refund_request"), ctx)
    assert out["slots"] == {"order_number": DELIVERED["order_id"], "email": DELIVERED["email"]}
    assert out["missing"] == ["reason"]
    assert out["reply"] == ctx.pack.spec.slots["reason"].prompt
    assert out["status"] == "awaiting_info"


async def test_invalid_value_is_re_asked_with_the_pack_reason(
    run: Any, state: Any, ctx: Any
) -> None:
    values = state(
        "where is my order?",
        "What's your order number?",
        "it's 12",
        intent="order_status",
        status="awaiting_info",
        missing=["order_number", "email"],
    )
    out = await run(collect_info, values, ctx)
    reason = ctx.pack.spec.slots["order_number"].invalid
    assert out["slot_errors"] == {"order_number": reason}
    assert out["reply"].startswith(invalid_line(ctx, "order_number"))
    assert out["slots"] == {} and out["missing"] == ["order_number", "email"]
    assert out["failures"] == 1


async def test_invalid_email_is_re_asked_with_its_reason(run: Any, state: Any, ctx: Any) -> None:
    text = f"order {SHIPPED['order_id']}, my email is bob@localhost"
    out = await run(collect_info, state(text, intent="order_status"), ctx)
    assert out["slots"] == {"order_number": SHIPPED["order_id"]}
    assert set(out["slot_errors"]) == {"email"}
    assert invalid_line(ctx, "email") in out["reply"]


async def test_repeated_invalid_values_escalate(chat: Any) -> None:
    conv = chat()
    limit = conv.ctx.pack.spec.escalation.max_failures
    await conv.say("where is my order?")
    for attempt in range(1, limit + 1):
        out = await conv.say(f"it's {10 + attempt}")
        if attempt < limit:
            assert out["status"] == "awaiting_info"
            assert invalid_line(conv.ctx, "order_number") in out["reply"]
    assert out["status"] == "escalated"
    assert out["escalation"]["reason"] == "repeated_failure"
    assert out["route"] == ["classify_intent", "collect_info", "escalate_human"]
    assert (await conv.state())["failures"] == limit


async def test_free_text_slot_is_the_answer_to_its_prompt(chat: Any) -> None:
    conv = chat()
    ask = await conv.say(
        f"I want to return order {DELIVERED['order_id']}, email {DELIVERED['email']}"
    )
    assert ask["reply"].endswith(conv.ctx.pack.spec.slots["reason"].prompt)
    reason = "the zip broke after one day"
    out = await conv.say(reason)
    assert out["slots"]["reason"] == reason
    assert out["route"] == ["classify_intent", "collect_info", "resolve"]
    assert f'"{reason}"' in out["reply"], "the confirmation quotes the reason"


async def test_free_text_is_not_taken_from_a_message_giving_another_value(
    run: Any, state: Any, ctx: Any
) -> None:
    values = state(
        f"I want to return order {SHIPPED['order_id']}, email {SHIPPED['email']}",
        "What's the reason for the return?",
        f"oops, the order is {DELIVERED['order_id']}",
        intent="refund_request",
        status="awaiting_info",
        slots={"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]},
        missing=["reason"],
    )
    out = await run(collect_info, values, ctx)
    assert out["slots"] == {"order_number": DELIVERED["order_id"]}
    assert out["missing"] == ["reason"]


# --- with the model (stubbed HTTP endpoint) ------------------------------------------------
# The model is asked only when the patterns cannot settle the turn (here: a refund also
# needs its free-text reason, or the message has no identifier the patterns find).


async def test_model_extraction_is_validated_by_the_pack(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    text = f"refund order 12345, email {DELIVERED['email']}"
    answer = {"order_number": "12345", "email": DELIVERED["email"].upper()}
    model = llm({"SlotValues": [answer]})
    out = await run(collect_info, state(text, intent="refund_request"), model_ctx)
    assert model.calls == ["SlotValues"]
    assert out["slots"] == {"email": DELIVERED["email"]}, "normalised by the pack"
    assert out["slot_errors"] == {"order_number": model_ctx.pack.spec.slots["order_number"].invalid}
    assert out["missing"] == ["order_number", "reason"]
    assert out["usage"]["llm_calls"] == 1 and out["usage"]["input_tokens"] == 50


async def test_model_spelled_out_value_is_used(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    text = "my order is ten thirteen"
    model = llm({"SlotValues": [{"order_number": "1013"}]})
    out = await run(collect_info, state(text, intent="order_status"), model_ctx)
    assert model.calls == ["SlotValues"]
    assert out["slots"] == {"order_number": "1013"}
    assert out["missing"] == ["email"]


async def test_model_invented_invalid_value_is_rejected(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    invented = {"order_number": SHIPPED["order_id"], "email": "jordan at example"}
    model = llm({"SlotValues": [invented]})
    text = f"I want a refund for order {SHIPPED['order_id']}"
    out = await run(collect_info, state(text, intent="refund_request"), model_ctx)
    assert model.calls == ["SlotValues"]
    assert out["slots"] == {"order_number": SHIPPED["order_id"]}
    assert out["missing"] == ["email", "reason"]
    assert out["slot_errors"] == {}, "a value the customer did not write is not re-asked"
    assert out["failures"] == 0


async def test_patterns_that_settle_the_turn_skip_the_model(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    model = llm({"SlotValues": [{"order_number": "9999", "email": "x@example.com"}]})
    text = f"order {SHIPPED['order_id']}, email {SHIPPED['email']}"
    out = await run(collect_info, state(text, intent="order_status"), model_ctx)
    assert model.calls == []
    assert out["slots"] == {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    assert out["usage"]["llm_calls"] == 0


async def test_model_failure_falls_back_to_the_pack_patterns(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    model = llm({"SlotValues": ["{not json"]})
    text = f"refund order {SHIPPED['order_id']}, email {SHIPPED['email']}"
    out = await run(collect_info, state(text, intent="refund_request"), model_ctx)
    assert model.calls == ["SlotValues"]
    assert out["slots"] == {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    assert out["usage"]["degraded"] == 1
    assert out["missing"] == ["reason"]
