"""The model endpoint fails, hangs or hangs up: the local mode answers, within the timeout.

The service runs as its own process with the real ``langchain-openai`` client pointed at a
loopback endpoint the test breaks at will. Each model call of a turn gives up after the
configured timeout (times the attempts) and that step is answered by the local mode, so a
turn's wall time is bounded by its model calls times ``timeout x (retries + 1)``, plus the
retry back-off and the turn's own work (the margin).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import Conversation, service_env
from tests.faults.model import faulty_model
from tests.utils.orders import order
from tests.utils.servers import free_port
from tests.utils.servers import serve_process as serving

TIMEOUT = 1.0
RETRIES = 1
MARGIN = 4.0
"""Seconds for the client's retry back-off (about 0.5 s a retry) and the turn itself on a
busy 2-core machine."""

PLACED = order("placed")


@pytest.mark.slow
async def test_model_failing_or_hanging_degrades_to_local_mode_within_the_timeout(
    tmp_path: Path,
) -> None:
    with faulty_model() as model:
        env = service_env(
            tmp_path,
            SUPPORTGRAPH_LLM_TIMEOUT=str(TIMEOUT),
            SUPPORTGRAPH_LLM_MAX_RETRIES=str(RETRIES),
            **model.settings(),
        )
        with serving(tmp_path, free_port(), env=env) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                talk = Conversation(client)
                healthy = await talk.say("how much is shipping?")
                assert healthy.status_code == 200, healthy.text
                assert healthy.json()["usage"]["degraded"] == 0, "the model answered"
                assert healthy.json()["usage"]["llm_calls"] >= 1

                faq = "how many days do I have to return something? ({})"
                lookup = f"where is my order {PLACED['order_id']}? my email is {PLACED['email']}"
                turns = {}
                # An FAQ question (classify + answer: two model calls) and an order lookup
                # whose identifiers the pack's patterns find (classify, maybe extract).
                for mode, kind, text in (
                    ("500", "faq", faq.format(1)),
                    ("500", "order", lookup),
                    ("hang", "faq", faq.format(2)),
                    ("close", "order", lookup),
                ):
                    model.mode = mode
                    seen = model.requests
                    start = time.monotonic()
                    response = await talk.say(text)
                    wall = time.monotonic() - start
                    assert response.status_code == 200, (mode, response.text)
                    turns[(mode, kind)] = (response.json(), wall, model.requests - seen)
                model.mode = "ok"
                recovered = await talk.say("do you ship abroad?")
                assert recovered.status_code == 200
                assert recovered.json()["usage"]["degraded"] == 0, "back to the model"

    for (mode, kind), (body, wall, requests) in turns.items():
        calls = body["usage"]["llm_calls"]
        print(f"model {mode:>5}, {kind} turn: {calls} calls, {requests} requests, {wall:.2f} s")
        assert body["usage"]["degraded"] == calls >= 1, (mode, kind, body["usage"])
        assert requests == calls * (RETRIES + 1), "each call was tried, and retried once"
        bound = calls * TIMEOUT * (RETRIES + 1) + MARGIN
        assert wall < bound, f"{mode}/{kind}: {wall:.1f} s for {calls} calls (bound {bound})"
        if mode == "hang":
            assert wall >= calls * TIMEOUT * (RETRIES + 1), "it did wait for the model"
        if kind == "faq":
            assert "30 days" in body["reply"], "the local mode answered from the FAQ"
            assert body["citations"]
        else:
            assert body["status"] == "resolved", body
            assert PLACED["order_id"] in body["reply"]
