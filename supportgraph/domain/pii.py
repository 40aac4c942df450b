"""Find and mask personal data and secrets in text.

Two levels, for two places:

- :func:`redact_secrets` removes what a customer should never paste into a support chat:
  payment card numbers (Luhn- and issuer-checked, so order numbers, phone numbers and
  tracking numbers stay), card security codes, IBANs (mod-97), US social security numbers,
  passwords and PINs, API keys, access tokens and private keys. The service runs it on every
  customer message before the message is stored, put in the graph state or sent to a model.
- :func:`mask_for_log` also masks emails and phone numbers. The bot needs an email to verify
  an order and a phone number may be a legitimate answer, so those are kept in the
  conversation, but logs never carry them.

Masks stay informative (``[card XXXX-XXXX-XXXX-4242]``, ``c***@example.org``) without the
value. A card mask's last digits follow a dash so that slot patterns looking for a bare
4-digit order number do not read them as one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn, numdb
from stdnum.us import ssn as stdnum_ssn

if TYPE_CHECKING:
    from supportgraph.domain.pack import Slot

PHONE_REGIONS: tuple[str, ...] = ("US", "CA", "GB", "AU", "NZ", "IE", "DE", "FR")
"""Regions whose national phone formats are recognised without a country code (an
international ``+CC`` number is recognised whatever the region)."""

REDACTED = "[redacted]"
MAX_PHONE_CHECKS = 20
"""Phone-like runs of one text checked against numbering plans; any more are masked unchecked."""

SECRET_LABELS: dict[str, str] = {
    "card": "the card number",
    "cvv": "the card security code",
    "iban": "the bank account number",
    "ssn": "the social security number",
    "password": "the password",
    "pin": "the PIN",
    "api_key": "the API key",
    "token": "the access token",
    "private_key": "the private key",
    "credentials": "the login details in the link",
}
"""What the customer is told was removed, per kind of secret (in the order they are listed)."""


@dataclass(frozen=True)
class Finding:
    """One detected value: its kind, where it is, and what replaces it."""

    kind: str
    start: int
    end: int
    mask: str


@dataclass(frozen=True)
class Redaction:
    """A text with its secrets masked, and which kinds were found."""

    text: str
    kinds: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Whether anything was masked."""
        return bool(self.kinds)


# --- payment cards -------------------------------------------------------------------------

# Digit groups joined by single spaces, dashes or dots (how people type and paste card numbers;
# "+" is a space in a URL's query string).
_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ .+-]\d+)*(?!\d)")
_GROUP = re.compile(r"\d+")

# (prefix ranges, allowed lengths) of the networks customers hold cards of. Checked besides
# the Luhn digit so that one in ten random digit runs (tracking numbers, phone numbers run
# together) is not taken for a card.
_BRANDS: tuple[tuple[tuple[tuple[int, int], ...], range], ...] = (
    (((4, 4),), range(13, 20)),  # Visa
    (((51, 55), (2221, 2720)), range(16, 17)),  # Mastercard
    (((34, 34), (37, 37)), range(15, 16)),  # American Express
    (((6011, 6011), (644, 649), (65, 65)), range(16, 20)),  # Discover
    (((62, 62), (81, 81)), range(16, 20)),  # UnionPay
    (((3528, 3589),), range(16, 20)),  # JCB
    (((300, 305), (36, 36), (38, 39), (3095, 3095)), range(14, 20)),  # Diners Club
    (((2200, 2204),), range(16, 20)),  # Mir
    (((50, 50), (56, 58), (63, 63), (67, 67)), range(12, 20)),  # Maestro
)


def is_card_number(digits: str) -> bool:
    """Whether ``digits`` (digits only) is a plausible payment card number: network and Luhn."""
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    # The network first: it is cheap, and rules out most runs before the Luhn sum.
    for ranges, lengths in _BRANDS:
        if len(digits) not in lengths:
            continue
        for low, high in ranges:
            width = len(str(low))
            if low <= int(digits[:width]) <= high:
                return luhn.is_valid(digits)
    return False


