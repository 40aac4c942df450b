"""The model path through the HTTP API, with the OpenAI endpoint stubbed by respx.

The real ``langchain-openai`` client runs; only the provider's HTTP answers are scripted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from tests.conftest import stub_llm_settings
from tests.utils.chat import Customer
from tests.utils.openai import COMPLETIONS, ScriptedModel
from tests.utils.orders import order

DELIVERED = order("delivered")
RETURNS_ID = "return-policy"


def classification(intent: str, confidence: float = 0.92, **extra: Any) -> dict[str, Any]:
    """What the model says for a classification call."""
    return {"intent": intent, "confidence": confidence, "sentiment": "neutral", **extra}


async def test_faq_turn_uses_two_calls_and_cites(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    model = ScriptedModel(
        {
            "Classification": [classification("faq")],
            "FaqAnswer": [
                {
                    "answerable": True,
                    "answer": "You have 30 days from delivery to return items.",
                    "used_ids": [RETURNS_ID],
                }
            ],
        }
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**sqlite_backend, **stub_llm_settings()) as client:
            body = await Customer(client).say("How long do I have to send something back?")
    assert model.calls == ["Classification", "FaqAnswer"]
    assert body["usage"]["llm_calls"] == 2
    assert body["usage"]["input_tokens"] == 100 and body["usage"]["output_tokens"] == 20
    assert body["usage"]["degraded"] == 0
    assert body["reply"].endswith("You have 30 days from delivery to return items.")
    assert [c["id"] for c in body["citations"]] == [RETURNS_ID]


async def test_model_saying_unanswerable_does_not_invent(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    model = ScriptedModel(
        {
            "Classification": [classification("faq")],
            "FaqAnswer": [{"answerable": False, "answer": "", "used_ids": []}],
            "SlotValues": [{}],
        }
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**sqlite_backend, **stub_llm_settings()) as client:
            body = await Customer(client).say("What returns policy applies to items on the moon?")
    assert body["citations"] == []
    assert "handle_faq" in body["route"]
    assert body["route"][-1] in ("collect_info", "escalate_human")


async def test_order_status_with_model_extraction(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    model = ScriptedModel(
        {
            "Classification": [classification("order_status")],
            "SlotValues": [{"order_number": "12"}],
        }
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**sqlite_backend, **stub_llm_settings()) as client:
            customer = Customer(client)
            first = await customer.say("where's my order 12")
            second = await customer.say(f"sorry, it's {DELIVERED['order_id']}")
            third = await customer.say(f"email is {DELIVERED['email']}")
    assert "4 digits" in first["reply"]
    assert second["status"] == "awaiting_info" and "email" in second["reply"].lower()
    assert third["status"] == "resolved"
    assert DELIVERED["delivered_at"] in third["reply"]
    # Values the pack's patterns find and validate need no model call (classify, extract).
    assert [t["usage"]["llm_calls"] for t in (first, second, third)] == [2, 0, 0]
    assert model.calls == ["Classification", "SlotValues"]


async def test_free_text_slot_comes_from_the_model(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    reason = "the lamp arrived with a cracked base"
    model = ScriptedModel(
        {
            "Classification": [classification("refund_request")],
            "SlotValues": [
                {
                    "order_number": DELIVERED["order_id"],
                    "email": DELIVERED["email"],
                    "reason": reason,
                }
            ],
        }
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**sqlite_backend, **stub_llm_settings()) as client:
            body = await Customer(client).say(
                f"Refund please: order {DELIVERED['order_id']}, {DELIVERED['email']}; {reason}."
            )
    assert body["status"] == "awaiting_info", "a refund is stated and waits for a yes"
    assert reason in body["reply"]
    assert body["usage"]["llm_calls"] == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"error": {"message": "boom"}}),
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"}),
        httpx.ReadTimeout("timed out"),
        "{this is not json",
        httpx.Response(200, content=b"<html>gateway</html>"),
    ],
    ids=["http500", "http429", "timeout", "malformed-arguments", "malformed-body"],
)
async def test_provider_failures_degrade_to_local_mode(
    app_factory: Any, backend: dict[str, Any], failure: Any
) -> None:
    model = ScriptedModel({"Classification": [failure], "FaqAnswer": [failure]})
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**backend, **stub_llm_settings(llm_max_retries=1)) as client:
            customer = Customer(client)
            body = await customer.say("How many days do I have to return something?")
            order_turn = await customer.say(
                f"where is order {DELIVERED['order_id']}, email {DELIVERED['email']}"
            )
    assert body["usage"]["degraded"] >= 1
    assert body["citations"], "the local mode still answered from the FAQ"
    assert "30 days" in body["reply"]
    assert order_turn["status"] == "resolved"
    assert len(model.calls) >= 2
