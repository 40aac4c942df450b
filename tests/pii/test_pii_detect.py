"""Detection and masking of personal data and secrets (supportgraph.domain.pii), value by value."""

from __future__ import annotations

import time

import pytest
from stdnum import luhn

from supportgraph.domain.loader import load_pack
from supportgraph.domain.pii import (
    describe,
    is_card_number,
    mask_for_log,
    redact_data,
    redact_secrets,
    slots_for_log,
    with_note,
)
from supportgraph.domain.slots import find_candidate
from tests.conftest import ISP_PACK, STORE_PACK
from tests.utils.orders import order

# Network test numbers (Luhn-valid) and the same digits with the last one changed.
CARDS = {
    "visa": "4111 1111 1111 1111",
    "visa-dashes": "4242-4242-4242-4242",
    "visa-dots": "4012.8888.8888.1881",
    "visa-compact": "4000056655665556",
    "mastercard": "5555 5555 5555 4444",
    "mastercard-2series": "2223 0031 2200 3222",
    "amex": "3782 822463 10005",
    "discover": "6011 1111 1111 1117",
    "jcb": "3530 1113 3330 0000",
    "diners": "3056 9309 0259 04",
    "unionpay": "6200 0000 0000 0005",
}


def _break_luhn(number: str) -> str:
    last = number[-1]
    return number[:-1] + str((int(last) + 1) % 10)


@pytest.mark.parametrize("number", CARDS.values(), ids=CARDS.keys())
def test_card_numbers_are_masked_to_their_last_four(number: str) -> None:
    digits = "".join(c for c in number if c.isdigit())
    out = redact_secrets(f"please charge my card {number} thanks")
    assert out.kinds == ("card",)
    assert f"[card XXXX-XXXX-XXXX-{digits[-4:]}]" in out.text
    assert digits not in "".join(c for c in out.text if c.isdigit() or c == " ")
    assert out.text.startswith("please charge my card [card") and out.text.endswith("] thanks")


@pytest.mark.parametrize("number", CARDS.values(), ids=CARDS.keys())
def test_a_digit_run_failing_luhn_is_not_a_card(number: str) -> None:
    wrong = _break_luhn(number)
    assert not luhn.is_valid("".join(c for c in wrong if c.isdigit()))
    assert redact_secrets(f"card {wrong}").text == f"card {wrong}"


@pytest.mark.parametrize(
    "text",
    [
        "where is order 1013? and 1042, 1007 too",
        "order #1042, paid $1,234.56 on 2026-01-14 at 10:30",
        "tracking 9400698084306626638099 (USPS) and 192450506954 (FedEx)",
        "UPS 1Z16WPGL0307872670",
        "call me on (614) 555-0134 or +44 20 7946 0958",
        "account FL-123456, postcode 6011, 900 Mbps for $95",
        "my order id is 550e8400-e29b-41d4-a716-446655440000",
        "I forgot my password",
        "my password is not working",
        "the password was wrong",
    ],
)
def test_ordinary_support_text_is_left_alone(text: str) -> None:
    out = redact_secrets(text)
    assert out.text == text and not out.changed


def test_luhn_valid_runs_of_other_networks_or_lengths_are_not_cards() -> None:
    # Luhn-valid, but no card network starts with 9 or 1, and 12 digits is too short.
    for digits in ("9400698084306628", "1234567812345670", "192450506954"):
        assert luhn.is_valid(digits) or len(digits) == 12
        assert not is_card_number(digits)
        assert redact_secrets(f"ref {digits}").text == f"ref {digits}"


def test_a_card_inside_a_longer_run_of_digit_groups_is_still_found() -> None:
    out = redact_secrets("order 1042 4111 1111 1111 1111 please")
    assert out.text == "order 1042 [card XXXX-XXXX-XXXX-1111] please"


