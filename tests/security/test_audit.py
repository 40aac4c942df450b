"""The audit log of actions, on SQLite and PostgreSQL, through the real API.

Every action taken or refused is a row of ``sg_audit`` (migration 4): the action, its kind,
outcome and reason, the session only as its SHA-256 pseudonym and the record only as a keyed
hash; no slot value, no session id. Deleting the session keeps the rows, under the pseudonym.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from langgraph.store.memory import InMemoryStore

from checkpoints.langgraph_store import LangGraphStoreSink
from nodes.context import SupportContext
from tests.conftest import STORE_PACK
from tests.security.helpers import audit_rows, sql
from tests.utils.chat import Customer
from tests.utils.orders import order

DELIVERED = order("delivered")
SHIPPED = order("shipped")


async def _conversation(customer: Customer) -> None:
    """A wrong email, a verified lookup, a refund said yes to and another said no to."""
    await customer.say(f"where is my order {SHIPPED['order_id']}? {DELIVERED['email']}")
    await customer.say(f"order {DELIVERED['order_id']}, email {DELIVERED['email']}")
    for answer in ("yes", "no"):
        # The order and email carry over from the lookup: only the reason is asked for.
        await customer.say(f"I want a refund for order {DELIVERED['order_id']}")
        plan = await customer.say("it arrived damaged")
        assert "Shall I go ahead?" in plan["reply"]
        await customer.say(answer)


def _personal(values: list[str], row: dict[str, Any]) -> list[str]:
    text = json.dumps(row).lower()
    return [v for v in values if v.lower() in text]


async def test_actions_are_audited_without_personal_data(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer, other = Customer(client), Customer(client)
        await _conversation(customer)
        await other.say(f"where is my order {DELIVERED['order_id']}? {DELIVERED['email']}")
        sid = customer.session_id
        assert sid is not None
        digest = hashlib.sha256(sid.encode()).hexdigest()
        rows = audit_rows(backend)
        mine = [r for r in rows if r["subject_sha256"] == digest]
        assert [(r["action"], r["kind"], r["outcome"], r["reason"]) for r in mine] == [
            ("lookup_order", "lookup_record", "refused", "verification_failed"),
            ("lookup_order", "lookup_record", "taken", "verified"),
            ("request_refund", "create_request", "pending", "awaiting_confirmation"),
            ("request_refund", "create_request", "taken", "confirmed"),
            ("request_refund", "create_request", "pending", "awaiting_confirmation"),
            ("request_refund", "create_request", "refused", "cancelled"),
        ]
        assert {r["actor"] for r in mine} == {"assistant"}
        request_ids = [r[0] for r in sql(backend, "SELECT id FROM sg_requests")]
        assert [r["request_id"] for r in mine if r["request_id"]] == request_ids
        # One record, one name within the session; another session names it differently.
        refs = {r["record_ref"] for r in mine[1:4]}
        theirs = next(r for r in rows if r["subject_sha256"] != digest)
        assert len(refs) == 1 and theirs["record_ref"] not in refs
        personal = [sid, DELIVERED["email"], DELIVERED["order_id"], DELIVERED["name"]]
        assert all(_personal(personal, row) == [] for row in rows), rows


async def test_deleting_a_session_keeps_its_audit_rows_under_the_pseudonym(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await _conversation(customer)
        sid = customer.session_id
        assert sid is not None
        digest = hashlib.sha256(sid.encode()).hexdigest()
        before = [r for r in audit_rows(backend) if r["subject_sha256"] == digest]
        assert len(before) == 6
        response = await client.delete(
            f"/api/support/sessions/{sid}", headers={"Authorization": f"Bearer {customer.token}"}
        )
        assert response.status_code == 204, response.text
        after = audit_rows(backend)
        assert [r for r in after if r["subject_sha256"] == digest][:-1] == before
        assert after[-1]["action"] == "session_deleted"
        assert all(sid not in json.dumps(row) for row in after)
        assert sql(backend, "SELECT COUNT(*) FROM sg_requests")[0][0] == 0


async def test_under_the_langgraph_server_audits_go_to_its_store(
    context: Callable[..., SupportContext],
) -> None:
    """Studio runs have no service store: the context's request sink (the server's LangGraph
    store) is its audit sink too, under the same pseudonym."""
    store = InMemoryStore()
    sink = LangGraphStoreSink(store)
    assert dataclasses.replace(context(STORE_PACK), requests=sink).auditor is sink
    await sink.audit_action(
        session_id="studio-thread",
        action="lookup_order",
        kind="lookup_record",
        outcome="taken",
        reason="verified",
        record_ref="ab12",
    )
    digest = hashlib.sha256(b"studio-thread").hexdigest()
    items = await store.asearch(("supportgraph", "audit", digest))
    assert [(i.value["action"], i.value["reason"]) for i in items] == [("lookup_order", "verified")]
    assert "studio-thread" not in json.dumps([i.value for i in items])
