"""Requests and audit entries in a LangGraph store (where the LangGraph server owns storage)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from langgraph.store.base import BaseStore

from checkpoints.store import new_request_id
from supportgraph.domain.pii import pseudonym


class LangGraphStoreSink:
    """The request and audit sinks of a run on the LangGraph server (Studio), in its store."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, str], idempotency_key: str
    ) -> str:
        """Store the request once per idempotency key; return its id."""
        namespace = ("supportgraph", "requests", session_id or "unknown")
        existing = await self.store.aget(namespace, idempotency_key)
        if existing is not None:
            return str(existing.value["id"])
        request_id = new_request_id()
        value = {"id": request_id, "kind": kind, "data": data, "status": "open"}
        await self.store.aput(namespace, idempotency_key, value)
        return request_id

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
        """Append an audit entry under the session's pseudonym."""
        namespace = ("supportgraph", "audit", pseudonym(session_id))
        entry = {
            "action": action,
            "kind": kind,
            "outcome": outcome,
            "reason": reason,
            "record_ref": record_ref,
            "request_id": request_id,
            "at": datetime.now(UTC).isoformat(),
        }
        await self.store.aput(namespace, secrets.token_hex(8), entry)
