"""Our own tables beside the checkpoints: sessions, the append-only transcript, requests.

One class per backend behind the same methods; the SQL is shared and written with ``%s``
placeholders (translated for SQLite).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import secrets
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiosqlite
import psycopg
import psycopg_pool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints import deferred as deferral
from checkpoints.deferred import Deferred, PendingRequest
from checkpoints.retry import is_read, retry_once
from checkpoints.schema import upgrade_postgres, upgrade_sqlite
from supportgraph.domain.pii import pseudonym
from supportgraph.domain.ports import Deferred as DeferredWrites
from supportgraph.domain.ports import Lease, LeaseLost, SessionNotFound, StoreUnavailable
from supportgraph.domain.types import (
    Audience,
    AuditEntry,
    Delivery,
    Escalation,
    Event,
    Message,
    Note,
    OutboxItem,
    QueueEntry,
    RequestRecord,
    Role,
    Session,
    SessionFilter,
    Status,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the database is down or unreachable (not a bug of ours)."""
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg_pool.PoolTimeout
        | psycopg_pool.PoolClosed
        | sqlite3.OperationalError
        | ConnectionError,
    )


@asynccontextmanager
async def unavailable_as_domain_error() -> AsyncIterator[None]:
    """Turn driver errors that mean 'database down' into :class:`StoreUnavailable`."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


log = logging.getLogger("supportgraph.store")

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
"""A PostgreSQL pool whose connections return rows as dicts."""

EVENTS_CHANNEL = "sg_events"
"""PostgreSQL NOTIFY channel: payload ``"<event id> <session id>"``, ids only."""

LEASES_CHANNEL = "sg_leases"
"""PostgreSQL NOTIFY channel: payload the id of a session whose lease was let go."""

LEASE_SECONDS = 15.0
"""How long a lease lasts unless renewed (a third of it between renewals): a holder that dies
keeps its session's next turn waiting at most this long."""


def new_request_id() -> str:
    """A request id a customer can read out: ``R-`` and 24 base32 characters (120 random bits,
    so ids never collide however many a company keeps)."""
    return "R-" + base64.b32encode(secrets.token_bytes(15)).decode()


_SESSION_COLUMNS = (
    "id, status, intent, pack_name, pack_version, turns, created_at, updated_at, customer_id,"
    " tokens_valid_after, claimed_by, claimed_at, escalation_reason, escalation"
)
_OUTBOX_COLUMNS = (
    "id, session_id, event_type, url, idempotency_key, payload, status, attempts, created_at,"
    " expires_at, last_error, delivered_at"
)


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def _session_row(r: dict[str, Any]) -> Session:
    return Session(
        id=r["id"],
        status=r["status"],
        intent=r["intent"],
        pack_name=r["pack_name"],
        pack_version=r["pack_version"],
        turns=int(r["turns"]),
        created_at=_text(r["created_at"]),
        updated_at=_text(r["updated_at"]),
        customer_id=r["customer_id"],
        tokens_valid_after=int(r["tokens_valid_after"] or 0),
        claimed_by=r["claimed_by"],
        claimed_at=_opt_text(r["claimed_at"]),
        escalation_reason=r["escalation_reason"],
        escalation=cast(Escalation, _json(r["escalation"])) if r["escalation"] else None,
    )


def _outbox_row(r: dict[str, Any]) -> Delivery:
    return Delivery(
        id=int(r["id"]),
        session_id=r["session_id"],
        event_type=r["event_type"],
        url=r["url"],
        idempotency_key=r["idempotency_key"],
        payload=_json(r["payload"]),
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=_text(r["created_at"]),
        expires_at=_text(r["expires_at"]),
        last_error=r["last_error"],
        delivered_at=_opt_text(r["delivered_at"]),
    )


