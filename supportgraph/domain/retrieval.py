"""FAQ retrieval with BM25 (``bm25s``), stemmed, over title, questions, tags and body.

Building the index of a large FAQ takes seconds (10,000 articles: tokenising and stemming
about 2 million words); a built index is cached on disk under a hash of the articles and
loaded in milliseconds at the next start-up.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.selection import topk

from supportgraph.domain.pack import FaqEntry

log = logging.getLogger("supportgraph.retrieval")

_STEMMER = Stemmer.Stemmer("english")
CACHE_MIN_ENTRIES = 500
"""Smaller FAQs are indexed in milliseconds: only larger ones are cached on disk."""


@dataclass(frozen=True)
class Hit:
    """One retrieved FAQ entry and its BM25 score."""

    entry: FaqEntry
    score: float
    coverage: float = 1.0
    """Share of the query's terms the entry contains."""
    likeness: float = 0.0
    """How closely the query reads like the entry's title or one of its questions (0-1)."""

    @property
    def relevance(self) -> float:
        """What hits are ranked by: BM25, scaled by coverage and by likeness to the head."""
        return self.score * self.coverage * (0.5 + self.likeness)


def _document(entry: FaqEntry) -> str:
    # Title and questions say what an entry answers: weight them by repeating them.
    head = " ".join([entry.title, *entry.questions, *entry.tags])
    return f"{head} {head} {entry.body}"


def _tokenize(texts: list[str]) -> list[list[str]]:
    tokens: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )
    return tokens


def _cache_key(documents: list[str]) -> str:
    digest = hashlib.sha256(f"bm25s {bm25s.__version__} english stopwords=en v2".encode())
    for doc in documents:
        digest.update(doc.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


class FaqIndex:
    """A BM25 index over a pack's FAQ entries (cached in ``cache_dir`` when it is large).

    Two indexes, in fact: the whole entries, which are searched, and their heads (title and
    questions), whose postings say which of the query's terms an entry's head contains. So a
    query never tokenises an article (on a 10,000-article FAQ, tokenising each candidate
    when first retrieved was two thirds of a query's time and all of its slowest queries).
    """

    def __init__(self, entries: Sequence[FaqEntry], *, cache_dir: Path | None = None) -> None:
        self.entries = list(entries)
        self._head_cache: dict[int, list[_Grams]] = {}
        self._bm25 = bm25s.BM25()
        self._heads_bm25 = bm25s.BM25()
        if not self.entries:
            return
        documents = [_document(e) for e in self.entries]
        path = None
        if cache_dir is not None and len(documents) >= CACHE_MIN_ENTRIES:
            path = cache_dir / f"faq-{_cache_key(documents)}"
            if path.is_dir():
                try:
                    self._bm25 = bm25s.BM25.load(str(path / "entries"))
                    self._heads_bm25 = bm25s.BM25.load(str(path / "heads"))
                    return
                except Exception as exc:  # noqa: BLE001 - a bad cache must never stop a start-up
                    log.warning(
                        "rebuilding an unreadable FAQ index cache", extra={"error": str(exc)}
                    )
                    shutil.rmtree(path, ignore_errors=True)
        self._bm25.index(_tokenize(documents), show_progress=False)
        self._heads_bm25.index(_tokenize([_head(e) for e in self.entries]), show_progress=False)
        if path is not None:
            self._save(path)

    def _save(self, path: Path) -> None:
        """Write the index beside its final name, then rename it (readers never see a half)."""
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._bm25.save(str(partial / "entries"))
            self._heads_bm25.save(str(partial / "heads"))
            os.replace(partial, path)
        except OSError as exc:
            log.warning("could not cache the FAQ index", extra={"error": str(exc)})
            shutil.rmtree(partial, ignore_errors=True)

    def search(
        self, query: str, *, k: int = 3, min_score: float = 0.0, min_coverage: float = 0.0
    ) -> list[Hit]:
        """The best ``k`` relevant entries, best first.

        BM25 alone rewards one rare shared word ("sell" in "do you sell gift cards?" and in
        "Do you sell wholesale?"), so candidates are re-ranked by score x coverage, the share
        of the query's terms the entry contains, and an entry covering less than
        ``min_coverage`` of them is no answer at all.
        """
        if not self.entries or not query.strip():
            return []
        tokens = _tokenize([query[:2000]])
        if not tokens or not tokens[0]:
            return []
        terms = sorted(set(tokens[0]))
        pool = min(max(k * 4, 10), len(self.entries))
        # Per-document scores and bm25s' own top-k, without ``retrieve``'s per-call progress
        # bars and batching (most of its cost for one query).
        scores, docs = topk(self._bm25.get_scores(tokens[0]), pool, backend="numpy", sorted=True)
        keep = (scores >= min_score) & (scores > 0.0)
        scores, docs = scores[keep], docs[keep]
        # Half from the whole entry, half from what it says it answers (title, questions).
        found = _terms_in(self._bm25, terms, docs) + _terms_in(self._heads_bm25, terms, docs)
        coverages = found / (2 * len(terms))
        query_grams = _grams(query[:500])
        hits = []
        for idx, score, coverage in zip(
            docs.tolist(), scores.tolist(), coverages.tolist(), strict=True
        ):
            if coverage >= min_coverage:
                likeness = max((_cosine(query_grams, h) for h in self._heads(idx)), default=0.0)
                hits.append(Hit(self.entries[idx], score, coverage, likeness))
        hits.sort(key=lambda h: h.relevance, reverse=True)
        return hits[:k]

    def _heads(self, idx: int) -> list[_Grams]:
        """Character trigrams of the entry's title and questions."""
        if idx not in self._head_cache:
            entry = self.entries[idx]
            self._head_cache[idx] = [_grams(t) for t in (entry.title, *entry.questions)]
        return self._head_cache[idx]


def _head(entry: FaqEntry) -> str:
    """What an entry says it answers."""
    return " ".join([entry.title, *entry.questions])


def _terms_in(index: bm25s.BM25, terms: Sequence[str], docs: np.ndarray) -> np.ndarray:
    """How many of ``terms`` (stemmed) each of ``docs`` contains, from the index's postings.

    bm25s keeps, per term, the documents it occurs in (a column of its score matrix), each
    once: counting the documents over the terms' postings gives, per document, its terms.
    """
    ids = index.get_tokens_ids(list(terms))
    if not ids:
        return np.zeros(len(docs), dtype=np.int64)
    indptr, indices = index.scores["indptr"], index.scores["indices"]
    postings = np.concatenate([indices[indptr[t] : indptr[t + 1]] for t in ids])
    counts: np.ndarray = np.bincount(postings, minlength=index.scores["num_docs"])[docs]
    return counts


@dataclass(frozen=True)
class _Grams:
    """A text's character trigrams and the length of their count vector."""

    counts: Counter[str]
    norm: float


def _grams(text: str) -> _Grams:
    padded = f"  {' '.join(text.casefold().split())}  "
    counts = Counter([padded[i : i + 3] for i in range(len(padded) - 2)])
    return _Grams(counts, math.sqrt(sum(v * v for v in counts.values())))


def _cosine(query: _Grams, head: _Grams) -> float:
    """Cosine similarity of two trigram vectors (0 when either is empty)."""
    norm = query.norm * head.norm
    if not norm:
        return 0.0
    # Integer counts: the sum is exact in any order, so only shared trigrams are visited.
    shared = query.counts.keys() & head.counts.keys()
    return sum(query.counts[g] * head.counts[g] for g in shared) / norm
