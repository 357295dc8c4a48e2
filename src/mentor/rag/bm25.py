"""Lexical retrieval: a BM25 index over the chunks (bm25s), saved beside the vector store.

Tokens are lower-cased words with English stop words removed and Snowball-stemmed, the usual
BEIR/Anserini-style setup; BM25 parameters default to Lucene's (k1 = 1.5, b = 0.75).
"""

from __future__ import annotations

from collections.abc import Sequence
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


class BM25Index:
    """BM25 over a fixed list of texts; rows match the chunk store's row order."""

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        import bm25s

        model = bm25s.BM25(k1=k1, b=b)
        model.index(tokenize(texts) if texts else [[""]], show_progress=False)
        return cls(model, len(texts))

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