def card_mask(digits: str) -> str:
    """``[card XXXX-XXXX-XXXX-4242]``: the last four digits only (what receipts print)."""
    return f"[card XXXX-XXXX-XXXX-{digits[-4:]}]"


def _cards(text: str) -> list[Finding]:
    found: list[Finding] = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in _GROUP.finditer(run[0])]
        i = 0
        while i < len(groups):
            if text[groups[i][0]] not in "23456":
                i += 1  # no card network starts with another digit
                continue
            # The longest card starting at group i: "order 1042 4111 1111 1111 1111" still
            # finds the card inside a longer run of groups.
            best = None
            digits = ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and is_card_number(digits):
                    best = (j, digits)
            if best is None:
                i += 1
                continue
            j, digits = best
            found.append(Finding("card", groups[i][0], groups[j][1], card_mask(digits)))
            i = j + 1
    return found


_CVV_CUE = re.compile(
    r"(?i)\b(?:cvv2?|cvc2?|csc|cid|security[ ]code|card[ ]code|card[ ]verification[ ]\w+)\b"
    r"(?:[ ]*(?:number|no\.?|code))?[ ]*(?:is|was|[:=#-])?[ ]*(\d{3,4})(?!\d)"
)
# Right after a card: an optional expiry ("12/27", "exp 12/2027"), then three digits.
_AFTER_CARD = re.compile(
    r"[ ]*[,;]?[ ]*(?:(?:exp(?:iry|ires|\.)?:?[ ]*)?\d{1,2}[ ]*/[ ]*\d{2,4}[ ]*[,;]?[ ]*)?"
    r"(\d{3})(?![\d/])"
)


def _cvvs(text: str, cards: list[Finding]) -> list[Finding]:
    found = [Finding("cvv", m.start(1), m.end(1), "[removed]") for m in _CVV_CUE.finditer(text)]
    for card in cards:
        after = _AFTER_CARD.match(text, card.end)
        if after:
            found.append(Finding("cvv", after.start(1), after.end(1), "[removed]"))
    return found


# --- other secrets -------------------------------------------------------------------------

_IBAN_REGISTRY = numdb.get("iban")


@functools.cache
def iban_length(country: str) -> int | None:
    """The length of an IBAN of ``country`` (ISO 3166 code), from the SWIFT registry."""
    props = _IBAN_REGISTRY.info(country.upper())[0][1]
    bban = props.get("bban")
    return 4 + sum(int(n) for n in re.findall(r"(\d+)!", bban)) if bban else None


_IBAN_START = re.compile(r"(?i)(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?=[ ]?[A-Z0-9])")
_IBAN_CHAR = re.compile(r"[ ]?([A-Za-z0-9])")


def _ibans(text: str) -> list[Finding]:
    found: list[Finding] = []
    for start in _IBAN_START.finditer(text):
        # Exactly the country's IBAN length, spaces allowed between the characters (so a word
        # typed after it is not taken for a part of it).
        length = iban_length(start[0][:2])
        if length is None:
            continue
        chars: list[tuple[str, int]] = [(c, start.start() + k) for k, c in enumerate(start[0])]
        pos = start.end()
        while len(chars) < length:
            more = _IBAN_CHAR.match(text, pos)
            if not more:
                break
            chars.append((more[1], more.end(1) - 1))
            pos = more.end()
        if len(chars) < length:
            continue
        compact = "".join(c for c, _ in chars).upper()
        end = chars[-1][1] + 1
        if (end == len(text) or not text[end].isalnum()) and stdnum_iban.is_valid(compact):
            mask = f"[IBAN {compact[:2]}XX-XXXX-{compact[-4:]}]"
            found.append(Finding("iban", start.start(), end, mask))
    return found


