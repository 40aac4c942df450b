"""Fault tests: real service processes, a private PostgreSQL cluster, a breakable model.

Every test here injects one fault into real processes and checks what a customer saw and
what was kept. "Acknowledged" means the chat POST answered 200: such a turn (the message
and its reply) must be in the transcript afterwards, exactly once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench.common import load_profile
from tests.faults.cluster import Cluster, private_cluster
from tests.utils.servers import clean_env

APP_NAME = "sg_faults"
"""``application_name`` of the service's connections: how the tests find its backends."""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the folder (tests that stop it start it again)."""
    with private_cluster() as made:
        yield made


@pytest.fixture
def database(cluster: Cluster) -> str:
    """A fresh database on the running private cluster; the service's URL for it."""
    if not cluster.running():
        cluster.start()
    url = cluster.create_database("sg_" + secrets.token_hex(5))
    return f"{url}?application_name={APP_NAME}"


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``serve``'s environment: the load profile (these tests post fast), quiet logs."""
    return clean_env(tmp_path, **load_profile(), SUPPORTGRAPH_LOG_LEVEL="WARNING", **extra)


def backends(cluster_url: str, app: str = APP_NAME) -> list[int]:
    """The pids of the service's sessions on the server."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def terminate_backends(cluster_url: str, app: str = APP_NAME) -> int:
    """``pg_terminate_backend`` every session of the service; how many were signalled."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (app,),
        ).fetchone()
    return int(row[0]) if row else 0


def server_pids(port: int) -> tuple[int, list[int]]:
    """The ``supportgraph serve --port <port>`` process and its uvicorn worker processes."""
    masters = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and str(port).encode() in argv:
            masters.append(int(entry.name))
    assert len(masters) == 1, f"expected one server on port {port}: {masters}"
    master = masters[0]
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == master and b"spawn_main" in cmdline:
            workers.append(int(entry.name))
    return master, sorted(workers)


def busiest_worker(port: int, workers: list[int]) -> int:
    """The worker holding the most client connections to ``port`` (the one serving the load)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                established.add(fields[9])

    def connections(pid: int) -> int:
        fds = Path(f"/proc/{pid}/fd")
        links = []
        for fd in fds.iterdir():
            try:
                links.append(os.readlink(fd))
            except OSError:
                continue
        return sum(1 for link in links if link.removeprefix("socket:[")[:-1] in established)

    return max(workers, key=connections)


@dataclass
class Conversation:
    """One customer's session, and every turn the service acknowledged (answered 200)."""

    client: httpx.AsyncClient
    session_id: str | None = None
    token: str | None = None
    acknowledged: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        """The session token, once there is one."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def say(self, text: str) -> httpx.Response:
        """Post one message; a transport error counts as status 0 (no answer)."""
        body: dict[str, Any] = {"message": text, "session_id": self.session_id}
        try:
            response = await self.client.post(
                "/api/support/chat", json=body, headers=self.headers()
            )
        except httpx.TransportError:
            self.statuses.append(0)
            return httpx.Response(0)
        self.statuses.append(response.status_code)
        if response.status_code == 200:
            data = response.json()
            self.session_id, self.token = data["session_id"], data["session_token"]
            self.acknowledged.append((text, data["reply"]))
        return response

    async def transcript(self) -> list[tuple[str, str]]:
        """``(role, content)`` of every message the service kept for the session."""
        response = await self.client.get(
            f"/api/support/sessions/{self.session_id}", headers=self.headers()
        )
        assert response.status_code == 200, response.text
        return [(m["role"], m["content"]) for m in response.json()["messages"]]


def lost_turns(acknowledged: list[tuple[str, str]], messages: list[tuple[str, str]]) -> list[str]:
    """Acknowledged turns missing from the transcript (or not followed by their reply).

    Each customer message is unique in these tests, so a message kept twice is a fault too:
    it is reported as lost.
    """
    lost = []
    for text, reply in acknowledged:
        where = [i for i, m in enumerate(messages) if m == ("customer", text)]
        answered = (
            len(where) == 1
            and where[0] + 1 < len(messages)
            and messages[where[0] + 1] == ("assistant", reply)
        )
        if not answered:
            lost.append(text)
    return lost


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The API's one error shape, with this status and code; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"], error
    return error


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60) -> float:
    """Poll ``/ready`` until it answers 200; seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if (await client.get("/ready")).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        assert time.monotonic() - start < timeout, f"not ready after {timeout} s"
        await asyncio.sleep(0.2)
