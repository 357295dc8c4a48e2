"""Lexical retrieval: a BM25 index over the chunks (bm25s), saved beside the vector store.

Tokens are lower-cased words with stop words removed and Snowball-stemmed, the usual
BEIR/Anserini-style setup; BM25 parameters default to Lucene's (k1 = 1.5, b = 0.75). The
:class:`Analyzer` says which language's stop words and stemmer (English unless the index was
tuned otherwise, see :mod:`mentor.rag.lexical`); it is saved with the index, so a query is
tokenized exactly as the indexed texts were.

:meth:`BM25Index.build_batches` builds the index from texts read a batch at a time: only the
vocabulary and one (document, term, count) triple per distinct term of a document are kept, so
memory follows the index's size, not the corpus's. It computes the scores matrix bm25s's own
``BM25().index`` would (default "lucene" method) and hands it to a plain ``bm25s.BM25``, so
saving, loading and retrieval are bm25s's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ANALYZER = "analyzer.json"
STOPWORD_LISTS = {
    "english": "STOPWORDS_EN",
    "german": "STOPWORDS_GERMAN",
    "french": "STOPWORDS_FRENCH",
    "spanish": "STOPWORDS_SPANISH",
    "italian": "STOPWORDS_ITALIAN",
    "portuguese": "STOPWORDS_PORTUGUESE",
    "dutch": "STOPWORDS_DUTCH",
    "danish": "STOPWORDS_DANISH",
    "norwegian": "STOPWORDS_NORWEGIAN",
    "swedish": "STOPWORDS_SWEDISH",
    "russian": "STOPWORDS_RUSSIAN",
    "turkish": "STOPWORDS_TURKISH",
}
"""The languages with both a stop-word list (bm25s) and a Snowball stemmer (PyStemmer), by
PyStemmer's name, with the name of bm25s's list."""


@dataclass(frozen=True)
class Analyzer:
    """How texts become BM25 terms: lower-cased words, then the language's stop words out and
    its Snowball stemmer applied, each only when asked. The default is mentor's historical one."""

    language: str | None = "english"
    """A key of STOPWORD_LISTS, or None: no stop words and no stemming (language unknown)."""
    stem: bool = True
    """Apply the language's Snowball stemmer."""
    stopwords: bool = True
    """Drop the language's stop words."""

    def __post_init__(self) -> None:
        if self.language is not None and self.language not in STOPWORD_LISTS:
            raise ValueError(
                f"analyzer language {self.language!r}: expected one of "
                f"{', '.join(STOPWORD_LISTS)} or None"
            )

    def describe(self) -> str:
        if self.language is None or not (self.stem or self.stopwords):
            return "words only"
        parts = [p for p, on in (("stop words", self.stopwords), ("stemming", self.stem)) if on]
        return f"{self.language} {' + '.join(parts)}"

    def save(self, folder: Path) -> None:
        (folder / ANALYZER).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> Analyzer:
        """The analyser saved in a BM25 folder; the default for one saved before analysers."""
        path = folder / ANALYZER
        return cls(**json.loads(path.read_text())) if path.exists() else cls()


@cache
def _stemmer(language: str) -> Any:
    import Stemmer

    return Stemmer.Stemmer(language)


@cache
def stopword_list(language: str) -> tuple[str, ...]:
    import bm25s.stopwords

    return tuple(getattr(bm25s.stopwords, STOPWORD_LISTS[language]))


def tokenize(texts: Sequence[str], analyzer: Analyzer = Analyzer()) -> list[list[str]]:
    import bm25s

    language = analyzer.language
    stop: list[str] = (
        list(stopword_list(language)) if language is not None and analyzer.stopwords else []
    )
    stemmer = _stemmer(language) if language is not None and analyzer.stem else None
    tokens = bm25s.tokenize(
        list(texts), stopwords=stop, stemmer=stemmer, return_ids=False, show_progress=False
    )
    return [list(t) for t in tokens]


@dataclass
class TermCounts:
    """Term counts of a corpus fed a batch of texts at a time, in document order."""

    vocab: dict[str, int] = field(default_factory=dict)
    docs: list[npt.NDArray[np.int32]] = field(default_factory=list)
    terms: list[npt.NDArray[np.int32]] = field(default_factory=list)
    counts: list[npt.NDArray[np.float32]] = field(default_factory=list)
    lengths: list[npt.NDArray[np.int64]] = field(default_factory=list)
    size: int = 0
    analyzer: Analyzer = field(default_factory=Analyzer)

    def add(self, texts: Sequence[str]) -> None:
        tokens = tokenize(texts, self.analyzer)
        ids = [self.vocab.setdefault(t, len(self.vocab)) for doc in tokens for t in doc]
        lengths = np.array([len(doc) for doc in tokens], dtype=np.int64)
        doc_of = np.repeat(np.arange(self.size, self.size + len(tokens), dtype=np.int64), lengths)
        # one key per (document, term) pair, sorted by document then term
        keys, counts = np.unique((doc_of << 32) | np.array(ids, dtype=np.int64), return_counts=True)
        self.docs.append((keys >> 32).astype(np.int32))
        self.terms.append((keys & 0xFFFFFFFF).astype(np.int32))
        self.counts.append(counts.astype(np.float32))
        self.lengths.append(lengths)
        self.size += len(tokens)


