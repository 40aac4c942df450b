"""Record a live run through the fake server's proxy, stop the provider, replay: same results."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.evals.cli_helpers import run_cli
from tests.evals.provider import API_KEY, RuleProvider
from tests.utils.servers import clean_env

SUITE = Path(__file__).parent / "suites" / "live.yaml"
REQUEST_ID = re.compile(r"R-[A-Z2-7]{24}")


def observations(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What each turn produced, without timings and the random request ids."""
    out = {}
    for case in report["cases"]:
        turns = []
        for turn in case["runs"][0]["turns"]:
            seen = dict(turn["observed"])
            seen.pop("latency_ms")
            text = json.dumps(seen, sort_keys=True)
            turns.append(json.loads(REQUEST_ID.sub("R-<id>", text)))
        out[case["id"]] = turns
    return out


def test_record_then_replay_without_the_provider(tmp_path: Path) -> None:
    recording = tmp_path / "recording"
    provider = RuleProvider().start()
    try:
        live_env = clean_env(
            tmp_path,
            SUPPORTGRAPH_OPENAI_API_KEY=API_KEY,
            SUPPORTGRAPH_OPENAI_BASE_URL=provider.base_url,
            SUPPORTGRAPH_LLM_MAX_RETRIES="0",
            SUPPORTGRAPH_LLM_TIMEOUT="10",
        )
        live = run_cli(
            ["eval", str(SUITE), "--mode", "live", "--record", str(recording), "-q"]
            + ["--json", str(tmp_path / "live.json")],
            live_env,
        )
    finally:
        provider.stop()
    assert live.returncode == 0, live.stdout + live.stderr
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{provider.base_url}/chat/completions", json={}, timeout=2)

    files = sorted(p.name for p in recording.iterdir())
    assert files == [
        "live-faq.json",
        "live-human.json",
        "live-order-status.json",
        "live-refund.json",
        "recording.json",
    ]
    stored = "".join(p.read_text() for p in recording.iterdir())
    assert API_KEY not in stored, "the provider key must never be recorded"
    faq = json.loads((recording / "live-faq.json").read_text())
    assert [x["tool"] for x in faq["exchanges"]] == ["Classification", "FaqAnswer"]

    # No key, no provider: the replay serves the recording.
    replay = run_cli(
        ["eval", str(SUITE), "--replay", str(recording), "-q"]
        + ["--json", str(tmp_path / "replay.json")],
        clean_env(tmp_path),
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "differ from the recording" not in replay.stderr

    before = json.loads((tmp_path / "live.json").read_text())
    after = json.loads((tmp_path / "replay.json").read_text())
    assert after["run"]["mode"] == "replay"
    assert observations(after) == observations(before)
    turns = [t for c in after["cases"] for t in c["runs"][0]["turns"]]
    assert sum(t["observed"]["usage"]["llm_calls"] for t in turns) > 0, "the model path ran"
    for key in ("pass_rate", "intent_accuracy", "llm_calls_per_turn", "tokens_per_turn"):
        assert after["totals"][key] == before["totals"][key]


def test_replay_needs_a_recording(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    result = run_cli(["eval", str(SUITE), "--replay", str(missing)], clean_env(tmp_path))
    assert result.returncode == 2
    assert "recording.json: not found" in result.stderr


def test_live_needs_a_key(tmp_path: Path) -> None:
    result = run_cli(["eval", str(SUITE), "--mode", "live"], clean_env(tmp_path))
    assert result.returncode == 2
    assert "SUPPORTGRAPH_OPENAI_API_KEY" in result.stderr
