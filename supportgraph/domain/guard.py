"""The output guard: what a customer may never read, checked in code whatever a model wrote.

Defences live in code, not in prompts: a model can be talked into anything. So:

- every reply passes :meth:`Guard.withheld`: the pack's declared ``secrets`` and the text of
  the prompts (the pack's system prompt and the nodes' instructions) never go out;
- a free-text FAQ answer also passes :meth:`Guard.unsafe_answer`: each identifier in it (an
  email, or a code or number of six characters or more with a digit) must come from the
  articles it was given or from the conversation, and record data tied to one customer (an
  email, a name, a tracking or order number, an address...) may appear only where the
  conversation already has it: the customer typed it, or a verified lookup showed it.

Text is compared as lower-case words (``\\w+`` runs joined by one space), so changes of case,
punctuation or spacing do not hide a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from supportgraph.domain.pack import DEFAULT_MESSAGES, Pack

SHINGLE = 8
"""Words in a row of a prompt that count as quoting it."""
MIN_PRIVATE = 4
"""Shortest record value (letters and digits) the guard looks for; shorter ones are noise."""
MIN_IDENTIFIER = 6
SCAN_CACHE = 1024
"""Texts whose scan a guard remembers: replies and articles repeat, and a scan is most of a
turn's guard cost (an FAQ answer is checked with its candidate articles every turn)."""