def test_the_masked_card_is_not_taken_for_an_order_or_account_number() -> None:
    """A bare 4-digit tail would fill the store's order number; the dash keeps it out."""
    store, isp = load_pack(STORE_PACK), load_pack(ISP_PACK)
    masked = redact_secrets("my card is 4111 1111 1111 1111").text
    assert find_candidate(store.spec.slots["order_number"], masked) is None
    assert find_candidate(isp.spec.slots["postcode"], masked) is None
    assert find_candidate(isp.spec.slots["account_number"], masked) is None
    # The same pattern does read a bare number: the check above could fail.
    assert find_candidate(store.spec.slots["order_number"], "card ending 1111") == "1111"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "4111 1111 1111 1111 exp 12/27 cvv 123",
            "[card XXXX-XXXX-XXXX-1111] exp 12/27 cvv [removed]",
        ),
        (
            "card 4242-4242-4242-4242, 09/28, 737",
            "card [card XXXX-XXXX-XXXX-4242], 09/28, [removed]",
        ),
        ("amex 3782 822463 10005 CID: 1234", "amex [card XXXX-XXXX-XXXX-0005] CID: [removed]"),
        ("the security code is 456", "the security code is [removed]"),
    ],
)
def test_security_codes_next_to_a_card_or_named_are_masked(text: str, expected: str) -> None:
    out = redact_secrets(text)
    assert out.text == expected
    assert "cvv" in out.kinds


def test_three_digits_after_a_card_but_further_away_stay() -> None:
    out = redact_secrets("card 4111 1111 1111 1111 was charged for order 1042 and 123 items")
    assert out.text.endswith("was charged for order 1042 and 123 items")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN [IBAN GBXX-XXXX-5432] thanks"),
        ("de89370400440532013000", "[IBAN DEXX-XXXX-3000]"),
        ("FR14 2004 1010 0505 0001 3M02 606", "[IBAN FRXX-XXXX-2606]"),
    ],
)
def test_ibans_with_a_valid_checksum_are_masked(text: str, masked: str) -> None:
    out = redact_secrets(text)
    assert out.text == masked and out.kinds == ("iban",)


def test_an_iban_with_a_wrong_checksum_is_not() -> None:
    text = "GB82 WEST 1234 5698 7654 33"  # last digit changed: mod-97 fails
    assert redact_secrets(text).text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my ssn is 536-90-4399", "my ssn is [SSN removed]"),
        ("Social Security number: 536 90 4399", "Social Security number: [SSN removed]"),
        ("SSN 536904399", "SSN [SSN removed]"),
        ("ref 666-12-3456", "ref 666-12-3456"),  # area 666 is never issued
        ("536904399", "536904399"),  # nine bare digits without the word: not taken
    ],
)
def test_social_security_numbers(text: str, expected: str) -> None:
    assert redact_secrets(text).text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my password is hunter2!", "my password is [redacted]"),
        ("pw is S3cret", "pw is [redacted]"),
        ("Password: correct horse battery staple, thanks", "Password: [redacted], thanks"),
        ("password=Tr0ub4dor&3 and order 1042", "password=[redacted] and order 1042"),
        ("my PIN is 4821", "my PIN is [redacted]"),
    ],
)
def test_passwords_and_pins(text: str, expected: str) -> None:
    out = redact_secrets(text)
    assert out.text == expected
    assert out.kinds in (("password",), ("pin",))


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        ("sk-proj-abcdEFGH1234ijklMNOP5678qrstUVWX", "api_key"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_key"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP", "api_key"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "api_key"),
        ("AKIAIOSFODNN7EXAMPLE", "api_key"),
        ("AIzaSyD-abcdefghijklmnopqrstuvwxyz01234", "api_key"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz", "token"),
        ("Qm9hbGV4ZXJ0eXVpb3BsYWtzamRoZmcxMjM0NTY", "token"),  # unknown shape, high entropy
    ],
)
def test_keys_and_tokens_are_masked(secret: str, kind: str) -> None:
    out = redact_secrets(f"here you go: {secret} ok")
    assert secret not in out.text
    assert out.kinds == (kind,)
    assert out.text.startswith("here you go: [") and out.text.endswith("] ok")


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef"),
        ("api_key=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"),
        ("postgresql://postgres:s3cr3t@127.0.0.1:5432/db", "s3cr3t"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA",
        ),
    ],
)
def test_credentials_in_context(text: str, leak: str) -> None:
    assert leak not in redact_secrets(text).text
    assert leak not in mask_for_log(text)


def test_emails_and_phones_stay_in_the_conversation_but_not_in_logs() -> None:
    delivered = order("delivered")
    text = f"order {delivered['order_id']}, {delivered['email']}, call me on (614) 555-0134"
    assert redact_secrets(text).text == text
    logged = mask_for_log(text)
    assert delivered["email"] not in logged and "555-0134" not in logged
    local, domain = delivered["email"].split("@")
    assert f"{local[0]}***@{domain}" in logged
    assert "[phone …34]" in logged
    assert delivered["order_id"] in logged, "order numbers stay readable in logs"


