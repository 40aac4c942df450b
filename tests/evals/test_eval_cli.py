"""``supportgraph eval`` as a user runs it: a broken case fails with a readable diff and
reports; an invalid suite names the file, the case and the field."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.evals.cli_helpers import run_cli
from tests.utils.servers import clean_env

GOOD_AND_BROKEN = """
suite: cli-check
pack: store
cases:
  - id: good-order-question
    tags: [order_status]
    turns:
      - customer: where is my order 1042?
        model: {classify: order_status, extract: {order_number: "1042"}}
        expect: {intent: order_status, status: awaiting_info, reply: {contains: email}}
  - id: broken-expects-resolved
    tags: [order_status, broken]
    turns:
      - customer: where is my order 1042?
        model: {classify: order_status, extract: {order_number: "1042"}}
        expect:
          intent: order_status
          status: resolved
          reply: {contains: "tracking number 123"}
"""


def test_a_broken_case_fails_with_expected_and_actual(tmp_path: Path) -> None:
    suite = tmp_path / "cli_check.yaml"
    suite.write_text(GOOD_AND_BROKEN)
    reports = tmp_path / "reports"
    result = run_cli(["eval", str(suite), "--report-dir", str(reports), "-q"], clean_env(tmp_path))
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "FAIL broken-expects-resolved" in out
    assert "FAIL good-order-question" not in out
    assert "turn 1 of 1" in out and "customer: where is my order 1042?" in out
    # The failure view lines up each field with what was expected and what happened.
    lines = [" ".join(line.strip("│ ").split()) for line in out.splitlines()]
    assert "status resolved awaiting_info" in lines
    assert any(line.startswith("reply.contains tracking number 123 ") for line in lines)
    assert "1 of 2 cases failed" in out

    report = json.loads((reports / "report.json").read_text())
    assert report["schema"] == "supportgraph-eval-report" and report["schema_version"] == 1
    status = {c["id"]: c["status"] for c in report["cases"]}
    assert status == {"good-order-question": "passed", "broken-expects-resolved": "failed"}
    assert report["totals"]["pass_rate"] == 0.5
    junit = ET.parse(reports / "junit.xml").getroot()
    assert junit.get("tests") == "2" and junit.get("failures") == "1"
    failure = junit.find(".//testcase[@name='broken-expects-resolved']/failure")
    assert failure is not None
    assert "status: expected resolved, got awaiting_info" in failure.get("message", "")
    markdown = (reports / "report.md").read_text()
    assert "## Failures (1)" in markdown and "broken-expects-resolved" in markdown


def test_filter_and_compare(tmp_path: Path) -> None:
    suite = tmp_path / "cli_check.yaml"
    suite.write_text(GOOD_AND_BROKEN)
    env = clean_env(tmp_path)
    old = tmp_path / "old.json"
    first = run_cli(["eval", str(suite), "-k", "good-*", "--json", str(old), "-q"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "all 1 cases passed" in first.stdout
    second = run_cli(["eval", str(suite), "-m", "stub", "--compare", str(old), "-q"], env)
    assert second.returncode == 1
    assert "added (1): broken-expects-resolved" in second.stdout
    assert "LLM calls/turn" in second.stdout and "changes since the earlier report" in second.stdout


def test_an_invalid_suite_names_file_case_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
cases:
  - id: typo-in-intent
    turns:
      - customer: where is my order
        expect: {intent: order_stats, status: finished}
"""
    )
    result = run_cli(["eval", str(bad)], clean_env(tmp_path))
    assert result.returncode == 2
    err = " ".join(result.stderr.split())
    assert "bad.yaml: case typo-in-intent: turns.0.expect.status: Input should be" in err
    assert "(got 'finished')" in err
