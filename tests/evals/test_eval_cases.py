"""The case format: what validates, and errors that name the file, the case id and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.cases import ClassifyAnswer, FaqReply, Fault, SuiteError, load_suites, select


def problems(tmp_path: Path, text: str, name: str = "suite.yaml") -> list[str]:
    """The problems loading one suite file reports."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suites([path])
    return caught.value.problems


def test_unknown_names_are_checked_against_the_pack(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
cases:
  - id: names
    turns:
      - customer: hi
        model:
          classify: order_stats
          extract: {order_no: "1042"}
          answer: {answer: hi, used_ids: [no-such-article]}
        expect:
          intent: refund
          slots: {order: "1042"}
          citations: [returns]
          requests: [{kind: refunds}]
""",
    )
    text = "\n".join(found)
    assert "suite.yaml: case names: turns.0.expect.intent: unknown intent 'refund'" in text
    assert "case names: turns.0.expect.slots.order: unknown slot 'order'" in text
    assert "case names: turns.0.expect.citations: unknown FAQ id 'returns'" in text
    assert "case names: turns.0.expect.requests.0.kind: unknown request kind 'refunds'" in text
    assert "case names: turns.0.model.classify.0.intent: unknown intent 'order_stats'" in text
    assert "case names: turns.0.model.extract.0.order_no: unknown slot 'order_no'" in text
    assert "turns.0.model.answer.0.used_ids: unknown FAQ id 'no-such-article'" in text


def test_schema_errors_name_the_case_by_id_or_position(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
cases:
  - id: ok-case
    turns: [{customer: hi}]
  - id: bad-fields
    turns:
      - customer: hi
        expect: {status: done, llm_calls: -1, colour: red}
  - turns: [{customer: no id here}]
""",
    )
    text = "\n".join(found)
    assert "suite.yaml: case bad-fields: turns.0.expect.status: Input should be" in text
    assert "(got 'done')" in text
    assert "case bad-fields: turns.0.expect.llm_calls: Input should be greater than" in text
    assert "case bad-fields: turns.0.expect.colour: Extra inputs are not permitted" in text
    assert "suite.yaml: case #3 (no id): id: Field required" in text


def test_files_are_named_and_ids_unique(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("cases: [{id: same, turns: [{customer: hi}]}]\n")
    (tmp_path / "b.yaml").write_text("cases: [{id: same, turns: [{customer: hi}]}]\n")
    (tmp_path / "c.yaml").write_text("cases: [oops\n")
    (tmp_path / "d.yaml").write_text("pack: nowhere\ncases: [{id: d, turns: [{customer: x}]}]\n")
    with pytest.raises(SuiteError) as caught:
        load_suites([tmp_path])
    text = "\n".join(caught.value.problems)
    assert "b.yaml: case same: id: duplicate case id (also in" in text
    assert "c.yaml: not readable YAML" in text
    assert "d.yaml: case d: pack: no pack 'nowhere'" in text


def test_scripts_shorthands_and_faults(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        """
suite: shorthands
tags: [everywhere]
cases:
  - id: s
    tags: [mine]
    known_issues: {offline: a bug}
    turns:
      - customer: hi
        model:
          classify: [{fault: timeout}, faq]
          extract: {fault: http, status: 429}
          answer: The answer.
        expect: {reply: hello}
        by_mode:
          stub: {llm_calls: 2}
"""
    )
    (case,) = load_suites([path])
    script = case.case.turns[0].model
    assert script is not None
    assert script.classify == [Fault(fault="timeout"), ClassifyAnswer(intent="faq")]
    assert script.extract == [Fault(fault="http", status=429)]
    assert script.answer == [FaqReply(answer="The answer.")]
    assert case.tags == ("everywhere", "mine")
    assert case.known_issue("offline") == "a bug" and case.known_issue("stub") is None
    stub = case.case.turns[0].expectation("stub")
    assert stub.given("llm_calls") and stub.given("reply") and not stub.given("intent")
    assert stub.reply is not None and stub.reply.contains == ["hello"]
    assert select([case], ["mine"]) == [case]
    assert select([case], ["shorthands"]) == [case]
    assert select([case], ["s*"]) == [case]
    assert select([case], ["other"]) == []


def test_the_shipped_suites_load() -> None:
    cases = load_suites()
    assert len({c.id for c in cases}) == len(cases) >= 40
