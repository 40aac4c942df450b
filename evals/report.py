"""Reports of an eval run: JSON (a stable, versioned schema), JUnit XML and Markdown, and the
comparison of two JSON reports (what a team reads before switching models)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.checks import excerpt, without_greeting
from evals.metrics import METRICS, show, summarize
from evals.runner import CaseRun, RunResult

SCHEMA = "supportgraph-eval-report"
SCHEMA_VERSION = 1
"""Bumped when a field changes meaning or goes away; adding fields keeps the version."""


def _value(value: Any) -> Any:
    """A JSON-able view of an expectation (pydantic models become dicts)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_defaults=True)
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def build_report(result: RunResult, *, paths: Sequence[str], filters: Sequence[str]) -> dict:
    """The whole run as a JSON-able dict (schema :data:`SCHEMA` version :data:`SCHEMA_VERSION`)."""
    suites: dict[str, list[CaseRun]] = {}
    files: dict[str, str] = {}
    for run in result.runs:
        suites.setdefault(run.case.suite, []).append(run)
        files[run.case.suite] = str(run.case.path)
    for case in result.skipped:
        files.setdefault(case.suite, str(case.path))
    cases: dict[str, dict[str, Any]] = {}
    for run in result.runs:
        entry = cases.setdefault(run.case.id, _case_entry(run.case))
        entry["runs"].append(_run_json(run))
    for entry in cases.values():
        outcomes = {r["outcome"] for r in entry["runs"]}
        entry["status"] = next(o for o in ("failed", "xfail", "xpass", "passed") if o in outcomes)
    for case in result.skipped:
        cases[case.id] = {**_case_entry(case), "status": "skipped"}
    o = result.options
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {
            "mode": o.mode,
            "target": o.target_name,
            "url": o.url,
            "model": result.model,
            "repeat": o.repeat,
            "workers": o.workers,
            "paths": list(paths),
            "filters": list(filters),
            "started_at": result.started_at,
            "duration_s": round(result.duration_s, 3),
        },
        "totals": summarize(result.runs),
        "suites": [
            {"name": name, "path": files[name], "metrics": summarize(runs)}
            for name, runs in sorted(suites.items())
        ],
        "cases": list(cases.values()),
    }


def _case_entry(case: Any) -> dict[str, Any]:
    return {
        "id": case.id,
        "suite": case.suite,
        "path": str(case.path),
        "tags": list(case.tags),
        "description": case.case.description,
        "status": "failed",
        "runs": [],
    }


def _run_json(run: CaseRun) -> dict[str, Any]:
    return {
        "repeat": run.repeat,
        "passed": run.passed,
        "outcome": run.outcome,
        "known_issue": run.known_issue,
        "duration_ms": round(run.duration_ms, 1),
        "error": run.error,
        "warnings": run.warnings,
        "leaks": [leak.to_json() for leak in run.leaks],
        "turns": [
            {
                "index": t.index,
                "customer": t.customer,
                "passed": t.passed,
                "observed": t.observed.to_json(),
                "checks": [
                    {**c.to_json(), "expected": _value(c.expected), "actual": _value(c.actual)}
                    for c in t.checks
                ],
                "scores": t.scores.to_json(),
            }
            for t in run.turns
        ],
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the JSON report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON report written by :func:`write_json` (any compatible version)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a supportgraph eval report (no schema {SCHEMA!r})")
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: report schema version {data['schema_version']} is newer than this "
            f"supportgraph understands ({SCHEMA_VERSION})"
        )
    return data


# --- failure text --------------------------------------------------------------------------


