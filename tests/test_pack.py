"""Domain packs: the shipped ones load; an invalid one fails naming the file, field and problem."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import PackError
from tests.conftest import ISP_PACK, STORE_PACK, make_settings


def test_store_pack_is_realistic() -> None:
    pack = load_pack(STORE_PACK)
    names = {i.name for i in pack.spec.intents}
    assert {"order_status", "refund_request", "shipping_question", "billing"} <= names
    assert {"account_access", "product_question"} <= names
    assert len(pack.faq) >= 25
    orders = pack.records("data/orders.csv")
    assert len(orders) >= 50
    assert len({o["status"] for o in orders}) >= 4
    assert "AI" in pack.spec.greeting and "person" in pack.spec.greeting


def test_isp_pack_has_no_store_words() -> None:
    pack = load_pack(ISP_PACK)
    text = " ".join(p.read_text() for p in ISP_PACK.rglob("*") if p.is_file()).lower()
    assert "order" not in text
    assert pack.name != "store"


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(ISP_PACK, target)
    return target


def _edit(root: Path, change: Any) -> None:
    data = yaml.safe_load((root / "pack.yaml").read_text())
    change(data)
    (root / "pack.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _problems(root: Path) -> str:
    with pytest.raises(PackError) as caught:
        load_pack(root)
    return "\n".join(caught.value.problems)


def test_missing_intent_fields(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root, lambda d: d["intents"][0].pop("examples"))
    assert "pack.yaml: intents.0.examples: Field required" in _problems(root)


def test_bad_regex(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    slot = next(iter(yaml.safe_load((root / "pack.yaml").read_text())["slots"]))

    def change(d: dict[str, Any]) -> None:
        d["slots"][slot]["pattern"] = "([unclosed"

    _edit(root, change)
    problems = _problems(root)
    assert f"pack.yaml: slots.{slot}.pattern" in problems
    assert "invalid regular expression '([unclosed'" in problems


def test_unknown_action(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root, lambda d: d["intents"][0].__setitem__("action", "teleport"))
    assert "action: unknown action 'teleport'" in _problems(root)


def test_unknown_action_type(tmp_path: Path) -> None:
    root = _copy(tmp_path)

    def change(d: dict[str, Any]) -> None:
        name = next(iter(d["actions"]))
        d["actions"][name]["uses"] = "launch_rocket"

    _edit(root, change)
    assert "unknown action type 'launch_rocket'" in _problems(root)


def test_duplicate_faq_id(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    first = sorted((root / "faq").glob("*.md"))[0]
    shutil.copy(first, root / "faq" / "zz-copy.md")
    problems = _problems(root)
    assert "faq/zz-copy.md: id: duplicate FAQ id" in problems
    assert first.name in problems


def test_slot_referenced_but_not_declared(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root, lambda d: d["intents"][0].setdefault("slots", []).append("shoe_size"))
    assert "slot 'shoe_size' is referenced but not declared" in _problems(root)


def test_faq_without_title_and_bad_yaml(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "faq" / "broken.md").write_text("---\nid: broken\n---\nBody only.\n")
    assert "faq/broken.md: title: Field required" in _problems(root)
    (root / "pack.yaml").write_text("name: [unclosed\n")
    assert "pack.yaml: not valid YAML" in _problems(root)


def test_invalid_pack_fails_app_start_up(tmp_path: Path) -> None:
    from api.app import create_app

    root = _copy(tmp_path)
    _edit(root, lambda d: d["intents"][0].__setitem__("action", "teleport"))
    with pytest.raises(PackError, match="teleport"):
        create_app(make_settings(pack_path=root, sqlite_path=tmp_path / "x.sqlite"))


class Heard(logging.Handler):
    """Keeps the messages of the records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message."""
        self.messages.append(record.getMessage())


def test_retired_message_keys_still_load_with_a_warning(tmp_path: Path) -> None:
    """Messages earlier releases had and nothing says any more do not break a pack."""
    root = _copy(tmp_path)
    _edit(root, lambda d: d["messages"].update(topic_changed="Sure.", not_found_retry="Again."))
    listener = Heard()
    log = logging.getLogger("supportgraph.pack")
    log.addHandler(listener)
    try:
        pack = load_pack(root)
    finally:
        log.removeHandler(listener)
    assert pack.spec.messages["topic_changed"] == "Sure."
    assert sorted(listener.messages) == [
        "pack.yaml: messages.not_found_retry is no longer used; remove it",
        "pack.yaml: messages.topic_changed is no longer used; remove it",
    ]


def test_an_unknown_message_key_is_a_problem(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root, lambda d: d["messages"].update(escalted="typo"))
    assert "pack.yaml: messages.escalted: unknown message key" in _problems(root)
