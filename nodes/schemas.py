"""Structured-output models the nodes ask the chat model for, built from the pack."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, create_model

from supportgraph.pack import BUILTIN_INTENTS, Pack


class FaqAnswer(BaseModel):
    """An answer written only from the FAQ entries given."""

    answerable: bool = Field(
        description="True only if the entries given answer the question; never guess."
    )
    answer: str = Field(default="", description="The reply to the customer, from the entries.")
    used_ids: list[str] = Field(
        default_factory=list, description="Ids of the FAQ entries the answer used."
    )


def build_schemas(pack: Pack) -> dict[str, type[BaseModel]]:
    """``classification``, ``slots`` and ``faq_answer`` models for this pack."""
    intents = tuple(i.name for i in pack.spec.intents) + BUILTIN_INTENTS
    classification = create_model(
        "Classification",
        __doc__="The intent of the customer's latest message.",
        intent=(Literal[intents], Field(description="The intent of the latest message.")),  # type: ignore[valid-type]
        confidence=(float, Field(ge=0.0, le=1.0, description="How sure, from 0 to 1.")),
        sentiment=(Literal["negative", "neutral", "positive"], Field(default="neutral")),
        confirmation=(
            Literal["yes", "no", "none"],
            Field(
                default="none",
                description="If the bot asked a yes/no question: the customer's answer.",
            ),
        ),
    )
    slot_fields = {
        name: (
            str | None,
            Field(default=None, description=slot.description or slot.prompt),
        )
        for name, slot in pack.spec.slots.items()
    }
    slots = create_model(
        "SlotValues",
        __doc__="Details the customer has given in the conversation, exactly as written.",
        **slot_fields,  # type: ignore[call-overload]
    )
    return {"classification": classification, "slots": slots, "faq_answer": FaqAnswer}
