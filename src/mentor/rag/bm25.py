"""Lexical retrieval: a BM25 index over the chunks (bm25s), saved beside the vector store.

Tokens are lower-cased words with English stop words removed and Snowball-stemmed, the usual
BEIR/Anserini-style setup; BM25 parameters default to Lucene's (k1 = 1.5, b = 0.75).

:meth:`BM25Index.build_batches` builds the index from texts read a batch at a time: only the
vocabulary and one (document, term, count) triple per distinct term of a document are kept, so
memory follows the index's size, not the corpus's. It computes the scores matrix bm25s's own
``BM25().index`` would (default "lucene" method) and hands it to a plain ``bm25s.BM25``, so
saving, loading and retrieval are bm25s's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    tokens = bm25s.tokenize(
        list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
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

    def add(self, texts: Sequence[str]) -> None:
        tokens = tokenize(texts)
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

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        return cls.build_batches([texts], k1=k1, b=b)

    @classmethod
    def build_batches(
        cls, batches: Iterable[Sequence[str]], *, k1: float = 1.5, b: float = 0.75
    ) -> BM25Index:
        """The index of the texts of ``batches`` in order; memory holds one batch at a time."""
        import bm25s

        counts = TermCounts()
        for texts in batches:
            if texts:
                counts.add(texts)
        model = bm25s.BM25(k1=k1, b=b)
        if not counts.vocab:  # no texts, or not one word in them: nothing can ever match
            model.index([[""]], show_progress=False)
            return cls(model, 0)
        data, indices, indptr = bm25_matrix(counts, k1, b)
        vocab = dict(counts.vocab)
        vocab.setdefault("", len(vocab))  # bm25s adds the empty token after the scored ones
        model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": counts.size}
        model.vocab_dict = vocab
        model.unique_token_ids_set = set(vocab.values())
        model.nonoccurrence_array = None
        return cls(model, counts.size)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))
        (folder / "size.txt").write_text(str(self.size))

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        import bm25s

        size = int((folder / "size.txt").read_text())
        return cls(bm25s.BM25.load(str(folder), mmap=False), size)

    def search(
        self, query: str, k: int, mask: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[int, float]]:
        """(row, BM25 score) of the k best rows with a positive score, best first."""
        if self.size == 0:
            return []
        k = min(k, self.size)
        tokens = tokenize([query])
        if not any(tokens[0]):
            return []
        weights = None if mask is None else mask.astype(np.float32)
        rows, scores = self.model.retrieve(
            tokens, k=k, show_progress=False, n_threads=1, weight_mask=weights
        )
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]
