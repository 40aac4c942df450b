"""Conversations on a different business's pack (an internet provider): nothing store-specific."""

from __future__ import annotations

from typing import Any

from tests.conftest import ISP_PACK
from tests.utils.chat import Customer, app_of


async def test_outage_check_plan_change_and_human_only(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend, pack_path=ISP_PACK) as client:
        customer = Customer(client)
        down = await customer.say("my internet is down, is there an outage?")
        assert down["intent"] == "outage_report"
        assert "Fibrelink" in down["reply"]
        assert "account number" in down["reply"].lower()
        bad = await customer.say("it's FL-12")
        assert "6 digits" in bad["reply"]
        await customer.say("FL-204817")
        outage = await customer.say("6012")
        assert outage["status"] == "resolved"
        assert "Karori" in outage["reply"] and "outage" in outage["reply"].lower()

        change = await customer.say("I want to change my plan to Fibre Pro")
        assert change["intent"] == "plan_change"
        assert change["status"] == "awaiting_info"
        assert "Pro" in change["reply"] and "go ahead" in change["reply"]
        done = await customer.say("yes")
        assert done["status"] == "resolved"
        requests = await app_of(client).state.service.store.list_requests(customer.session_id)
        assert [(r["kind"], r["data"]) for r in requests] == [
            ("plan_change", {"account_number": "FL-204817", "new_plan": "Pro"})
        ]

        speed = await customer.say("how do I run a speed test?")
        assert speed["route"] == ["classify_intent", "handle_faq"]
        assert speed["citations"]

        leave = await customer.say("I want to cancel my contract")
        assert leave["status"] == "escalated"
        session = await customer.transcript()
    assert session["escalation"]["reason"] == "human_only_intent"
    assert session["pack_version"] == "0.3.0"