def _short(value: Any, width: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(_value(value), ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _reply(run: CaseRun, reply: str) -> str:
    return without_greeting(reply, run.case.pack().spec.greeting)


def first_failure_line(run: CaseRun) -> str:
    """The first failed check of a run in one line ('turn 2: status: expected x, got y')."""
    turn = run.first_failure
    if turn is None or not turn.failures:
        return (run.error or "failed").splitlines()[0]
    check = turn.failures[0]
    return (
        f"turn {turn.index + 1}: {check.field}: expected {_short(check.expected)}, "
        f"got {_short(check.actual)}"
    )


def failure_text(run: CaseRun) -> str:
    """Expected vs actual for the first failing turn of a case run, as plain text."""
    head = f"case {run.case.id} (suite {run.case.suite}, {run.case.path}) in {run.mode} mode"
    known = f"\n  known issue: {run.known_issue}" if run.known_issue is not None else ""
    if run.error is not None and run.first_failure is None:
        return f"{head}: error after {len(run.turns)} turn(s){known}\n{run.error}"
    turn = run.first_failure
    if turn is None:
        return f"{head}: passed{known}"
    seen = turn.observed
    lines = [
        f"{head}: turn {turn.index + 1} of {len(run.case.case.turns)} failed{known}",
        f"  customer: {_short(turn.customer, 200)}",
        f"  reply:    {_short(excerpt(_reply(run, seen.reply)), 200)}",
        f"  intent={seen.intent} status={seen.status} route={' > '.join(seen.route)}",
        "",
    ]
    rows = [(c.field, _short(c.expected, 60), _short(c.actual, 60)) for c in turn.failures]
    widths = [max(len(r[i]) for r in [("field", "expected", "actual"), *rows]) for i in (0, 1)]
    lines.append(f"  {'field':<{widths[0]}}  {'expected':<{widths[1]}}  actual")
    for name, expected, actual in rows:
        lines.append(f"  {name:<{widths[0]}}  {expected:<{widths[1]}}  {actual}")
    if run.error is not None:
        lines += ["", f"  then: {run.error.splitlines()[0]}"]
    return "\n".join(lines)


# --- JUnit XML ---------------------------------------------------------------------------


def write_junit(result: RunResult, path: Path) -> None:
    """One <testsuite> per suite file and one <testcase> per case run."""
    root = ET.Element("testsuites", name=f"supportgraph eval ({result.options.mode})")
    suites: dict[str, list[CaseRun]] = {}
    for run in result.runs:
        suites.setdefault(run.case.suite, []).append(run)
    skipped: dict[str, list[Any]] = {}
    for case in result.skipped:
        skipped.setdefault(case.suite, []).append(case)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for name in sorted(set(suites) | set(skipped)):
        runs, skips = suites.get(name, []), skipped.get(name, [])
        failures = sum(1 for r in runs if r.failed and r.error is None)
        errors = sum(1 for r in runs if r.failed and r.error is not None)
        known = sum(1 for r in runs if r.outcome == "xfail")
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{name} [{result.options.mode}]",
            tests=str(len(runs) + len(skips)),
            failures=str(failures),
            errors=str(errors),
            skipped=str(len(skips) + known),
            time=f"{sum(r.duration_ms for r in runs) / 1000:.3f}",
        )
        for key, count in zip(
            totals, (len(runs) + len(skips), failures, errors, len(skips)), strict=True
        ):
            totals[key] += count
        for run in runs:
            label = (
                run.case.id if result.options.repeat == 1 else f"{run.case.id} #{run.repeat + 1}"
            )
            testcase = ET.SubElement(
                suite,
                "testcase",
                classname=f"evals.{name}",
                name=label,
                file=str(run.case.path),
                time=f"{run.duration_ms / 1000:.3f}",
            )
            if run.outcome == "xfail":
                node = ET.SubElement(testcase, "skipped", message=f"known issue: {run.known_issue}")
                node.text = failure_text(run)
            elif run.outcome == "xpass":
                out = ET.SubElement(testcase, "system-out")
                out.text = f"known issue no longer reproduces: {run.known_issue}"
            elif run.error is not None:
                node = ET.SubElement(testcase, "error", message=run.error.splitlines()[0])
                node.text = failure_text(run)
            elif not run.passed:
                message = first_failure_line(run)
                node = ET.SubElement(testcase, "failure", message=message, type="EvalFailure")
                node.text = failure_text(run)
        for skip in skips:
            testcase = ET.SubElement(suite, "testcase", classname=f"evals.{name}", name=skip.id)
            ET.SubElement(testcase, "skipped", message=f"not run in {result.options.mode} mode")
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{result.duration_s:.3f}")
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


# --- Markdown ------------------------------------------------------------------------------


def metrics_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, metrics) for each suite, then the totals."""
    rows = [(s["name"], s["metrics"]) for s in report["suites"]]
    return [*rows, ("all", report["totals"])]


def markdown(
    report: dict[str, Any], runs: Sequence[CaseRun], comparison: dict[str, Any] | None
) -> str:
    """A human-readable report: the run, per-suite metrics, failures, changes."""
    run = report["run"]
    totals = report["totals"]
    out = [
        "# supportgraph eval report",
        "",
        f"- mode: **{run['mode']}** ({run['target']}"
        + (f" {run['url']}" if run["url"] else "")
        + f"), model: {run['model'] or 'none (local mode)'}",
        f"- {totals['cases']} cases, {totals['runs']} runs: {totals['passed_runs']} passed, "
        f"{totals['failed_runs'] - totals['known_failures']} failed, "
        f"{totals['known_failures']} known issue(s) still failing"
        + (f", repeat {run['repeat']}" if run["repeat"] > 1 else "")
        + f"; {run['duration_s']:.1f} s; started {run['started_at']}",
        "",
        "## Metrics",
        "",
    ]
    keys = [m for m in METRICS if m[0] != "pass_hat_k" or run["repeat"] > 1]
    out.append("| suite | " + " | ".join(label for _, label, _ in keys) + " |")
    out.append("|---|" + "---:|" * len(keys))
    for name, metrics in metrics_rows(report):
        cells = [show(metrics.get(k), fmt) for k, _, fmt in keys]
        label = f"**{name}**" if name == "all" else name
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    failed = [r for r in runs if r.failed]
    out += ["", f"## Failures ({len(failed)})", ""]
    if not failed:
        out.append("None.")
    for r in failed:
        out += [f"### {r.case.suite} / {r.case.id}", "", "```", failure_text(r), "```", ""]
    known = [r for r in runs if r.outcome == "xfail"]
    if known:
        out += ["", f"## Known issues ({len(known)})", ""]
        for r in known:
            out += [f"### {r.case.suite} / {r.case.id}", "", "```", failure_text(r), "```", ""]
    fixed = [r for r in runs if r.outcome == "xpass"]
    if fixed:
        out += ["", f"## Known issues that no longer reproduce ({len(fixed)})", ""]
        out += [f"- {r.case.id} ({r.mode}): {r.known_issue}" for r in fixed]
    if comparison is not None:
        out += ["", *compare_markdown(comparison)]
    return "\n".join(out).rstrip() + "\n"


# --- comparison ----------------------------------------------------------------------------


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Cases newly failing or passing, cases added or removed, and metric deltas."""
    before = {c["id"]: c["status"] for c in old.get("cases", [])}
    after = {c["id"]: c["status"] for c in new.get("cases", [])}
    both = sorted(set(before) & set(after))
    old_suites = {s["name"]: s["metrics"] for s in old.get("suites", [])}
    new_suites = {s["name"]: s["metrics"] for s in new.get("suites", [])}
    good, bad = {"passed", "xpass"}, {"failed", "xfail"}
    return {
        "old": {"generated_at": old.get("generated_at"), "run": old.get("run", {})},
        "newly_failing": [c for c in both if before[c] in good and after[c] in bad],
        "newly_passing": [c for c in both if before[c] in bad and after[c] in good],
        "still_failing": [c for c in both if before[c] in bad and after[c] in bad],
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "totals": _deltas(old.get("totals", {}), new.get("totals", {})),
        "suites": {
            name: _deltas(old_suites.get(name, {}), new_suites.get(name, {}))
            for name in sorted(set(old_suites) | set(new_suites))
        },
    }


