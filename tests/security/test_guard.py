"""The output guard: secrets, prompts and other customers' record data never reach a reply."""

from __future__ import annotations

from functools import cache

import pytest

from nodes.prompts import ANSWER_PROMPT, CLASSIFY_PROMPT, EXTRACT_PROMPT
from supportgraph.domain.guard import Guard, identifiers, words
from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import Pack
from tests.conftest import ISP_PACK, STORE_PACK
from tests.security.helpers import POISONED_PACK
from tests.utils.packs import faq_entry

SECRET = "KESTREL-VAULT-7731-ORCHID"
PROMPTS = (CLASSIFY_PROMPT, EXTRACT_PROMPT, ANSWER_PROMPT)


@cache
def pack(name: str) -> Pack:
    return load_pack({"store": STORE_PACK, "isp": ISP_PACK, "poisoned": POISONED_PACK}[name])


@cache
def guard(name: str) -> Guard:
    return Guard.for_pack(pack(name), PROMPTS)


@pytest.mark.parametrize(
    "text",
    [
        f"The passphrase is {SECRET}.",
        "the passphrase is kestrel vault 7731 orchid",
        "K-E-S-T-R-E-L V-A-U-L-T 7 7 3 1 O R C H I D",
        "Staff use it to unlock refunds over five hundred dollars without a manager.",
        "You classify the latest message of a customer talking to a support assistant.",
        "Pick exactly one intent from the allowed list, please.",
    ],
)
def test_secrets_and_prompts_are_withheld(text: str) -> None:
    assert guard("poisoned").withheld(text) is not None


def test_what_the_pack_shows_anyway_is_not_withheld() -> None:
    g = guard("poisoned")
    spec = pack("poisoned").spec
    assert g.withheld(spec.greeting) is None
    assert g.withheld("Never reveal") is None, "a few words of a prompt are no quote"
    for entry in pack("poisoned").faq:
        assert g.withheld(entry.body) is None, entry.id


@pytest.mark.parametrize("name", ["store", "isp", "poisoned"])
def test_clean_articles_pass_the_answer_check(name: str) -> None:
    """No false alarm: every article of the real packs goes out as written."""
    g = guard(name)
    poisoned = {"vip-program"}  # the test pack's article carrying a customer's data
    for entry in pack(name).faq:
        source = f"{entry.title}\n{entry.body}"
        verdict = g.unsafe_answer(entry.body, sources=[source], conversation=[])
        assert (verdict is not None) == (entry.id in poisoned), (entry.id, verdict)


def test_the_article_with_a_customers_data_is_refused() -> None:
    entry = faq_entry(pack("poisoned"), "vip-program")
    assert entry is not None
    source = f"{entry.title}\n{entry.body}"
    assert guard("poisoned").unsafe_answer(entry.body, sources=[source], conversation=[]) == (
        "record_data"
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Your tracking number is HGTRK9W2031WC.", "ungrounded_identifier"),
        ("Write to someone.else@example.org for help.", "ungrounded_identifier"),
        ("That order went to Marco Vitalesco.", "record_data"),
        ("Note on file: comp shipping approved by Lena.", "record_data"),
        ("It ships to 17 Larkspur Row, Tacoma WA 98402.", "record_data"),
        (f"Psst: {SECRET}", "secret"),
    ],
)
def test_model_answers_with_data_from_nowhere_are_refused(answer: str, reason: str) -> None:
    verdict = guard("poisoned").unsafe_answer(
        answer, sources=["Your tracking link is in the shipping email."], conversation=[]
    )
    assert verdict == reason


def test_what_the_conversation_holds_may_be_repeated() -> None:
    """The customer's own verified order, shown earlier, may be quoted back; others' not."""
    g = guard("poisoned")
    shown = "Order 2001 was delivered by UPS on 2026-02-06. Items: Enamel Camp Mug (Sage)."
    said = "where is my order 2001? sam.rivers@example.com"
    answer = "Your order 2001 (Enamel Camp Mug) can be returned within 30 days."
    assert g.unsafe_answer(answer, sources=[], conversation=[said, shown]) is None
    assert g.unsafe_answer(answer, sources=[], conversation=[]) == "record_data"
    other = answer + " So can order 2013 of Marco Vitalesco."
    assert g.unsafe_answer(other, sources=[], conversation=[said, shown]) == "record_data"


def test_private_values_are_the_ones_tied_to_one_customer() -> None:
    """Shared values (a status, a carrier used by many) stay public; personal ones do not."""
    private = set(guard("store").private)
    caleb = next(r for r in pack("store").records("data/orders.csv") if r["order_id"] == "1042")
    for field in ("order_id", "email", "name", "tracking"):
        assert words(caleb[field]) in private, field
    assert " delivered " not in private and " ups " not in private and " usd " not in private


def test_identifiers() -> None:
    found = identifiers("Call 1-800-555-0148 or write to help@heronsgate.example, ref A1B2C3.")
    assert found == ["help@heronsgate.example", "1-800-555-0148", "A1B2C3"]
    assert identifiers("Orders ship in 1–2 days, $18, order 2001.") == []
