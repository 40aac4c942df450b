"""Domain pack: the schema of a company's intents, slots, FAQ, actions and rules.

A pack is a folder a company edits without touching Python:

- ``pack.yaml``: name, version, greeting, intents, slots, actions, escalation rules, messages;
- ``faq/*.md``: one FAQ entry a file, YAML front matter with ``id``, ``title``, ``tags``;
- data files (CSV, JSON or YAML lists of records) that the actions read.

``supportgraph.domain.loader`` reads a pack folder; every error names the file, the field and
what was wrong (:class:`PackError`).
"""

from __future__ import annotations

import csv
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

BUILTIN_INTENTS = ("faq", "human", "other")
"""Intents every pack has: a FAQ question, a request for a person, and anything else."""

DEFAULT_HUMAN_EXAMPLES = (
    "I want to talk to a human",
    "can I speak to a real person",
    "connect me with an agent please",
    "put me through to customer service staff",
    "I need a human agent",
    "let me talk to someone from your team",
    "representative please",
    "stop the bot, get me a person",
    "is there a real person I can chat with",
    "transfer me to a live agent",
)

DEFAULT_MESSAGES: dict[str, str] = {
    "clarify": (
        "Sorry, I'm not sure I understood. Could you rephrase that, or tell me a bit more? "
        "You can also ask for a person at any time."
    ),
    "escalated": (
        "I've passed this conversation to a member of our support team. They can see "
        "everything we've discussed, and they will reply right here. You don't need to "
        "repeat anything."
    ),
    "cancelled": "No problem, I haven't done anything. Is there something else I can help with?",
    "confirm_unclear": "Please answer yes or no: shall I go ahead?",
    "invalid_value": "That doesn't look right for {slot}: {reason}",
    "faq_miss": "I couldn't find the answer to that in our help articles.",
    "action_failed": (
        "Something went wrong on our side while doing that. Nothing was changed. "
        "Please try again in a moment, or ask for a person."
    ),
    "withheld": (
        "Sorry, I can't share that. I can help with your own orders once you've given their "
        "details, or answer questions about our policies. You can also ask for a person."
    ),
    # {what}: "the card number", "the card number and the password"...
    "redacted": (
        "For your safety I removed {what} from your message before saving it. We never need "
        "details like that here, so please don't send them in this chat."
    ),
}

RETIRED_MESSAGES = frozenset({"topic_changed", "not_found_retry"})
"""Message keys earlier releases defined and nothing says any more: a pack may still set them."""

DEFAULT_NEGATIVE_WORDS = (
    "terrible",
    "awful",
    "horrible",
    "useless",
    "worst",
    "ridiculous",
    "unacceptable",
    "furious",
    "angry",
    "scam",
    "disgusting",
    "pathetic",
    "fed up",
    "sick of",
    "lawyer",
    "complaint",
)

DEFAULT_YES_WORDS = (
    "yes",
    "y",
    "yeah",
    "yep",
    "yup",
    "sure",
    "ok",
    "okay",
    "confirm",
    "confirmed",
    "go ahead",
    "do it",
    "please do",
    "correct",
    "sí",
    "si",
    "oui",
    "ja",
)
DEFAULT_NO_WORDS = (
    "no",
    "n",
    "nope",
    "nah",
    "cancel",
    "don't",
    "do not",
    "stop",
    "never mind",
    "not",
    "not sure",
    "no thanks",
    "wait",
    "hold on",
    "nevermind",
    "not now",
    "non",
    "nein",
)


class PackError(ValueError):
    """A domain pack is invalid; ``problems`` lists each error as 'file: field: what'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid domain pack:\n" + "\n".join(f"  - {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Slot(_Model):
    """A detail an intent needs, with how to find it in text and how to validate it."""

    description: str = ""
    prompt: str = Field(min_length=1, description="The question that asks the customer for it.")
    type: Literal["pattern", "text"] = "pattern"
    extract: str | None = Field(
        default=None, description="Regex that finds a candidate value in free text (group 1)."
    )
    pattern: str | None = Field(default=None, description="Regex a valid value must fully match.")
    invalid: str = Field(default="it isn't in the expected format.", min_length=1)
    normalize: Literal["none", "lower", "upper", "strip_hash"] = "none"
    sensitive: bool = False

    @field_validator("extract", "pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    @cached_property
    def extract_re(self) -> re.Pattern[str] | None:
        """The compiled candidate finder, if any."""
        return re.compile(self.extract) if self.extract else None

    @cached_property
    def pattern_re(self) -> re.Pattern[str] | None:
        """The compiled validation pattern, if any."""
        return re.compile(self.pattern) if self.pattern else None


class Intent(_Model):
    """Something a customer wants, with examples, the slots it needs and the action it runs."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = ""
    examples: list[str] = Field(min_length=3)
    slots: list[str] = Field(default_factory=list)
    action: str | None = None
    human_only: bool = False


