"""Retrieval at scale: a generated 10,000-article FAQ, start-up time and query latency.

It writes a pack whose FAQ has 10,000 generated articles (Zipf-distributed words around
per-article topics), loads it as the service does, and measures the BM25 index
(``supportgraph.domain.retrieval.FaqIndex``) built from scratch, built and cached on disk (first
start), and loaded from that cache (every later start), then query latency over 2,000
queries beside a naive same-run baseline (a linear scan scoring the overlap of stemmed
words with every article)::

    .venv/bin/python -m bench.retrieval [--articles 10000] [--queries 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, bar, console, machine, percentile, ratio, table, verdict, write_json
from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import FaqEntry
from supportgraph.domain.retrieval import FaqIndex, _document, _tokenize

STORE = REPO / "packs" / "store"
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "do", "ri", "an", "el")


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    """English words from the store pack's FAQ, then made-up product and topic words."""
    words = sorted(
        {
            w.lower()
            for f in (STORE / "faq").glob("*.md")
            for w in re.findall(r"[A-Za-z]{3,}", f.read_text())
        }
    )
    while len(words) < size:
        words.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    rng.shuffle(words)
    return words


def generate(n: int, seed: int = 0) -> list[FaqEntry]:
    """``n`` articles: a title, two questions and a body around a few topic words each."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    entries = []
    for i in range(n):
        topic = rng.sample(words[200:], 3)

        def text(k: int, topic: list[str] = topic) -> str:
            return " ".join(
                rng.choice(topic) if rng.random() < 0.15 else w
                for w in rng.choices(words, weights, k=k)
            )

        title = f"{topic[0]} {topic[1]} {text(3)}"
        entries.append(
            FaqEntry(
                id=f"article-{i:05d}",
                title=title.capitalize(),
                tags=[topic[2]],
                questions=[
                    f"how do I {topic[0]} the {topic[1]} {text(3)}?",
                    f"what about {topic[2]} {text(4)}?",
                ],
                body=text(rng.randint(80, 160)).capitalize() + ".",
            )
        )
    return entries


def write_pack(entries: Sequence[FaqEntry], folder: Path) -> Path:
    """The store pack with its FAQ replaced by ``entries`` (one Markdown file each)."""
    pack = folder / "pack"
    shutil.copytree(STORE, pack, ignore=shutil.ignore_patterns("faq"))
    (pack / "faq").mkdir()
    for e in entries:
        # JSON strings are YAML strings: "yes" or "on" must not read as booleans.
        questions = "".join(f"  - {json.dumps(q)}\n" for q in e.questions)
        (pack / "faq" / f"{e.id}.md").write_text(
            f"---\nid: {e.id}\ntitle: {json.dumps(e.title)}\ntags: {json.dumps(e.tags)}\n"
            f"questions:\n{questions}---\n\n{e.body}\n"
        )
    return pack


class NaiveIndex:
    """The baseline: stemmed word sets, every article scored by overlap with the query."""

    def __init__(self, entries: Sequence[FaqEntry]) -> None:
        self.entries = list(entries)
        self.words = [set(t) for t in _tokenize([_document(e) for e in self.entries])]

    def search(self, query: str, *, k: int = 3) -> list[str]:
        """The ids of the ``k`` articles sharing the most words with the query."""
        tokens = set(_tokenize([query])[0])
        scored = sorted(
            ((len(tokens & words), i) for i, words in enumerate(self.words)), reverse=True
        )[:k]
        return [self.entries[i].id for score, i in scored if score > 0]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took, and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def latencies(
    search: Callable[[str], list[str]], queries: Sequence[tuple[str, str]], label: str
) -> dict[str, Any]:
    """Wall and CPU latency per query, and how often the source article comes first."""
    wall, cpu, first = [], [], 0
    gc.collect()
    with bar() as progress:
        task = progress.add_task(label, total=len(queries))
        for query, expected in queries:
            w0, c0 = time.perf_counter(), time.process_time()
            ids = search(query)
            cpu.append(1000 * (time.process_time() - c0))
            wall.append(1000 * (time.perf_counter() - w0))
            first += bool(ids) and ids[0] == expected
            progress.advance(task)
    return {
        "p50_ms": percentile(wall, 50),
        "p95_ms": percentile(wall, 95),
        "p99_ms": percentile(wall, 99),
        "cpu_p99_ms": percentile(cpu, 99),
        "top1": first / len(queries),
    }


def queries_for(entries: Sequence[FaqEntry], n: int, seed: int = 1) -> list[tuple[str, str]]:
    """Customer-like queries: an article's question, or part of it with other words around."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        e = rng.choice(entries)
        words = rng.choice(e.questions).rstrip("?").split()
        if rng.random() < 0.5:
            words = rng.sample(words, max(3, len(words) - 2)) + ["please", "thanks"]
        out.append((" ".join(words), e.id))
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the retrieval bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--json", type=Path, default=Path("reports/bench/retrieval.json"))
    args = parser.parse_args(argv)
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with tempfile.TemporaryDirectory(prefix="sgbench-") as tmp:
        folder = Path(tmp)
        gen_s, entries = timed(lambda: generate(args.articles))
        pack_dir = write_pack(entries, folder)
        load_s, pack = timed(lambda: load_pack(pack_dir))
        assert len(pack.faq) == args.articles, len(pack.faq)
        cache = folder / "cache"
        build_s, _ = timed(lambda: FaqIndex(pack.faq))
        first_s, _ = timed(lambda: FaqIndex(pack.faq, cache_dir=cache))
        warm_s, index = timed(lambda: FaqIndex(pack.faq, cache_dir=cache))
        naive_s, naive = timed(lambda: NaiveIndex(pack.faq))
        queries = queries_for(pack.faq, args.queries)
        for query, _ in queries[:50]:  # warm up both
            index.search(query)
            naive.search(query)
        bm25 = latencies(
            lambda q: [h.entry.id for h in index.search(q, k=3)], queries, "BM25 queries"
        )
        base = latencies(naive.search, queries[: max(200, args.queries // 10)], "naive queries")
        # BM25 top-k alone, without FaqIndex's re-ranking of the candidates.
        top = latencies(lambda q: _bm25_only(index, q), queries, "BM25 top-k only")
    rows = [
        ["FAQ articles", args.articles, "", ""],
        ["pack load (10,000 Markdown files parsed and validated)", f"{load_s:.2f} s", "", ""],
        [
            "index built from scratch",
            f"{build_s:.2f} s",
            f"{naive_s:.2f} s",
            ratio(build_s, naive_s),
        ],
        ["index at first start (built + cached on disk)", f"{first_s:.2f} s", "", ""],
        [
            "index at later starts (loaded from the cache)",
            f"{warm_s * 1000:.0f} ms",
            f"{naive_s:.2f} s",
            ratio(warm_s, naive_s),
        ],
        [
            "query p50",
            f"{bm25['p50_ms']:.2f} ms",
            f"{base['p50_ms']:.2f} ms",
            ratio(bm25["p50_ms"], base["p50_ms"]),
        ],
        [
            "query p95",
            f"{bm25['p95_ms']:.2f} ms",
            f"{base['p95_ms']:.2f} ms",
            ratio(bm25["p95_ms"], base["p95_ms"]),
        ],
        [
            "query p99",
            f"{bm25['p99_ms']:.2f} ms",
            f"{base['p99_ms']:.2f} ms",
            ratio(bm25["p99_ms"], base["p99_ms"]),
        ],
        [
            "query p99, CPU time",
            f"{bm25['cpu_p99_ms']:.2f} ms",
            f"{base['cpu_p99_ms']:.2f} ms",
            ratio(bm25["cpu_p99_ms"], base["cpu_p99_ms"]),
        ],
        ["source article ranked first", f"{bm25['top1']:.1%}", f"{base['top1']:.1%}", ""],
        [
            "query p50 / p99, BM25 top-k alone (no re-ranking)",
            f"{top['p50_ms']:.2f} / {top['p99_ms']:.2f} ms",
            f"{base['p50_ms']:.2f} / {base['p99_ms']:.2f} ms",
            ratio(top["p99_ms"], base["p99_ms"]),
        ],
    ]
    console.print(
        table(
            "Retrieval over a generated FAQ (BM25 index beside a naive linear scan)",
            ["", "BM25 (FaqIndex)", "naive baseline", "ratio"],
            rows,
        )
    )
    goals = [
        {
            "target": "query p99 < 5 ms",
            "value": bm25["p99_ms"],
            "baseline": base["p99_ms"],
            "met": bm25["p99_ms"] < 5,
        },
        {
            "target": "index ready at start-up < 1 s (from the cache)",
            "value": warm_s,
            "baseline": naive_s,
            "met": warm_s < 1,
        },
    ]
    console.print(
        table(
            "Targets",
            ["target", "value", "baseline", "verdict"],
            [
                [g["target"], f"{g['value']:.3f}", f"{g['baseline']:.3f}", verdict(g["met"])]
                for g in goals
            ],
        )
    )
    write_json(
        args.json,
        {
            "bench": "retrieval",
            "machine": info,
            "articles": args.articles,
            "seconds": {
                "generate": gen_s,
                "pack_load": load_s,
                "index_build": build_s,
                "index_first_start": first_s,
                "index_cached_start": warm_s,
                "naive_build": naive_s,
            },
            "bm25": bm25,
            "bm25_top_k_only": top,
            "naive": base,
            "targets": goals,
        },
    )


def _bm25_only(index: FaqIndex, query: str) -> list[str]:
    tokens = _tokenize([query])[0]
    docs, _ = index._bm25.retrieve(
        [tokens], k=3, show_progress=False, n_threads=1, return_as="tuple"
    )
    return [index.entries[int(i)].id for i in docs[0]]


if __name__ == "__main__":
    main()