@pytest.mark.parametrize(
    "phone",
    [
        "(614) 555-0134",
        "614-555-0134",
        "614.555.0134",
        "6145550134",
        "+1 415 555 2671",
        "+44 20 7946 0958",
        "+64 21 123 4567",
        "021 123 4567",
        "+49 30 901820",
    ],
)
def test_phone_formats_are_masked_in_logs(phone: str) -> None:
    logged = mask_for_log(f"customer said {phone} is best")
    digits = "".join(c for c in phone if c.isdigit())
    assert phone not in logged and digits not in logged
    assert f"[phone …{digits[-2:]}]" in logged


def test_a_local_number_after_a_cue_is_masked_in_logs() -> None:
    assert mask_for_log("phone: 555-0134") == "phone: [phone …34]"


@pytest.mark.parametrize(
    "text",
    [
        "order 1042 placed 2026-01-14, paid $129.00",
        "tracking 9400698084306626638099",
        "GET /api/support/sessions/Qm9hbGV4ZXJ0eXVpb3BsYWtzamRoZmcxMjM0NTY HTTP/1.1",
        "127.0.0.1:54321",
        "version 3.11.7, 12 items, 900 Mbps",
    ],
)
def test_log_masking_keeps_ids_dates_and_addresses(text: str) -> None:
    assert mask_for_log(text) == text


def test_values_percent_encoded_in_a_url_are_masked_in_logs() -> None:
    line = "GET /x?email=jo%40example.net&card=4111+1111+1111+1111&c=4111%201111%201111%201111"
    assert mask_for_log(line) == (
        "GET /x?email=j***@example.net&card=[card XXXX-XXXX-XXXX-1111]&c=[card XXXX-XXXX-XXXX-1111]"
    )


def test_an_email_cut_short_in_a_truncated_log_line_is_still_masked() -> None:
    assert mask_for_log("detail: caleb.hughes@exa") == "detail: c***@exa"


def test_describe_and_the_note_placement() -> None:
    assert describe(["card"]) == "the card number"
    assert describe(["api_key", "card", "password"]) == (
        "the card number, the password and the API key"
    )
    greeting = "Hi, I'm an AI assistant."
    assert with_note(f"{greeting}\n\nWhat's your order number?", "NOTE", greeting=greeting) == (
        f"{greeting}\n\nNOTE\n\nWhat's your order number?"
    )
    assert with_note("What's your email?", "NOTE", greeting=greeting) == (
        "NOTE\n\nWhat's your email?"
    )
    assert with_note("", "NOTE") == "NOTE"


def test_slots_for_log_masks_sensitive_and_free_text_slots() -> None:
    pack = load_pack(STORE_PACK)
    logged = slots_for_log(
        {
            "order_number": "1042",
            "email": "caleb.hughes@example.org",
            "new_address": "12 Oak Ave, Columbus OH 43215",
            "reason": "it arrived broken, call Jane on 555 0134",
        },
        pack.spec.slots,
    )
    assert logged == {
        "order_number": "1042",
        "email": "c***@example.org",
        "new_address": "[redacted]",
        "reason": "[text, 40 chars]",
    }
    assert pack.spec.slots["email"].sensitive and pack.spec.slots["new_address"].sensitive


def test_redact_data_walks_json() -> None:
    data = {"escalation": {"summary": "card 4111 1111 1111 1111", "tried": ["pw is S3cret"]}}
    assert redact_data(data) == {
        "escalation": {
            "summary": "card [card XXXX-XXXX-XXXX-1111]",
            "tried": ["pw is [redacted]"],
        }
    }


@pytest.mark.parametrize(
    "text",
    [
        " ".join("4" for _ in range(2000)),
        "GB82 " * 800,
        "(614) 555-0134 " * 260,
        "4111 1111 1111 1111 " * 200,
        "password: x " * 330,
        "a@" * 2000,
        "7" * 4000,
    ],
    ids=["digits", "iban-starts", "phones", "cards", "passwords", "ats", "one-run"],
)
def test_a_hostile_4000_character_message_is_masked_in_bounded_time(text: str) -> None:
    """Every customer message goes through this: no input may make it take seconds."""
    text = text[:4000]
    started = time.perf_counter()
    redact_secrets(text)
    mask_for_log(text)
    # Under 0.1 s each on a busy 2-core machine; the bound leaves room for a loaded CI box.
    assert time.perf_counter() - started < 2.0