_SSN_DASHED = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
_SSN_CUE = re.compile(
    r"(?i)\b(?:ssn|social[ ]security(?:[ ]number|[ ]no\.?|[ ]#)?)[ ]*(?:is|was|[:=#-])?[ ]*"
    r"(\d{3}[ -]?\d{2}[ -]?\d{4})(?![\w-])"
)


def _ssns(text: str) -> list[Finding]:
    found = []
    for pattern in (_SSN_DASHED, _SSN_CUE):
        for m in pattern.finditer(text):
            start, end = (m.start(), m.end()) if pattern is _SSN_DASHED else m.span(1)
            if stdnum_ssn.is_valid(re.sub(r"\D", "", text[start:end])):
                found.append(Finding("ssn", start, end, "[SSN removed]"))
    return found


# A value after "password is" that is a word about the password, not the password itself.
_NOT_A_PASSWORD = frozenset(
    """not no wrong incorrect invalid expired reset locked blocked changed forgotten lost same
    different required needed too very still correct right ok okay fine working broken weak
    strong short long empty blank missing case sensitive the a an my your it this that
    now also being definitely already just probably""".split()
)
_PASSWORD = re.compile(
    r"(?i)\b(?P<key>pass(?:word|wd|code|phrase)?|pwd|pw|login[ ]code)\b(?:"
    # "password: correct horse battery": up to the end of the clause (a passphrase).
    r"[ ]*[:=][ ]*(?P<phrase>[^\n,;]{1,128}?)"
    r"(?=[ ]*(?:[,;\n]|[.!?](?:\s|$)|$|[ ]+(?:and|but|please|thanks?|thank[ ]you)\b))"
    # "my password is hunter2": one word, unless it is a word about the password.
    r"|[ ]+(?:is|was)[: ]+(?P<word>[\"']?[^\s\"']{2,128}[\"']?)"
    r")"
)
_PIN = re.compile(r"(?i)\bpin(?:[ ]?(?:code|number|no\.?))?\b[ ]*(?:is|was|[:=])?[ ]*(\d{4,8})\b")


def _passwords(text: str) -> list[Finding]:
    found = []
    for m in _PASSWORD.finditer(text):
        group = "phrase" if m["phrase"] else "word"
        value = m[group].strip("\"'.,;!?")
        if not value or (group == "word" and value.lower() in _NOT_A_PASSWORD):
            continue
        found.append(Finding("password", m.start(group), m.end(group), REDACTED))
    for m in _PIN.finditer(text):
        found.append(Finding("pin", m.start(1), m.end(1), REDACTED))
    return found


