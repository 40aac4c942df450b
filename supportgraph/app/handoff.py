"""What agents do with a conversation a person has: claim, reply, note, hand back, resolve.

The pause is state, not ``interrupt()``: an escalated conversation's status is ``escalated``
in the session row (the one place it is kept, and each turn's input); ``classify_intent``
routes its customer messages straight to ``escalate_human``, which answers nothing (the
service has already stored them). Agents' actions hold the session's lease, so they never
interleave with a turn, and commit in one transaction: the transcript, the session row, the
events, and the graph state changed with ``aupdate_state`` (a reply joins the message window;
hand back and resolve reset the counters that led to the hand-off).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from langchain_core.messages import AIMessage

from graphs.state import NodeName, StateUpdate
from supportgraph.app.service import SessionNotFound, SupportService, escalation_of
from supportgraph.domain.pii import redact_secrets
from supportgraph.domain.ports import Store
from supportgraph.domain.types import (
    Escalation,
    Message,
    Note,
    QueueEntry,
    Session,
    SessionFilter,
    Status,
)

AFTER_ESCALATION: NodeName = "escalate_human"
"""The node agents' state updates are written as: its only edge goes to END, so nothing runs."""

RESET_ON_RETURN = StateUpdate(
    pending_action=None,
    low_confidence_turns=0,
    negative_turns=0,
    failures=0,
    missing=[],
)
"""Counters that led to the hand-off start again when the bot has the conversation back."""


class HandoffError(Exception):
    """An agent action that does not fit the conversation's state."""


class NotEscalated(HandoffError):
    """The conversation is not with a person."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the conversation is not with a person (status {status})")
        self.status = status


class ClaimConflict(HandoffError):
    """Another agent holds the conversation."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"the conversation is claimed by {holder}")
        self.holder = holder


class BadCursor(ValueError):
    """A pagination cursor we did not issue."""


@dataclass(frozen=True)
class QueuePage:
    """One page of the agents' list, newest activity first."""

    items: list[QueueEntry]
    next_cursor: str | None
    last_event_id: int


@dataclass(frozen=True)
class Conversation:
    """Everything an agent sees of one conversation."""

    session: Session
    messages: list[Message]
    notes: list[Note]
    slots: dict[str, str]
    escalation: Escalation | None
    summary: str


