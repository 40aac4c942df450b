"""Pack actions: templates, verified record lookups, and the checks run when a pack loads."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, TypedDict

import pytest

from supportgraph.domain.actions import (
    ActionCall,
    Cases,
    LookupParams,
    LookupRecord,
    Reply,
    ReplyParams,
    check_actions,
    match_record,
    render,
)
from supportgraph.domain.pack import Pack, PackFile
from supportgraph.domain.ports import Failed, RecordResult
from tests.utils.orders import order

SHIPPED = order("shipped")
DELIVERED = order("delivered")


def lookup_params(pack: Pack) -> LookupParams:
    """The store pack's order lookup."""
    return LookupParams.model_validate(pack.spec.actions["lookup_order"].params)


def spec_with(actions: dict[str, Any]) -> PackFile:
    """A minimal pack file with these actions."""
    return PackFile.model_validate(
        {
            "name": "t",
            "version": "1",
            "greeting": "Hi",
            "intents": [{"name": "status", "examples": ["a", "b", "c"]}],
            "slots": {
                "order_number": {"prompt": "Number?", "pattern": r"^\d{4}$"},
                "email": {"prompt": "Email?", "pattern": r"^\S+@\S+$"},
            },
            "actions": actions,
        }
    )


class RawAction(TypedDict):
    """An action as a pack file spells it, before validation (cf. ``pack.Action``)."""

    uses: str
    params: dict[str, Any]


LOOKUP: RawAction = {
    "uses": "lookup_record",
    "params": {
        "data": "data/orders.csv",
        "key": {"order_id": "order_number"},
        "verify": {"email": "email"},
        "found": "Order {order_number} is {status}.",
        "not_found": "No order {order_number}.",
    },
}


# --- render ------------------------------------------------------------------------------


def test_render_fills_slots_and_record_fields() -> None:
    text = render("Order {order_number}: {status}, {missing}", {"order_number": "1042"}, SHIPPED)
    assert text == f"Order 1042: {SHIPPED['status']}, {{missing}}"


def test_slot_values_win_over_record_fields_and_are_not_templates() -> None:
    values = {"email": "slot@example.com", "reason": "{tracking} {0} {__class__}"}
    text = render("{email} / {reason}", values, SHIPPED)
    assert text == "slot@example.com / {tracking} {0} {__class__}"
    assert SHIPPED["tracking"] not in text


def test_cases_pick_by_field_case_insensitively() -> None:
    cases = Cases(field="status", cases={"shipped": "sent {tracking}"}, default="is {status}")
    assert render(cases, {}, {**SHIPPED, "status": "SHIPPED"}) == f"sent {SHIPPED['tracking']}"
    assert render(cases, {}, {**SHIPPED, "status": "lost"}) == "is lost"
    assert render(cases, {}, {}) == "is {status}"


async def test_reply_action_renders_its_template(store_pack: Pack) -> None:
    call = ActionCall(
        pack=store_pack, slots={"name": "Ana"}, session_id="s", idempotency_key="k", requests=None
    )
    result = await Reply().prepare(ReplyParams(template="Hi {name}, {unknown}"), call)
    assert (result.status, result.reply) == ("done", "Hi Ana, {unknown}")


# --- match_record ------------------------------------------------------------------------


async def find_record(
    pack: Pack, params: LookupParams, slots: dict[str, str]
) -> Mapping[str, str] | None:
    """The verified record for these slots, through the action's record source."""
    call = ActionCall(pack=pack, slots=slots, session_id="s", idempotency_key="k", requests=None)
    return (await match_record(call, params)).record