class Action(_Model):
    """A named action: a registry entry (``uses``) and its parameters."""

    uses: str
    params: dict[str, Any] = Field(default_factory=dict)


class EscalationRules(_Model):
    """When the bot hands over to a person."""

    low_confidence: float = Field(default=0.3, ge=0.0, le=1.0)
    max_low_confidence_turns: int = Field(default=2, ge=1)
    max_failures: int = Field(default=3, ge=1)
    negative_sentiment_turns: int = Field(default=2, ge=1)
    negative_words: list[str] = Field(default_factory=lambda: list(DEFAULT_NEGATIVE_WORDS))
    faq_miss: Literal["collect_info", "escalate_human"] = "escalate_human"
    faq_miss_intent: str | None = None
    switch_confidence: float = Field(default=0.45, ge=0.0, le=1.0)


class FaqSettings(_Model):
    """Where the FAQ lives and how relevant a hit must be."""

    dir: str = "faq"
    min_score: float = Field(default=1.0, ge=0.0)
    min_coverage: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Share of the question's terms an entry needs."
    )
    top_k: int = Field(default=3, ge=1, le=10)


class Confirmation(_Model):
    """Words that count as yes / no when the bot asks before changing data."""

    yes: list[str] = Field(default_factory=lambda: list(DEFAULT_YES_WORDS))
    no: list[str] = Field(default_factory=lambda: list(DEFAULT_NO_WORDS))


class PackFile(_Model):
    """The schema of ``pack.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    company: str = ""
    greeting: str = Field(min_length=1)
    intents: list[Intent] = Field(min_length=1)
    slots: dict[str, Slot] = Field(default_factory=dict)
    actions: dict[str, Action] = Field(default_factory=dict)
    escalation: EscalationRules = Field(default_factory=EscalationRules)
    faq: FaqSettings = Field(default_factory=FaqSettings)
    confirmation: Confirmation = Field(default_factory=Confirmation)
    human_examples: list[str] = Field(default_factory=lambda: list(DEFAULT_HUMAN_EXAMPLES))
    messages: dict[str, str] = Field(default_factory=dict)
    system_prompt: str = ""
    secrets: list[str] = Field(
        default_factory=list,
        description="Texts no reply may ever contain (internal codes, canaries); see guard.py.",
    )


class FaqEntry(_Model):
    """One FAQ article."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    title: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    questions: list[str] = Field(default_factory=list)
    body: str = Field(min_length=1)
    source: str = ""


class Pack:
    """A loaded, validated domain pack."""

    def __init__(self, *, root: Path, spec: PackFile, faq: list[FaqEntry]) -> None:
        self.root = root
        self.spec = spec
        self.faq = faq
        self.intents = {i.name: i for i in spec.intents}
        self._data: dict[str, list[dict[str, str]]] = {}

    @property
    def name(self) -> str:
        """The pack's name."""
        return self.spec.name

    @property
    def version(self) -> str:
        """The pack's version, recorded on each thread it starts."""
        return self.spec.version

    def message(self, key: str, **values: object) -> str:
        """A canned bot text, from the pack or the English default, filled with ``values``."""
        template = self.spec.messages.get(key, DEFAULT_MESSAGES[key])
        return template.format_map(Placeholders(values)) if values else template

    def intent_examples(self) -> dict[str, list[str]]:
        """Examples for every classifiable intent: the pack's, ``human`` and ``faq``."""
        examples = {i.name: list(i.examples) for i in self.spec.intents}
        examples["human"] = list(self.spec.human_examples)
        examples["faq"] = [q for e in self.faq for q in (e.title, *e.questions)]
        return examples

    def records(self, relpath: str) -> list[dict[str, str]]:
        """The records of a data file of the pack (CSV, JSON or YAML list), cached."""
        if relpath not in self._data:
            self._data[relpath] = read_records(self.root / relpath)
        return self._data[relpath]


class Placeholders(dict[str, object]):
    """A format mapping that leaves unknown fields visible (``{doctor}``) instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def read_records(path: Path) -> list[dict[str, str]]:
    """The records of a data file: a CSV with a header, or a JSON or YAML list of mappings."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PackError([f"{path.name}: a data file must be a list of records"])
    return [{str(k): "" if v is None else str(v) for k, v in r.items()} for r in data]
