"""A customer pastes a card, a secret, an email and a phone number: where does each end up?

Through the real app on both backends, with the model stubbed at its HTTP endpoint (respx),
webhooks on: afterwards every table (transcript, events, outbox, notes, LangGraph's
checkpoints and blobs), every request body sent to the model, every webhook body and every
log line the app wrote are searched. The card and the secrets appear nowhere; the email and
the phone number are kept where the bot and agents need them, and appear in no log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import respx
from stdnum import luhn

from tests.conftest import stub_llm_settings
from tests.handoff.helpers import AgentClient, agent_token
from tests.pii.capture import app_log_lines, database_bytes, json_lines, where
from tests.utils.chat import Customer
from tests.utils.openai import COMPLETIONS, requested_tool, tool_call_response
from tests.utils.orders import order

_BODY = "453914880343646"
CARD = _BODY + luhn.calc_check_digit(_BODY)
CARD_SPACED = " ".join(CARD[i : i + 4] for i in range(0, 16, 4))
CARD_MASK = f"[card XXXX-XXXX-XXXX-{CARD[-4:]}]"
AGENT_CARD = "5555 5555 5555 4444"
API_KEY = "sk-proj-T3stK3yZq9W8e7R6t5Y4u3I2o1P0aSdF"
PASSWORD = "Tr0ub4dor&3xyz"
NOTE_KEY = "ghp_N0teS3cretN0teS3cretN0teS3cret012345"
PHONE = "(614) 555-0134"
PHONE_FORMS = (PHONE, "555-0134", "6145550134")
HOOKS = "http://hooks.test/supportgraph"
DELIVERED = order("delivered")


class EchoingModel:
    """An OpenAI-compatible stub that records every request body.

    It refuses a message containing "call me" with a 400 that quotes the message back, as
    providers' content filters do: the app logs the error, so the customer's words reach a
    log line and must be masked there.
    """

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Answer one chat-completions request."""
        body = request.content.decode()
        self.bodies.append(body)
        messages = json.loads(body)["messages"]
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if "call me" in last:
            return httpx.Response(400, json={"error": {"message": f"content rejected: {last}"}})
        tool = requested_tool(request)
        answers: dict[str, dict[str, Any]] = {
            "Classification": {
                "intent": "human" if "person" in last else "order_status",
                "confidence": 0.95,
                "sentiment": "neutral",
            },
            "SlotValues": {},
            "FaqAnswer": {"answerable": False, "answer": "", "used_ids": []},
        }
        return httpx.Response(200, json=tool_call_response(tool, answers.get(tool, {})))


