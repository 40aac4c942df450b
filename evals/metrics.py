"""Metrics over case runs: pass rate (and pass^k), turn-level accuracies, slots, escalation,
model use and latency. A metric with nothing to measure is ``None``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evals.runner import CaseRun

METRICS: tuple[tuple[str, str, str], ...] = (
    # (key, label, format) — the order reports show them in
    ("cases", "cases", "int"),
    ("pass_rate", "pass rate", "pct"),
    ("pass_hat_k", "pass^k", "pct"),
    ("turns", "turns", "int"),
    ("intent_accuracy", "intent acc.", "pct"),
    ("route_accuracy", "route acc.", "pct"),
    ("slot_precision", "slot P", "pct"),
    ("slot_recall", "slot R", "pct"),
    ("escalation_precision", "escal. P", "pct"),
    ("escalation_recall", "escal. R", "pct"),
    ("llm_calls_per_turn", "LLM calls/turn", "float"),
    ("tokens_per_turn", "tokens/turn", "float1"),
    ("latency_p50_ms", "p50 ms", "float1"),
    ("latency_p95_ms", "p95 ms", "float1"),
)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (``q`` in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(runs: Sequence[CaseRun]) -> dict[str, Any]:
    """Every metric over these runs (all repetitions of all cases)."""
    turns = [t for r in runs for t in r.turns]
    by_case: dict[str, list[bool]] = {}
    for r in runs:
        by_case.setdefault(r.case.id, []).append(r.passed)
    intent = [t.scores.intent for t in turns if t.scores.intent is not None]
    route = [t.scores.route for t in turns if t.scores.route is not None]
    tp = sum(t.scores.slot_tp for t in turns)
    fp = sum(t.scores.slot_fp for t in turns)
    fn = sum(t.scores.slot_fn for t in turns)
    judged = [
        (t.scores.escalation_expected, t.scores.escalation_actual)
        for t in turns
        if t.scores.escalation_expected is not None
    ]
    esc_tp = sum(1 for e, a in judged if e and a)
    esc_fp = sum(1 for e, a in judged if not e and a)
    esc_fn = sum(1 for e, a in judged if e and not a)
    usage = [t.observed.usage for t in turns]
    latency = [t.observed.latency_ms for t in turns]
    calls = sum(int(u.get("llm_calls", 0)) for u in usage)
    tokens_in = sum(int(u.get("input_tokens", 0)) for u in usage)
    tokens_out = sum(int(u.get("output_tokens", 0)) for u in usage)
    return {
        "cases": len(by_case),
        "runs": len(runs),
        "passed_runs": sum(r.passed for r in runs),
        "failed_runs": sum(not r.passed for r in runs),
        "known_failures": sum(r.outcome == "xfail" for r in runs),
        "fixed_known_issues": sum(r.outcome == "xpass" for r in runs),
        "pass_rate": _ratio(sum(r.passed for r in runs), len(runs)),
        "pass_hat_k": _ratio(sum(all(v) for v in by_case.values()), len(by_case)),
        "k": max((len(v) for v in by_case.values()), default=0),
        "turns": len(turns),
        "intent_accuracy": _ratio(sum(intent), len(intent)),
        "intent_turns": len(intent),
        "route_accuracy": _ratio(sum(route), len(route)),
        "route_turns": len(route),
        "slot_precision": _ratio(tp, tp + fp),
        "slot_recall": _ratio(tp, tp + fn),
        "escalation_precision": _ratio(esc_tp, esc_tp + esc_fp),
        "escalation_recall": _ratio(esc_tp, esc_tp + esc_fn),
        "llm_calls": calls,
        "llm_calls_per_turn": _ratio(calls, len(turns)),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "tokens_per_turn": _ratio(tokens_in + tokens_out, len(turns)),
        "degraded_calls": sum(int(u.get("degraded", 0)) for u in usage),
        "latency_p50_ms": percentile(latency, 0.5),
        "latency_p95_ms": percentile(latency, 0.95),
        "scanned_runs": sum(r.scanned for r in runs),
        "canaries": len({(c.name, c.value) for r in runs for c in r.case.canaries}),
        "leaks": sum(len(r.leaks) for r in runs),
        "leaking_runs": sum(bool(r.leaks) for r in runs),
    }


def show(value: Any, kind: str) -> str:
    """A metric as text for tables ('-' when there is nothing to measure)."""
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "float":
        return f"{value:.2f}"
    if kind == "float1":
        return f"{value:.1f}"
    return str(value)