_WORDS = re.compile(r"\w+")
_EMAIL = re.compile(r"(?<![\w.+'-])[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_CODE = re.compile(r"(?<![\w-])[\w-]*\d[\w-]*(?![\w-])")


def squashed(text: str) -> str:
    """Only the letters and digits, lower-case ("K-E-S-T-R-E-L 77 31": "kestrel7731")."""
    return "".join(_WORDS.findall(text.casefold())).replace("_", "")


def words(text: str) -> str:
    """The text as lower-case words joined by single spaces (with a space at each end)."""
    return " " + " ".join(_WORDS.findall(text.casefold())) + " "


def identifiers(text: str) -> list[str]:
    """Emails, and codes or numbers with a digit of six characters or more."""
    found = [m.group(0) for m in _EMAIL.finditer(text)]
    rest = _EMAIL.sub(" ", text)
    found += [
        m.group(0).strip("-_")
        for m in _CODE.finditer(rest)
        if len(m.group(0).strip("-_")) >= MIN_IDENTIFIER
    ]
    return found


@dataclass(frozen=True)
class Guard:
    """The checks of one pack, built once from its prompts, secrets and records."""

    secrets: tuple[str, ...]
    """The pack's secrets, as words (also found spelled out letter by letter)."""
    shingles: frozenset[str]
    """Every run of :data:`SHINGLE` words of the prompts that no public pack text contains."""
    private: tuple[str, ...]
    """Record values tied to a single customer, as words."""
    _shingles_by_word: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _private_by_word: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _scan: Callable[[str], _Scan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up by first word: a reply is checked against the few values that can start
        # in it, not all of a pack's record values and prompt runs.
        object.__setattr__(self, "_shingles_by_word", _by_first_word(self.shingles))
        object.__setattr__(self, "_private_by_word", _by_first_word(self.private))
        object.__setattr__(self, "_scan", lru_cache(maxsize=SCAN_CACHE)(self._scan_text))

    @classmethod
    def for_pack(cls, pack: Pack, prompts: Iterable[str] = ()) -> Guard:
        """The guard for ``pack``; ``prompts`` are the nodes' own instructions to the model."""
        public = words(" \n ".join(_public_texts(pack)))
        shingles: set[str] = set()
        for prompt in (pack.spec.system_prompt, *prompts):
            tokens = words(prompt).split()
            size = min(SHINGLE, len(tokens))
            for i in range(len(tokens) - size + 1):
                run = " " + " ".join(tokens[i : i + size]) + " "
                if size >= 4 and run not in public:
                    shingles.add(run)
        secrets = tuple(w for s in pack.spec.secrets if (w := words(s)).strip())
        private = _private_values(pack, public)
        return cls(secrets=secrets, shingles=frozenset(shingles), private=private)

    def withheld(self, text: str) -> str | None:
        """Why ``text`` must never reach a customer (``secret`` / ``prompt``), or None."""
        return self._scan(text).withheld

    def unsafe_answer(
        self, answer: str, *, sources: Sequence[str], conversation: Sequence[str]
    ) -> str | None:
        """Why a free-text answer must not go out, or None.

        ``sources`` are the articles the answer was written from; ``conversation`` the
        customer's and the assistant's messages this conversation has (what this customer
        already typed or was shown after verification).
        """
        scan = self._scan(answer)
        if scan.withheld is not None:
            return scan.withheld
        if scan.identifiers:
            grounded = words(" \n ".join([*sources, *conversation]))
            if any(value not in grounded for value in scan.identifiers):
                return "ungrounded_identifier"
        if scan.private:
            known = words(" \n ".join(conversation))
            if any(value not in known for value in scan.private):
                return "record_data"
        return None

    def _scan_text(self, text: str) -> _Scan:
        """What in ``text`` the checks look at; depends on the text alone, so it is cached."""
        folded, flat = words(text), squashed(text)
        withheld = None
        if any(s in folded or (len(q := squashed(s)) >= 8 and q in flat) for s in self.secrets):
            withheld = "secret"
        elif _found(self._shingles_by_word, folded):
            withheld = "prompt"
        return _Scan(
            withheld=withheld,
            identifiers=tuple(words(value) for value in identifiers(text)),
            private=tuple(_found(self._private_by_word, folded)),
        )


@dataclass(frozen=True)
class _Scan:
    """One text as the guard sees it."""

    withheld: str | None
    """``secret`` or ``prompt`` when the text may never go out."""
    identifiers: tuple[str, ...]
    """Its identifiers, as words: each must be grounded in the sources or the conversation."""
    private: tuple[str, ...]
    """The single-customer record values it holds: each must be known to the conversation."""


def _by_first_word(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``words()`` values grouped by their first word."""
    index: dict[str, list[str]] = {}
    for value in values:
        first = value.split(maxsplit=1)[0] if value.strip() else ""
        index.setdefault(first, []).append(value)
    return {first: tuple(group) for first, group in index.items()}


def _found(index: dict[str, tuple[str, ...]], folded: str) -> list[str]:
    """The indexed values that occur in ``folded`` (``words()`` text), as whole words.

    A value found in the text starts with one of its words, so only those groups are tried.
    """
    return [
        value for word in set(folded.split()) for value in index.get(word, ()) if value in folded
    ]


def _private_values(pack: Pack, public: str) -> tuple[str, ...]:
    """Values of the lookup data files that belong to exactly one customer.

    A customer is who the verification fields name (the email of an order), or the record's
    key when an action verifies nothing. A status, a carrier or a product many customers
    bought is shared and stays public, and so is a value the pack's own public texts show
    (a product an article describes). The key and verify fields (order number, email) and
    the action's ``private`` fields (a name, a tracking number) are private whatever an
    article says: an article naming them is a leak, not a source.
    """
    owners: dict[str, set[tuple[str, ...]]] = {}
    forced: set[str] = set()
    for action in pack.spec.actions.values():
        if action.uses != "lookup_record" or not isinstance(action.params.get("data"), str):
            continue
        key = list(_fields(action.params.get("key")))
        verify = list(_fields(action.params.get("verify")))
        always = {*key, *verify, *(action.params.get("private") or [])}
        for record in pack.records(action.params["data"]):
            who = tuple(record.get(f, "").strip().casefold() for f in (verify or key))
            for name, value in record.items():
                folded = words(value)
                if len(folded.replace(" ", "")) >= MIN_PRIVATE:
                    owners.setdefault(folded, set()).add(who)
                    if name in always:
                        forced.add(folded)
    return tuple(
        sorted(v for v, who in owners.items() if len(who) == 1 and (v in forced or v not in public))
    )


def _fields(mapping: Any) -> Iterable[str]:
    return mapping.keys() if isinstance(mapping, dict) else ()


def _public_texts(pack: Pack) -> list[str]:
    """What the pack shows customers anyway: a prompt quoting it gives nothing away."""
    spec = pack.spec
    texts = [spec.greeting, *DEFAULT_MESSAGES.values(), *spec.messages.values()]
    texts += [t for s in spec.slots.values() for t in (s.prompt, s.invalid)]
    texts += [t for e in pack.faq for t in (e.title, e.body, *e.questions)]
    texts += [t for a in spec.actions.values() for t in _strings(a.params)]
    return texts


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
