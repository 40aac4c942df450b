"""Concurrency and bounds: one session hit by 50 posts at once, the busy policy, model context.

No timing assertions here: the performance figures live in ``bench/``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bench.common import load_profile, load_profile_settings
from checkpoints import open_persistence
from graphs.state import MAX_WINDOW
from tests.conftest import stub_llm_settings
from tests.utils.chat import Customer, app_of, hold_turns
from tests.utils.db import fresh_schema
from tests.utils.openai import COMPLETIONS, requested_tool, tool_call_response
from tests.utils.servers import clean_env, free_port
from tests.utils.servers import serve_process as serving

POSTS = 50


@contextmanager
def server(backend: str, tmp_path: Path, *, workers: int, policy: str) -> Iterator[str]:
    """``supportgraph serve`` on SQLite (one worker) or on a fresh PostgreSQL schema."""
    # A load test: the documented load profile lifts the rate limits and the turn cap.
    env = {"SUPPORTGRAPH_BUSY_POLICY": policy, "SUPPORTGRAPH_LOG_LEVEL": "WARNING"}
    env |= load_profile()
    args = ("--workers", str(workers))
    if backend == "sqlite":
        with serving(tmp_path, free_port(), *args, env=clean_env(tmp_path, **env)) as url:
            yield url
        return
    with (
        fresh_schema() as db,
        serving(
            tmp_path,
            free_port(),
            *args,
            env=clean_env(tmp_path, SUPPORTGRAPH_DATABASE_URL=db, **env),
        ) as url,
    ):
        yield url


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "workers", "policy"),
    [("sqlite", 1, "enqueue"), ("postgres", 2, "enqueue"), ("postgres", 2, "reject")],
)
async def test_fifty_concurrent_posts_to_one_session_keep_every_accepted_message(
    tmp_path: Path, backend: str, workers: int, policy: str
) -> None:
    """0 lost, 0 5xx, and each accepted message exactly once (with one reply) in the transcript."""
    with server(backend, tmp_path, workers=workers, policy=policy) as base:
        limits = httpx.Limits(max_connections=POSTS)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            first = (await client.post("/api/support/chat", json={"message": "hello"})).json()
            sid = first["session_id"]
            headers = {"Authorization": f"Bearer {first['session_token']}"}
            texts = [f"message {i}: how much is shipping?" for i in range(POSTS)]
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/support/chat",
                        json={"message": t, "session_id": sid},
                        headers=headers,
                    )
                    for t in texts
                )
            )
            session = (await client.get(f"/api/support/sessions/{sid}", headers=headers)).json()
    codes = Counter(r.status_code for r in responses)
    accepted = [t for t, r in zip(texts, responses, strict=True) if r.status_code == 200]
    if policy == "enqueue":
        assert codes == {200: POSTS}, codes
    else:
        assert set(codes) <= {200, 409}, codes
        assert codes[200] >= 1
        for r in responses:
            if r.status_code == 409:
                assert r.headers["retry-after"].isdigit()
                assert r.json()["error"]["code"] == "session_busy"
    customer = [m["content"] for m in session["messages"] if m["role"] == "customer"]
    assert Counter(customer) == Counter(["hello", *accepted]), "each accepted message once"
    assert len(session["messages"]) == 2 * len(customer), "each message answered exactly once"


async def test_reject_policy_answers_409_while_a_turn_runs(
    app_factory: Any, sqlite_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_factory(**sqlite_backend, busy_policy="reject") as client:
        customer = Customer(client)
        await customer.say("hello")
        gate = hold_turns(client, monkeypatch)
        running = asyncio.create_task(customer.say("how much is shipping?"))
        await gate.entered.wait()
        busy = await customer.say("are you there?", expect=409)
        gate.release.set()
        await running
        after = await customer.say("thanks")
        session = await customer.transcript()
    assert busy["error"]["code"] == "session_busy"
    assert busy["error"]["message"]
    assert after["status"] in ("active", "resolved", "awaiting_info")
    customer_lines = [m["content"] for m in session["messages"] if m["role"] == "customer"]
    assert customer_lines == ["hello", "how much is shipping?", "thanks"]


async def test_reject_policy_sends_retry_after(
    app_factory: Any, sqlite_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_factory(**sqlite_backend, busy_policy="reject") as client:
        customer = Customer(client)
        await customer.say("hello")
        gate = hold_turns(client, monkeypatch)
        running = asyncio.create_task(customer.say("how much is shipping?"))
        await gate.entered.wait()
        response = await client.post(
            "/api/support/chat",
            json={"message": "hello again", "session_id": customer.session_id},
            headers={"Authorization": f"Bearer {customer.token}"},
        )
        gate.release.set()
        await running
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"


async def test_enqueue_policy_answers_both_in_arrival_order(
    app_factory: Any, sqlite_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        gate = hold_turns(client, monkeypatch)
        first = asyncio.create_task(customer.say("how much is shipping?"))
        await gate.entered.wait()
        second = asyncio.create_task(customer.say("do you ship abroad?"))
        await asyncio.sleep(0.05)
        assert not second.done(), "the second message waits for the first turn"
        gate.release.set()
        await asyncio.gather(first, second)
        session = await customer.transcript()
    roles = [(m["role"], m["content"]) for m in session["messages"]]
    assert [c for r, c in roles if r == "customer"] == [
        "hello",
        "how much is shipping?",
        "do you ship abroad?",
    ]
    # Each message is stored when it arrives (the second while the first turn runs), each
    # reply when its turn commits: the replies follow in the same order.
    assert [r for r, _ in roles] == ["customer", "assistant", "customer", "customer"] + [
        "assistant"
    ] * 2
    first_reply, second_reply = (await first)["reply"], (await second)["reply"]
    assert [c for r, c in roles if r == "assistant"][1:] == [first_reply, second_reply]


async def test_reject_policy_holds_across_processes_on_postgres(
    app_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two apps on one database stand in for two workers: the lock is tried, not awaited."""
    with fresh_schema() as url:
        settings = {"database_url": url, "sqlite_path": tmp_path / "unused.sqlite"}
        settings |= {"secret_key": "test-secret-of-at-least-32-bytes-for-hs256"}
        async with (
            app_factory(**settings, busy_policy="reject") as one,
            app_factory(**settings, busy_policy="reject") as two,
        ):
            customer = Customer(one)
            await customer.say("hello")
            gate = hold_turns(one, monkeypatch)
            running = asyncio.create_task(customer.say("how much is shipping?"))
            await gate.entered.wait()
            elsewhere = Customer(two)
            elsewhere.session_id, elsewhere.token = customer.session_id, customer.token
            busy = await elsewhere.say("are you there?", expect=409)
            gate.release.set()
            await running
            await elsewhere.say("thanks")
            session = await elsewhere.transcript()
    assert busy["error"]["code"] == "session_busy"
    customer_lines = [m["content"] for m in session["messages"] if m["role"] == "customer"]
    assert customer_lines == ["hello", "how much is shipping?", "thanks"]


