"""Compare a turn's expectation with what the turn produced: one :class:`Check` per field."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evals.cases import (
    AuditCheck,
    CitationCheck,
    Expect,
    RequestCheck,
    RouteCheck,
    TextCheck,
    ToolsCheck,
)
from evals.targets import Observed

NOT_SET = "(not set)"


@dataclass(frozen=True)
class Check:
    """One expectation and what was observed. ``ok`` is ``None`` when it cannot be observed."""

    field: str
    expected: Any
    actual: Any
    ok: bool | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The check as JSON."""
        return {
            "field": self.field,
            "expected": self.expected,
            "actual": self.actual,
            "ok": self.ok,
            "note": self.note,
        }


@dataclass(frozen=True)
class Scores:
    """What a turn adds to the metrics (``None``: the case does not say)."""

    intent: bool | None
    route: bool | None
    slot_tp: int
    slot_fp: int
    slot_fn: int
    escalation_expected: bool | None
    escalation_actual: bool

    def to_json(self) -> dict[str, Any]:
        """The scores as JSON."""
        return {
            "intent": self.intent,
            "route": self.route,
            "slot_tp": self.slot_tp,
            "slot_fp": self.slot_fp,
            "slot_fn": self.slot_fn,
            "escalation_expected": self.escalation_expected,
            "escalation_actual": self.escalation_actual,
        }


GREETING = "(greeting) "


def without_greeting(reply: str, greeting: str) -> str:
    """The reply as shown in failure views: the pack's greeting shortened to a marker."""
    if greeting and reply.startswith(greeting):
        return GREETING + reply[len(greeting) :].lstrip()
    return reply


def check_turn(expect: Expect, seen: Observed, *, greeting: str = "") -> list[Check]:
    """Every check the expectation makes on the observed turn, in a stable order.

    The checks read the whole reply; what failure views show of it skips the greeting.
    """
    out: list[Check] = []
    out += [Check("model", "calls the case scripts", p, False) for p in seen.problems]
    if expect.given("intent"):
        out.append(Check("intent", expect.intent, seen.intent, seen.intent == expect.intent))
    if expect.given("status"):
        out.append(Check("status", expect.status, seen.status, seen.status == expect.status))
    if expect.given("route"):
        out += route_checks(expect.route, seen.route)
    if expect.given("slots"):
        for name, want in (expect.slots or {}).items():
            have = seen.slots.get(name)
            out.append(Check(f"slots.{name}", want or NOT_SET, have or NOT_SET, have == want))
    if expect.given("citations"):
        out += citation_checks(expect.citations, seen.citations)
    if expect.given("escalation"):
        out += escalation_checks(expect, seen.escalation)
    if expect.given("reply") and expect.reply is not None:
        shown = without_greeting(seen.reply, greeting)
        out += text_checks("reply", expect.reply, seen.reply, shown=shown)
    if expect.given("llm_calls") and expect.llm_calls is not None:
        calls = int(seen.usage.get("llm_calls", 0))
        out.append(Check("llm_calls", f"<= {expect.llm_calls}", calls, calls <= expect.llm_calls))
    if expect.given("degraded") and expect.degraded is not None:
        degraded = int(seen.usage.get("degraded", 0))
        out.append(Check("degraded", expect.degraded, degraded, degraded == expect.degraded))
    if expect.given("requests"):
        out += request_checks(expect.requests or [], seen.requests)
    if expect.given("audit"):
        out += audit_checks(expect.audit or [], seen.audit)
    if expect.given("model_calls"):
        out += model_call_checks(expect.model_calls, seen.model_calls)
    return out


def audit_checks(want: list[AuditCheck], seen: list[dict[str, Any]] | None) -> list[Check]:
    """The conversation's audit entries, oldest first: count, then each given field."""
    if seen is None:
        shown = [w.model_dump(exclude_none=True) for w in want]
        return [Check("audit", shown, None, None, "not observable over --url")]
    out = [Check("audit.count", len(want), len(seen), len(want) == len(seen))]
    for i, (exp, got) in enumerate(zip(want, seen, strict=False)):
        for name in ("action", "outcome", "reason"):
            value = getattr(exp, name)
            if value is not None:
                actual = got.get(name)
                out.append(Check(f"audit.{i}.{name}", value, actual, actual == value))
    return out


def model_call_checks(want: list[str] | ToolsCheck | None, calls: list[str]) -> list[Check]:
    """Exactly these model calls in order, or a subsequence / calls that must not happen."""
    if isinstance(want, list):
        return [Check("model_calls", want, calls, calls == want)]
    if want is None:
        return []
    out = []
    if want.contains:
        ok = _subsequence(list(want.contains), calls)
        out.append(Check("model_calls.contains", want.contains, calls, ok))
    for tool in want.not_contains:
        out.append(Check("model_calls.not_contains", tool, calls, tool not in calls))
    return out


def route_checks(want: Sequence[str] | RouteCheck | None, route: Sequence[str]) -> list[Check]:
    """The exact route, or a partial check: a subsequence, absent nodes, the last node."""
    if want is None:
        return []
    if not isinstance(want, RouteCheck):
        return [Check("route", list(want), list(route), list(route) == list(want))]
    out = []
    if want.contains:
        out.append(
            Check("route.contains", want.contains, route, _subsequence(want.contains, route))
        )
    for node in want.not_contains:
        out.append(Check("route.not_contains", node, route, node not in route))
    if want.ends_with is not None:
        last = route[-1] if route else None
        out.append(Check("route.ends_with", want.ends_with, last, last == want.ends_with))
    return out


