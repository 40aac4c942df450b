"""Intent-accuracy benchmark: the offline classifier on Banking77 and CLINC150.

Prints the figures beside the published ones (with ratios) and beside a naive same-run
baseline (TF-IDF nearest example), and writes them as JSON::

    python bench/intents.py [--data ../shared/data] [--json out.json]

The data is read at run time from ``--data``, else ``$SUPPORTGRAPH_SHARED_DATA``, else the
``shared/data`` folder beside the repository; it is never copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEEDS = (0, 1, 2)
SHOTS = 10
PACK_INTENTS = 20
PACK_EXAMPLES = 15
LATENCY_QUERIES = 200
SMALL_PACK_INTENTS = 10
SMALL_PACK_EXAMPLES = 10
SMALL_PACK_REPEATS = 4

PUBLISHED = {
    "banking77_full.accuracy": (93.66, "BERT fine-tuned (Casanueva et al. 2020)"),
    "banking77_10shot.accuracy": (85.19, "USE+ConveRT (Casanueva et al. 2020)"),
    "clinc150.in_scope_accuracy": (96.2, "BERT + threshold (Larson et al. 2019)"),
    "clinc150.oos_recall": (52.3, "BERT + threshold (Larson et al. 2019)"),
}
TARGETS = {
    "banking77_full.accuracy": 92.0,
    "banking77_10shot.accuracy": 80.0,
    "clinc150.in_scope_accuracy": 93.0,
    "clinc150.oos_recall": 50.0,
}

#: (label, dotted path into one method's results; PUBLISHED and TARGETS use the same paths)
ROWS: list[tuple[str, str]] = [
    ("Banking77 full: accuracy", "banking77_full.accuracy"),
    ("Banking77 full: macro-F1", "banking77_full.macro_f1"),
    ("Banking77 10-shot: accuracy (3 seeds)", "banking77_10shot.accuracy"),
    ("Banking77 10-shot: macro-F1 (3 seeds)", "banking77_10shot.macro_f1"),
    ("CLINC150: in-scope accuracy", "clinc150.in_scope_accuracy"),
    ("CLINC150: out-of-scope recall", "clinc150.oos_recall"),
    ("CLINC150: threshold (val + oos_val)", "clinc150.threshold"),
    ("CLINC150: in-scope acc., no threshold", "clinc150.no_threshold_in_scope_accuracy"),
    ("CLINC150 generic negatives: in-scope acc.", "clinc150.generic_negatives.in_scope_accuracy"),
    ("CLINC150 generic negatives: OOS recall", "clinc150.generic_negatives.oos_recall"),
    ("CLINC150 generic negatives: threshold", "clinc150.generic_negatives.threshold"),
    ("small packs 10x10: in-scope acc.", "small_packs.in_scope_accuracy"),
    ("small packs 10x10: OOS recall", "small_packs.oos_recall"),
    ("small packs 10x10: threshold", "small_packs.threshold"),
    ("fit Banking77 full (s)", "banking77_full.fit_seconds"),
    ("fit CLINC150 full (s)", "clinc150.fit_seconds"),
    ("pack of 300: model load (s)", "pack.load_seconds"),
    ("pack of 300: fit, cold (s)", "pack.fit_seconds"),
    ("query latency p50 (ms)", "pack.latency_p50_ms"),
    ("query latency p95 (ms)", "pack.latency_p95_ms"),
]


Pairs = list[tuple[str, str]]


class Predictor(Protocol):
    """What the benchmark needs from a fitted classifier."""

    def classify_many(self, texts: Sequence[str]) -> list[Any]:
        """Best intent and confidence (``.intent``, ``.score``) for each text."""
        ...


@dataclass
class Method:
    """One classifier under test: the offline one (with or without embeddings) or the baseline."""

    name: str
    intents: Any = None  # the supportgraph.domain.local.intents module; None for the baseline
    embedder: Any = None

    def fit(self, examples: Mapping[str, Sequence[str]]) -> Predictor:
        """Fit on ``examples``, reusing this method's embedder (and its cache)."""
        if self.intents is None:
            return NearestExample(examples)
        return self.intents.IntentClassifier(examples, embedder=self.embedder)

    def cold(self) -> Method:
        """The same method with a newly loaded embedder, for start-up timings."""
        if self.embedder is None:
            return self
        return Method(self.name, self.intents, self.intents.load_minilm_embedder())

    def calibrate(self, examples: Mapping[str, Sequence[str]]) -> float | None:
        """The default calibrated threshold for a pack (None for the baseline)."""
        if self.intents is None:
            return None
        return self.intents.calibrate_threshold(examples, embedder=self.embedder)


