"""The fuzzed service: a real server, a pool of real sessions, credentials, and a tally.

Schemathesis generates every request from the OpenAPI schema; :meth:`FuzzTarget.prepare`
then lets the ones that are meant to get past authentication do so, as a real client would:
a generated session id that fits the pattern becomes a real session's id (a DELETE gets a
fresh session of its own), a page cursor becomes one the API issued, and the matching
credential (the session's token, the server key with the session's customer id, an agent or
admin JWT, the admin token) is written into the case and passed as a call header, so
schemathesis' ``ignored_auth`` check also re-sends each accepted request without it and with
a wrong one. One case in eight keeps the fuzzer's own credentials and one in eight its own
session id (the 401 and 404 paths), and a case whose deliberate mistake is the credential or
the session id keeps it. Which session and credential a case gets is a hash of the case, so
a derandomized run is the same run every time.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import requests
from requests.structures import CaseInsensitiveDict
from schemathesis import Case
from schemathesis.core.transport import Response

from api.agent_auth import AgentTokens
from api.schemas import CUSTOMER_ID_PATTERN, SESSION_ID_PATTERN
from tests.conftest import make_settings
from tests.utils.servers import TEST_SECRET

SERVER_KEY = "fuzz-server-key-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
CUSTOMER_ID = "fuzz-customer"
ENDLESS_STREAMS = frozenset(
    {"GET /api/agent/events", "GET /api/support/sessions/{session_id}/events"}
)
"""Event streams that stay open until the client leaves: read up to their first event."""

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})

# Opening messages of the pool's sessions: each leaves its session in another state.
OPENERS = (
    "Hi, where is my order 1042?",
    "I want to talk to a person",
    "What is your return policy?",
    "I want to talk to a person, my parcel never arrived",
    "I'd like a refund for order 1007",
)


@dataclass
class PoolSession:
    """A session the fuzzer may use, with a credential that currently works for it."""

    session_id: str
    token: str
    customer_id: str | None = None


class FirstEventSession(requests.Session):
    """A ``requests`` session that hangs up on an event stream after its first event.

    The live streams never end on their own; their first event (``ready``) comes at once,
    and status line, headers and that event are what the schema documents.
    """

    def request(
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send the request; read a ``text/event-stream`` body only to its first event."""
        kwargs["stream"] = True
        response = super().request(method, url, *args, **kwargs)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            _ = response.content
            return response
        body = b""
        for chunk in response.iter_content(chunk_size=None):
            body += chunk
            if b"\n\n" in body.replace(b"\r\n", b"\n"):
                break
        response.close()
        response._content = body
        return response


@dataclass
class Tally:
    """What was sent, per operation: phase, positive/negative, the kind of bad input, status."""

    operations: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    negative_kinds: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def record(self, case: Case, response: Response) -> None:
        """Count one generated request and its answer."""
        label = case.operation.label
        meta = case.meta
        mode = meta.generation.mode.value if meta else "unknown"
        counts = self.operations[label]
        counts["requests"] += 1
        counts[mode] += 1
        if meta is not None:
            counts[f"phase:{meta.phase.name.value}"] += 1
            if meta.generation.mode.is_negative:
                self.negative_kinds[negative_kind(case)] += 1
        self.statuses[label][response.status_code] += 1

    def summary(self) -> dict[str, Any]:
        """The figures as JSON-able data."""
        totals: Counter[str] = Counter()
        for counts in self.operations.values():
            totals.update(counts)
        return {
            "totals": dict(sorted(totals.items())),
            "negative_by_kind": dict(self.negative_kinds.most_common()),
            "operations": {
                label: {
                    **dict(sorted(counts.items())),
                    "statuses": {str(k): v for k, v in sorted(self.statuses[label].items())},
                }
                for label, counts in sorted(self.operations.items())
            },
        }

    def write(self, path: Path) -> dict[str, Any]:
        """Write the summary as JSON; return it."""
        data = self.summary()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return data


TALLY = Tally()


def negative_kind(case: Case) -> str:
    """What kind of bad input a negative case carries, e.g. ``coverage:invalid_pattern/body``."""
    meta = case.meta
    assert meta is not None
    data = meta.phase.data
    where = data.parameter_location.value if data.parameter_location else "request"
    scenario = getattr(data, "scenario", None)
    if scenario is not None:
        return f"{meta.phase.name.value}:{scenario.value}/{where}"
    return f"{meta.phase.name.value}:schema-violating value/{where}"