def _deltas(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, _, _ in METRICS:
        a, b = old.get(key), new.get(key)
        delta = b - a if isinstance(a, int | float) and isinstance(b, int | float) else None
        out[key] = {"old": a, "new": b, "delta": delta}
    return out


def show_delta(delta: Any, kind: str) -> str:
    """A metric change as text (+/-; percentage points for rates)."""
    if delta is None:
        return ""
    if kind == "pct":
        return f"{100 * delta:+.1f} pp"
    if kind == "int":
        return f"{delta:+d}"
    return f"{delta:+.2f}"


def compare_markdown(comparison: dict[str, Any]) -> list[str]:
    """The comparison as Markdown lines."""
    old = comparison["old"]
    out = [
        f"## Changes since {old.get('generated_at')} "
        f"({old.get('run', {}).get('mode')}, model {old.get('run', {}).get('model')})",
        "",
    ]
    for key, title in (
        ("newly_failing", "Newly failing"),
        ("newly_passing", "Newly passing"),
        ("added", "Added"),
        ("removed", "Removed"),
    ):
        items = comparison[key]
        out.append(f"- {title} ({len(items)}): " + (", ".join(items) if items else "none"))
    out += ["", "| metric | old | new | change |", "|---|---:|---:|---:|"]
    for key, label, fmt in METRICS:
        d = comparison["totals"][key]
        out.append(
            f"| {label} | {show(d['old'], fmt)} | {show(d['new'], fmt)} | "
            f"{show_delta(d['delta'], fmt)} |"
        )
    return out