def _subsequence(needles: Sequence[str], items: Sequence[str]) -> bool:
    it = iter(items)
    return all(any(n == x for x in it) for n in needles)


def citation_checks(want: list[str] | CitationCheck | None, cited: list[str]) -> list[Check]:
    """Exactly these FAQ ids (any order), or contains / not_contains / a minimum count."""
    if isinstance(want, list):
        return [Check("citations", sorted(want), sorted(cited), sorted(set(cited)) == sorted(want))]
    if want is None:
        return []
    out = [Check("citations.contains", i, cited, i in cited) for i in want.contains]
    out += [Check("citations.not_contains", i, cited, i not in cited) for i in want.not_contains]
    if want.min is not None:
        out.append(Check("citations.min", f">= {want.min}", cited, len(cited) >= want.min))
    return out


def escalation_checks(expect: Expect, packet: dict[str, Any] | None) -> list[Check]:
    """No hand-off (``escalation: null``), or one with this reason and summary."""
    want = expect.escalation
    if want is None:
        reason = packet.get("reason") if packet else None
        return [Check("escalation", None, reason, packet is None, "no hand-off expected")]
    if packet is None:
        return [Check("escalation", want.reason or "a hand-off", None, False)]
    out = []
    if want.reason is not None:
        reason = packet.get("reason")
        out.append(Check("escalation.reason", want.reason, reason, reason == want.reason))
    if want.summary is not None:
        out += text_checks("escalation.summary", want.summary, str(packet.get("summary", "")))
    return out or [Check("escalation", "a hand-off", packet.get("reason"), True)]


def text_checks(name: str, want: TextCheck, text: str, *, shown: str | None = None) -> list[Check]:
    """Substrings (any case), regular expressions, equality, emptiness.

    ``shown`` is what a failure shows of the text (default: the text itself).
    """
    folded = text.casefold()
    view = text if shown is None else shown
    shown = excerpt(view)
    out = [Check(f"{name}.contains", s, shown, s.casefold() in folded) for s in want.contains]
    for s in want.not_contains:
        where = view.casefold().find(s.casefold())
        actual = excerpt(view, around=where) if where >= 0 else excerpt(text)
        out.append(Check(f"{name}.not_contains", s, actual, where < 0))
    out += [
        Check(f"{name}.matches", p, shown, re.search(p, text) is not None) for p in want.matches
    ]
    if want.equals is not None:
        out.append(Check(f"{name}.equals", want.equals, text, text == want.equals))
    if want.empty is not None:
        out.append(Check(f"{name}.empty", want.empty, shown, (text == "") == want.empty))
    return out


def excerpt(text: str, *, around: int = -1, width: int = 240) -> str:
    """A short view of a long text (around a position when given)."""
    if len(text) <= width:
        return text
    if around < 0:
        return text[: width - 1] + "…"
    start = max(0, around - width // 2)
    return ("…" if start else "") + text[start : start + width] + "…"


def request_checks(want: list[RequestCheck], seen: list[dict[str, Any]] | None) -> list[Check]:
    """The conversation's requests, oldest first: count, kinds and fields."""
    if seen is None:
        return [Check("requests", _show_requests(want), None, None, "not observable over --url")]
    out = [Check("requests.count", len(want), len(seen), len(want) == len(seen))]
    for i, (exp, got) in enumerate(zip(want, seen, strict=False)):
        where = f"requests.{i}"
        out.append(Check(f"{where}.kind", exp.kind, got["kind"], exp.kind == got["kind"]))
        if exp.status is not None:
            ok = exp.status == got.get("status")
            out.append(Check(f"{where}.status", exp.status, got.get("status"), ok))
        data = got.get("data") or {}
        for key, value in exp.data.items():
            actual = str(data.get(key, NOT_SET))
            if isinstance(value, TextCheck):
                out += text_checks(f"{where}.data.{key}", value, actual)
            else:
                out.append(Check(f"{where}.data.{key}", value, actual, actual == value))
    return out


def _show_requests(want: list[RequestCheck]) -> list[str]:
    return [r.kind for r in want]


def scores(expect: Expect, seen: Observed) -> Scores:
    """The turn's contribution to intent, route, slot and escalation metrics."""
    intent = seen.intent == expect.intent if expect.given("intent") else None
    route = (
        all(c.ok for c in route_checks(expect.route, seen.route)) if expect.given("route") else None
    )
    tp = fp = fn = 0
    for name, want in (expect.slots or {}).items() if expect.given("slots") else ():
        have = seen.slots.get(name)
        if want is not None and have == want:
            tp += 1
            continue
        fp += have is not None
        fn += want is not None
    if expect.given("escalation"):
        esc_expected: bool | None = expect.escalation is not None
    elif expect.given("status"):
        esc_expected = expect.status == "escalated"
    else:
        esc_expected = None
    return Scores(intent, route, tp, fp, fn, esc_expected, seen.status == "escalated")