# Keys with a recognisable shape: providers' API keys, access tokens, JWTs, private keys.
_KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
    ),
    ("token", re.compile(r"\beyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*")),  # a JWT (our tokens too)
    (
        "api_key",
        re.compile(
            r"(?<![\w-])(?:"
            r"sk-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic and their lookalikes
            r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"  # GitHub
            r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
            r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
            r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
            r"|AIza[0-9A-Za-z_-]{35}"  # Google
            r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
            r"|npm_[A-Za-z0-9]{36}"  # npm
            r"|SG\.[\w-]{16,}\.[\w-]{16,}"  # SendGrid
            r")"
        ),
    ),
)
_AUTH_HEADER = re.compile(r"(?i)\b(?:bearer|basic|token)[ ]+([A-Za-z0-9._~+/=-]{12,})")
_KEY_VALUE = re.compile(
    r"(?i)\b(?:api[_ -]?key|apikey|access[_ -]?key|secret(?:[_ -]?key)?|client[_ -]?secret"
    r"|(?:access|auth|refresh|session|bearer|api)[_ -]?token|private[_ -]?key)\b"
    r"[\"']?[ ]*(?:is|was|[:=])[ ]*[\"']?([A-Za-z0-9._~+/=-]{8,})"
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+):([^\s@/]+)@")
# Long strings mixing letters and digits with a high entropy: keys of shapes we don't know.
_OPAQUE = re.compile(r"(?<![\w+/=-])[A-Za-z0-9_+/=-]{24,}(?![\w+/=-])")
_UUID = re.compile(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    counts = Counter(value)
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _looks_random(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and not _UUID.match(value) and shannon_entropy(value) >= 3.5


def _keys(text: str, *, opaque: bool) -> list[Finding]:
    found = [
        Finding(kind, m.start(), m.end(), f"[{kind.replace('_', ' ')} removed]")
        for kind, pattern in _KEY_PATTERNS
        for m in pattern.finditer(text)
    ]
    for pattern in (_AUTH_HEADER, _KEY_VALUE):
        found += [
            Finding("token", m.start(1), m.end(1), "[token removed]")
            for m in pattern.finditer(text)
            if _looks_random(m[1]) or len(m[1]) >= 20
        ]
    found += [
        Finding("credentials", m.start(2), m.end(2), REDACTED)
        for m in _URL_CREDENTIALS.finditer(text)
    ]
    if opaque:
        found += [
            Finding("token", m.start(), m.end(), "[token removed]")
            for m in _OPAQUE.finditer(text)
            if _looks_random(m[0])
        ]
    return found


# --- contacts (masked in logs only) --------------------------------------------------------

# No top-level domain required: a log line cut short mid-address is still masked.
_EMAIL = re.compile(r"(?<![\w.+'-])([\w.+'-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)")
_PHONE_CUE = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|whatsapp"
    r"|call(?:[ ]me)?(?:[ ]on|[ ]at)?|text(?:[ ]me)?)\b[^\d+\n]{0,20}(\+?\d[\d ().-]{5,18}\d)"
)


_PHONE_CANDIDATE = re.compile(r"(?<![\w+.-])(?:\+|\(\+?)?\d(?:[\d ().-]|-(?=\d)){5,22}\d(?![\w-])")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def mask_email(value: str) -> str:
    """``c***@example.org``: the first character of the local part, and the domain."""
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else REDACTED


def _phone_mask(raw: str) -> str:
    digits = re.sub(r"\D", "", raw)
    return f"[phone …{digits[-2:]}]"


def _emails(text: str) -> list[Finding]:
    return [
        Finding("email", m.start(), m.end(), mask_email(m[0]))
        for m in _EMAIL.finditer(text)
        if "." in m[2] or m.end() == len(text)
    ]


def _phone_valid(candidate: str, regions: Iterable[str]) -> bool:
    """Whether libphonenumber takes ``candidate`` for a real number (international or national)."""
    for region in ("ZZ", *regions) if candidate.startswith("+") else regions:
        try:
            number = phonenumbers.parse(candidate, None if region == "ZZ" else region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
        if region == "ZZ":
            return False
    return False


def _phones(text: str, regions: Iterable[str]) -> list[Finding]:
    # Cheap candidates first (a libphonenumber parse is costly): 7 to 15 digits with phone
    # punctuation, not a date; each is then checked against the regions' numbering plans, so
    # order numbers, prices, tracking numbers and dates stay readable.
    found: list[Finding] = []
    regions = tuple(regions)
    checked = 0
    for m in _PHONE_CANDIDATE.finditer(text):
        raw = m[0]
        digits = sum(c.isdigit() for c in raw)
        if not 7 <= digits <= 15 or _DATE.search(raw):
            continue
        # A line full of digit runs is masked without asking the numbering plans each time.
        checked += 1
        if checked > MAX_PHONE_CHECKS or _phone_valid(raw, regions):
            found.append(Finding("phone", m.start(), m.end(), _phone_mask(raw)))
    # Whatever follows "phone", "call me on"...: a local number no numbering plan confirms.
    found += [
        Finding("phone", m.start(1), m.end(1), _phone_mask(m[1]))
        for m in _PHONE_CUE.finditer(text)
        if 7 <= sum(c.isdigit() for c in m[1]) <= 15
    ]
    return found


# --- putting it together -------------------------------------------------------------------


def _apply(text: str, findings: list[Finding]) -> tuple[str, list[Finding]]:
    """Replace findings, first and longest first; a finding overlapping a kept one is dropped."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
        if kept and f.start < kept[-1].end:
            continue
        kept.append(f)
    out, pos = [], 0
    for f in kept:
        out += [text[pos : f.start], f.mask]
        pos = f.end
    out.append(text[pos:])
    return "".join(out), kept


def find_secrets(text: str, *, opaque: bool = True) -> list[Finding]:
    """Every secret in ``text`` (overlaps included); ``opaque`` adds unknown high-entropy keys."""
    cards = _cards(text)
    return [
        *_keys(text, opaque=opaque),
        *cards,
        *_cvvs(text, cards),
        *_ibans(text),
        *_ssns(text),
        *_passwords(text),
    ]


def redact_secrets(text: str) -> Redaction:
    """``text`` without card numbers and other secrets; emails and phone numbers stay."""
    masked, kept = _apply(text, find_secrets(text))
    kinds = tuple(dict.fromkeys(f.kind for f in kept))
    return Redaction(masked, kinds)


def mask_for_log(
    text: str, *, regions: Iterable[str] = PHONE_REGIONS, opaque: bool = False, urls: bool = True
) -> str:
    """``text`` fit for a log line: secrets, card numbers, emails and phone numbers masked.

    ``opaque`` also masks unknown high-entropy strings; off by default, since logs carry
    random-looking ids (sessions in paths) that operators need, and the customer's own words
    reach a log only after :func:`redact_secrets` ran on them. ``urls`` decodes percent-escapes
    first (off for a ``%``-format template, where ``%05d`` is no escape).
    """
    if not text:
        return text
    if urls and _PERCENT_ESCAPE.search(text):
        # A URL in an access line: "%40" would hide an email, "%20" split a card number.
        text = unquote(text)
    # Secrets first, contacts in what is left: "postgresql://user:pw@host" must lose the
    # whole password, not become an email address showing its first letter.
    masked = _apply(text, find_secrets(text, opaque=opaque))[0]
    return _apply(masked, _emails(masked) + _phones(masked, regions))[0]


def describe(kinds: Iterable[str]) -> str:
    """What was removed, for the customer: ``the card number and the password``."""
    wanted = set(kinds)
    labels = list(dict.fromkeys(label for k, label in SECRET_LABELS.items() if k in wanted))
    if not labels:
        return "some sensitive details"
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def with_note(reply: str, note: str, *, greeting: str = "") -> str:
    """``reply`` with ``note`` first: after the greeting when the reply opens with it."""
    if not reply:
        return note
    if greeting and reply.startswith(greeting):
        rest = reply[len(greeting) :].lstrip("\n")
        return f"{greeting}\n\n{note}\n\n{rest}" if rest else f"{greeting}\n\n{note}"
    return f"{note}\n\n{reply}"


def slots_for_log(slots: Mapping[str, str], specs: Mapping[str, Slot]) -> dict[str, str]:
    """Slot values fit for a log line.

    A pack marks a slot ``sensitive`` when its values identify a person (an email, an address)
    even where no pattern recognises them: those are masked. Free-text slots (a reason, a
    description) are summarised, since anyone's details can be in them. The rest (an order
    number, a plan) are kept, and still pass through the log filter.
    """
    out: dict[str, str] = {}
    for name, value in slots.items():
        spec = specs.get(name)
        text = str(value)
        if spec is not None and spec.sensitive:
            out[name] = mask_email(text) if _EMAIL.fullmatch(text) else REDACTED
        elif spec is None or spec.type == "text":
            out[name] = f"[text, {len(text)} chars]"
        else:
            out[name] = text
    return out


def redact_data(value: object) -> object:
    """:func:`redact_secrets` over a JSON-like value (dicts and lists walked, keys kept)."""
    if isinstance(value, str):
        return redact_secrets(value).text
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def pseudonym(session_id: str) -> str:
    """The id an audit record keeps instead of the session id (its SHA-256)."""
    return hashlib.sha256(session_id.encode()).hexdigest()