class SqlStore(ABC):
    """Our tables (the :class:`~supportgraph.domain.ports.Store` port), whatever the backend.

    A session's turns and agents' actions run one at a time under its lease: a row of
    ``sg_sessions`` (owner, expiry, fencing token) taken and let go by single statements, so
    nothing holds a connection while the model thinks. The lease is renewed while held; a
    transaction under a lease checks the token first (a holder whose lease ran out and was taken
    over writes nothing) and lets the lease go in its own commit. A waiter is woken by the
    let-go (in this process at once; from other processes by NOTIFY on PostgreSQL) and looks
    again every ``_poll`` seconds in any case.
    """

    backend: str
    lease_seconds: float = LEASE_SECONDS
    _poll: float = 1.0
    _wakeups: dict[str, asyncio.Event]
    _committed: set[str]
    _background: set[asyncio.Task[Any]]
    _after: list[Callable[[], None]] | None = None
    _serde: SerializerProtocol | None = None

    def _init_leases(self, serde: SerializerProtocol | None, lease_seconds: float) -> None:
        self._serde = serde
        self.lease_seconds = lease_seconds
        self._wakeups = {}
        self._committed = set()
        self._background = set()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this store's writes are committed (at once outside a
        transaction)."""
        if self._after is None:
            callback()
        else:
            self._after.append(callback)

    # The lease.

    @asynccontextmanager
    async def hold(
        self,
        session_id: str,
        *,
        wait: bool = True,
        message_id: int | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[Lease | None]:
        """Lease the session, renewed while held and let go at exit (see the class).

        Cancelled at any await, it leaves nothing held: the owner is unique to this call, so
        letting go by owner is safe whether or not the last statement reached the database.
        """
        owner = owner or secrets.token_hex(12)
        try:
            lease = await self._acquire(session_id, owner, wait=wait, message_id=message_id)
        except BaseException:
            await self._let_go_surely(session_id, owner)
            raise
        if lease is None:
            yield None
            return
        renewing = asyncio.create_task(self._keep(lease), name="sg-lease")
        try:
            yield lease
        finally:
            renewing.cancel()
            if owner in self._committed:
                self._committed.discard(owner)
            else:
                await self._let_go_surely(session_id, owner)

    async def _acquire(
        self, session_id: str, owner: str, *, wait: bool, message_id: int | None
    ) -> Lease | None:
        renewed = time.monotonic()
        while True:
            # Taken before trying, so a let-go between the try and the wait still wakes us.
            wake = self._wakeups.setdefault(session_id, asyncio.Event())
            lease = await self._try_acquire(session_id, owner, message_id)
            if lease is not None:
                return lease
            found, mine = await self._why_not(session_id, message_id, owner)
            if not found:
                raise SessionNotFound(session_id)
            if not mine:
                raise LeaseLost(session_id)
            if not wait:
                return None
            if message_id is not None and time.monotonic() - renewed > self.lease_seconds / 3:
                await self._renew_pending(session_id, owner)
                renewed = time.monotonic()
            await self._listening()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that lands as the wake-up does, and the cancelled hold would go on to take the
            # lease and keep it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await wake.wait()

    async def _try_acquire(
        self, session_id: str, owner: str, message_id: int | None
    ) -> Lease | None:
        now = _now()
        expires = self._ts(now + timedelta(seconds=self.lease_seconds))
        params: list[Any] = [owner, expires, session_id, self._ts(now)]
        order = ""
        earlier = "0"
        if message_id is not None:
            # Granted to a stored message only while it is still its owner's, and once no
            # earlier message of the session waits for a turn that is alive.
            order = (
                " AND EXISTS (SELECT 1 FROM sg_messages WHERE id = %s AND turn_state = 'pending'"
                " AND turn_owner = %s) AND NOT EXISTS (SELECT 1 FROM sg_messages WHERE"
                " session_id = %s AND turn_state = 'pending' AND id < %s AND turn_expires_at > %s)"
            )
            params += [message_id, owner, session_id, message_id, self._ts(now)]
            earlier = (
                "(SELECT COUNT(*) FROM sg_messages WHERE session_id = %s"
                " AND turn_state = 'pending' AND id < %s)"
            )
            params += [session_id, message_id]
        rows = await self._fetch(
            f"UPDATE sg_sessions SET lease_owner = %s, lease_token = lease_token + 1,"
            f" lease_expires_at = %s WHERE id = %s AND (lease_owner IS NULL OR"
            f" lease_expires_at <= %s){order}"
            f" RETURNING lease_token, {earlier} AS earlier, {_SESSION_COLUMNS}",
            tuple(params),
        )
        if not rows:
            return None
        row = rows[0]
        folded: list[tuple[int, str]] = []
        if message_id is not None and int(row["earlier"] or 0):
            folded = await self._fold(session_id, owner, message_id, expires)
        return Lease(session_id, owner, int(row["lease_token"]), _session_row(row), folded)

    async def _fold(
        self, session_id: str, owner: str, message_id: int, expires: Any
    ) -> list[tuple[int, str]]:
        """Take over the earlier messages whose turns died unanswered (they expired)."""
        rows = await self._fetch(
            "UPDATE sg_messages SET turn_owner = %s, turn_expires_at = %s WHERE session_id = %s"
            " AND turn_state = 'pending' AND id < %s RETURNING id, content",
            (owner, expires, session_id, message_id),
        )
        return sorted((int(r["id"]), str(r["content"])) for r in rows)

    async def _why_not(
        self, session_id: str, message_id: int | None, owner: str
    ) -> tuple[bool, bool]:
        """Whether the session exists, and whether the message is still the caller's."""
        rows = await self._fetch(
            "SELECT (SELECT COUNT(*) FROM sg_sessions WHERE id = %s) AS found,"
            " (SELECT COUNT(*) FROM sg_messages WHERE id = %s AND turn_state = 'pending'"
            " AND turn_owner = %s) AS mine",
            (session_id, message_id or 0, owner),
        )
        return bool(rows[0]["found"]), message_id is None or bool(rows[0]["mine"])

    async def _renew_pending(self, session_id: str, owner: str) -> None:
        await self._execute(
            "UPDATE sg_messages SET turn_expires_at = %s WHERE session_id = %s"
            " AND turn_state = 'pending' AND turn_owner = %s",
            (self._ts(_now() + timedelta(seconds=self.lease_seconds)), session_id, owner),
        )

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease (and the messages it answers) until cancelled or taken over."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                rows = await self._fetch(
                    "UPDATE sg_sessions SET lease_expires_at = %s WHERE id = %s AND"
                    " lease_owner = %s AND lease_token = %s RETURNING id",
                    (
                        self._ts(_now() + timedelta(seconds=self.lease_seconds)),
                        lease.session_id,
                        lease.owner,
                        lease.token,
                    ),
                )
                if not rows:
                    log.warning("lease taken over", extra={"session_id": lease.session_id})
                    return
                await self._renew_pending(lease.session_id, lease.owner)
            except Exception as exc:  # noqa: BLE001 - the next renewal may get through
                log.warning("lease renewal failed", extra={"error": str(exc)[:200]})

    async def _let_go_surely(self, session_id: str, owner: str) -> None:
        """Let go in a task of its own, so a cancelled caller cannot stop it half-way."""
        task = asyncio.create_task(self._let_go(session_id, owner))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _let_go(self, session_id: str, owner: str) -> None:
        """Give the lease back, if the owner still holds it; a message it still had waiting
        gets no turn (its turn failed)."""
        try:
            await self._execute(
                "UPDATE sg_messages SET turn_state = 'failed' WHERE session_id = %s"
                " AND turn_state = 'pending' AND turn_owner = %s",
                (session_id, owner),
            )
            await self._free(session_id, owner)
        except Exception as exc:  # noqa: BLE001 - an unreachable database lets it expire
            log.warning(
                "lease not let go; it expires",
                extra={"session_id": session_id, "error": str(exc)[:200]},
            )
        self._wake(session_id)

    async def _free(self, session_id: str, owner: str, token: int | None = None) -> bool:
        """The let-go statement (and, where other processes wait, their wake-up): whether
        ``owner`` still held the lease (with ``token``: this very grant of it)."""
        fence, params = (" AND lease_token = %s", (token,)) if token is not None else ("", ())
        rows = await self._fetch(
            "UPDATE sg_sessions SET lease_owner = NULL, lease_expires_at = NULL"
            f" WHERE id = %s AND lease_owner = %s{fence} RETURNING id",
            (session_id, owner, *params),
        )
        return bool(rows)

    def _wake(self, session_id: str) -> None:
        wake = self._wakeups.pop(session_id, None)
        if wake is not None:
            wake.set()

    async def _listening(self) -> None:  # noqa: B027 - only PostgreSQL has anything to start
        """Make sure other processes' let-go reaches this one."""

    async def aclose(self) -> None:
        """Stop background work (lease let-goes in flight finish first)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)

    # One transaction.

    def deferring(self) -> contextlib.AbstractContextManager[Deferred]:
        """Keep the checkpoints and requests written inside the block for a transaction."""
        return deferral.deferring()

    @asynccontextmanager
    async def transaction(
        self, lease: Lease | None = None, deferred: DeferredWrites | None = None
    ) -> AsyncIterator[SqlStore]:
        """The block's writes, the deferred ones first, committed at once (see the port).

        ``deferred`` must come from this store's :meth:`deferring`.
        """
        after: list[Callable[[], None]] = []
        async with unavailable_as_domain_error(), self._begin() as tx:
            tx._after = after
            # The fence and the let-go are one statement: it locks the row to the commit, so
            # no one takes the lease before this transaction's writes are in.
            if lease is not None and not await tx._free(lease.session_id, lease.owner, lease.token):
                raise LeaseLost(lease.session_id)
            if deferred is not None:
                await tx._write_deferred(cast(Deferred, deferred))
            yield tx
        if lease is not None:
            self._committed.add(lease.owner)
            self._wake(lease.session_id)
        for callback in after:
            callback()

    @abstractmethod
    def _begin(self) -> AbstractAsyncContextManager[SqlStore]:
        """A view of this store whose statements run in one transaction, committed at exit."""

    @abstractmethod
    def _checkpoint_writer(self) -> BaseCheckpointSaver[Any]:
        """A checkpoint saver writing through this transaction's connection."""

    _for_update = ""

    async def _write_deferred(self, deferred: Deferred) -> None:
        for request in deferred.requests:
            await self._insert_request(request)
        deferred.requests.clear()
        if deferred.checkpoints:
            await deferred.write_checkpoints(self._checkpoint_writer())

    async def pending_turns(self, session_id: str) -> int:
        """Customer messages of the session stored and still waiting for their turn."""
        rows = await self._fetch(
            "SELECT COUNT(*) AS n FROM sg_messages WHERE session_id = %s"
            " AND turn_state = 'pending' AND turn_expires_at > %s",
            (session_id, self._ts(_now())),
        )
        return int(rows[0]["n"])

    async def answered(self, message_ids: list[int], *, failed: bool = False) -> None:
        """The turn of these customer messages is over (``failed``: it stored no reply)."""
        if not message_ids:
            return
        marks = ", ".join(["%s"] * len(message_ids))
        await self._execute(
            f"UPDATE sg_messages SET turn_state = %s WHERE id IN ({marks})",
            ("failed" if failed else None, *message_ids),
        )

    @abstractmethod
    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int: ...

    @abstractmethod
    async def migrate(self, version_locations: Sequence[Path] = ()) -> None:
        """Upgrade our tables to the newest Alembic revision (``version_locations``: further
        directories of revisions, beside the package's own)."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        try:
            await self._fetch("SELECT 1 AS ok")
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error means not ready
            raise StoreUnavailable(str(exc)) from exc

    async def create_session(
        self,
        session_id: str,
        *,
        pack_name: str,
        pack_version: str,
        customer_id: str | None = None,
    ) -> None:
        """Record a new conversation (``customer_id``: the company's own id for its customer)."""
        now = _now()
        await self._execute(
            "INSERT INTO sg_sessions (id, created_at, updated_at, status, intent, pack_name,"
            " pack_version, turns, customer_id) VALUES (%s, %s, %s, 'active', NULL, %s, %s, 0, %s)",
            (session_id, self._ts(now), self._ts(now), pack_name, pack_version, customer_id),
        )

    async def get_session(self, session_id: str, *, lock: bool = False) -> Session | None:
        """The conversation's record, if it exists (``lock``: in a transaction, the row stays
        locked until the commit)."""
        rows = await self._fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sg_sessions WHERE id = %s"
            + (self._for_update if lock else ""),
            (session_id,),
        )
        return _session_row(rows[0]) if rows else None

    async def finish_turn(
        self,
        session_id: str,
        *,
        status: Status,
        intent: str | None,
        escalation: Escalation | None = None,
    ) -> None:
        """Record where the conversation stands after a turn (a new escalation: its packet and
        reason, and nobody holds the conversation yet)."""
        sets = "status = %s, intent = %s, updated_at = %s, turns = turns + 1"
        params: list[Any] = [status, intent, self._ts(_now())]
        if escalation is not None:
            sets += (
                ", escalation = %s, escalation_reason = %s, claimed_by = NULL, claimed_at = NULL"
            )
            params += [json.dumps(escalation), str(escalation.get("reason") or "requested_human")]
        await self._execute(f"UPDATE sg_sessions SET {sets} WHERE id = %s", (*params, session_id))

    async def append_message(
        self,
        session_id: str,
        *,
        role: Role,
        content: str,
        author: str | None = None,
        pending_owner: str | None = None,
    ) -> int:
        """Append one line to the transcript (``author``: the agent who wrote it); return its id.

        ``pending_owner``: a customer message whose turn that owner runs; it stays in the
        session's queue of pending turns until answered, renewed by its owner meanwhile.
        """
        if pending_owner is None:
            return await self._insert_returning_id(
                "INSERT INTO sg_messages (session_id, role, content, created_at, author)"
                " VALUES (%s, %s, %s, %s, %s)",
                (session_id, role, content, self._ts(_now()), author),
            )
        now = _now()
        return await self._insert_returning_id(
            "INSERT INTO sg_messages (session_id, role, content, created_at, author, turn_state,"
            " turn_owner, turn_expires_at) VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s)",
            (
                session_id,
                role,
                content,
                self._ts(now),
                author,
                pending_owner,
                self._ts(now + timedelta(seconds=self.lease_seconds)),
            ),
        )

    async def get_message(self, message_id: int) -> Message | None:
        """One transcript line by id."""
        rows = await self._fetch(
            "SELECT id, role, content, created_at, author FROM sg_messages WHERE id = %s",
            (message_id,),
        )
        return self._message_rows(rows)[0] if rows else None

    async def list_messages(self, session_id: str) -> list[Message]:
        """The whole transcript, oldest first."""
        rows = await self._fetch(
            "SELECT id, role, content, created_at, author FROM sg_messages WHERE session_id = %s"
            " ORDER BY id",
            (session_id,),
        )
        return self._message_rows(rows)

    @staticmethod
    def _message_rows(rows: list[dict[str, Any]]) -> list[Message]:
        return [
            Message(int(r["id"]), r["role"], r["content"], _text(r["created_at"]), r.get("author"))
            for r in rows
        ]

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, str], idempotency_key: str
    ) -> str:
        """Store a request once per idempotency key; return its id (the existing one on replay).

        Inside a turn (a deferring block) the request is written by the turn's transaction,
        with the reply that names it.
        """
        pending = deferral.CURRENT.get()
        known = pending.request_for(idempotency_key) if pending is not None else None
        if known is not None:
            return known
        existing = await self._fetch(
            "SELECT id FROM sg_requests WHERE idempotency_key = %s", (idempotency_key,)
        )
        if existing:
            return str(existing[0]["id"])
        request = PendingRequest(new_request_id(), session_id, kind, data, idempotency_key)
        if pending is not None:
            pending.requests.append(request)
            return request.request_id
        await self._insert_request(request)
        rows = await self._fetch(
            "SELECT id FROM sg_requests WHERE idempotency_key = %s", (idempotency_key,)
        )
        return str(rows[0]["id"])

    async def _insert_request(self, request: PendingRequest) -> None:
        await self._execute(
            "INSERT INTO sg_requests (id, session_id, kind, data, status, idempotency_key,"
            " created_at) VALUES (%s, %s, %s, %s, 'open', %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (
                request.request_id,
                request.session_id,
                request.kind,
                json.dumps(request.data),
                request.idempotency_key,
                self._ts(_now()),
            ),
        )

    async def list_requests(self, session_id: str | None = None) -> list[RequestRecord]:
        """Requests the actions created, oldest first (for one session, or all)."""
        where, params = ("WHERE session_id = %s", (session_id,)) if session_id else ("", ())
        rows = await self._fetch(
            f"SELECT id, session_id, kind, data, status, created_at FROM sg_requests {where}"
            " ORDER BY created_at, id",
            params,
        )
        return [
            RequestRecord(
                id=str(r["id"]),
                session_id=r["session_id"],
                kind=r["kind"],
                data=_json(r["data"]),
                status=r["status"],
                created_at=_text(r["created_at"]),
            )
            for r in rows
        ]

    async def audit_action(
        self,
        *,
        session_id: str,
        action: str,
        kind: str,
        outcome: str,
        reason: str,
        record_ref: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Audit an action the assistant took or refused, under the session's pseudonym."""
        await self._execute(
            "INSERT INTO sg_audit (action, subject_sha256, actor, at, kind, outcome, reason,"
            " record_ref, request_id) VALUES (%s, %s, 'assistant', %s, %s, %s, %s, %s, %s)",
            (
                action,
                pseudonym(session_id),
                self._ts(_now()),
                kind,
                outcome,
                reason,
                record_ref,
                request_id,
            ),
        )

    async def list_audit(self, session_id: str | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (for one session, found by its pseudonym, or all)."""
        where, params = (
            ("WHERE subject_sha256 = %s", (pseudonym(session_id),)) if session_id else ("", ())
        )
        rows = await self._fetch(
            "SELECT id, action, subject_sha256, actor, at, kind, outcome, reason, record_ref,"
            f" request_id FROM sg_audit {where} ORDER BY id",
            params,
        )
        return [cast(AuditEntry, {**r, "id": int(r["id"]), "at": _text(r["at"])}) for r in rows]

    # Hand-off: ownership, token revocation, the agents' queue, claims, notes, events, outbox.

    async def revoke_tokens(self, session_id: str, *, issued_before_us: int) -> None:
        """Make the session's tokens issued before this instant (µs since epoch) invalid."""
        await self._execute(
            "UPDATE sg_sessions SET tokens_valid_after = %s WHERE id = %s",
            (issued_before_us, session_id),
        )

    async def list_sessions(
        self,
        filters: SessionFilter,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[QueueEntry]:
        """Sessions, newest activity first; ``before`` is the (updated_at, id) to continue after."""
        where: list[str] = []
        params: list[Any] = []
        if filters.statuses:
            where.append("s.status IN (" + ", ".join(["%s"] * len(filters.statuses)) + ")")
            params += filters.statuses
        if filters.reason:
            where.append("s.escalation_reason = %s")
            params.append(filters.reason)
        if filters.unclaimed:
            where.append("s.claimed_by IS NULL")
        elif filters.claimed_by:
            where.append("s.claimed_by = %s")
            params.append(filters.claimed_by)
        if filters.updated_since is not None:
            where.append("s.updated_at >= %s")
            params.append(self._ts(filters.updated_since))
        if filters.customer_id is not None:
            where.append("s.customer_id = %s")
            params.append(filters.customer_id)
        if before is not None:
            where.append("(s.updated_at < %s OR (s.updated_at = %s AND s.id < %s))")
            params += [self._ts(before[0]), self._ts(before[0]), before[1]]
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        columns = ", ".join(f"s.{c.strip()}" for c in _SESSION_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns}, (SELECT m.content FROM sg_messages m WHERE m.session_id = s.id"
            f" ORDER BY m.id DESC LIMIT 1) AS last_message FROM sg_sessions s {clause}"
            " ORDER BY s.updated_at DESC, s.id DESC LIMIT %s",
            (*params, limit),
        )
        return [QueueEntry(_session_row(r), r["last_message"]) for r in rows]

    async def claim_session(self, session_id: str, *, agent: str, force: bool = False) -> bool:
        """Give an escalated session to ``agent`` unless another agent holds it (or ``force``)."""
        now = self._ts(_now())
        guard = "" if force else " AND (claimed_by IS NULL OR claimed_by = %s)"
        rows = await self._fetch(
            "UPDATE sg_sessions SET claimed_by = %s, claimed_at = %s, updated_at = %s"
            f" WHERE id = %s AND status = 'escalated'{guard} RETURNING id",
            (agent, now, now, session_id, *(() if force else (agent,))),
        )
        return bool(rows)

    async def release_session(self, session_id: str, *, holder: str | None = None) -> bool:
        """Nobody holds the session any more; with ``holder``, only if that agent still held
        it. Whether it was released."""
        guard, params = (" AND claimed_by = %s", (holder,)) if holder is not None else ("", ())
        rows = await self._fetch(
            "UPDATE sg_sessions SET claimed_by = NULL, claimed_at = NULL, updated_at = %s"
            f" WHERE id = %s{guard} RETURNING id",
            (self._ts(_now()), session_id, *params),
        )
        return bool(rows)

    async def set_status(
        self,
        session_id: str,
        *,
        status: Status,
        release: bool = False,
        reason: str | None = None,
        clear_escalation: bool = False,
    ) -> None:
        """Set the session's status (and the escalation reason); optionally drop the claim
        and the hand-off packet."""
        sets = ["status = %s", "updated_at = %s"]
        params: list[Any] = [status, self._ts(_now())]
        if reason is not None:
            sets.append("escalation_reason = %s")
            params.append(reason)
        if release:
            sets += ["claimed_by = NULL", "claimed_at = NULL"]
        if clear_escalation:
            sets.append("escalation = NULL")
        await self._execute(
            f"UPDATE sg_sessions SET {', '.join(sets)} WHERE id = %s", (*params, session_id)
        )

    async def touch_session(self, session_id: str) -> None:
        """Record activity on the session (it moves up the agents' queue)."""
        await self._execute(
            "UPDATE sg_sessions SET updated_at = %s WHERE id = %s", (self._ts(_now()), session_id)
        )

    async def add_note(self, session_id: str, *, author: str, content: str) -> int:
        """Store an internal note (agents only; never part of the transcript)."""
        return await self._insert_returning_id(
            "INSERT INTO sg_notes (session_id, author, content, created_at)"
            " VALUES (%s, %s, %s, %s)",
            (session_id, author, content, self._ts(_now())),
        )

    async def list_notes(self, session_id: str) -> list[Note]:
        """The session's internal notes, oldest first."""
        rows = await self._fetch(
            "SELECT id, author, content, created_at FROM sg_notes WHERE session_id = %s"
            " ORDER BY id",
            (session_id,),
        )
        return [Note(int(r["id"]), r["author"], r["content"], _text(r["created_at"])) for r in rows]

    async def append_event(
        self,
        session_id: str,
        *,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None = None,
    ) -> int:
        """Log an event (and the webhook deliveries it causes, in the same transaction)."""
        if outbox and self._after is None:
            async with self.transaction() as tx:
                return await tx.append_event(
                    session_id, kind=kind, audience=audience, data=data, outbox=outbox
                )
        now = _now()
        event_id = await self._insert_returning_id(
            "INSERT INTO sg_events (session_id, kind, audience, data, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (session_id, kind, audience, json.dumps(data), self._ts(now)),
        )
        for item in outbox or ():
            await self._execute(*self._outbox_insert(session_id, item, now))
        return event_id

    def _outbox_insert(
        self, session_id: str, item: OutboxItem, now: datetime
    ) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO sg_outbox (session_id, event_type, url, idempotency_key, payload,"
            " next_attempt_at, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key, url) DO NOTHING",
            (
                session_id,
                item.event_type,
                item.url,
                item.idempotency_key,
                json.dumps(item.payload),
                self._ts(now),
                self._ts(now),
                self._ts(item.expires_at),
            ),
        )

    async def events_after(
        self,
        after: int,
        *,
        session_id: str | None = None,
        audiences: tuple[Audience, ...] = ("all", "agents"),
        limit: int = 200,
    ) -> list[Event]:
        """Events with an id above ``after``, oldest first (one session's, or all)."""
        where = ["id > %s", "audience IN (" + ", ".join(["%s"] * len(audiences)) + ")"]
        params: list[Any] = [after, *audiences]
        if session_id is not None:
            where.append("session_id = %s")
            params.append(session_id)
        rows = await self._fetch(
            "SELECT id, session_id, kind, audience, data, created_at FROM sg_events"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [
            Event(
                id=int(r["id"]),
                session_id=r["session_id"],
                kind=r["kind"],
                audience=r["audience"],
                data=_json(r["data"]),
                created_at=_text(r["created_at"]),
            )
            for r in rows
        ]

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        rows = await self._fetch("SELECT MAX(id) AS last FROM sg_events")
        return int(rows[0]["last"] or 0)

    # Row-locking clause for the claim's inner SELECT: SQLite has none (one writer anyway).
    _skip_locked = ""

    async def claim_due_webhook(self, *, now: datetime, lease: float) -> Delivery | None:
        """Lease the next due delivery for ``lease`` seconds and count the attempt."""
        ts = self._ts(now)
        free = "status = 'pending' AND (locked_until IS NULL OR locked_until <= %s)"
        rows = await self._fetch(
            f"UPDATE sg_outbox SET locked_until = %s, attempts = attempts + 1"
            f" WHERE id = (SELECT id FROM sg_outbox WHERE {free} AND next_attempt_at <= %s"
            f" ORDER BY next_attempt_at, id LIMIT 1{self._skip_locked}) AND {free}"
            f" RETURNING {_OUTBOX_COLUMNS}",
            (self._ts(now + timedelta(seconds=lease)), ts, ts, ts),
        )
        return _outbox_row(rows[0]) if rows else None

    async def webhook_delivered(self, outbox_id: int) -> None:
        """The receiver took the delivery."""
        now = self._ts(_now())
        await self._execute(
            "UPDATE sg_outbox SET status = 'delivered', delivered_at = %s, locked_until = NULL,"
            " last_error = NULL WHERE id = %s",
            (now, outbox_id),
        )

    async def webhook_failed(
        self, outbox_id: int, *, error: str, next_attempt_at: datetime | None
    ) -> None:
        """An attempt failed: retry at ``next_attempt_at``, or give up (expired) when None."""
        if next_attempt_at is None:
            await self._execute(
                "UPDATE sg_outbox SET status = 'expired', locked_until = NULL, last_error = %s"
                " WHERE id = %s",
                (error[:500], outbox_id),
            )
            return
        await self._execute(
            "UPDATE sg_outbox SET next_attempt_at = %s, locked_until = NULL, last_error = %s"
            " WHERE id = %s",
            (self._ts(next_attempt_at), error[:500], outbox_id),
        )

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, str]]] | None:
        """No notifications: only this process writes to an embedded database."""
        return None

    def _ts(self, value: datetime) -> Any:
        return value


class _NoCommit:
    """An aiosqlite connection whose ``commit`` waits for the enclosing transaction's."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def commit(self) -> None:
        """Left to the transaction the saver writes in."""


_EVENT_SQL = (
    "WITH locked AS (SELECT pg_advisory_xact_lock(hashtext('sg_events'))),"
    " added AS (INSERT INTO sg_events (session_id, kind, audience, data,"
    " created_at) SELECT %s, %s, %s, %s::jsonb, %s FROM locked RETURNING id)"
    " SELECT id, pg_notify(%s, id::text || ' ' || %s) FROM added"
)
"""PostgreSQL: take the events lock, insert the event and NOTIFY its id, in one statement.

The row is inserted from the lock's row, so the lock is held before the id is drawn (and
until the commit): events commit in id order."""


def _event_params(
    session_id: str, kind: str, audience: Audience, data: dict[str, Any], now: datetime
) -> tuple[Any, ...]:
    return (session_id, kind, audience, json.dumps(data), now, EVENTS_CHANNEL, session_id)


class SqliteStore(SqlStore):
    """The embedded default: one SQLite file (WAL), shared with the checkpoint saver.

    Every statement on the shared connection runs under ``lock`` (the saver's own, so its
    statements queue there too): a transaction holds it from ``BEGIN IMMEDIATE`` to its
    commit, so no other coroutine's statement can land inside it.
    """

    backend = "sqlite"
    # Only another process (the CLI) can hold a lease without waking this one: it is asked
    # again at this pace.
    _poll = 0.1

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        lock: asyncio.Lock | None = None,
        serde: SerializerProtocol | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.conn = conn
        self.lock = lock or asyncio.Lock()
        self._in_transaction = False
        self._init_leases(serde, lease_seconds)

    @staticmethod
    def _q(sql: str) -> str:
        return sql.replace("%s", "?")

    def _ts(self, value: datetime) -> Any:
        return value.isoformat()

    # The connection is in autocommit mode (``isolation_level=None``): a statement outside an
    # explicit transaction is committed when it runs. Each aiosqlite call is a round trip to
    # its thread, so a cursor is not closed by a call of its own once fetched.

    def _locked(self) -> AbstractAsyncContextManager[Any]:
        return contextlib.nullcontext() if self._in_transaction else self.lock

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with self._locked(), unavailable_as_domain_error():
            await self.conn.execute(self._q(sql), params)

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self._locked(), unavailable_as_domain_error():
            cur = await self.conn.execute(self._q(sql), params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self._locked(), unavailable_as_domain_error():
            cur = await self.conn.execute(self._q(sql), params)
            return int(cur.lastrowid or 0)

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[SqlStore]:
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                tx = copy.copy(self)
                tx._in_transaction = True
                yield tx
            except BaseException:
                await _finish(self.conn.rollback())
                raise
            await _finish(self.conn.commit())

    def _checkpoint_writer(self) -> BaseCheckpointSaver[Any]:
        writer = AsyncSqliteSaver(
            cast(aiosqlite.Connection, _NoCommit(self.conn)), serde=self._serde
        )
        writer.is_setup = True
        return writer

    async def migrate(self, version_locations: Sequence[Path] = ()) -> None:
        """Upgrade the file's tables, each revision in one transaction (all of it, or nothing).

        Alembic runs on a connection of its own in a thread; the shared connection's lock is
        held meanwhile, so no statement of the service runs on a half-migrated schema.
        """
        async with self.lock:
            cur = await self.conn.execute("PRAGMA database_list")
            files = {row[1]: row[2] for row in await cur.fetchall()}
            if not files.get("main"):
                raise ValueError("SqliteStore.migrate needs a database file, not one in memory")
            # Shielded: cancelled meanwhile, the lock is still held until the thread is done.
            await _finish(asyncio.to_thread(upgrade_sqlite, Path(files["main"]), version_locations))


async def _finish(step: Coroutine[Any, Any, None]) -> None:
    """Run a commit or rollback to its end even if the caller is cancelled meanwhile: a
    transaction left open on the shared connection would swallow every later statement."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class PostgresStore(SqlStore):
    """PostgreSQL over a ``psycopg_pool`` pool shared with the checkpoint saver."""

    backend = "postgres"
    # Concurrent claimers skip a row another claim is updating instead of queueing behind it
    # and then matching nothing once it is leased.
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    _for_update = " FOR UPDATE"

    def __init__(
        self,
        pool: Pool,
        conninfo: str,
        *,
        serde: SerializerProtocol | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.conninfo = conninfo
        self.pool = pool
        self._conn: AsyncConnection[DictRow] | None = None
        self._lease_listener: asyncio.Task[None] | None = None
        self._init_leases(serde, lease_seconds)

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if self._conn is not None:
            await self._conn.execute(sql, params)
            return

        async def attempt() -> None:
            async with self.pool.connection() as conn:
                await conn.execute(sql, params)

        async with unavailable_as_domain_error():
            await retry_once(attempt, repeatable=is_read(sql))

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self._conn is not None:
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        async def attempt() -> list[dict[str, Any]]:
            async with (
                self.pool.connection() as conn,
                conn.cursor(row_factory=dict_row) as cur,
            ):
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=is_read(sql))

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[SqlStore]:
        async with self.pool.connection() as conn, conn.transaction():
            tx = copy.copy(self)
            tx._conn = conn
            yield tx

    def _checkpoint_writer(self) -> BaseCheckpointSaver[Any]:
        assert self._conn is not None, "only a transaction writes deferred checkpoints"
        return AsyncPostgresSaver(self._conn, serde=self._serde)

    async def _free(self, session_id: str, owner: str, token: int | None = None) -> bool:
        """Let go and wake the other processes' waiters (NOTIFY is sent at commit)."""
        fence, params = (" AND lease_token = %s", (token,)) if token is not None else ("", ())
        rows = await self._fetch(
            "WITH freed AS (UPDATE sg_sessions SET lease_owner = NULL, lease_expires_at = NULL"
            f" WHERE id = %s AND lease_owner = %s{fence} RETURNING id)"
            " SELECT id, pg_notify(%s, id) FROM freed",
            (session_id, owner, *params, LEASES_CHANNEL),
        )
        return bool(rows)

    async def _listening(self) -> None:
        """LISTEN for other processes' let-go on a connection of its own (started once)."""
        if self._lease_listener is None or self._lease_listener.done():
            self._lease_listener = asyncio.create_task(self._listen_leases(), name="sg-leases")

    async def _listen_leases(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                try:
                    await conn.execute(f"LISTEN {LEASES_CHANNEL}")
                    delay = 0.5
                    for session_id in list(self._wakeups):
                        self._wake(session_id)  # whatever was let go while not listening
                    async for note in conn.notifies():
                        self._wake(note.payload)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - waiters poll meanwhile; reconnect
                log.warning("lease listener lost its connection", extra={"error": str(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def aclose(self) -> None:
        """Stop listening, once lease let-goes in flight have finished."""
        await super().aclose()
        if self._lease_listener is not None:
            self._lease_listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_listener

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        rows = await self._fetch(sql + " RETURNING id", params)
        return int(rows[0]["id"])

    async def append_event(
        self,
        session_id: str,
        *,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None = None,
    ) -> int:
        """Log an event, its webhook deliveries and a NOTIFY carrying its id, in one transaction.

        A transaction lock makes events commit in id order, so a reader that has seen id N
        never sees a smaller id appear later (``Last-Event-ID`` resume would skip it). Inside
        a turn's transaction the lock is held to its commit: the turn logs its events last.
        """
        now = _now()
        if self._conn is not None:
            return await self._event_in(self._conn, session_id, kind, audience, data, outbox, now)
        if not outbox:
            return await self._append_event_alone(session_id, kind, audience, data, now)

        async def attempt() -> int:
            async with self.pool.connection() as conn, conn.transaction():
                return await self._event_in(conn, session_id, kind, audience, data, outbox, now)

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=False, what="event")

    async def _event_in(
        self,
        conn: AsyncConnection[DictRow],
        session_id: str,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None,
        now: datetime,
    ) -> int:
        cur = await conn.execute(_EVENT_SQL, _event_params(session_id, kind, audience, data, now))
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("INSERT ... RETURNING id returned no row")
        for item in outbox or ():
            await conn.execute(*self._outbox_insert(session_id, item, now))
        return int(row["id"])

    async def _append_event_alone(
        self, session_id: str, kind: str, audience: Audience, data: dict[str, Any], now: datetime
    ) -> int:
        """An event with no webhook deliveries: lock, insert and NOTIFY as one statement.

        Its own transaction, as the five round trips of the general case were (BEGIN, lock,
        insert, notify, COMMIT): the row is inserted from the lock's row, so the lock is held
        before the id is drawn and until the commit.
        """

        async def attempt() -> int:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    _EVENT_SQL, _event_params(session_id, kind, audience, data, now)
                )
                row = await cur.fetchone()
            if row is None:
                raise RuntimeError("INSERT ... RETURNING id returned no row")
            return int(row["id"])

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=False, what="event")

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, str]]]:
        """LISTEN for events any process logs, on a dedicated connection."""
        return self._listen()

    @asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[tuple[int, str]]]:
        """Yields (event id, session id) as NOTIFY delivers them."""
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")

            async def notifications() -> AsyncIterator[tuple[int, str]]:
                async for note in conn.notifies():
                    event_id, _, session_id = note.payload.partition(" ")
                    if event_id.isdigit():
                        yield int(event_id), session_id

            yield notifications()
        finally:
            await conn.close()

    async def migrate(self, version_locations: Sequence[Path] = ()) -> None:
        """Upgrade our tables in one transaction, under an advisory lock (safe with many
        replicas starting at once)."""
        await asyncio.to_thread(upgrade_postgres, self.conninfo, version_locations)
