"""LangGraph Studio: the real ``langgraph dev`` server runs the support graph as the API does.

A slow integration test. It starts ``langgraph dev`` (in-memory runtime, offline local mode,
the store pack) on a free loopback port, talks to it through ``langgraph-sdk`` the way Studio
does, and compares every turn with the in-process graph compiled the way the API compiles it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client

from graphs.state import TurnInput
from graphs.support import build_graph
from supportgraph import wiring
from supportgraph.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STORE_PACK = PROJECT_ROOT / "packs" / "store"
GRAPH_ID = "support"
STARTUP_TIMEOUT = 90.0
RUN_TIMEOUT = 30.0
LOG_TAIL_LINES = 200

FAQ_QUESTION = "What is your return policy?"
ORDER_QUESTION = "where is my order 1042"
COMPARED = ("reply", "intent", "status", "citations", "route", "slots")
"""Output fields a Studio user must see exactly as an API user does."""


class StudioMessage(TypedDict):
    """A message as Studio sends it in a run's input."""

    role: str
    content: str


class StudioInput(TypedDict):
    """A run's input as Studio sends it: the JSON form of :class:`graphs.state.TurnInput`."""

    messages: list[StudioMessage]
    session_id: str


@dataclass
class DevServer:
    """A running ``langgraph dev`` subprocess and where its output goes."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the server wrote."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env() -> dict[str, str]:
    """The environment of an offline dev server: store pack, no model key, no telemetry."""
    leaky = ("SUPPORTGRAPH_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaky)}
    env.update(
        SUPPORTGRAPH_PACK_PATH=str(STORE_PACK),
        # Should a developer's .env configure a model key, calls still cannot leave the
        # machine: they fail at once and the nodes fall back to the local mode.
        SUPPORTGRAPH_OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        SUPPORTGRAPH_LLM_MAX_RETRIES="0",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LOG_COLOR="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group; kill it if it does not exit in time."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def _wait_until_up(server: DevServer) -> None:
    """Poll ``/ok`` until the server answers; fail with its log if it dies or times out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"langgraph dev exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            response = httpx.get(f"{server.url}/ok", timeout=2.0, trust_env=False)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"langgraph dev did not answer within {STARTUP_TIMEOUT:.0f}s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """``langgraph dev`` serving ``langgraph.json`` from the repository root, offline."""
    langgraph = Path(sys.executable).with_name("langgraph")
    assert langgraph.is_file(), f"{langgraph} is missing: pip install -e '.[dev]'"
    port = _free_port()
    log_path = tmp_path_factory.mktemp("studio") / "langgraph-dev.log"
    command = [
        str(langgraph),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        # Graph paths in langgraph.json resolve against the working directory, so the
        # server must start in the repository root.
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DevServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture
def studio(dev_server: DevServer) -> Iterator[DevServer]:
    """The dev server; its log is printed after the test (pytest shows it on failure)."""
    yield dev_server
    print(f"--- langgraph dev log (last {LOG_TAIL_LINES} lines) ---\n{dev_server.log_tail()}")


async def _in_process_turns(messages: list[str], *, session_id: str) -> list[dict[str, Any]]:
    """Run ``messages`` through the graph as the API does: own checkpointer, explicit context."""
    settings = Settings(_env_file=None, pack_path=STORE_PACK)
    context = wiring.support_context(settings)
    graph = build_graph().compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": session_id}}
    outputs = []
    for text in messages:
        turn: TurnInput = {"messages": [HumanMessage(content=text)], "session_id": session_id}
        out = await graph.ainvoke(turn, config=config, context=context)
        outputs.append(dict(out))
    return outputs


def _visible(output: dict[str, Any]) -> dict[str, Any]:
    """The fields of a turn's output that users see and routing depends on."""
    return {key: output.get(key) for key in COMPARED}


async def test_studio_loads_the_graph_and_takes_any_context(studio: DevServer) -> None:
    """Studio can load the graph's schemas, and a run's JSON context never breaks a turn."""
    client = get_client(url=studio.url)
    assistants = await client.assistants.search(graph_id=GRAPH_ID)
    assert assistants, f"no assistant for graph {GRAPH_ID!r}"
    schemas = await client.assistants.get_schemas(assistants[0]["assistant_id"])
    assert schemas["graph_id"] == GRAPH_ID
    assert isinstance(schemas["context_schema"], dict)

    # Studio sends whatever JSON the user typed as the context; the graph ignores it.
    turn: StudioInput = {
        "messages": [{"role": "user", "content": FAQ_QUESTION}],
        "session_id": "s",
    }
    out = await asyncio.wait_for(
        client.runs.wait(
            None,
            GRAPH_ID,
            input=turn,
            context={"user_id": "someone", "model": "whatever"},
        ),
        timeout=RUN_TIMEOUT,
    )
    assert isinstance(out, dict) and out.get("route") == ["classify_intent", "handle_faq"], out


async def test_studio_conversation_matches_the_api(studio: DevServer) -> None:
    """An FAQ turn then an order-status turn: Studio gets what the in-process graph gives."""
    client = get_client(url=studio.url)
    thread = await client.threads.create()
    thread_id = thread["thread_id"]

    outputs = []
    for text in (FAQ_QUESTION, ORDER_QUESTION):
        turn: StudioInput = {
            "messages": [{"role": "user", "content": text}],
            "session_id": thread_id,
        }
        out = await asyncio.wait_for(
            client.runs.wait(thread_id, GRAPH_ID, input=turn),
            timeout=RUN_TIMEOUT,
        )
        assert isinstance(out, dict) and "__error__" not in out, f"run failed: {out}"
        outputs.append(out)
    faq, order = outputs

    assert faq["reply"]
    assert faq["citations"], faq
    assert all(c["id"] and c["title"] for c in faq["citations"])
    assert faq["route"] == ["classify_intent", "handle_faq"]
    assert faq["status"] == "active"

    assert order["intent"] == "order_status"
    assert order["status"] == "awaiting_info"
    assert order["route"] == ["classify_intent", "collect_info"]
    assert order["slots"] == {"order_number": "1042"}
    assert "email" in order["reply"].lower()
    assert not order.get("citations")

    state = await client.threads.get_state(thread_id)
    values = state["values"]
    assert isinstance(values, dict), values
    assert values["session_id"] == thread_id
    assert values["intent"] == "order_status"
    assert values["status"] == "awaiting_info"
    assert values["slots"] == {"order_number": "1042"}
    assert values["missing"] == ["email"]
    assert values["turn"] == 2
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "human", "ai"]
    assert not state["next"]

    expected = await _in_process_turns([FAQ_QUESTION, ORDER_QUESTION], session_id=thread_id)
    assert [_visible(o) for o in outputs] == [_visible(o) for o in expected]
