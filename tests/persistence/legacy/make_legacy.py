"""Write the legacy databases: conversations left mid-way by an older release of the service.

The upgrade test (``tests/persistence/test_legacy_checkpoints.py``) opens them with today's
code and carries each conversation on. This script talks to the old release only over HTTP
and its CLI, so it runs against any release::

    git worktree add /tmp/old <commit> && cd /tmp/old && make .venv/.installed
    python tests/persistence/legacy/make_legacy.py --bin /tmp/old/.venv/bin/supportgraph \
        --out tests/persistence/legacy

It writes ``legacy.sqlite`` (SQLite), ``legacy_postgres.sql`` (``pg_dump --inserts`` of a
schema, named ``__SCHEMA__``) and ``manifest.json`` (the session ids per scenario).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

SECRET = "legacy-secret-of-at-least-32-bytes-for-hs256"
POSTGRES = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Each scenario leaves a session at a point where the old state (next_node, reply, route...)
# is in the checkpoint and the next message must carry on from it.
SCENARIOS: dict[str, list[str]] = {
    "awaiting_email": ["where is my order 1042?"],
    "pending_refund": [
        "I want a refund for order 1044",
        "ravi.desai@example.org",
        "the quilt arrived damaged",
    ],
    "awaiting_question": ["please open a support ticket", "li.wei@example.com"],
    "resolved": ["where is my order 1042? my email is caleb.hughes@example.org"],
    "escalated": ["I want to talk to a person", "hello? anyone there?"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(binary: str, workdir: Path, **env: str) -> Iterator[str]:
    port = _free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORTGRAPH_")},
        "SUPPORTGRAPH_SECRET_KEY": SECRET,
        "SUPPORTGRAPH_SQLITE_PATH": str(workdir / "legacy.sqlite"),
        "SUPPORTGRAPH_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = subprocess.Popen(
        [binary, "serve", "--port", str(port)], env=environment, cwd=workdir, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _agent_token(binary: str) -> str:
    env = {**os.environ, "SUPPORTGRAPH_SECRET_KEY": SECRET}
    out = subprocess.run([binary, "agent", "token", "legacy-alice"], env=env, capture_output=True)
    return out.stdout.decode().strip()


def _converse(url: str, agent_token: str) -> dict[str, str]:
    sessions: dict[str, str] = {}
    for name, messages in SCENARIOS.items():
        session_id, token = None, None
        for text in messages:
            headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
            body = {"message": text, "session_id": session_id}
            answer = httpx.post(f"{url}/api/support/chat", json=body, headers=headers, timeout=60)
            answer.raise_for_status()
            session_id, token = answer.json()["session_id"], answer.json()["session_token"]
        assert session_id is not None
        sessions[name] = session_id
    agent = {"Authorization": f"Bearer {agent_token}"}
    escalated = sessions["escalated"]
    reply = {"text": "Hi, this is Alice from the team."}
    httpx.post(f"{url}/api/agent/sessions/{escalated}/reply", json=reply, headers=agent)
    return sessions


def _postgres_dump(binary: str, workdir: Path, agent_token: str) -> tuple[str, dict[str, str]]:
    schema = "legacy_" + secrets.token_hex(4)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{POSTGRES}?options={quote(f'-csearch_path={schema}')}"
        with _serving(binary, workdir, SUPPORTGRAPH_DATABASE_URL=url) as service:
            sessions = _converse(service, agent_token)
        dump = subprocess.run(
            [
                "pg_dump",
                "--no-owner",
                "--no-privileges",
                "--inserts",
                f"--schema={schema}",
                POSTGRES,
            ],
            capture_output=True,
            check=True,
        ).stdout.decode()
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return dump.replace(schema, "__SCHEMA__"), sessions


def main() -> None:
    """Run the scenarios against an old release and write the three files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="The old release's supportgraph command.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(args.bin).resolve().parent.parent.parent,
        capture_output=True,
    ).stdout.decode()
    agent_token = _agent_token(args.bin)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with _serving(args.bin, workdir) as url:
            sqlite_sessions = _converse(url, agent_token)
        db = sqlite3.connect(workdir / "legacy.sqlite")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.close()
        (args.out / "legacy.sqlite").write_bytes((workdir / "legacy.sqlite").read_bytes())
        dump, postgres_sessions = _postgres_dump(args.bin, workdir, agent_token)
    (args.out / "legacy_postgres.sql").write_text(dump)
    manifest = {
        "written_by": commit.strip(),
        "secret_key": SECRET,
        "sqlite": sqlite_sessions,
        "postgres": postgres_sessions,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