@dataclass(frozen=True)
class Scored:
    """A nearest-example prediction."""

    intent: str
    score: float


class NearestExample:
    """Naive baseline: TF-IDF word unigrams, the label of the most cosine-similar example."""

    def __init__(self, examples: Mapping[str, Sequence[str]]) -> None:
        """Index every example."""
        self._labels = [i for i, texts in examples.items() for _ in texts]
        self._vectorizer = TfidfVectorizer()
        self._matrix = self._vectorizer.fit_transform([t for ts in examples.values() for t in ts])

    def classify_many(self, texts: Sequence[str]) -> list[Scored]:
        """The nearest example's intent, its cosine similarity as the confidence."""
        sims = (self._vectorizer.transform(texts) @ self._matrix.T).toarray()
        best = sims.argmax(axis=1)
        return [Scored(self._labels[j], float(sims[i, j])) for i, j in enumerate(best)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table and write the JSON."""
    args = _parse(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    data = _load_data(args.data)
    methods = _methods(console)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("intent benchmark", total=len(methods) * 8 + 1)
        _warm_up(methods, data, progress, task)
        results = {m.name: _measure(m, data, progress, task) for m in methods}
    report = _report(results, args.data)
    console.print(_table(results))
    _print_targets(console, results)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("SUPPORTGRAPH_SHARED_DATA")
    parser.add_argument("--data", type=Path, default=Path(env) if env else DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def _load_data(root: Path) -> dict[str, Pairs]:
    banking = root / "banking77"
    clinc_file = root / "clinc150" / "data_full.json"
    for path in (banking / "train.csv", banking / "test.csv", clinc_file):
        if not path.is_file():
            raise SystemExit(
                f"benchmark data missing: {path} (set --data or SUPPORTGRAPH_SHARED_DATA)"
            )
    data = {f"b77_{s}": _read_csv(banking / f"{s}.csv") for s in ("train", "test")}
    clinc = json.loads(clinc_file.read_text())
    for key in ("train", "val", "test"):
        data[f"clinc_{key}"] = [(t, i) for t, i in clinc[key]]
    for key in ("val", "test"):
        data[f"clinc_oos_{key}"] = [(t, "oos") for t, _ in clinc[f"oos_{key}"]]
    return data


def _read_csv(path: Path) -> Pairs:
    with path.open(newline="") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def _methods(console: Console) -> list[Method]:
    intents = _import_intents()
    methods = [Method("lexical", intents), Method("baseline")]
    shared = intents.load_minilm_embedder(cache_size=100_000)
    if shared is None:
        console.print("[yellow]MiniLM packages missing: measuring the lexical path only[/yellow]")
        return methods
    return [Method("hybrid", intents, shared), *methods]


def _import_intents() -> Any:
    if importlib.util.find_spec("supportgraph") is None:
        sys.path.insert(0, str(REPO))
    from supportgraph.domain.local import intents

    return intents


def _warm_up(methods: list[Method], data: dict[str, Pairs], progress: Progress, task: Any) -> None:
    """Embed every benchmark text once, so later fits and predictions reuse the vectors."""
    for embedder in [m.embedder for m in methods if m.embedder is not None]:
        texts = sorted({t.strip() for pairs in data.values() for t, _ in pairs})
        sub = progress.add_task("embedding benchmark texts", total=len(texts))
        for start in range(0, len(texts), 1024):
            chunk = texts[start : start + 1024]
            embedder.embed(chunk, remember=True)
            progress.advance(sub, len(chunk))
        progress.remove_task(sub)
    progress.advance(task)


def _measure(method: Method, data: dict[str, Pairs], progress: Progress, task: Any) -> dict:
    progress.update(task, description=f"{method.name}: Banking77 full")
    out: dict[str, Any] = {"banking77_full": _fit_and_score(method, data["b77_train"], data)}
    progress.advance(task)
    shots = []
    for seed in SEEDS:
        progress.update(task, description=f"{method.name}: Banking77 {SHOTS}-shot seed {seed}")
        shots.append(_fit_and_score(method, _few_shot(data["b77_train"], SHOTS, seed), data))
        progress.advance(task)
    out["banking77_10shot"] = _summarise_shots(shots)
    progress.update(task, description=f"{method.name}: CLINC150")
    out["clinc150"] = _clinc(method, data)
    progress.advance(task)
    progress.update(task, description=f"{method.name}: small CLINC150 packs")
    out["small_packs"] = _small_packs(method, data)
    progress.advance(task)
    progress.update(task, description=f"{method.name}: pack fit and latency")
    out["pack"] = _pack_timing(method, data)
    progress.advance(task)
    return out


def _fit_and_score(method: Method, train: Pairs, data: dict[str, Pairs]) -> dict:
    with _timer() as elapsed:
        model = method.fit(_group(train))
    gold = [i for _, i in data["b77_test"]]
    pred = [r.intent for r in model.classify_many([t for t, _ in data["b77_test"]])]
    return {
        "accuracy": 100 * float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])),
        "macro_f1": 100 * float(f1_score(gold, pred, average="macro")),
        "fit_seconds": elapsed(),
        "train_examples": len(train),
    }


def _summarise_shots(shots: list[dict]) -> dict:
    return {
        "accuracy": statistics.fmean(s["accuracy"] for s in shots),
        "macro_f1": statistics.fmean(s["macro_f1"] for s in shots),
        "per_seed": {str(seed): s for seed, s in zip(SEEDS, shots, strict=True)},
    }


def _clinc(method: Method, data: dict[str, Pairs]) -> dict:
    intents = _import_intents()
    with _timer() as elapsed:
        model = method.fit(_group(data["clinc_train"]))
    fit_seconds = elapsed()
    val = _scores(model, data["clinc_val"])
    val_oos = [s for s, _ in _scores(model, data["clinc_oos_val"])]
    test = _scores(model, data["clinc_test"])
    test_oos = [s for s, _ in _scores(model, data["clinc_oos_test"])]
    scores, right = [s for s, _ in val], [r for _, r in val]
    generic = [r.score for r in model.classify_many(intents.GENERIC_NEGATIVES)]
    with_negatives = intents.threshold_from_scores(scores, right, val_oos)
    default = intents.threshold_from_scores(scores, right, generic)
    return {
        "threshold": with_negatives,
        **_clinc_at(with_negatives, test, test_oos),
        "no_threshold_in_scope_accuracy": 100 * float(np.mean([r for _, r in test])),
        "generic_negatives": {"threshold": default, **_clinc_at(default, test, test_oos)},
        "fit_seconds": fit_seconds,
    }


def _scores(model: Predictor, pairs: Pairs) -> list[tuple[float, bool]]:
    results = model.classify_many([t for t, _ in pairs])
    return [(r.score, r.intent == gold) for r, (_, gold) in zip(results, pairs, strict=True)]


def _clinc_at(threshold: float, test: list[tuple[float, bool]], oos: list[float]) -> dict:
    return {
        "in_scope_accuracy": 100 * float(np.mean([r and s >= threshold for s, r in test])),
        "oos_recall": 100 * float(np.mean([s < threshold for s in oos])),
    }


def _small_packs(method: Method, data: dict[str, Pairs]) -> dict:
    """Packs of a service's size cut from CLINC150, each with its default calibrated threshold."""
    grouped = _group(data["clinc_train"])
    oos = [t for t, _ in data["clinc_oos_test"]]
    runs = []
    for seed in range(SMALL_PACK_REPEATS):
        rng = np.random.default_rng(seed)
        names = rng.choice(sorted(grouped), size=SMALL_PACK_INTENTS, replace=False)
        pack = {n: list(rng.choice(grouped[n], SMALL_PACK_EXAMPLES, replace=False)) for n in names}
        threshold = method.calibrate(pack)
        if threshold is None:
            return {}
        model = method.fit(pack)
        test = _scores(model, [(t, i) for t, i in data["clinc_test"] if i in pack])
        runs.append({"threshold": threshold, **_clinc_at(threshold, test, _oos_scores(model, oos))})
    return {key: statistics.fmean(r[key] for r in runs) for key in runs[0]} | {"runs": runs}


def _oos_scores(model: Predictor, texts: Sequence[str]) -> list[float]:
    return [r.score for r in model.classify_many(texts)]


def _pack_timing(method: Method, data: dict[str, Pairs]) -> dict:
    """Fit a pack-sized classifier from cold (new embedder) and time single queries."""
    names = sorted({i for _, i in data["clinc_train"]})[:PACK_INTENTS]
    pack = {n: [t for t, i in data["clinc_train"] if i == n][:PACK_EXAMPLES] for n in names}
    with _timer() as load:
        cold = method.cold()
    load_seconds = load()
    with _timer() as elapsed:
        model = cold.fit(pack)
    fit_seconds = elapsed()
    pool = [t for t, i in data["clinc_test"] if i in pack] + [t for t, _ in data["clinc_oos_test"]]
    queries = [pool[j] for j in np.random.default_rng(0).permutation(len(pool))[:LATENCY_QUERIES]]
    latencies = []
    for query in queries:
        with _timer() as one:
            model.classify_many([query])
        latencies.append(1000 * one())
    return {
        "examples": sum(len(v) for v in pack.values()),
        "load_seconds": load_seconds,
        "fit_seconds": fit_seconds,
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
    }


def _few_shot(pairs: Pairs, shots: int, seed: int) -> Pairs:
    rng = np.random.default_rng(seed)
    grouped = _group(pairs)
    return [
        (t, intent)
        for intent in sorted(grouped)
        for t in rng.choice(grouped[intent], size=min(shots, len(grouped[intent])), replace=False)
    ]


def _group(pairs: Pairs) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for text, intent in pairs:
        grouped.setdefault(intent, []).append(str(text))
    return grouped


@contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def _get(result: dict[str, Any], path: str) -> float:
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value)


