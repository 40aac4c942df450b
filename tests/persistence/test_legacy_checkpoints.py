"""Conversations an older release left mid-way carry on after an upgrade, on both backends.

``legacy/`` holds databases written by the release named in its ``manifest.json`` (see
``legacy/make_legacy.py``): checkpoints with the state fields that release kept (``next_node``,
``reply``, ``route``...). Each conversation is continued here through the real app.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from api.auth import SessionTokens
from tests.conftest import make_settings, running_app
from tests.handoff.helpers import agent_token
from tests.utils.db import base_url, require_postgres

LEGACY = Path(__file__).parent / "legacy"
MANIFEST = json.loads((LEGACY / "manifest.json").read_text())


@contextmanager
def legacy_database(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings overrides for a copy of the legacy database of ``backend``."""
    secret = MANIFEST["secret_key"]
    if backend == "sqlite":
        shutil.copy(LEGACY / "legacy.sqlite", tmp_path / "sg.sqlite")
        yield {"sqlite_path": tmp_path / "sg.sqlite", "secret_key": secret}
        return
    require_postgres()
    schema = "sglegacy_" + secrets.token_hex(6)
    dump = (LEGACY / "legacy_postgres.sql").read_text().replace("__SCHEMA__", schema)
    # psql's meta-commands (\restrict) are not SQL.
    script = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(script.encode())
    url = f"{base_url()}?options={quote(f'-csearch_path={schema}')}"
    try:
        yield {"database_url": url, "sqlite_path": tmp_path / "unused.sqlite", "secret_key": secret}
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Customer:
    """Talks in one legacy session with a token for it."""

    def __init__(
        self, client: httpx.AsyncClient, session_id: str, *, secret: str | None = None
    ) -> None:
        self.client = client
        self.session_id = session_id
        key = secret if secret is not None else MANIFEST["secret_key"]
        token = SessionTokens(key, ttl=timedelta(days=1)).issue(session_id)
        self.headers = {"Authorization": f"Bearer {token}"}

    async def say(self, text: str) -> dict[str, Any]:
        """Send a message; the answer's body."""
        body = {"message": text, "session_id": self.session_id}
        response = await self.client.post("/api/support/chat", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def session(self) -> dict[str, Any]:
        """The session as the API returns it to its customer."""
        response = await self.client.get(
            f"/api/support/sessions/{self.session_id}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_legacy_conversations_carry_on(backend: str, tmp_path: Path) -> None:
    sessions = MANIFEST[backend]
    with legacy_database(backend, tmp_path) as overrides:
        async with running_app(make_settings(**overrides)) as client:
            # Asked for the email last time: the answer completes the lookup.
            waiting = Customer(client, sessions["awaiting_email"])
            out = await waiting.say("caleb.hughes@example.org")
            assert out["status"] == "resolved", out
            assert out["route"] == ["classify_intent", "collect_info", "resolve"]
            assert "1042" in out["reply"] and "delivered" in out["reply"]
            assert not out["reply"].startswith("Hi, welcome"), "greeted twice"

            # A refund was stated and waited for a yes: the yes carries it out.
            refund = Customer(client, sessions["pending_refund"])
            out = await refund.say("yes")
            assert out["status"] == "resolved", out
            assert out["route"] == ["classify_intent", "resolve"]
            assert "R-" in out["reply"]

            # A free-text question was asked: the answer is taken, then confirmed.
            ticket = Customer(client, sessions["awaiting_question"])
            out = await ticket.say("does the oak bench come in walnut?")
            assert out["status"] == "awaiting_info" and "?" in out["reply"], out
            assert out["route"] == ["classify_intent", "collect_info", "resolve"]
            out = await ticket.say("yes please")
            assert out["status"] == "resolved", out

            # A resolved conversation: the next message is a new topic.
            resolved = Customer(client, sessions["resolved"])
            out = await resolved.say("how much is shipping?")
            assert out["status"] == "active" and out["citations"], out
            assert out["route"] == ["classify_intent", "handle_faq"]

            # With a person: the bot stays quiet until the agent hands it back.
            escalated = Customer(client, sessions["escalated"])
            out = await escalated.say("thanks Alice")
            assert out["status"] == "escalated" and out["reply"] == "", out
            agent = {"Authorization": f"Bearer {agent_token(overrides, 'legacy-alice')}"}
            sid = sessions["escalated"]
            handed = await client.post(f"/api/agent/sessions/{sid}/hand-back", headers=agent)
            assert handed.status_code == 200, handed.text
            out = await escalated.say("where is my order 1042?")
            assert out["status"] == "awaiting_info" and out["intent"] == "order_status", out
            transcript = (await escalated.session())["messages"]
            roles = [m["role"] for m in transcript]
            assert roles[:4] == ["customer", "assistant", "customer", "agent"]
            assert roles[-2:] == ["customer", "assistant"]