def count_terms(batches: Iterable[Sequence[str]], analyzer: Analyzer = Analyzer()) -> TermCounts:
    """The term counts of the texts of ``batches``, in order, one batch in memory at a time."""
    counts = TermCounts(analyzer=analyzer)
    for texts in batches:
        if texts:
            counts.add(texts)
    return counts


def bm25_matrix(
    counts: TermCounts, k1: float, b: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """(data, indices, indptr) of the CSC documents x terms BM25 matrix, as bm25s builds it.

    Lucene BM25: idf = log(1 + (N - df + 0.5) / (df + 0.5)), tf part tf / (tf + k1 (1 - b +
    b dl / avgdl)); computed in float64 and stored as float32 like bm25s does. Each batch is
    scored and written straight to its place in the matrix, so nothing corpus-sized but the
    matrix itself is allocated.
    """
    n_vocab, n_docs = len(counts.vocab), counts.size
    lengths = np.concatenate(counts.lengths)
    df = np.zeros(n_vocab, dtype=np.int64)
    for terms in counts.terms:
        np.add.at(df, terms, 1)  # a term appears once per document that has it
    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    avg_len = float(lengths.mean()) if n_vocab else 1.0
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    data = np.empty(indptr[-1], dtype=np.float32)
    indices = np.empty(indptr[-1], dtype=np.int32)
    heads = indptr[:-1].copy()  # next free slot of each term's column
    for docs, terms, tf32 in zip(counts.docs, counts.terms, counts.counts, strict=True):
        tf = tf32.astype(np.float64)
        norm = k1 * ((1 - b) + b * lengths[docs] / avg_len)
        scores = (idf[terms] * (tf / (norm + tf))).astype(np.float32)
        # documents ascend within a term after a stable sort by term, as CSC wants them
        order = np.argsort(terms, kind="stable")
        by_term = terms[order]
        present, first, seen = np.unique(by_term, return_index=True, return_counts=True)
        slots = heads[by_term] + np.arange(len(order)) - np.repeat(first, seen)
        data[slots], indices[slots] = scores[order], docs[order]
        heads[present] += seen
    return data, indices, indptr


class BM25Index:
    """BM25 over a fixed list of texts; rows match the chunk store's row order."""

    def __init__(self, model: Any, size: int, analyzer: Analyzer = Analyzer()) -> None:
        self.model = model
        self.size = size
        self.analyzer = analyzer

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        analyzer: Analyzer = Analyzer(),
    ) -> BM25Index:
        return cls.build_batches([texts], k1=k1, b=b, analyzer=analyzer)

    @classmethod
    def build_batches(
        cls,
        batches: Iterable[Sequence[str]],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        analyzer: Analyzer = Analyzer(),
    ) -> BM25Index:
        """The index of the texts of ``batches`` in order; memory holds one batch at a time."""
        return cls.from_counts(count_terms(batches, analyzer), k1=k1, b=b)

    @classmethod
    def from_counts(cls, counts: TermCounts, *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """The index of counted texts: several (k1, b) from one tokenization (the tuner's grid)."""
        import bm25s

        model = bm25s.BM25(k1=k1, b=b)
        if not counts.vocab:  # no texts, or not one word in them: nothing can ever match
            model.index([[""]], show_progress=False)
            return cls(model, 0, counts.analyzer)
        data, indices, indptr = bm25_matrix(counts, k1, b)
        vocab = dict(counts.vocab)
        vocab.setdefault("", len(vocab))  # bm25s adds the empty token after the scored ones
        model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": counts.size}
        model.vocab_dict = vocab
        model.unique_token_ids_set = set(vocab.values())
        model.nonoccurrence_array = None
        return cls(model, counts.size, counts.analyzer)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))
        (folder / "size.txt").write_text(str(self.size))
        self.analyzer.save(folder)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        import bm25s

        size = int((folder / "size.txt").read_text())
        return cls(bm25s.BM25.load(str(folder), mmap=False), size, Analyzer.load(folder))

    def search(
        self, query: str, k: int, mask: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[int, float]]:
        """(row, BM25 score) of the k best rows with a positive score, best first."""
        if self.size == 0:
            return []
        k = min(k, self.size)
        tokens = tokenize([query], self.analyzer)
        if not any(tokens[0]):
            return []
        weights = None if mask is None else mask.astype(np.float32)
        rows, scores = self.model.retrieve(
            tokens, k=k, show_progress=False, n_threads=1, weight_mask=weights
        )
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]