async def test_find_record_by_key_and_verification(store_pack: Pack) -> None:
    params = lookup_params(store_pack)
    slots = {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    assert await find_record(store_pack, params, slots) == SHIPPED


async def test_verification_ignores_case_and_surrounding_spaces(store_pack: Pack) -> None:
    slots = {"order_number": f" {SHIPPED['order_id']} ", "email": f"  {SHIPPED['email'].upper()}"}
    assert await find_record(store_pack, lookup_params(store_pack), slots) == SHIPPED


@pytest.mark.parametrize(
    "slots",
    [
        {"order_number": SHIPPED["order_id"], "email": DELIVERED["email"]},
        {"order_number": SHIPPED["order_id"], "email": ""},
        {"order_number": SHIPPED["order_id"]},
        {"order_number": "0000", "email": SHIPPED["email"]},
        {"order_number": SHIPPED["order_id"], "email": "tomás.ß@example.com"},
    ],
    ids=["other-email", "empty-email", "no-email", "unknown-order", "non-ascii"],
)
async def test_no_record_without_a_matching_verification(
    store_pack: Pack, slots: dict[str, str]
) -> None:
    assert await find_record(store_pack, lookup_params(store_pack), slots) is None


async def test_comparisons_are_constant_time(
    store_pack: Pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    slots = {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"].upper()}
    assert await find_record(store_pack, lookup_params(store_pack), slots) == SHIPPED
    assert (SHIPPED["email"].encode(), SHIPPED["email"].encode()) in seen, "verify compared"
    assert (SHIPPED["order_id"].encode(), SHIPPED["order_id"].encode()) in seen, "key compared"
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in seen)


async def test_lookup_mismatch_answers_like_an_unknown_record(store_pack: Pack) -> None:
    params = lookup_params(store_pack)

    async def reply(slots: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
        call = ActionCall(
            pack=store_pack, slots=slots, session_id="s", idempotency_key="k", requests=None
        )
        result = await LookupRecord().prepare(params, call)
        return result.status, result.reply, result.data

    wrong = await reply({"order_number": SHIPPED["order_id"], "email": "x@example.com"})
    unknown = await reply({"order_number": "0000", "email": "x@example.com"})
    assert wrong[0] == unknown[0] == "not_found"
    assert wrong[1].replace(SHIPPED["order_id"], "N") == unknown[1].replace("0000", "N")
    assert wrong[2] == unknown[2] == {}


# --- check_actions -----------------------------------------------------------------------


def test_the_real_packs_have_no_problems(store_pack: Pack, isp_pack: Pack) -> None:
    assert check_actions(store_pack.spec) == []
    assert check_actions(isp_pack.spec) == []


def test_unknown_action_type_lists_the_known_ones() -> None:
    problems = check_actions(spec_with({"x": {"uses": "send_email"}}))
    assert problems == [
        "pack.yaml: actions.x.uses: unknown action type 'send_email'"
        " (known: create_request, lookup_record, reply)"
    ]


def test_bad_params_name_the_field() -> None:
    problems = check_actions(
        spec_with(
            {
                "say": {"uses": "reply", "params": {"templat": "Hi"}},
                "ask": {"uses": "create_request", "params": {"kind": "Refund!", "done": "ok"}},
                "look": {"uses": "lookup_record", "params": {**LOOKUP["params"], "key": {}}},
            }
        )
    )
    joined = "\n".join(problems)
    assert "pack.yaml: actions.say.params.template: Field required" in joined
    assert "pack.yaml: actions.say.params.templat: Extra inputs are not permitted" in joined
    assert "pack.yaml: actions.ask.params.kind: String should match pattern" in joined
    assert "pack.yaml: actions.ask.params.confirm: Field required" in joined
    assert "pack.yaml: actions.look.params.key:" in joined
    assert len(problems) == 5, problems


def test_cases_template_needs_a_default() -> None:
    found = {"field": "status", "cases": {"shipped": "sent"}}
    problems = check_actions(
        spec_with({"look": {**LOOKUP, "params": {**LOOKUP["params"], "found": found}}})
    )
    assert problems and all(p.startswith("pack.yaml: actions.look.params.found") for p in problems)
    assert any("default" in p for p in problems)


def test_references_to_undeclared_slots_and_wrong_lookups() -> None:
    params = {
        **LOOKUP["params"],
        "key": {"order_id": "order_id"},
        "verify": {"postcode": "postcode"},
    }
    request = {
        "kind": "refund",
        "lookup": "say",
        "fields": ["order_number", "reason"],
        "confirm": "Go?",
        "done": "Done.",
    }
    problems = check_actions(
        spec_with(
            {
                "look": {"uses": "lookup_record", "params": params},
                "say": {"uses": "reply", "params": {"template": "Hi"}},
                "ask": {"uses": "create_request", "params": request},
            }
        )
    )
    assert sorted(problems) == sorted(
        [
            "pack.yaml: actions.look.params: slot 'order_id' is referenced but not declared",
            "pack.yaml: actions.look.params: slot 'postcode' is referenced but not declared",
            "pack.yaml: actions.ask.params.lookup: 'say' is not a lookup_record action",
            "pack.yaml: actions.ask.params.fields: slot 'reason' is referenced but not declared",
        ]
    )


class Recorder:
    """An audit sink that keeps what it is told."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def audit_action(self, **entry: Any) -> None:
        """Keep the entry."""
        self.entries.append(entry)


class DownSource:
    """A company system that cannot answer."""

    async def lookup(self, key: Mapping[str, str]) -> RecordResult:
        """Always a failure."""
        return Failed("HTTP 503 from the order system")


async def test_a_record_source_that_fails_is_our_failure_not_a_wrong_email(
    store_pack: Pack,
) -> None:
    """A lookup whose source cannot answer says something went wrong on our side (and is
    audited as a failure), never "not found", which would blame the customer's details."""
    recorder = Recorder()
    slots = {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    call = ActionCall(
        pack=store_pack,
        slots=slots,
        session_id="s",
        idempotency_key="k",
        requests=None,
        action="lookup_order",
        audit=recorder,
        records=lambda name: DownSource(),
    )
    result = await LookupRecord().prepare(lookup_params(store_pack), call)
    assert (result.status, result.reply) == ("failed", store_pack.message("action_failed"))
    assert [(e["outcome"], e["reason"]) for e in recorder.entries] == [("failed", "error")]