def encode_cursor(updated_at: str, session_id: str) -> str:
    """An opaque cursor for the row after which the next page starts."""
    return base64.urlsafe_b64encode(f"{updated_at}|{session_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (updated_at, id) a cursor stands for; :class:`BadCursor` otherwise."""
    try:
        updated_at, _, session_id = base64.urlsafe_b64decode(cursor).decode().partition("|")
        return datetime.fromisoformat(updated_at), session_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor(f"cursor {cursor!r} is not one this API issued") from exc


class HandoffService:
    """The agents' side of a conversation."""

    def __init__(self, support: SupportService) -> None:
        self.support = support
        self.store = support.store
        self.events = support.events

    async def queue(
        self, filters: SessionFilter, *, cursor: str | None = None, limit: int = 50
    ) -> QueuePage:
        """Conversations matching the filters, newest activity first, one page at a time."""
        last_event_id = await self.store.last_event_id()
        rows = await self.store.list_sessions(
            filters, before=decode_cursor(cursor) if cursor else None, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].session if rows and more else None
        return QueuePage(
            items=rows,
            next_cursor=encode_cursor(last.updated_at, last.id) if last else None,
            last_event_id=last_event_id,
        )

    async def conversation(self, session_id: str) -> Conversation:
        """The transcript, notes, slots and hand-off packet of one conversation."""
        row = await self.support.require(session_id)
        values = await self.support.graph.values(session_id)
        return Conversation(
            session=row,
            messages=await self.store.list_messages(session_id),
            notes=await self.store.list_notes(session_id),
            slots=dict(values.get("slots") or {}),
            escalation=escalation_of(row, values),
            summary=values.get("summary", ""),
        )

    async def claim(self, session_id: str, *, agent: str, force: bool = False) -> Session:
        """Take the conversation (idempotent for its holder); ``force`` takes it from another."""
        row = await self.support.require(session_id)
        if row.status != "escalated":
            raise NotEscalated(row.status)
        if row.claimed_by == agent:
            return row
        if not await self.store.claim_session(session_id, agent=agent, force=force):
            row = await self.support.require(session_id)
            if row.status != "escalated":
                raise NotEscalated(row.status)
            raise ClaimConflict(row.claimed_by or "someone")
        await self.events.publish(
            session_id, "claimed", {"agent": agent, "previous": row.claimed_by}
        )
        return await self.support.require(session_id)

    async def release(self, session_id: str, *, agent: str, force: bool = False) -> Session:
        """Let go of the conversation (its holder, or anyone with ``force``)."""
        async with self._locked(session_id) as tx:
            # The row stays locked to the commit, so a claim cannot land between the check and
            # the write; the write names the holder it checked in any case.
            row = await tx.get_session(session_id, lock=True)
            if row is None:
                raise SessionNotFound(session_id)
            if row.claimed_by is None:
                return row
            if row.claimed_by != agent and not force:
                raise ClaimConflict(row.claimed_by)
            await tx.release_session(session_id, holder=row.claimed_by)
            await self.events.publish(
                session_id, "released", {"agent": row.claimed_by, "by": agent}, via=tx
            )
        return await self.support.require(session_id)

    async def reply(self, session_id: str, *, agent: str, text: str) -> Message:
        """Answer the customer as ``agent`` (claiming an unclaimed conversation).

        A card number or secret in the text is masked, as in customers' messages: it would
        otherwise be stored and, after a hand-back, sent to the model.
        """
        text = redact_secrets(text).text
        await self.claim(session_id, agent=agent)
        update = StateUpdate(messages=[AIMessage(content=text, name="agent")])
        async with self._locked(session_id, update) as tx:
            await self._held_by(tx, session_id, agent)
            message_id = await tx.append_message(
                session_id, role="agent", content=text, author=agent
            )
            await tx.touch_session(session_id)
            await self.events.publish(
                session_id,
                "message",
                {"message_id": message_id, "role": "agent", "content": text, "author": agent},
                webhook="agent_reply",
                webhook_data={"message_id": message_id, "agent": agent, "content": text},
                via=tx,
            )
        message = await self.store.get_message(message_id)
        if message is None:
            raise SessionNotFound(session_id)  # deleted meanwhile, with its transcript
        return message

    async def note(self, session_id: str, *, agent: str, text: str) -> Note:
        """Add an internal note: agents see it, the customer never does (secrets masked)."""
        text = redact_secrets(text).text
        await self.support.require(session_id)
        note_id = await self.store.add_note(session_id, author=agent, content=text)
        await self.store.touch_session(session_id)
        await self.events.publish(
            session_id,
            "note",
            {"note_id": note_id, "author": agent, "content": text},
            audience="agents",
        )
        notes = await self.store.list_notes(session_id)
        found = next((n for n in notes if n.id == note_id), None)
        if found is None:
            raise SessionNotFound(session_id)  # deleted meanwhile, with its notes
        return found

    async def hand_back(self, session_id: str, *, agent: str) -> Session:
        """Give the conversation back to the bot: the next customer message runs the graph."""
        return await self._leave(session_id, agent=agent, status="active", action="hand_back")

    async def resolve(self, session_id: str, *, agent: str) -> Session:
        """Close the conversation; a later customer message starts a new topic with the bot."""
        return await self._leave(session_id, agent=agent, status="resolved", action="resolve")

    async def _leave(self, session_id: str, *, agent: str, status: Status, action: str) -> Session:
        update = StateUpdate(**RESET_ON_RETURN)
        if status == "active":
            update["escalation"] = None
        async with self._locked(session_id, update) as tx:
            await self._held_by(tx, session_id, agent)
            await tx.set_status(
                session_id, status=status, release=True, clear_escalation=status == "active"
            )
            await self.events.publish(
                session_id,
                "status",
                {"status": status, "by": "agent", "agent": agent, "action": action},
                webhook="resolved" if status == "resolved" else None,
                webhook_data={"status": status, "agent": agent},
                via=tx,
            )
        return await self.support.require(session_id)

    @staticmethod
    async def _held_by(tx: Store, session_id: str, agent: str) -> Session:
        """The session, when a person has it and no other agent holds it (under its lease; the
        row stays locked to the commit, so no claim lands in between)."""
        row = await tx.get_session(session_id, lock=True)
        if row is None:
            raise SessionNotFound(session_id)
        if row.status != "escalated":
            raise NotEscalated(row.status)
        if row.claimed_by not in (None, agent):
            raise ClaimConflict(row.claimed_by)
        return row

    @asynccontextmanager
    async def _locked(
        self, session_id: str, update: StateUpdate | None = None
    ) -> AsyncIterator[Store]:
        """Hold the session the way turns do (this process's lock, then its lease) and run the
        block's writes, with the graph state ``update``, as one transaction."""
        async with self.support.locks.hold(session_id), self.store.hold(session_id) as lease:
            with self.store.deferring() as deferred:
                if update is not None:
                    await self.support.graph.update(session_id, update, as_node=AFTER_ESCALATION)
            self.support.crash("agent.graph_done")
            async with self.store.transaction(lease, deferred) as tx:
                yield tx
                self.support.crash("agent.in_commit")
            self.support.crash("agent.committed")
