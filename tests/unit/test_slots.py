"""Slot values in local mode: the store and ISP packs' patterns on tricky inputs."""

from __future__ import annotations

import pytest

from supportgraph.domain.pack import Pack, Slot
from supportgraph.domain.slots import extract_from, find_candidate, normalize, validate
from tests.utils.orders import order

SHIPPED = order("shipped")


def checked(slot: Slot, text: str) -> tuple[str | None, bool]:
    """The candidate found in ``text`` and whether it validates."""
    found = find_candidate(slot, text)
    return found, found is not None and validate(slot, found).error is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("where is order 1042?", "1042"),
        ("order #1077 please", "1077"),
        ("my order number is 1042", "1042"),
        ("Order no. 1042", "1042"),
        ("#1077", "1077"),
        ("1042", "1042"),
        ("it's 1042.", "1042"),
        ("has 1007 shipped?", "1007"),
        ("the 1042 order", "1042"),
        ("order 1042, email j.1077@example.com", "1042"),
        ("order #1042 and #1077", "1042"),
        ("it's 12", "12"),
        ("order 10423", "10423"),
    ],
)
def test_order_number_is_found(store_pack: Pack, text: str, expected: str) -> None:
    assert find_candidate(store_pack.spec.slots["order_number"], text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I paid $1042 for it",
        "it cost 1042 dollars",
        "I was charged 49.99",
        "total 1042",
        "1042.50",
        "delivered on 2026-03-17",
        "ordered on 03/17/2026",
        "it came at 10:42",
        "I bought it in 2025",
        "send it to 1042 Main Street",
        "45 Oak Ave, apt 1042",
        "size 10",
        "I ordered 2 lamps",
        "waited 1042 days",
        "my email is 1042@example.com",
        "jordan1042@example.com",
        "call me at 555-1042",
    ],
)
def test_order_number_ignores_prices_dates_addresses_and_emails(
    store_pack: Pack, text: str
) -> None:
    assert find_candidate(store_pack.spec.slots["order_number"], text) is None


@pytest.mark.parametrize(("value", "ok"), [("1042", True), ("12", False), ("10423", False)])
def test_order_number_pattern(store_pack: Pack, value: str, ok: bool) -> None:
    slot = store_pack.spec.slots["order_number"]
    result = validate(slot, value)
    assert (result.error is None) is ok
    assert result.error in (None, slot.invalid)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("my email is jordan.ellis+shop@example.net", "jordan.ellis+shop@example.net"),
        ("JORDAN.ELLIS@EXAMPLE.NET", "jordan.ellis@example.net"),
        ("email: a_b-c@sub.example.co.uk.", "a_b-c@sub.example.co.uk"),
        ("<mary@example.org>", "mary@example.org"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("email me at bob@example.com!", "bob@example.com"),
    ],
)
def test_email_is_found_and_normalised(store_pack: Pack, text: str, value: str) -> None:
    slot = store_pack.spec.slots["email"]
    found = find_candidate(slot, text)
    assert found is not None
    assert validate(slot, found).value == value
    assert validate(slot, found).error is None


@pytest.mark.parametrize(
    "text",
    ["it is mary@example", ".a@example.com", "a.@example.com", "me@example.c", "名前@example.jp"],
)
def test_malformed_email_is_rejected(store_pack: Pack, text: str) -> None:
    slot = store_pack.spec.slots["email"]
    found, ok = checked(slot, text)
    assert found is not None and not ok
    assert validate(slot, found).error == slot.invalid


@pytest.mark.parametrize("text", ["mary @ example.org", "user@@example.com", "no email here"])
def test_no_email_candidate(store_pack: Pack, text: str) -> None:
    assert find_candidate(store_pack.spec.slots["email"], text) is None


def test_order_and_email_from_one_message(store_pack: Pack) -> None:
    text = f"order {SHIPPED['order_id']}, email {SHIPPED['email']}"
    found = extract_from(store_pack.spec.slots, ["order_number", "email"], [text])
    assert found == {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}


def test_a_later_text_wins(store_pack: Pack) -> None:
    texts = ["where is order 1042?", "sorry, it's 1077", "thanks"]
    assert extract_from(store_pack.spec.slots, ["order_number"], texts) == {"order_number": "1077"}


@pytest.mark.parametrize(
    ("text", "found", "ok"),
    [
        ("internet not working, account FL-204817", "FL-204817", True),
        ("fl-204817", "fl-204817", True),
        ("account FL-12", "FL-12", False),
        ("FL-2048170", "FL-2048170", False),
        ("204817", "204817", False),
        ("I get 300 Mbps", None, False),
    ],
)
def test_isp_account_number(isp_pack: Pack, text: str, found: str | None, ok: bool) -> None:
    slot = isp_pack.spec.slots["account_number"]
    assert checked(slot, text) == (found, ok)
    if found is not None and ok:
        assert validate(slot, found).value == found.upper()


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("FL-204817, postcode 6012", "6012"),
        ("postcode 6012", "6012"),
        ("I only get 6012 Mbps", None),
        ("paying $6012", None),
        ("6012.5", None),
        ("FL-204817", None),
    ],
)
def test_isp_postcode(isp_pack: Pack, text: str, found: str | None) -> None:
    assert find_candidate(isp_pack.spec.slots["postcode"], text) == found


@pytest.mark.parametrize(
    ("text", "ok"), [("Fibre Pro please", True), ("switch me to max", True), ("premium", False)]
)
def test_isp_plan(isp_pack: Pack, text: str, ok: bool) -> None:
    assert checked(isp_pack.spec.slots["new_plan"], text)[1] is ok


def test_normalize_and_empty_values() -> None:
    slot = Slot(prompt="Which one?", pattern=r"^\d+$", normalize="strip_hash")
    assert normalize(slot, "  #1042 ") == "1042"
    assert validate(slot, "#1042").error is None
    assert validate(slot, "   ").error == slot.invalid
    spaced = Slot(prompt="Why?", type="text")
    assert normalize(spaced, "it  arrived\n damaged") == "it arrived damaged"
    assert find_candidate(spaced, "anything") is None, "a text slot has no pattern to find"
