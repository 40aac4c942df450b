"""The benchmarks' building blocks work (no timing here: the figures come from ``bench/``)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import apps, retrieval, stub_llm
from bench.common import percentile, ratio
from bench.long_thread import late_turn, message, sample_turns
from bench.soak import KINDS, ORDERS, POOL_MAX, Tally, script, summarize
from tests.conftest import TEST_SECRET


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 99) == 0.0
    assert ratio(3.0, 1.5) == "2.00x" and ratio(1.0, 0.0) == "-"


def test_long_thread_messages_and_samples() -> None:
    assert all(len(message(t)) == 400 for t in (1, 10, 200))
    assert late_turn(210) == 200 and late_turn(30) == 24
    samples = sample_turns(210)
    assert {4, 16, 194, 206} <= samples


def test_stub_model_answers_the_forced_tool_and_counts_the_prompt() -> None:
    body = {
        "model": "stub-model",
        "messages": [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "Classification"}}],
        "tool_choice": {"type": "function", "function": {"name": "Classification"}},
    }
    out = stub_llm.completion(body)
    call = out["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "Classification"
    assert json.loads(call["arguments"])["intent"] == "faq"
    assert out["usage"]["prompt_tokens"] == 101


@pytest.mark.parametrize("factory", [apps.stock_app, apps.bare_app])
async def test_baseline_apps_answer_turns_and_keep_state(
    factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORTGRAPH_SQLITE_PATH", str(tmp_path / "bench.sqlite"))
    monkeypatch.setenv("SUPPORTGRAPH_SECRET_KEY", TEST_SECRET)
    app = factory()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            assert (await client.get("/health")).json() == {"status": "healthy"}
            first = (await client.post("/api/support/chat", json={"message": "hi"})).json()
            body = {"message": "how much is shipping?", "session_id": first["session_id"]}
            second = (await client.post("/api/support/chat", json=body)).json()
    assert second["session_id"] == first["session_id"]
    assert second["reply"]
    if factory is apps.bare_app:
        assert second["reply"] == "turn 2"


def test_stock_state_keeps_the_whole_transcript() -> None:
    from langchain_core.messages import HumanMessage
    from langgraph.channels.binop import BinaryOperatorAggregate

    graph = apps.stock_builder().compile()
    reducer = graph.builder.channels["messages"]
    assert isinstance(reducer, BinaryOperatorAggregate)
    messages = [HumanMessage(content=str(i), id=str(i)) for i in range(30)]
    assert len(reducer.operator([], messages)) == 30


def test_generated_faq_is_searchable_and_the_naive_baseline_agrees() -> None:
    entries = retrieval.generate(60)
    assert len({e.id for e in entries}) == 60
    naive = retrieval.NaiveIndex(entries)
    question = entries[7].questions[0]
    assert naive.search(question)[0] == entries[7].id
    assert retrieval.write_pack is not None


def _tally(rss: list[int], connections: list[int], statuses: list[int]) -> Tally:
    tally = Tally()
    for status in statuses:
        tally.record("turn", status, 0.01)
    tally.samples = [
        {"t": 10.0 * i, "requests": i, "rss": [r], "connections": c}
        for i, (r, c) in enumerate(zip(rss, connections, strict=True))
    ]
    return tally


def test_soak_targets_catch_5xx_memory_growth_and_leaked_connections() -> None:
    health = _tally([100, 100], [1, 1], [200, 200])

    def verdicts(rss: list[int], connections: list[int], statuses: list[int]) -> list[bool]:
        soak = _tally(rss, connections, statuses)
        figures = summarize(soak, health, seconds=40, baseline=2, warmup=10, workers=1)
        return [t["met"] for t in figures["targets"]]

    # The first sample is the warm-up: growth and connections count from the second one.
    assert verdicts([50, 100, 105, 109], [2, 5, 6, 5], [200] * 10) == [True, True, True]
    assert verdicts([50, 100, 105, 111], [2, 5, 6, 5], [200] * 10) == [True, False, True]
    assert verdicts([50, 100, 100, 100], [2, 5, 6, 8], [200] * 10) == [True, True, False]
    assert verdicts([50, 100, 100, 100], [2, 5, POOL_MAX + 2, 5], [200, 503]) == [
        False,
        True,
        False,
    ]


def test_soak_conversations_use_the_packs_orders() -> None:
    emails = {o["order_id"]: o["email"] for o in ORDERS}
    for kind in set(KINDS):
        messages = script(kind, random.Random(7))
        assert messages and all(m.strip() for m in messages)
    order_id = script("order", random.Random(7))[0].split()[-1].rstrip("?")
    assert script("order", random.Random(7))[1] == emails[order_id]


def test_machine_busy_cores_counts_a_busy_core() -> None:
    """The benches print how many cores the whole machine kept busy beside each run."""
    import time

    from bench.common import busy_cores, machine_cpu

    before = machine_cpu()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    cores = busy_cores(before, machine_cpu())
    assert 0.5 <= cores <= (os.cpu_count() or 1) + 0.01
    assert busy_cores(before, before) == 0.0


def test_profile_folds_busy_samples_by_package_and_by_our_function() -> None:
    from bench.profile import fold

    raw = "\n".join(
        [
            "<module> (x:1);Runner.run (asyncio/runners.py:118) 50",
            "<module> (x:1);turn (supportgraph/service.py:170);run (onnxruntime/capi/s.py:4) 30",
            "<module> (x:1);chat (api/routes/support.py:40);search (supportgraph/retrieval.py:9);"
            "get_scores (bm25s/__init__.py:600) 10",
            "_connection_worker_thread (aiosqlite/core.py:59) 40",
            "_connection_worker_thread (aiosqlite/core.py:63) 5",
            "not a stack line",
        ]
    )
    busy, packages, ours = fold(raw)
    assert busy == 45, "idle loop and idle worker thread are left out"
    assert packages == {"onnxruntime": 30, "bm25s": 10, "aiosqlite": 5}
    assert ours == {
        "turn (supportgraph/service.py)": 30,
        "search (supportgraph/retrieval.py)": 10,
        "(none: the event loop, the framework or a library)": 5,
    }


async def test_slow_stub_model_waits_on_every_call_and_serves_them_at_once() -> None:
    import asyncio
    import time

    assert stub_llm.app.state.delay == 0.0, "the other benches' stub answers at once"
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}
    transport = httpx.ASGITransport(app=stub_llm.create_app(0.3))
    async with httpx.AsyncClient(transport=transport, base_url="http://stub") as client:
        start = time.perf_counter()
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(20))
        )
        seconds = time.perf_counter() - start
    assert all(a.status_code == 200 for a in answers)
    assert 0.3 <= seconds < 1.5, "20 calls wait side by side, not one after another"


def test_slow_model_configs_follow_the_flags() -> None:
    from bench.slow_model import DEFAULT_CONFIGS, configs_to_run

    assert configs_to_run(None, None) == list(DEFAULT_CONFIGS)
    assert configs_to_run(["postgres"], None) == [("postgres", 1), ("postgres", 2)]
    assert configs_to_run(None, [1]) == [("postgres", 1), ("sqlite", 1)]
    assert configs_to_run(["sqlite", "postgres"], [2]) == [("postgres", 2)]


@pytest.mark.slow
def test_slow_model_quick_run_on_sqlite(tmp_path: Path) -> None:
    from bench import slow_model

    out = slow_model.main(["--quick", "--backend", "sqlite", "--json", str(tmp_path / "s.json")])
    assert json.loads((tmp_path / "s.json").read_text())["bench"] == "slow_model"
    config = out["configs"]["SQLite 1w"]
    solo = config["solo"]
    assert solo["errors"] == 0 and solo["requests"] == 6
    assert solo["extra"]["model_calls_per_turn"] >= 1, "FAQ turns ask the model"
    assert solo["latency_ms"] >= 1000 * out["delay_s"]
    assert solo["service_cpu_ms_per_turn"] > 0 and solo["cpu"] > 0
    [run] = config["runs"]
    assert run["concurrency"] == 8 and run["requests"] == 24
    assert run["errors"] == 0 and run["extra"]["errors_by_status"] == {}
    assert run["rate"] > 0 and run["p95_ms"] >= run["p50_ms"] > 0
    assert run["ceilings"]["latency"] > 0 and run["ceilings"]["cpu"] > 0
    assert run["share_of_lower"] > 0
    [target] = out["targets"]
    assert target["baseline"] > 0
