"""The eval case format: YAML suites of scripted conversations, validated by pydantic models.

A suite file holds cases; a case names its domain pack and lists turns. Each turn is a
customer message, what must hold after it (``expect``, with per-mode overrides in
``by_mode``), and for stubbed runs what the model answers (``model``). Loading checks the
schema and then the names a case uses (intents, slots, FAQ ids, request kinds) against the
pack, and every problem names the file, the case id and the field.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from graphs.state import NodeName
from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import BUILTIN_INTENTS, Pack, PackError
from supportgraph.domain.types import EscalationReason, Status
from supportgraph.settings import PROJECT_ROOT

Mode = Literal["offline", "stub", "live", "replay"]
"""How the model is provided: none (local mode), scripted, a real one, or a recording."""

ExpectMode = Literal["offline", "stub", "live"]
"""Modes a turn may give its own expectations for (``replay`` uses ``live``'s)."""

MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_SUITES = PROJECT_ROOT / "evals" / "suites"
CASE_ID = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


def _as_list(value: Any) -> Any:
    """Accept a single string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextCheck(_Strict):
    """Checks on a text: substrings (case-insensitive), regular expressions, or equality."""

    contains: StrList = Field(default_factory=list, description="Each must occur (any case).")
    not_contains: StrList = Field(default_factory=list, description="None may occur (any case).")
    matches: StrList = Field(default_factory=list, description="Each regex must search-match.")
    equals: str | None = Field(default=None, description="The whole text, exactly.")
    empty: bool | None = Field(default=None, description="True: must be ''; false: must not.")

    @field_validator("matches")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value


def _text_check(value: Any) -> Any:
    """A bare string is shorthand for ``{contains: [string]}``."""
    return {"contains": [value]} if isinstance(value, str) else value


Text = Annotated[TextCheck, BeforeValidator(_text_check)]


class RouteCheck(_Strict):
    """A partial check of the nodes a turn ran."""

    contains: list[NodeName] = Field(
        default_factory=list, description="These nodes ran, in this order (others may be between)."
    )
    not_contains: list[NodeName] = Field(default_factory=list, description="None of these ran.")
    ends_with: NodeName | None = Field(default=None, description="The last node of the turn.")


class CitationCheck(_Strict):
    """A partial check of the FAQ entries a reply cited."""

    contains: StrList = Field(default_factory=list)
    not_contains: StrList = Field(default_factory=list)
    min: int | None = Field(default=None, ge=0, description="At least this many citations.")


class ToolsCheck(_Strict):
    """A partial check of the model calls a turn made (stubbed runs)."""

    contains: StrList = Field(default_factory=list, description="These calls, in this order.")
    not_contains: StrList = Field(default_factory=list, description="None of these calls.")


class EscalationCheck(_Strict):
    """The hand-off packet: its reason and, optionally, what its summary says."""

    reason: EscalationReason | None = None
    summary: Text | None = None


class RequestCheck(_Strict):
    """A request an action wrote (a refund, a cancellation, a ticket...)."""

    kind: str
    data: dict[str, str | TextCheck] = Field(
        default_factory=dict, description="Fields of the request: a string is an exact value."
    )
    status: str | None = None


class AuditCheck(_Strict):
    """An audit entry an action wrote (a lookup verified, a refund refused...)."""

    action: str | None = Field(default=None, description="The pack's action, or faq_answer.")
    outcome: Literal["taken", "refused", "pending", "failed"] | None = None
    reason: str | None = None


class Expect(_Strict):
    """What must hold after a turn. Only the fields a case gives are checked.

    ``escalation: null`` and ``requests: []`` are checks too (no hand-off, no request).
    """

    intent: str | None = Field(default=None, description="The turn's intent.")
    status: Status | None = None
    route: list[NodeName] | RouteCheck | None = Field(
        default=None, description="The exact node list, or a partial RouteCheck."
    )
    slots: dict[str, str | None] | None = Field(
        default=None, description="Slot values after the turn; null means the slot is not set."
    )
    citations: list[str] | CitationCheck | None = Field(
        default=None, description="Exactly these FAQ ids (any order), or a CitationCheck."
    )
    escalation: EscalationCheck | None = Field(
        default=None, description="The hand-off packet; null checks there is none."
    )
    reply: Text | None = None
    llm_calls: int | None = Field(default=None, ge=0, description="At most this many calls.")
    degraded: int | None = Field(
        default=None, ge=0, description="Exactly this many model calls fell back to local mode."
    )
    requests: list[RequestCheck] | None = Field(
        default=None, description="All requests of the conversation so far, oldest first."
    )
    audit: list[AuditCheck] | None = Field(
        default=None,
        description="All audit entries of the conversation so far, oldest first ([]: none).",
    )
    model_calls: list[str] | ToolsCheck | None = Field(
        default=None,
        description="The structured-output tools the model was asked for this turn, in order "
        "(Classification, SlotValues, FaqAnswer): exactly these, or a ToolsCheck.",
    )

    def merged(self, override: Expect | None) -> Expect:
        """This expectation with the fields ``override`` gives replaced."""
        if override is None:
            return self
        values = {name: getattr(self, name) for name in self.model_fields_set}
        values.update({name: getattr(override, name) for name in override.model_fields_set})
        return Expect.model_construct(_fields_set=set(values), **values)

    def given(self, name: str) -> bool:
        """Whether the case gave this field (so it is checked)."""
        return name in self.model_fields_set


# --- Model scripts for stubbed runs -------------------------------------------------------

FaultKind = Literal["http", "timeout", "malformed", "bad_body", "invalid", "no_tool_call"]


class Fault(_Strict):
    """A provider failure to inject instead of an answer.

    ``http``: an error status (``status``, default 500); ``timeout``: no answer before the
    client's timeout; ``malformed``: tool arguments that are not JSON; ``bad_body``: a 200
    whose body is not JSON; ``invalid``: JSON arguments that do not fit the schema;
    ``no_tool_call``: a plain text answer where a tool call was required.
    """

    fault: FaultKind
    status: int = Field(default=500, ge=400, le=599)
    seconds: float | None = Field(default=None, gt=0, le=120)


class ClassifyAnswer(_Strict):
    """What the model answers to a classification call."""

    intent: str
    confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    sentiment: Literal["negative", "neutral", "positive"] = "neutral"
    confirmation: Literal["yes", "no", "none"] = "none"


def _classify(value: Any) -> Any:
    """A bare string is shorthand for ``{intent: string}`` (confidence 0.9)."""
    return {"intent": value} if isinstance(value, str) else value


class FaqReply(_Strict):
    """What the model answers to an FAQ-answer call."""

    answerable: bool = True
    answer: str = ""
    used_ids: StrList = Field(default_factory=list)


def _faq(value: Any) -> Any:
    """A bare string is shorthand for an answerable reply with that text."""
    return {"answerable": True, "answer": value} if isinstance(value, str) else value


# Left to right: a mapping with a `fault` key is a Fault, never a slot called "fault".
ClassifyItem = Annotated[
    Fault | Annotated[ClassifyAnswer, BeforeValidator(_classify)],
    Field(union_mode="left_to_right"),
]
ExtractItem = Annotated[Fault | dict[str, str | None], Field(union_mode="left_to_right")]
AnswerItem = Annotated[
    Fault | Annotated[FaqReply, BeforeValidator(_faq)], Field(union_mode="left_to_right")
]


def _listed(value: Any) -> Any:
    """One answer is shorthand for a list of one."""
    return value if value is None or isinstance(value, list) else [value]


TOOLS = {"classify": "Classification", "extract": "SlotValues", "answer": "FaqAnswer"}
"""Script keys and the structured-output tools (pydantic model names) they answer."""


class Call(_Strict):
    """One scripted call: for a named step (``classify`` / ``extract`` / ``answer``) or a fault."""

    classify: ClassifyItem | None = None
    extract: ExtractItem | None = None
    answer: AnswerItem | None = None
    fault: FaultKind | None = None
    status: int = Field(default=500, ge=400, le=599)
    seconds: float | None = Field(default=None, gt=0, le=120)

    def tool(self) -> str | None:
        """The tool this call must be, or ``None`` when any tool may take it (a bare fault)."""
        named = [k for k in TOOLS if getattr(self, k) is not None]
        if len(named) + (self.fault is not None) != 1:
            raise ValueError("give exactly one of classify, extract, answer or fault")
        return TOOLS[named[0]] if named else None

    def item(self) -> Any:
        """The answer or fault this call sends."""
        for key in TOOLS:
            if getattr(self, key) is not None:
                return getattr(self, key)
        return Fault(fault=self.fault or "http", status=self.status, seconds=self.seconds)


class ModelScript(_Strict):
    """What the stubbed model answers during one turn.

    Per step: each list is used in order and its last answer repeats (so a fault also
    answers the client's retries). Or per call: ``calls`` answers the turn's requests in
    order, whatever the step. A request nothing scripts fails the turn.
    """

    classify: Annotated[list[ClassifyItem] | None, BeforeValidator(_listed)] = None
    extract: Annotated[list[ExtractItem] | None, BeforeValidator(_listed)] = None
    answer: Annotated[list[AnswerItem] | None, BeforeValidator(_listed)] = None
    calls: list[Call] | None = None

    @field_validator("calls")
    @classmethod
    def _one_each(cls, value: list[Call] | None) -> list[Call] | None:
        for call in value or []:
            call.tool()
        return value

    def by_tool(self) -> dict[str, list[Any]]:
        """The per-step lists keyed by tool name."""
        return {
            tool: list(getattr(self, key))
            for key, tool in TOOLS.items()
            if getattr(self, key) is not None
        }


# --- Turns, cases, suites -----------------------------------------------------------------


class Turn(_Strict):
    """A customer message and what must hold after it."""

    customer: str = Field(min_length=1, max_length=4000)
    model: ModelScript | None = Field(default=None, description="The stubbed model's answers.")
    expect: Expect = Field(default_factory=Expect)
    by_mode: dict[ExpectMode, Expect] = Field(
        default_factory=dict, description="Per-mode expectations, merged over ``expect``."
    )

    def expectation(self, mode: Mode) -> Expect:
        """The expectation for a mode (``replay`` uses ``live``'s)."""
        key: ExpectMode = "live" if mode == "replay" else mode
        return self.expect.merged(self.by_mode.get(key))


Canaries = Annotated[dict[str, Annotated[str, Field(min_length=4)]], Field(max_length=200)]


class Case(_Strict):
    """One scripted conversation."""

    id: str = Field(pattern=CASE_ID)
    description: str = ""
    tags: StrList = Field(default_factory=list)
    pack: str | None = Field(default=None, description="Overrides the suite's pack.")
    modes: list[Mode] | None = Field(default=None, description="Only run in these modes.")
    known_issues: dict[ExpectMode, str] = Field(
        default_factory=dict,
        description="A product bug that makes the case fail in a mode: the run is reported "
        "as a known failure (xfail) instead of failing the suite, and as fixed (xpass) once "
        "it passes.",
    )
    turns: list[Turn] = Field(min_length=1)
    canaries: Canaries = Field(
        default_factory=dict,
        description="More canaries (name: text) for this case, added to the suite's.",
    )
    notes: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        default_factory=list,
        description="Internal notes an agent wrote on the session before the first message "
        "(in-process only): agents see them, the customer never may.",
    )


class SuiteFile(_Strict):
    """The schema of a suite file."""

    suite: str | None = Field(default=None, description="The suite's name (default: file name).")
    description: str = ""
    pack: str = Field(default="store", description="A pack name under packs/, or a path.")
    tags: StrList = Field(default_factory=list, description="Tags every case gets.")
    canaries: Canaries | str = Field(
        default_factory=dict,
        description="Texts that must never leave the service (name: text), or the path of a "
        "YAML file holding them (beside this file). See evals/canaries.py.",
    )
    model_may_see: StrList = Field(
        default_factory=list,
        description="Canaries the model provider may receive (a secret in the system prompt): "
        "all others are also looked for in every request sent to the model.",
    )
    cases: list[Case] = Field(min_length=1)


@dataclass(frozen=True)
class Canary:
    """A text planted where only the service may read it, and looked for everywhere else."""

    name: str
    value: str
    model_may_see: bool = False


@dataclass(frozen=True)
class LoadedCase:
    """A validated case with where it came from and its resolved pack."""

    suite: str
    path: Path
    case: Case
    pack_path: Path
    tags: tuple[str, ...]
    canaries: tuple[Canary, ...] = ()
    """The suite's and the case's canaries, and the pack's secrets."""

    @property
    def id(self) -> str:
        """The case id (unique in a run)."""
        return self.case.id

    def pack(self) -> Pack:
        """The case's domain pack (loaded once per folder)."""
        return _pack(self.pack_path)

    def known_issue(self, mode: Mode) -> str | None:
        """The known product bug this case shows in a mode (``replay`` uses ``live``'s)."""
        key: ExpectMode = "live" if mode == "replay" else mode
        return self.case.known_issues.get(key)

    def runs_in(self, mode: str) -> bool:
        """Whether the case runs in this mode."""
        allowed = self.case.modes
        return allowed is None or mode in allowed or (mode == "replay" and "live" in allowed)


class SuiteError(ValueError):
    """Suites are invalid; ``problems`` lists each as 'file: case <id>: field: what'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid eval suite:\n" + "\n".join(f"  - {p}" for p in problems))


# --- Loading ------------------------------------------------------------------------------


def suite_files(paths: Sequence[Path]) -> list[Path]:
    """The suite files under ``paths`` (files as given, folders searched for *.yaml / *.yml)."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if problems:
        raise SuiteError(problems)
    return files


def load_suites(paths: Sequence[Path | str] | None = None) -> list[LoadedCase]:
    """Load and validate every case under ``paths``; raise :class:`SuiteError` listing all."""
    roots = [Path(p) for p in paths] if paths else [DEFAULT_SUITES]
    cases: list[LoadedCase] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for file in suite_files(roots):
        loaded, found = load_suite_file(file)
        problems += found
        for case in loaded:
            if case.id in seen:
                problems.append(
                    f"{_show(file)}: case {case.id}: id: duplicate case id "
                    f"(also in {_show(seen[case.id])})"
                )
                continue
            seen[case.id] = file
            cases.append(case)
    if problems:
        raise SuiteError(problems)
    return cases


def load_suite_file(path: Path) -> tuple[list[LoadedCase], list[str]]:
    """The cases of one file and the problems found in it."""
    where = _show(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [], [f"{where}: not readable YAML: {exc}"]
    if not isinstance(raw, dict):
        return [], [f"{where}: (top level): must be a mapping with a 'cases' list"]
    try:
        spec = SuiteFile.model_validate(raw)
    except ValidationError as exc:
        return [], _format_errors(where, raw, exc)
    name = spec.suite or path.stem
    out: list[LoadedCase] = []
    suite_canaries, problems = _suite_canaries(spec, path)
    for idx, case in enumerate(spec.cases):
        label = f"{where}: case {case.id}"
        ref = case.pack or spec.pack
        pack_path = resolve_pack(ref, path.parent)
        if pack_path is None:
            problems.append(f"{label}: pack: no pack {ref!r} (a name under packs/ or a path)")
            continue
        try:
            pack = _pack(pack_path)
        except PackError as exc:
            problems.append(f"{label}: pack: {ref!r} is invalid: {exc.problems[0]}")
            continue
        problems += [f"{label}: {p}" for p in check_names(case, pack, prefix=f"cases.{idx}")]
        tags = tuple(dict.fromkeys([*spec.tags, *case.tags]))
        planted = {**suite_canaries, **case.canaries}
        planted.update({f"pack secret {i + 1}": s for i, s in enumerate(pack.spec.secrets)})
        canaries = tuple(
            Canary(n, v, model_may_see=n in spec.model_may_see or n.startswith("pack secret"))
            for n, v in planted.items()
        )
        out.append(LoadedCase(name, path, case, pack_path, tags, canaries))
    named = {*suite_canaries, *(n for c in spec.cases for n in c.canaries)}
    problems += [
        f"{where}: model_may_see: unknown canary {n!r}"
        for n in spec.model_may_see
        if n not in named
    ]
    return out, problems


def _suite_canaries(spec: SuiteFile, path: Path) -> tuple[dict[str, str], list[str]]:
    """The suite's canaries (read from their file when given as a path) and any problems."""
    where = _show(path)
    canaries = spec.canaries
    if isinstance(canaries, str):
        file = path.parent / canaries
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            return {}, [f"{where}: canaries: cannot read {canaries}: {exc}"]
        bad = not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) >= 4 for k, v in raw.items()
        )
        if bad:
            return {}, [f"{where}: canaries: {canaries} must map names to texts of 4+ characters"]
        canaries = raw
    return dict(canaries), []


def resolve_pack(ref: str, base: Path) -> Path | None:
    """A pack folder: a bare name under ``packs/``; a path beside the suite, here, or the repo."""
    candidates = (
        [PROJECT_ROOT / "packs" / ref, Path.cwd() / "packs" / ref]
        if "/" not in ref and "\\" not in ref
        else [base / ref, Path.cwd() / ref, PROJECT_ROOT / ref]
    )
    return next((c.resolve() for c in candidates if (c / "pack.yaml").is_file()), None)


@cache
def _pack(path: Path) -> Pack:
    return load_pack(path)


def check_names(case: Case, pack: Pack, *, prefix: str) -> list[str]:
    """Problems with the names a case uses: intents, slots, FAQ ids and request kinds."""
    intents = {*pack.intents, *BUILTIN_INTENTS}
    slots = set(pack.spec.slots)
    faq_ids = {e.id for e in pack.faq}
    kinds = {
        str(a.params.get("kind")) for a in pack.spec.actions.values() if a.uses == "create_request"
    }
    problems: list[str] = []

    def bad(field: str, kind: str, value: str, known: Iterable[str]) -> None:
        shown = ", ".join(sorted(known))
        problems.append(f"{field}: unknown {kind} {value!r} (known: {shown})")

    for t, turn in enumerate(case.turns):
        expectations = [("expect", turn.expect)] + [
            (f"by_mode.{m}", e) for m, e in turn.by_mode.items()
        ]
        for label, exp in expectations:
            at = f"turns.{t}.{label}"
            if exp.intent is not None and exp.intent not in intents:
                bad(f"{at}.intent", "intent", exp.intent, intents)
            for name in exp.slots or {}:
                if name not in slots:
                    bad(f"{at}.slots.{name}", "slot", name, slots)
            for faq_id in _cited(exp.citations):
                if faq_id not in faq_ids:
                    bad(f"{at}.citations", "FAQ id", faq_id, faq_ids)
            for r, req in enumerate(exp.requests or []):
                if req.kind not in kinds:
                    bad(f"{at}.requests.{r}.kind", "request kind", req.kind, kinds)
                for name in req.data:
                    if name not in slots:
                        bad(f"{at}.requests.{r}.data.{name}", "slot", name, slots)
        _check_script(turn.model, f"turns.{t}.model", intents, slots, faq_ids, bad)
    return problems


def _cited(check: list[str] | CitationCheck | None) -> list[str]:
    if check is None:
        return []
    if isinstance(check, list):
        return check
    return [*check.contains, *check.not_contains]


def _check_script(
    script: ModelScript | None,
    at: str,
    intents: set[str],
    slots: set[str],
    faq_ids: set[str],
    bad: Callable[[str, str, str, Iterable[str]], None],
) -> None:
    """Report unknown names in a model script through ``bad``."""
    if script is None:
        return
    items: list[tuple[str, Any]] = []
    for key in TOOLS:
        items += [(f"{at}.{key}.{i}", (key, v)) for i, v in enumerate(getattr(script, key) or [])]
    for i, call in enumerate(script.calls or []):
        key = next((k for k in TOOLS if getattr(call, k) is not None), "fault")
        items.append((f"{at}.calls.{i}.{key}", (key, call.item())))
    for where, (key, value) in items:
        if isinstance(value, ClassifyAnswer) and value.intent not in intents:
            bad(f"{where}.intent", "intent", value.intent, intents)
        elif isinstance(value, FaqReply):
            for faq_id in value.used_ids:
                if faq_id not in faq_ids:
                    bad(f"{where}.used_ids", "FAQ id", faq_id, faq_ids)
        elif key == "extract" and isinstance(value, dict):
            for name in value:
                if name not in slots:
                    bad(f"{where}.{name}", "slot", name, slots)


def _format_errors(where: str, raw: dict[str, Any], exc: ValidationError) -> list[str]:
    """pydantic errors as 'file: case <id>: field: message (got value)'."""
    problems = []
    listed = raw.get("cases")
    cases: list[Any] = listed if isinstance(listed, list) else []
    for err in exc.errors():
        loc = list(err["loc"])
        label = where
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            idx = loc[1]
            item = cases[idx] if idx < len(cases) else None
            case_id = item.get("id") if isinstance(item, dict) else None
            label = f"{where}: case {case_id or f'#{idx + 1} (no id)'}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc if not _is_union_tag(p)) or "(case)"
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        problems.append(f"{label}: {field}: {err['msg']}{shown}")
    return _dedupe(problems)


def _is_union_tag(part: Any) -> bool:
    """pydantic names union members in error locations ('RouteCheck', 'list[...]'): drop them."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part.startswith("func"))


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def select(cases: Sequence[LoadedCase], filters: Sequence[str]) -> list[LoadedCase]:
    """Cases whose id matches a filter (a glob), or that carry it as a tag or suite name."""
    if not filters:
        return list(cases)

    def hit(case: LoadedCase, f: str) -> bool:
        return fnmatch.fnmatchcase(case.id, f) or f in case.tags or f == case.suite

    return [c for c in cases if any(hit(c, f) for f in filters)]