async def test_secrets_reach_no_table_model_webhook_or_log(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    model = EchoingModel()
    settings = {
        **backend,
        **stub_llm_settings(),
        "webhook_urls": [HOOKS],
        "webhook_secret": "webhook-secret-of-the-receiver",
        "webhook_events": ["escalated", "agent_reply"],
        "webhook_poll_seconds": 0.1,
    }
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        hooks = mock.post(HOOKS).mock(return_value=httpx.Response(200))
        async with app_factory(**settings) as client:
            with app_log_lines() as logs:
                customer = Customer(client)
                first = await customer.say(
                    f"I was charged twice for order {DELIVERED['order_id']}. "
                    f"My card is {CARD_SPACED}, exp 11/27, cvv 123"
                )
                second = await customer.say(f"it's {DELIVERED['email']}")
                third = await customer.say(
                    f"Thanks! If you need to call me: {PHONE} or {DELIVERED['email']}. "
                    f"My API key is {API_KEY} and my password is {PASSWORD}"
                )
                fourth = await customer.say("I want to talk to a person please")
                agent = AgentClient(client, agent_token(backend))
                sid = customer.session_id
                await agent.post(f"/sessions/{sid}/reply", {"text": f"Is it {AGENT_CARD}?"})
                await agent.post(f"/sessions/{sid}/notes", {"text": f"they sent {NOTE_KEY}"})
                transcript = await customer.transcript()
                conversation = await agent.get(f"/sessions/{sid}")
                for _ in range(100):
                    if hooks.call_count >= 2:
                        break
                    await asyncio.sleep(0.1)
        webhook_bodies = {c.request.content.decode() for c in hooks.calls}
    tables = database_bytes(backend)
    log_text = logs.getvalue()
    lines = json_lines(logs)

    # The customer is told, and the transcript says exactly what the API answered.
    assert "removed the card number and the card security code" in first["reply"]
    assert "removed the password and the API key" in third["reply"]
    assert "removed" not in second["reply"]
    customer_said = [m["content"] for m in transcript["messages"] if m["role"] == "customer"]
    assert customer_said[0].endswith(f"My card is {CARD_MASK}, exp 11/27, cvv [removed]")
    assert customer_said[2].startswith(f"Thanks! If you need to call me: {PHONE} or ")
    assert customer_said[2].endswith(
        "My API key is [api key removed] and my password is [redacted]"
    )
    bot_said = [m["content"] for m in transcript["messages"] if m["role"] == "assistant"]
    assert bot_said[:3] == [first["reply"], second["reply"], third["reply"]]
    assert fourth["status"] == "escalated"
    agent_said = [m["content"] for m in transcript["messages"] if m["role"] == "agent"]
    assert agent_said == ["Is it [card XXXX-XXXX-XXXX-4444]?"]
    assert conversation["escalation"]["slots"]["email"] == DELIVERED["email"]
    assert conversation["notes"][0]["content"] == "they sent [api key removed]"

    secrets = [CARD, CARD_SPACED, API_KEY, PASSWORD, "5555555555554444", AGENT_CARD, NOTE_KEY]
    checkpoint_tables = [t for t in tables if "checkpoint" in t or t in ("writes",)]
    assert checkpoint_tables, f"no checkpoint tables among {sorted(tables)}"
    for table in ("sg_messages", "sg_events", "sg_outbox", "sg_notes"):
        assert table in tables, f"{table} missing from {sorted(tables)}"
    for secret in secrets:
        assert where(secret, tables) == [], f"{secret!r} stored in {where(secret, tables)}"
        assert not [b for b in model.bodies if secret in b], f"{secret!r} sent to the model"
        assert not [b for b in webhook_bodies if secret in b], f"{secret!r} in a webhook"
        assert secret not in log_text, f"{secret!r} logged"
    # Controls: the searches do read the checkpoints, the model requests and the webhooks.
    assert where(CARD_MASK, tables) and set(where(CARD_MASK, tables)) & set(checkpoint_tables)
    assert set(where(DELIVERED["email"], tables)) & set(checkpoint_tables)
    assert any(CARD_MASK in b for b in model.bodies)
    assert any(DELIVERED["email"] in b for b in webhook_bodies), "agents' webhooks keep the email"
    assert len(webhook_bodies) >= 2

    # Logs: no email, no phone, no tokens; the masked forms show the lines were written.
    for value in (DELIVERED["email"], *PHONE_FORMS, customer.token or "-", agent_token(backend)):
        assert value not in log_text, f"{value!r} logged"
    failed = [line for line in lines if line["msg"].startswith("model call failed")]
    assert failed, "the provider's error (quoting the message) was logged"
    local, domain = DELIVERED["email"].split("@")
    assert f"{local[0]}***@{domain}" in failed[0]["detail"]
    assert "[phone …34]" in failed[0]["detail"]
    turns = [line for line in lines if line["msg"] == "turn"]
    assert len(turns) == 4
    assert turns[0]["redacted"] == ["card", "cvv"]
    assert turns[1]["slots"]["email"] == f"{local[0]}***@{domain}"
    assert sorted(turns[2]["redacted"]) == ["api_key", "password"]


async def test_the_model_is_sent_the_masked_card_only(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    model = EchoingModel()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        async with app_factory(**sqlite_backend, **stub_llm_settings()) as client:
            body = await Customer(client).say(
                f"Can I pay with {CARD_SPACED} over the phone? Is that card accepted?"
            )
    assert model.bodies, "the model was asked"
    for sent in model.bodies:
        assert CARD not in sent and CARD_SPACED not in sent
        digits = "".join(c for c in sent if c.isdigit())
        assert CARD not in digits, "not even with the separators dropped"
    assert any(f"Can I pay with {CARD_MASK} over the phone?" in sent for sent in model.bodies)
    assert CARD not in body["reply"] and "removed the card number" in body["reply"]
