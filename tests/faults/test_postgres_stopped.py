"""PostgreSQL stops mid-conversation: 503s in the one error shape, then recovery, no restart.

The service runs as its own process on a private cluster (so stopping it leaves every other
test's database alone). Two outages: a clean (fast) shutdown between turns, and a crash
(immediate shutdown) while a turn is inside the graph, held there by the model endpoint.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.cluster import Cluster
from tests.faults.conftest import (
    Conversation,
    assert_error_shape,
    lost_turns,
    server_pids,
    service_env,
    wait_ready,
)
from tests.faults.model import faulty_model
from tests.utils.servers import free_port
from tests.utils.servers import serve_process as serving

POOL_TIMEOUT = 2.0


@pytest.mark.slow
async def test_postgres_stopped_mid_conversation(
    cluster: Cluster, database: str, tmp_path: Path
) -> None:
    port = free_port()
    with faulty_model() as model:
        env = service_env(
            tmp_path,
            SUPPORTGRAPH_DATABASE_URL=database,
            SUPPORTGRAPH_POOL_TIMEOUT=str(POOL_TIMEOUT),
            **model.settings(),
        )
        with serving(tmp_path, port, env=env) as base:
            before = server_pids(port)
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                talk = Conversation(client)
                for text in ("hi", "how much is shipping?"):
                    assert (await talk.say(text)).status_code == 200

                # Outage 1: a clean shutdown between turns.
                cluster.stop("fast")
                started = time.monotonic()
                down = await talk.say("do you ship abroad? (during the outage)")
                waited = time.monotonic() - started
                error = assert_error_shape(down, 503, "unavailable")
                assert "database" in error["message"]
                assert down.headers["retry-after"].isdigit()
                assert waited < POOL_TIMEOUT + 3, "answered once the pool gave up, not hung"
                assert_error_shape(await client.get("/ready"), 503, "unavailable")
                assert (await client.get("/health")).status_code == 200, "liveness stays up"
                read = await client.get(
                    f"/api/support/sessions/{talk.session_id}", headers=talk.headers()
                )
                assert_error_shape(read, 503, "unavailable")

                cluster.start()
                back_after_stop = await wait_ready(client)
                assert (await talk.say("do you ship abroad?")).status_code == 200

                # Outage 2: a crash while a turn is inside the graph (its message is stored,
                # the model is answering).
                model.mode = "hold"
                in_flight = asyncio.create_task(talk.say("how long does delivery take?"))
                assert await asyncio.to_thread(model.held.wait, 60), "the turn reached the model"
                cluster.stop("immediate")
                model.mode = "ok"
                model.release.set()
                crashed = await in_flight
                assert crashed.status_code != 200, "a turn that could not be stored is not a 200"
                assert_error_shape(crashed, 503, "unavailable")

                cluster.start()
                back_after_crash = await wait_ready(client)
                for text in ("can I pick up my order in a store?", "thanks, that's all"):
                    assert (await talk.say(text)).status_code == 200
                messages = await talk.transcript()
            assert server_pids(port) == before, "recovered without a restart"

    print(
        f"ready again {back_after_stop:.1f} s after a fast stop and {back_after_crash:.1f} s"
        f" after a crash (from the server's start); statuses {talk.statuses}"
    )
    assert talk.statuses == [200, 200, 503, 200, 503, 200, 200]
    assert lost_turns(talk.acknowledged, messages) == []
    customer = [text for role, text in messages if role == "customer"]
    assert "do you ship abroad? (during the outage)" not in customer, "never reached the db"
    # The crashed turn's message was stored before the graph ran; its reply never was, and
    # the conversation went on from the state before it.
    crashed_at = customer.index("how long does delivery take?")
    assert customer[crashed_at + 1] == "can I pick up my order in a store?"
    assert messages.count(("customer", "how long does delivery take?")) == 1
    position = messages.index(("customer", "how long does delivery take?"))
    assert messages[position + 1] == ("customer", "can I pick up my order in a store?")