def _table(results: dict[str, dict]) -> Table:
    table = Table(title="Offline intent classifier vs published (ratio = ours / published)")
    table.add_column("metric")
    table.add_column("published", justify="right")
    for name in results:
        table.add_column(name, justify="right")
    for label, path in ROWS:
        published = PUBLISHED[path][0] if path in PUBLISHED else None
        cells = [_cell(_get(r, path), published) for r in results.values()]
        table.add_row(label, f"{published:.2f}" if published else "", *cells)
    table.caption = "; ".join(f"{v[0]}: {v[1]}" for v in PUBLISHED.values())
    return table


def _cell(value: float, published: float | None) -> str:
    if np.isnan(value):
        return "n/a"
    if published is None:
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    return f"{value:.2f} ({value / published:.3f})"


def _print_targets(console: Console, results: dict[str, dict]) -> None:
    best = next(iter(results))
    values = {path: _get(results[best], path) for path in TARGETS}
    for key, floor in TARGETS.items():
        mark = "[green]met[/green]" if values[key] >= floor else "[red]missed[/red]"
        console.print(f"target {key} >= {floor} ({best}): {values[key]:.2f} {mark}")
    seeds = results[best]["banking77_10shot"]["per_seed"]
    per_seed = ", ".join(f"seed {s}: {v['accuracy']:.2f}" for s, v in seeds.items())
    console.print(f"Banking77 {SHOTS}-shot accuracy per seed ({best}): {per_seed}")


def _report(results: dict[str, dict], data_dir: Path) -> dict:
    return {
        "data": str(data_dir),
        "published": {k: {"value": v, "source": s} for k, (v, s) in PUBLISHED.items()},
        "targets": TARGETS,
        "methods": results,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
