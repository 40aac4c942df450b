"""``POST /api/support/chat/stream``: the reply streamed, then the plain route's body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import respx

from api.schemas import ChatResponse
from tests.conftest import stub_llm_settings
from tests.handoff.helpers import SseEvent, collect_sse
from tests.utils.chat import Customer, app_of
from tests.utils.openai import COMPLETIONS, ScriptedModel
from tests.utils.orders import order

DELIVERED = order("delivered")


async def stream_turn(
    client: httpx.AsyncClient, message: str, *, session_id: str | None, token: str | None
) -> list[SseEvent]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/api/support/chat/stream",
        json={"message": message, "session_id": session_id},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return await collect_sse(response)


async def test_streamed_text_is_the_saved_reply(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend, stream_chunk_delay=0) as client:
        plain = await Customer(client).say("How many days do I have to return something?")
        session_id, token, replies = None, None, []
        for message in (
            "How many days do I have to return something?",
            f"where is my order {DELIVERED['order_id']}?",
            DELIVERED["email"],
            "I'd like to talk to a real person please",
            "hello?",
        ):
            events = await stream_turn(client, message, session_id=session_id, token=token)
            kinds = [e.event for e in events]
            assert kinds[0] == "start" and kinds[-1] == "done"
            assert set(kinds[1:-1]) <= {"delta"}
            done = events[-1].data
            streamed = "".join(e.data["text"] for e in events if e.event == "delta")
            assert streamed == done["reply"]
            assert set(done) == set(ChatResponse.model_fields) == set(plain)
            assert done["session_id"] == events[0].data["session_id"]
            assert done["session_token"] == events[0].data["session_token"]
            session_id, token = done["session_id"], done["session_token"]
            replies.append(done)
        customer = Customer(client)
        customer.session_id, customer.token = session_id, token
        transcript = await customer.transcript()
    assert len([e for e in events if e.event == "delta"]) == 0, "no reply once escalated"
    assert replies[0]["citations"] and "30 days" in replies[0]["reply"]
    assert len(replies[0]["reply"].split()) > 3, "long enough to come in several pieces"
    assert replies[2]["status"] == "resolved"
    assert replies[3]["status"] == "escalated"
    saved = [m["content"] for m in transcript["messages"] if m["role"] == "assistant"]
    assert saved == [r["reply"] for r in replies if r["reply"]]


async def test_several_chunks_arrive(app_factory: Any, sqlite_backend: dict[str, Any]) -> None:
    async with app_factory(**sqlite_backend) as client:
        events = await stream_turn(
            client, "How many days do I have to return something?", session_id=None, token=None
        )
    deltas = [e.data["text"] for e in events if e.event == "delta"]
    assert len(deltas) > 3
    assert all(d for d in deltas)


async def test_stream_refuses_like_the_plain_route(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        bad = await client.post("/api/support/chat/stream", json={"message": ""})
        no_token = await client.post(
            "/api/support/chat/stream", json={"message": "hi", "session_id": customer.session_id}
        )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert no_token.status_code == 401


async def post_then_disconnect(app: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Drive the ASGI app like a browser that closes the tab after the first bytes arrive."""
    first_bytes = asyncio.Event()
    request_sent = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await first_bytes.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_bytes.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/support/chat/stream",
        "raw_path": b"/api/support/chat/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return sent


async def test_client_leaving_mid_turn_leaves_the_thread_valid(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    model = ScriptedModel(
        {
            "Classification": [{"intent": "faq", "confidence": 0.9, "sentiment": "neutral"}],
            "FaqAnswer": [
                {"answerable": True, "answer": "You have 30 days.", "used_ids": ["return-policy"]}
            ],
        }
    )

    async def slow_model(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.4)  # the turn is still running when the client leaves
        return model(request)

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=slow_model)
        async with app_factory(**backend, **stub_llm_settings()) as client:
            sent = await post_then_disconnect(
                app_of(client), {"message": "How long do I have to send something back?"}
            )
            assert model.calls == [], "the client left before the model answered"
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            start = json.loads(body.decode().split("data: ", 1)[1].split("\r\n", 1)[0])
            customer = Customer(client)
            customer.session_id, customer.token = start["session_id"], start["session_token"]

            for _ in range(100):  # the abandoned turn finishes on its own
                session = await customer.transcript()
                if len(session["messages"]) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [m["role"] for m in session["messages"]] == ["customer", "assistant"]
            next_turn = await customer.say("And how long do refunds take?")
            session = await customer.transcript()
    assert model.calls[:2] == ["Classification", "FaqAnswer"]
    assert next_turn["reply"].endswith("You have 30 days.")
    assert next_turn["route"] == ["classify_intent", "handle_faq"]
    assert [m["role"] for m in session["messages"]] == ["customer", "assistant"] * 2
