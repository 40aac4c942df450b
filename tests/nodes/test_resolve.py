"""``resolve``: verified lookups; data-changing actions state the plan and wait for a yes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from checkpoints import open_persistence
from nodes.resolve import resolve
from supportgraph.domain.actions import ActionCall, CreateRequest, RequestParams
from tests.utils.orders import order

SESSION = "s-hand-built"  # the session id of hand-built states
DELIVERED = order("delivered")
SHIPPED = order("shipped")
PLACED = order("placed")


@pytest.fixture(autouse=True)
async def session_row(store: Any, ctx: Any) -> None:
    """The session the hand-built states belong to (requests reference it)."""
    await store.create_session(SESSION, pack_name=ctx.pack.name, pack_version=ctx.pack.version)


def unknown_order_number(ctx: Any) -> str:
    """A well-formed order number that no record has."""
    data = ctx.pack.spec.actions["lookup_order"].params["data"]
    known = {r["order_id"] for r in ctx.pack.records(data)}
    return next(str(n) for n in range(1000, 10000) if str(n) not in known)


def refund_slots(record: dict[str, str], reason: str = "it arrived torn") -> dict[str, str]:
    """The slots of a refund request for ``record``."""
    return {"order_number": record["order_id"], "email": record["email"], "reason": reason}


def lookup_state(state: Any, slots: dict[str, str], **fields: Any) -> dict[str, Any]:
    """An order-status turn whose slots are complete."""
    return state("where is my order?", intent="order_status", slots=slots, turn=2, **fields)


@pytest.mark.parametrize(
    ("status", "shown", "word"),
    [
        ("placed", "placed_at", "placed"),
        ("processing", "placed_at", "packed"),
        ("shipped", "tracking", "shipped"),
        ("delivered", "delivered_at", "delivered"),
        ("cancelled", "total", "cancelled"),
        ("returned", "total", "return"),
    ],
)
async def test_lookup_found_answers_by_status(
    run: Any, state: Any, ctx: Any, status: str, shown: str, word: str
) -> None:
    record = order(status)
    slots = {"order_number": record["order_id"], "email": record["email"]}
    out = await run(resolve, lookup_state(state, slots), ctx)
    assert out["status"] == "resolved"
    assert record[shown] in out["reply"]
    assert word in out["reply"]
    assert "{" not in out["reply"], "every template field was filled"
    assert out["tried"][-1] == "order_status: done"


async def test_wrong_email_reads_like_an_unknown_order(run: Any, state: Any, ctx: Any) -> None:
    stranger = "someone.else@example.com"
    unknown = unknown_order_number(ctx)
    wrong = await run(
        resolve,
        lookup_state(state, {"order_number": SHIPPED["order_id"], "email": stranger}),
        ctx,
    )
    missing = await run(
        resolve, lookup_state(state, {"order_number": unknown, "email": stranger}), ctx
    )
    assert wrong["reply"].replace(SHIPPED["order_id"], "N") == missing["reply"].replace(
        unknown, "N"
    )
    for field in ("tracking", "items", "name", "carrier", "total"):
        assert SHIPPED[field] not in wrong["reply"], f"{field} leaked"
    for out in (wrong, missing):
        assert out["status"] == "awaiting_info"
        assert out["slots"] is None, "the values are forgotten so they can be given again"
        assert out["missing"] == ["order_number", "email"]
        assert out["failures"] == 1


async def test_forgotten_values_are_not_looked_up_again(chat: Any) -> None:
    conv = chat()
    stranger = "someone.else@example.com"
    first = await conv.say(f"where is order {SHIPPED['order_id']}? my email is {stranger}")
    assert first["route"][-1] == "resolve" and first["status"] == "awaiting_info"
    # No new values: the bot should wait for them, not repeat the failed lookup.
    out = await conv.say("hold on, let me look for the confirmation email")
    assert out["route"] == ["classify_intent", "collect_info"], out["reply"]
    assert (await conv.state())["failures"] == 1


async def test_repeated_not_found_escalates(run: Any, state: Any, ctx: Any) -> None:
    limit = ctx.pack.spec.escalation.max_failures
    slots = {"order_number": unknown_order_number(ctx), "email": "a@example.com"}
    out = await run(resolve, lookup_state(state, slots, failures=limit - 1), ctx)
    assert (out["goes_to"], out["handoff_reason"]) == ("escalate_human", "repeated_failure")
    assert "reply" not in out


async def test_create_request_states_the_plan_and_writes_nothing(
    run: Any, state: Any, ctx: Any, store: Any
) -> None:
    slots = refund_slots(DELIVERED)
    values = state("it arrived torn", intent="refund_request", slots=slots, turn=3)
    out = await run(resolve, values, ctx)
    assert out["status"] == "awaiting_info"
    pending = out["pending_action"]
    assert (pending["intent"], pending["action"], pending["slots"]) == (
        "refund_request",
        "request_refund",
        slots,
    )
    assert pending["description"] == out["reply"]
    for value in (DELIVERED["order_id"], DELIVERED["total"], DELIVERED["email"], slots["reason"]):
        assert value in out["reply"]
    assert await store.list_requests() == []


def confirmed(state: Any, pending: dict[str, Any], answer: str) -> dict[str, Any]:
    """The turn after the plan was stated: the customer answered ``answer``."""
    return state(
        pending["slots"]["reason"],
        pending["description"],
        answer,
        intent=pending["intent"],
        slots=pending["slots"],
        pending_action=pending,
        confirmation=answer if answer in ("yes", "no") else "none",
        status="awaiting_info",
        turn=4,
    )


async def pending_refund(run: Any, state: Any, ctx: Any) -> dict[str, Any]:
    """The pending action resolve prepares for a refund of a delivered order."""
    values = state("torn", intent="refund_request", slots=refund_slots(DELIVERED), turn=3)
    return (await run(resolve, values, ctx))["pending_action"]


async def test_yes_writes_exactly_one_request_even_if_the_node_re_runs(
    run: Any, state: Any, ctx: Any, store: Any
) -> None:
    pending = await pending_refund(run, state, ctx)
    values = confirmed(state, pending, "yes")
    first = await run(resolve, values, ctx)
    again = await run(resolve, values, ctx)
    requests = await store.list_requests(SESSION)
    assert len(requests) == 1
    request = requests[0]
    assert (request["kind"], request["data"]) == ("refund", pending["slots"])
    assert first["status"] == "resolved" and first["pending_action"] is None
    assert request["id"] in first["reply"] and request["id"] in again["reply"]


async def test_create_request_is_idempotent_per_key(ctx: Any, store: Any) -> None:
    action = ctx.pack.spec.actions["open_ticket"]
    params = RequestParams.model_validate(action.params)
    slots = {"email": "a.b+shop@example.com", "question": "Do you gift wrap?"}

    def call(key: str) -> ActionCall:
        return ActionCall(
            pack=ctx.pack, slots=slots, session_id=SESSION, idempotency_key=key, requests=store
        )

    one = await CreateRequest().execute(params, call(f"{SESSION}:1:open_ticket"))
    replay = await CreateRequest().execute(params, call(f"{SESSION}:1:open_ticket"))
    other = await CreateRequest().execute(params, call(f"{SESSION}:2:open_ticket"))
    assert one.data["request_id"] == replay.data["request_id"] != other.data["request_id"]
    rows = await store.list_requests(SESSION)
    assert [r["id"] for r in rows] == [one.data["request_id"], other.data["request_id"]]
    assert rows[0]["data"] == slots


async def test_no_cancels_and_writes_nothing(run: Any, state: Any, ctx: Any, store: Any) -> None:
    pending = await pending_refund(run, state, ctx)
    out = await run(resolve, confirmed(state, pending, "no"), ctx)
    assert out["reply"] == ctx.pack.message("cancelled")
    assert out["pending_action"] is None and out["slots"] is None
    assert out["status"] == "active"
    assert await store.list_requests() == []


async def test_unclear_answer_asks_again(run: Any, state: Any, ctx: Any, store: Any) -> None:
    pending = await pending_refund(run, state, ctx)
    out = await run(resolve, confirmed(state, pending, "hmm"), ctx)
    assert out["reply"] == f"{pending['description']}\n{ctx.pack.message('confirm_unclear')}"
    assert "pending_action" not in out, "the action stays pending"
    assert out["status"] == "awaiting_info"
    assert await store.list_requests() == []


@pytest.mark.parametrize(
    ("pack", "setup", "answer"),
    [
        (
            "store",
            [f"refund order {DELIVERED['order_id']}, email {DELIVERED['email']}", "it broke"],
            "absolutely not",
        ),
        (
            "isp",
            ["I want to change my plan to Fibre Pro, account FL-204817, postcode 6012"],
            "I'm not sure",
        ),
    ],
    ids=["store-absolutely-not", "isp-not-sure"],
)
async def test_a_negated_answer_does_not_confirm(
    chat: Any, pack: str, setup: list[str], answer: str
) -> None:
    conv = chat(pack)
    for text in setup:
        plan = await conv.say(text)
    assert (await conv.state()).get("pending_action") is not None, plan["reply"]
    out = await conv.say(answer)
    assert await conv.requests() == [], f"{answer!r} must not write a request"
    assert out["status"] != "resolved"


async def test_ineligible_order_is_refused_with_the_pack_text(
    run: Any, state: Any, ctx: Any, store: Any
) -> None:
    params = RequestParams.model_validate(ctx.pack.spec.actions["request_refund"].params)
    assert params.eligible is not None
    assert PLACED["status"] not in params.eligible.allowed
    values = state("torn", intent="refund_request", slots=refund_slots(PLACED), turn=3)
    out = await run(resolve, values, ctx)
    expected = " ".join(params.ineligible.split()).replace("{order_number}", PLACED["order_id"])
    assert out["reply"] == expected.replace("{status}", PLACED["status"])
    assert out["status"] == "active" and "pending_action" not in out
    assert out["failures"] == 1
    assert await store.list_requests() == []


async def test_yes_re_verifies_before_writing(run: Any, state: Any, ctx: Any, store: Any) -> None:
    # The plan was stated, then the record stopped qualifying (here: a placed order).
    pending = {
        "intent": "refund_request",
        "action": "request_refund",
        "slots": refund_slots(PLACED),
        "description": "Here's what I'll do. Shall I go ahead?",
    }
    out = await run(resolve, confirmed(state, pending, "yes"), ctx)
    assert PLACED["status"] in out["reply"]
    assert out["status"] != "resolved"
    assert await store.list_requests() == []


async def test_refused_then_cancel_reuses_the_order(chat: Any) -> None:
    conv = chat()
    await conv.say(f"I want a refund for order {PLACED['order_id']}, email {PLACED['email']}")
    refused = await conv.say("it was a gift I don't need")
    assert refused["status"] == "active" and PLACED["status"] in refused["reply"]
    plan = await conv.say("ok, cancel my order then")
    assert plan["intent"] == "cancel_order" and plan["status"] == "awaiting_info"
    assert PLACED["order_id"] in plan["reply"] and PLACED["total"] in plan["reply"]
    done = await conv.say("yes")
    assert done["status"] == "resolved"
    requests = await conv.requests()
    assert [(r["kind"], r["data"]["order_number"]) for r in requests] == [
        ("cancellation", PLACED["order_id"])
    ]


async def test_missing_request_store_fails_the_action_not_the_turn(
    run: Any, state: Any, base_context: Any
) -> None:
    ctx = base_context("store")
    assert ctx.requests is None
    pending = {
        "intent": "refund_request",
        "action": "request_refund",
        "slots": refund_slots(DELIVERED),
        "description": "Shall I go ahead?",
    }
    out = await run(resolve, confirmed(state, pending, "yes"), ctx)
    assert out["reply"] == ctx.pack.message("action_failed")
    assert out["status"] == "active" and out["failures"] == 1


async def test_a_failing_store_fails_the_action_not_the_turn(
    run: Any, state: Any, make_ctx: Any, tmp_path: Any
) -> None:
    async with open_persistence(database_url=None, sqlite_path=tmp_path / "gone.sqlite") as p:
        closed = p.store
    ctx = dataclasses.replace(make_ctx("store"), requests=closed)
    # Preparing audits (fail closed) too: the plan is stated while the store still works.
    pending = await pending_refund(run, state, make_ctx("store"))
    out = await run(resolve, confirmed(state, pending, "yes"), ctx)
    assert out["reply"] == ctx.pack.message("action_failed")
    assert out["failures"] == 1
