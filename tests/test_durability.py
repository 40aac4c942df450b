"""A turn that got a 200 survives ``kill -9`` of the server and a restart, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.utils.db import fresh_schema
from tests.utils.orders import order
from tests.utils.servers import clean_env, free_port
from tests.utils.servers import serve_process as serving

PLACED = order("placed")


@contextmanager
def database(backend: str) -> Iterator[dict[str, str]]:
    """Environment for ``serve``: SQLite in the test's folder, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield {}
        return
    with fresh_schema() as url:
        yield {"SUPPORTGRAPH_DATABASE_URL": url}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_acknowledged_turns_survive_kill_9(tmp_path: Path, backend: str) -> None:
    """With the default settings (checkpoint once per turn, SQLite synchronous=NORMAL)."""
    port = free_port()
    texts = ["hi", "how much is shipping?", f"where is my order {PLACED['order_id']}"]
    with ExitStack() as stack:
        env = stack.enter_context(database(backend))
        env["SUPPORTGRAPH_LOG_LEVEL"] = "WARNING"
        with serving(tmp_path, port, env=clean_env(tmp_path, **env)) as url:
            session_id = token = None
            for text in texts:
                headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
                response = httpx.post(
                    f"{url}/api/support/chat",
                    json={"message": text, "session_id": session_id},
                    headers=headers,
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                session_id = response.json()["session_id"]
                token = response.json()["session_token"]
            last_reply = response.json()["reply"]
        # serving() ended with SIGKILL to the server's process group, right after the last 200.
        with serving(tmp_path, port, env=clean_env(tmp_path, **env)) as url:
            headers = {"Authorization": f"Bearer {token}"}
            session = httpx.get(f"{url}/api/support/sessions/{session_id}", headers=headers)
            assert session.status_code == 200, session.text
            messages = session.json()["messages"]
            assert [m["content"] for m in messages if m["role"] == "customer"] == texts
            assert messages[-1] == {**messages[-1], "role": "assistant", "content": last_reply}
            # The state survived too: the order number asked for before the kill is still known.
            done = httpx.post(
                f"{url}/api/support/chat",
                json={"message": PLACED["email"], "session_id": session_id},
                headers=headers,
                timeout=60,
            )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "resolved"
    assert PLACED["order_id"] in done.json()["reply"]
