"""The ``supportgraph`` command as a user runs it: serve over real HTTP, chat, graph, pack check."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx

from bench.common import load_profile
from tests.conftest import STORE_PACK
from tests.utils.db import fresh_schema
from tests.utils.orders import order
from tests.utils.servers import BIN, free_port
from tests.utils.servers import clean_env as cli_env
from tests.utils.servers import serve_process as serving


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command to completion."""
    return subprocess.run(
        [str(BIN), *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_serve_over_http_survives_a_restart(tmp_path: Path) -> None:
    placed = order("placed")
    port = free_port()
    with serving(tmp_path, port) as url:
        first = httpx.post(
            f"{url}/api/support/chat", json={"message": f"where is my order {placed['order_id']}"}
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["status"] == "awaiting_info"
        assert first.headers["x-request-id"]
    with serving(tmp_path, port) as url:
        headers = {"Authorization": f"Bearer {body['session_token']}"}
        second = httpx.post(
            f"{url}/api/support/chat",
            json={"message": placed["email"], "session_id": body["session_id"]},
            headers=headers,
        )
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "resolved"
        session = httpx.get(f"{url}/api/support/sessions/{body['session_id']}", headers=headers)
    assert [m["role"] for m in session.json()["messages"]] == ["customer", "assistant"] * 2


async def test_two_workers_on_postgres_keep_every_concurrent_message(tmp_path: Path) -> None:
    """Turns of one session are serialised across worker processes: nothing is lost."""
    with (
        fresh_schema() as url,
        # 21 quick messages to one session is a load: the documented profile lifts the limits.
        serving(
            tmp_path,
            free_port(),
            "--workers",
            "2",
            env=cli_env(tmp_path, SUPPORTGRAPH_DATABASE_URL=url, **load_profile()),
        ) as base,
    ):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            first = (await client.post("/api/support/chat", json={"message": "hello"})).json()
            headers = {"Authorization": f"Bearer {first['session_token']}"}
            texts = [f"message {i}: how much is shipping?" for i in range(20)]
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/support/chat",
                        json={"message": t, "session_id": first["session_id"]},
                        headers=headers,
                    )
                    for t in texts
                )
            )
            session = await client.get(
                f"/api/support/sessions/{first['session_id']}", headers=headers
            )
    assert [r.status_code for r in responses] == [200] * len(texts)
    messages = session.json()["messages"]
    customer = [m["content"] for m in messages if m["role"] == "customer"]
    assert sorted(customer) == sorted(["hello", *texts])
    assert len(messages) == 2 * len(customer), "each message answered exactly once"


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    result = run(["serve", "--workers", "2"], cli_env(tmp_path))
    assert result.returncode == 2
    assert "SQLite is single-process" in result.stderr


def test_graph_prints_mermaid_with_five_nodes() -> None:
    result = run(["graph"], dict(os.environ))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.lstrip().startswith(("graph TD", "---", "%%"))
    for node in ("classify_intent", "handle_faq", "collect_info", "escalate_human", "resolve"):
        assert node in out
    assert "classify_intent -.-> handle_faq" in out
    assert "collect_info -.-> resolve" in out


def test_graph_png_without_graphviz_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(BIN.parent)}
    result = run(["graph", "--png", str(tmp_path / "g.png")], env)
    if result.returncode == 0:
        assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert "graphviz is not installed" in result.stderr


def test_pack_check_accepts_the_store_pack() -> None:
    result = run(["pack", "check", str(STORE_PACK)], dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "ok store" in result.stdout


def test_pack_check_lists_problems(tmp_path: Path) -> None:
    (tmp_path / "faq").mkdir()
    (tmp_path / "pack.yaml").write_text(
        "name: broken\nversion: '1'\ngreeting: hi\nintents:\n"
        "  - name: x\n    examples: [a, b, c]\n    slots: [nope]\n"
    )
    result = run(["pack", "check", str(tmp_path)], dict(os.environ))
    assert result.returncode == 1
    assert "slot 'nope' is referenced but not declared" in result.stderr


def test_chat_in_the_terminal_keeps_the_session(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    first = run(["chat"], env, stdin="how many days do I have to return something?\n")
    assert first.returncode == 0, first.stderr
    assert "30 days" in first.stdout
    session = first.stdout.split("session ", 1)[1].split()[0]
    again = run(["chat", "--session", session], env, stdin="I want to talk to a person\n")
    assert again.returncode == 0, again.stderr
    assert "escalated" in again.stdout
    missing = run(["chat", "--session", "nope"], env)
    assert missing.returncode == 1
