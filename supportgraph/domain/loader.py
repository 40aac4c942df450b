"""Read a domain pack folder and check it: every problem at once, each naming file and field."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import frontmatter
import yaml
from pydantic import ValidationError

from supportgraph.domain.actions import check_actions
from supportgraph.domain.pack import (
    BUILTIN_INTENTS,
    DEFAULT_MESSAGES,
    RETIRED_MESSAGES,
    FaqEntry,
    FaqSettings,
    Pack,
    PackError,
    PackFile,
    read_records,
)

log = logging.getLogger("supportgraph.pack")


def _format_error(file: str, err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        problems.append(f"{file}: {where}: {e['msg']}{shown}")
    return problems


def _load_faq(root: Path, settings: FaqSettings) -> tuple[list[FaqEntry], list[str]]:
    folder = root / settings.dir
    entries: list[FaqEntry] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    if not folder.is_dir():
        return [], [f"{settings.dir}/: FAQ folder not found"]
    for path in sorted(folder.glob("*.md")):
        rel = f"{settings.dir}/{path.name}"
        try:
            post = frontmatter.load(path)
        except Exception as exc:  # noqa: BLE001 - any YAML/front-matter error is the author's
            problems.append(f"{rel}: front matter: {exc}")
            continue
        try:
            entry = FaqEntry(**post.metadata, body=post.content.strip(), source=rel)
        except (ValidationError, TypeError) as exc:
            if isinstance(exc, ValidationError):
                problems.extend(_format_error(rel, exc))
            else:
                problems.append(f"{rel}: front matter: {exc}")
            continue
        if entry.id in seen:
            problems.append(f"{rel}: id: duplicate FAQ id {entry.id!r} (also in {seen[entry.id]})")
            continue
        seen[entry.id] = rel
        entries.append(entry)
    return entries, problems


def load_pack(path: str | Path) -> Pack:
    """Load and validate the pack at ``path``; raise :class:`PackError` listing every problem."""
    root = Path(path)
    pack_file = root / "pack.yaml"
    if not pack_file.is_file():
        raise PackError([f"{pack_file}: file not found"])
    try:
        raw = yaml.safe_load(pack_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PackError([f"pack.yaml: not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise PackError(["pack.yaml: (top level): must be a mapping"])
    try:
        spec = PackFile.model_validate(raw)
    except ValidationError as exc:
        raise PackError(_format_error("pack.yaml", exc)) from exc
    faq, problems = _load_faq(root, spec.faq)
    problems += _cross_check(root, spec) + check_actions(spec)
    if problems:
        raise PackError(problems)
    return Pack(root=root, spec=spec, faq=faq)


def _cross_check(root: Path, spec: PackFile) -> list[str]:
    problems: list[str] = []
    names = [i.name for i in spec.intents]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"pack.yaml: intents: duplicate intent name {dup!r}")
    for idx, intent in enumerate(spec.intents):
        where = f"pack.yaml: intents.{idx} ({intent.name})"
        if intent.name in BUILTIN_INTENTS:
            problems.append(f"{where}: name: {intent.name!r} is a built-in intent")
        for needed in intent.slots:
            if needed not in spec.slots:
                problems.append(f"{where}: slots: slot {needed!r} is referenced but not declared")
        if intent.action is not None and intent.action not in spec.actions:
            problems.append(f"{where}: action: unknown action {intent.action!r}")
    for name, slot in spec.slots.items():
        if slot.type == "pattern" and not (slot.extract or slot.pattern):
            problems.append(f"pack.yaml: slots.{name}: a pattern slot needs extract or pattern")
    for name, action in spec.actions.items():
        for key in ("data",):
            rel = action.params.get(key)
            if isinstance(rel, str):
                try:
                    read_records(root / rel)
                except (OSError, ValueError, csv.Error, yaml.YAMLError) as exc:
                    problems.append(f"pack.yaml: actions.{name}.params.{key}: {rel}: {exc}")
    esc = spec.escalation
    if esc.faq_miss == "collect_info":
        if not esc.faq_miss_intent:
            problems.append(
                "pack.yaml: escalation.faq_miss_intent: required when faq_miss is collect_info"
            )
        elif esc.faq_miss_intent not in names:
            problems.append(
                f"pack.yaml: escalation.faq_miss_intent: unknown intent {esc.faq_miss_intent!r}"
            )
    for key in spec.messages:
        if key in RETIRED_MESSAGES:
            log.warning("pack.yaml: messages.%s is no longer used; remove it", key)
        elif key not in DEFAULT_MESSAGES:
            problems.append(f"pack.yaml: messages.{key}: unknown message key")
    return problems
