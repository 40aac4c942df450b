"""FAQ retrieval with BM25 (``bm25s``), stemmed, over title, questions, tags and body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import Stemmer

from supportgraph.pack import FaqEntry

_STEMMER = Stemmer.Stemmer("english")


@dataclass(frozen=True)
class Hit:
    """One retrieved FAQ entry and its BM25 score."""

    entry: FaqEntry
    score: float


def _document(entry: FaqEntry) -> str:
    # Title and questions say what an entry answers: weight them by repeating them.
    head = " ".join([entry.title, *entry.questions, *entry.tags])
    return f"{head} {head} {entry.body}"


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )


class FaqIndex:
    """A BM25 index over a pack's FAQ entries."""

    def __init__(self, entries: Sequence[FaqEntry]) -> None:
        self.entries = list(entries)
        self._bm25 = bm25s.BM25()
        if self.entries:
            self._bm25.index(_tokenize([_document(e) for e in self.entries]), show_progress=False)

    def search(self, query: str, *, k: int = 3, min_score: float = 0.0) -> list[Hit]:
        """The best ``k`` entries scoring at least ``min_score``, best first."""
        if not self.entries or not query.strip():
            return []
        tokens = _tokenize([query[:2000]])
        if not tokens or not tokens[0]:
            return []
        k = min(k, len(self.entries))
        docs, scores = self._bm25.retrieve(
            [tokens[0]], k=k, show_progress=False, n_threads=1, return_as="tuple"
        )
        hits = []
        for idx, score in zip(np.asarray(docs[0]), np.asarray(scores[0]), strict=True):
            if float(score) >= min_score and float(score) > 0.0:
                hits.append(Hit(self.entries[int(idx)], float(score)))
        return hits