def _stable_hash(case: Case) -> int:
    """A hash of what the fuzzer generated (Python's ``hash`` of a str differs per process)."""
    generated = {
        "path": case.path_parameters,
        "query": case.query,
        "headers": {k: v for k, v in (case.headers or {}).items()},
        "body": case.body if isinstance(case.body, dict | list | str | int | float) else None,
    }
    return zlib.crc32(json.dumps(generated, sort_keys=True, default=repr).encode())


def _mutated(case: Case) -> set[str]:
    """Lower-cased names of the parameters a negative case deliberately broke."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return set()
    name = meta.phase.data.parameter
    return {name.lower()} if name else set()


class FuzzTarget:
    """The running service, its sessions and the credentials the fuzzer may use."""

    def __init__(self, base_url: str, *, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.pool: list[PoolSession] = []
        self.cursor = ""
        """A cursor the API issued (any issued cursor is a valid position in any list)."""
        tokens = AgentTokens.from_settings(make_settings(secret_key=TEST_SECRET))
        self.agent_token = tokens.issue("fuzz-agent", role="agent", ttl=timedelta(hours=2))
        self.admin_jwt = tokens.issue("fuzz-admin", role="admin", ttl=timedelta(hours=2))
        self.plain = requests.Session()
        self.streams = FirstEventSession()

    def close(self) -> None:
        """Close the HTTP clients."""
        self.http.close()
        self.plain.close()
        self.streams.close()

    def seed(self) -> None:
        """Real sessions in several states: anonymous chats and a company backend's sessions."""
        for message in OPENERS:
            self.pool.append(self._chat(message))
        for message in OPENERS[:2]:
            session = self.new_server_session()
            reply = self.http.post(
                "/api/support/chat",
                json={"message": message, "session_id": session.session_id},
                headers={"Authorization": f"Bearer {session.token}"},
            )
            assert reply.status_code == 200, reply.text
            self.pool.append(session)
        page = self.http.get(
            "/api/agent/sessions",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {self.agent_token}"},
        )
        assert page.status_code == 200, page.text
        self.cursor = page.json()["next_cursor"]
        assert self.cursor, page.text

    def _chat(self, message: str) -> PoolSession:
        reply = self.http.post("/api/support/chat", json={"message": message})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return PoolSession(body["session_id"], body["session_token"])

    def new_server_session(self) -> PoolSession:
        """A fresh session of ``CUSTOMER_ID``, made with the server key."""
        made = self.http.post(
            "/api/support/sessions",
            headers={"X-API-Key": SERVER_KEY, "X-Customer-ID": CUSTOMER_ID},
        )
        assert made.status_code == 201, made.text
        body = made.json()
        return PoolSession(body["session_id"], body["session_token"], customer_id=CUSTOMER_ID)

    def session_for(self, case: Case) -> requests.Session:
        """The HTTP session to send a case with (live streams are cut after their first event)."""
        return self.streams if case.operation.label in ENDLESS_STREAMS else self.plain

    def prepare(self, case: Case) -> dict[str, Any]:
        """Point the case at real sessions; return what to send with it (``case.call`` kwargs).

        That is the credential ``headers`` and a real cursor in ``params``.
        """
        label = case.operation.label
        pick = _stable_hash(case)
        broken = _mutated(case)
        session = self._swap_path_session(case, pick, broken)
        if label in ("POST /api/support/chat", "POST /api/support/chat/stream"):
            session = self._swap_body_session(case, pick)
        call: dict[str, Any] = {"headers": self._headers(case, label, pick, broken, session)}
        params = self._cursor(case, broken)
        if params:
            call["params"] = params
        return call

    def _headers(
        self, case: Case, label: str, pick: int, broken: set[str], session: PoolSession | None
    ) -> dict[str, str | None]:
        """The credential headers to send, also written into the case."""
        if broken & _CREDENTIAL_HEADERS or pick % 8 == 0:
            # The fuzzer's own credentials (none, or generated ones): the 401 paths.
            return {}
        credentials = self._credentials(case, label, pick, broken, session)
        if credentials:
            # The other credential header goes: a generated X-API-Key beside a real session
            # token is refused first. Sent as None (requests then drops the header), kept in
            # the case as "" (which the API reads as absent), so the case still has every
            # header the schema requires and the checks judge what was sent.
            for parameter in case.operation.security.iter_parameters():
                credentials.setdefault(parameter["name"], None)
            headers = CaseInsensitiveDict(case.headers)
            headers.update({name: value or "" for name, value in credentials.items()})
            case.headers = headers
        return credentials

    def _credentials(
        self, case: Case, label: str, pick: int, broken: set[str], session: PoolSession | None
    ) -> dict[str, str | None]:
        """The credential headers that let this case past authentication."""
        if label.startswith(("GET /api/agent", "POST /api/agent")):
            token = self.admin_jwt if pick % 4 == 1 else self.agent_token
            return {"Authorization": f"Bearer {token}"}
        if label in ("GET /api/support/sessions", "POST /api/support/sessions"):
            return self._server_key(case, broken)
        if label == "DELETE /api/support/sessions/{session_id}" and pick % 4 == 1:
            return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if session is None:
            if "session_id" not in case.path_parameters:
                return {}  # A new conversation: no credential needed.
            # An id no session has: a real token for another session (404, not 401).
            session = self.pool[pick % len(self.pool)]
        if session.customer_id is not None and pick % 3 == 1:
            return self._server_key(case, broken, customer_id=session.customer_id)
        return {"Authorization": f"Bearer {session.token}"}

    def _swap_path_session(self, case: Case, pick: int, broken: set[str]) -> PoolSession | None:
        """Replace a well-formed generated path session id by a real one (7 cases in 8)."""
        generated = case.path_parameters.get("session_id") if case.path_parameters else None
        if not isinstance(generated, str) or "session_id" in broken:
            return None
        if not _SESSION_ID.match(generated) or (pick >> 3) % 8 == 0:
            return None
        if case.operation.label == "DELETE /api/support/sessions/{session_id}":
            session = self.new_server_session()  # Deleting must not empty the pool.
        else:
            session = self.pool[(pick >> 6) % len(self.pool)]
        case.path_parameters["session_id"] = session.session_id
        return session

    def _cursor(self, case: Case, broken: set[str]) -> dict[str, str]:
        """Page from a real position: a cursor is only valid if this API issued it.

        Sent as a call parameter over the generated one rather than written into the case:
        schemathesis would re-validate the changed query and misjudge the string forms of
        its other values (``limit="25"``) as invalid.
        """
        if isinstance((case.query or {}).get("cursor"), str) and "cursor" not in broken:
            return {"cursor": self.cursor}
        return {}

    def _swap_body_session(self, case: Case, pick: int) -> PoolSession | None:
        """Continue a real session when the generated body names a well-formed session id."""
        body = case.body
        if not isinstance(body, dict) or not isinstance(body.get("session_id"), str):
            return None
        if not _SESSION_ID.match(body["session_id"]) or (pick >> 3) % 8 == 0:
            return None
        session = self.pool[(pick >> 6) % len(self.pool)]
        body["session_id"] = session.session_id
        return session

    def _server_key(
        self, case: Case, broken: set[str], *, customer_id: str | None = None
    ) -> dict[str, str | None]:
        """The server key, with the customer id it acts for unless the case has its own."""
        headers: dict[str, str | None] = {"X-API-Key": SERVER_KEY}
        generated = case.headers.get("X-Customer-ID") if case.headers else None
        if customer_id is not None and "x-customer-id" not in broken:
            headers["X-Customer-ID"] = customer_id
        elif not (isinstance(generated, str) and _CUSTOMER_ID.match(generated)) and (
            "x-customer-id" not in broken
        ):
            headers["X-Customer-ID"] = CUSTOMER_ID
        return headers

    def after(self, case: Case, response: Response) -> None:
        """Keep the pool usable: current tokens, and conversations that are with a person."""
        if response.status_code != 200:
            return
        label = case.operation.label
        if label == "POST /api/support/sessions/{session_id}/token":
            # Rotating revokes every older token of the session.
            body = response.json()
            for session in self.pool:
                if session.session_id == body["session_id"]:
                    session.token = body["session_token"]
        elif label in (
            "POST /api/agent/sessions/{session_id}/hand-back",
            "POST /api/agent/sessions/{session_id}/resolve",
        ):
            # Back with the bot: the customer asks for a person again, so the agents'
            # operations keep reaching their 200s, not only 409 (not with a person).
            session_id = case.path_parameters["session_id"]
            session = next(s for s in self.pool if s.session_id == session_id)
            again = self.http.post(
                "/api/support/chat",
                json={"message": OPENERS[1], "session_id": session_id},
                headers={"Authorization": f"Bearer {session.token}"},
            )
            assert again.status_code == 200, again.text
