"""FAQ retrieval (BM25) over the store pack: paraphrases find their entry; odd queries are safe."""

from __future__ import annotations

import pytest

from supportgraph.domain.pack import Pack
from supportgraph.domain.retrieval import FaqIndex
from tests.utils.packs import faq_entry


@pytest.fixture(scope="module")
def index(store_pack: Pack) -> FaqIndex:
    """The store pack's FAQ index."""
    return FaqIndex(store_pack.faq)


def search(index: FaqIndex, pack: Pack, query: str) -> list[str]:
    """Ids found for ``query`` with the pack's FAQ settings, best first."""
    faq = pack.spec.faq
    return [h.entry.id for h in index.search(query, k=faq.top_k, min_score=faq.min_score)]


@pytest.mark.parametrize(
    ("query", "entry"),
    [
        ("I forgot my login password, how can I make a new one", "password-reset"),
        ("the tracking says it was delivered but there is no parcel at my door", "missing-package"),
        ("which credit cards and payment options can I use", "payment-methods"),
        ("do you deliver to Australia and are there import duties", "international-shipping"),
        ("my discount code is not working at checkout", "promo-codes"),
        ("you sent me the wrong item", "wrong-item"),
    ],
)
def test_paraphrase_ranks_its_entry_first(
    index: FaqIndex, store_pack: Pack, query: str, entry: str
) -> None:
    assert faq_entry(store_pack, entry) is not None
    assert search(index, store_pack, query)[:1] == [entry]


@pytest.mark.parametrize(
    "query",
    ["", "   \n\t", "🙂🙂🙂", "?!?!", "the and of to", "zyxwv qqqq", "qwxz " * 2000, "x" * 10_000],
    ids=[
        "empty",
        "blank",
        "emoji",
        "punctuation",
        "stopwords",
        "no-match",
        "10k-words",
        "10k-char",
    ],
)
def test_odd_queries_return_nothing(index: FaqIndex, query: str) -> None:
    assert index.search(query, k=3, min_score=0.0) == []


def test_a_very_long_relevant_query_is_bounded(index: FaqIndex) -> None:
    query = "how do I reset my password " * 400
    assert len(query) > 10_000
    hits = index.search(query, k=3)
    assert 1 <= len(hits) <= 3
    assert hits[0].entry.id == "password-reset"


def test_hits_are_sorted_bounded_and_above_the_minimum(index: FaqIndex) -> None:
    hits = index.search("shipping costs and delivery times to Canada", k=5, min_score=1.0)
    assert 2 <= len(hits) <= 5
    relevance = [h.relevance for h in hits]
    assert relevance == sorted(relevance, reverse=True)
    scores = [h.score for h in hits]
    assert min(scores) >= 1.0
    top = max(scores)
    assert index.search("shipping costs and delivery times to Canada", min_score=top + 0.01) == []


def test_k_larger_than_the_faq(store_pack: Pack) -> None:
    small = FaqIndex(store_pack.faq[:2])
    hits = small.search(store_pack.faq[1].title, k=10)
    assert [h.entry.id for h in hits][:1] == [store_pack.faq[1].id]
    assert len(hits) <= 2


def test_an_empty_faq_finds_nothing() -> None:
    assert FaqIndex([]).search("where is my order") == []


def test_coverage_from_the_postings_is_the_share_of_query_terms_each_entry_has(
    store_pack: Pack,
) -> None:
    """Coverage comes from the indexes' postings; it must equal tokenising the entries."""
    from supportgraph.domain.retrieval import _document, _head, _tokenize

    index = FaqIndex(store_pack.faq)
    queries = [q for e in store_pack.faq[:15] for q in e.questions[:2]]
    queries += ["refund for the wrong item, please", "shipping to Canada and returns"]
    checked = 0
    for query in queries:
        terms = set(_tokenize([query])[0])
        for hit in index.search(query, k=10):
            body, head = (set(t) for t in _tokenize([_document(hit.entry), _head(hit.entry)]))
            expected = (len(terms & body) + len(terms & head)) / (2 * len(terms))
            assert hit.coverage == pytest.approx(expected), (query, hit.entry.id)
            checked += 1
    assert checked > 50
    assert any(0 < h.coverage < 1 for q in queries for h in index.search(q, k=10)), "not vacuous"
