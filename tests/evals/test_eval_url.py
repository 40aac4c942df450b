"""``supportgraph eval --url`` against a real ``supportgraph serve`` process.

Offline, the server runs its local mode. Stubbed, the server's model points at the
harness's fake OpenAI server (``--stub-port``), which tells the cases apart by their
conversations since the server holds one key; cases that start alike run in parallel.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.evals.cli_helpers import run_cli, serving
from tests.utils.servers import clean_env, free_port

OFFLINE_CASES = ["order-status-two-turns", "refund-full-flow", "handoff-human-mid-collection"]
STUB_CASES = [
    # Three cases that open with the same message, so only the conversation tells them apart.
    "topic-change-to-faq-mid-collection",
    "topic-change-to-other-order-action",
    "handoff-human-mid-collection",
    "provider-500-faq-falls-back",
    "refund-full-flow",
]


def _filters(ids: list[str]) -> list[str]:
    return [arg for case in ids for arg in ("-k", case)]


def test_offline_suite_cases_against_a_served_app(tmp_path: Path) -> None:
    with serving(tmp_path, clean_env(tmp_path)) as url:
        result = run_cli(
            ["eval", "--url", url, "-q", "--json", str(tmp_path / "r.json")]
            + _filters(OFFLINE_CASES),
            clean_env(tmp_path),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["run"]["target"] == "url" and report["run"]["url"] == url
    assert sorted(c["id"] for c in report["cases"]) == sorted(OFFLINE_CASES)
    refund = next(c for c in report["cases"] if c["id"] == "refund-full-flow")
    last = refund["runs"][0]["turns"][-1]
    skipped = [c for c in last["checks"] if c["field"] == "requests"]
    assert skipped and skipped[0]["ok"] is None, "requests are not visible over HTTP"
    assert last["observed"]["status"] == "resolved"


def test_stub_suite_cases_against_a_served_app(tmp_path: Path) -> None:
    stub_port = free_port()
    server_env = clean_env(
        tmp_path,
        SUPPORTGRAPH_OPENAI_API_KEY="sk-served-app",
        SUPPORTGRAPH_OPENAI_BASE_URL=f"http://127.0.0.1:{stub_port}/v1",
        SUPPORTGRAPH_LLM_TIMEOUT="2",
        SUPPORTGRAPH_LLM_MAX_RETRIES="1",
    )
    with serving(tmp_path, server_env) as url:
        result = run_cli(
            ["eval", "--url", url, "--mode", "stub", "--stub-port", str(stub_port), "-w", "4"]
            + ["-q", "--json", str(tmp_path / "r.json")]
            + _filters(STUB_CASES),
            clean_env(tmp_path),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"]["cases"] == len(STUB_CASES)
    assert report["totals"]["llm_calls"] > 0
    turns = [t for c in report["cases"] for t in c["runs"][0]["turns"]]
    assert all(not t["observed"]["problems"] for t in turns), "every call reached its case"
    assert report["totals"]["degraded_calls"] == 2, "the injected 500s degraded, nothing else"
