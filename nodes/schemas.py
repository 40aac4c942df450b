"""Structured-output models the nodes ask the chat model for, built from the pack.

Each pack narrows a static base model (the intent to the pack's intent names, the slots to its
slot names), so the nodes read typed fields whatever the pack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from supportgraph.domain.pack import BUILTIN_INTENTS, Pack
from supportgraph.domain.types import Confirmation, Sentiment


class Classification(BaseModel):
    """The intent of the customer's latest message."""

    intent: str = Field(description="The intent of the latest message.")
    confidence: float = Field(ge=0.0, le=1.0, description="How sure, from 0 to 1.")
    sentiment: Sentiment = "neutral"
    confirmation: Confirmation = Field(
        default="none", description="If the bot asked a yes/no question: the customer's answer."
    )


class SlotValues(BaseModel):
    """Details the customer has given in the conversation, exactly as written."""


class FaqAnswer(BaseModel):
    """An answer written only from the FAQ entries given."""

    answerable: bool = Field(
        description="True only if the entries given answer the question; never guess."
    )
    answer: str = Field(default="", description="The reply to the customer, from the entries.")
    used_ids: list[str] = Field(
        default_factory=list, description="Ids of the FAQ entries the answer used."
    )


@dataclass(frozen=True)
class Schemas:
    """The pack's structured-output models."""

    classification: type[Classification]
    slots: type[SlotValues]
    faq_answer: type[FaqAnswer] = FaqAnswer


def build_schemas(pack: Pack) -> Schemas:
    """The models for this pack: its intents and its slots as the model's choices."""
    intents = tuple(i.name for i in pack.spec.intents) + BUILTIN_INTENTS
    # The pack's names are data: the Literal is built at run time, which no checker can see.
    intent_type: Any = Literal[intents]
    classification = create_model(
        "Classification",
        __base__=Classification,
        __doc__=Classification.__doc__,
        intent=(intent_type, Field(description="The intent of the latest message.")),
    )
    slot_fields: dict[str, Any] = {
        name: (str | None, Field(default=None, description=slot.description or slot.prompt))
        for name, slot in pack.spec.slots.items()
    }
    slots = create_model(
        "SlotValues", __base__=SlotValues, __doc__=SlotValues.__doc__, **slot_fields
    )
    return Schemas(classification=classification, slots=slots)