class RecordingModel:
    """An OpenAI-compatible stub that answers every FAQ turn and keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        tool = requested_tool(request)
        messages = json.loads(request.content)["messages"]
        self.sent.append((tool, messages))
        if tool == "Classification":
            args: dict[str, Any] = {"intent": "faq", "confidence": 0.9, "sentiment": "neutral"}
        else:
            args = {"answerable": True, "answer": "Shipping is free over $50.", "used_ids": []}
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        return httpx.Response(200, json=tool_call_response(tool, args, tokens=(prompt_chars, 10)))


async def test_model_context_stays_bounded_as_a_thread_grows(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """What the model is sent per turn stops growing once the window is full."""
    model = RecordingModel()
    turns = 30
    filler = " I have been a customer for years and I appreciate your help with this." * 5
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(COMPLETIONS).mock(side_effect=model)
        profile = load_profile_settings()  # 30 quick turns in one session is a load
        async with app_factory(**sqlite_backend, **stub_llm_settings(), **profile) as client:
            customer = Customer(client)
            usage = []
            for i in range(turns):
                body = await customer.say(f"({i}) how much is shipping?{filler}"[:400])
                usage.append(body["usage"]["input_tokens"])
            transcript = await customer.transcript()
    classify = [m for tool, m in model.sent if tool == "Classification"]
    assert len(classify) == turns
    assert max(len(m) for m in classify) <= MAX_WINDOW + 1, "system prompt + the window"
    assert usage[-1] <= 1.5 * usage[9], (usage[9], usage[-1])
    whole = sum(len(m["content"]) for m in transcript["messages"])
    assert whole > 2.5 * sum(len(str(m["content"])) for m in classify[9]), "the thread did grow"


def test_a_large_faq_index_is_cached_on_disk_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.retrieval import generate
    from supportgraph.domain import retrieval

    monkeypatch.setattr(retrieval, "CACHE_MIN_ENTRIES", 50)
    entries = generate(80)
    built = retrieval.FaqIndex(entries, cache_dir=tmp_path)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("faq-")
    loaded = retrieval.FaqIndex(entries, cache_dir=tmp_path)
    query = entries[3].questions[0]
    assert [h.entry.id for h in loaded.search(query)] == [h.entry.id for h in built.search(query)]
    assert loaded.search(query)[0].entry.id == entries[3].id

    # Other articles are another index; an unreadable cache is rebuilt, not fatal.
    other = retrieval.FaqIndex(entries[:60], cache_dir=tmp_path)
    (second,) = set(tmp_path.iterdir()) - set(cached)
    files = [f for f in second.rglob("*") if f.is_file()]
    assert len(files) >= 2, "the entries' and the heads' index"
    for file in files:
        file.write_bytes(b"garbage")
    again = retrieval.FaqIndex(entries[:60], cache_dir=tmp_path)
    assert [h.entry.id for h in again.search(query)] == [h.entry.id for h in other.search(query)]
    rewritten = [f for f in second.rglob("*") if f.is_file()]
    assert rewritten and all(b"garbage" not in f.read_bytes() for f in rewritten), "replaced"


async def test_pooled_connections_killed_by_the_server_are_replaced(
    app_factory: Any, tmp_path: Path
) -> None:
    """A database restart or an idle timeout drops connections: the next turn still works."""
    import psycopg

    from tests.utils.db import base_url

    name = "sg_pool_" + tmp_path.name[-12:].replace("-", "_")
    with fresh_schema() as url:
        settings = {
            "database_url": f"{url}&application_name={name}",
            "sqlite_path": tmp_path / "unused.sqlite",
            "secret_key": "test-secret-of-at-least-32-bytes-for-hs256",
        }
        async with app_factory(**settings) as client:
            customer = Customer(client)
            await customer.say("how much is shipping?")
            with psycopg.connect(base_url(), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (name,),
                ).fetchone()
                assert killed and killed[0] >= 1
                # pg_terminate_backend only signals: wait until those backends are gone, as
                # they are by the time a real disconnect is noticed.
                for _ in range(100):
                    left = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (name,),
                    ).fetchone()
                    if left and left[0] == 0:
                        break
                    time.sleep(0.05)
            await customer.say("do you ship abroad?")
            session = await customer.transcript()
    assert len(session["messages"]) == 4


async def test_a_turn_whose_lease_was_taken_over_answers_503_and_stores_nothing(
    app_factory: Any, backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn stalled past its lease (its renewals never reached the database) while another
    process took the session over: its commit is refused, the customer gets 503 with the code
    ``lease_lost``, and of the turn only the customer's message (committed first) is kept."""
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        assert customer.session_id is not None
        store = app_of(client).state.service.store
        checkpoints_before = await store._fetch(
            "SELECT COUNT(*) AS n FROM checkpoints WHERE thread_id = %s", (customer.session_id,)
        )
        gate = hold_turns(client, monkeypatch)
        running = asyncio.create_task(
            client.post(
                "/api/support/chat",
                json={"message": "how much is shipping?", "session_id": customer.session_id},
                headers={"Authorization": f"Bearer {customer.token}"},
            )
        )
        await gate.entered.wait()
        await store._execute(
            "UPDATE sg_sessions SET lease_expires_at = %s WHERE id = %s",
            (store._ts(datetime(2000, 1, 1, tzinfo=UTC)), customer.session_id),
        )
        async with (
            open_persistence(
                database_url=backend.get("database_url"),
                sqlite_path=Path(backend["sqlite_path"]),
            ) as other,
            other.store.hold(customer.session_id, wait=False) as taken,
        ):
            assert taken is not None, "the other process takes the expired lease"
            gate.release.set()
            lost = await running
        checkpoints_after = await store._fetch(
            "SELECT COUNT(*) AS n FROM checkpoints WHERE thread_id = %s", (customer.session_id,)
        )
        after = await customer.say("are you still there?")
        session = await customer.transcript()
    assert lost.status_code == 503, lost.text
    assert lost.json()["error"]["code"] == "lease_lost"
    assert lost.headers["Retry-After"] == "1"
    assert checkpoints_after == checkpoints_before, "no checkpoint of the lost turn"
    lines = [(m["role"], m["content"]) for m in session["messages"]]
    assert lines[:3] == [
        ("customer", "hello"),
        ("assistant", lines[1][1]),
        ("customer", "how much is shipping?"),
    ]
    assert lines[3:] == [("customer", "are you still there?"), ("assistant", after["reply"])]
