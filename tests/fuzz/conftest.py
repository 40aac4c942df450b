"""The fuzzed service: ``supportgraph serve`` as a real process on a fresh PostgreSQL schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from supportgraph.settings import PROJECT_ROOT
from tests.fuzz.target import ADMIN_TOKEN, SERVER_KEY, TALLY, FuzzTarget
from tests.utils.db import fresh_schema
from tests.utils.servers import free_port, serve_process

SUMMARY = PROJECT_ROOT / "artifacts" / "fuzz-summary.json"


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """The service over HTTP with a pool of real sessions; writes the tally when done."""
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    with fresh_schema() as database_url:
        with serve_process(
            tmp,
            port,
            SUPPORTGRAPH_DATABASE_URL=database_url,
            SUPPORTGRAPH_SERVER_API_KEYS=json.dumps([SERVER_KEY]),
            SUPPORTGRAPH_ADMIN_TOKEN=ADMIN_TOKEN,
            # Thousands of requests from one address in a minute: the abuse limits (tested
            # on their own in tests/limits/) would answer most of them 429.
            SUPPORTGRAPH_RATE_LIMIT_ENABLED="false",
            # Longer than the request timeout: a stream that wrongly stays open for a request
            # the fuzzer reads whole (one it expects refused) times out instead of hanging.
            SUPPORTGRAPH_SSE_HEARTBEAT_SECONDS="60",
            # The pacing of streamed replies is for people watching; the fuzzer is not.
            SUPPORTGRAPH_STREAM_CHUNK_DELAY="0",
        ) as url:
            target = FuzzTarget(url, log_path=tmp / f"serve-{port}.log")
            try:
                target.seed()
                yield target
            finally:
                target.close()
                if TALLY.operations:
                    TALLY.write(SUMMARY)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the fuzzer sent (the same figures as artifacts/fuzz-summary.json)."""
    if not TALLY.operations:
        return
    data = TALLY.summary()
    write = terminalreporter.write_line
    terminalreporter.section("API fuzzing (schemathesis)")
    totals = data["totals"]
    write(
        f"{totals.get('requests', 0)} generated requests: {totals.get('positive', 0)} valid, "
        f"{totals.get('negative', 0)} invalid; per operation and kind in {SUMMARY}"
    )
    for label, counts in data["operations"].items():
        write(
            f"  {label:<55} {counts.get('requests', 0):>5} "
            f"(valid {counts.get('positive', 0)}, invalid {counts.get('negative', 0)})"
        )
