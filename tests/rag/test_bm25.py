"""The streamed BM25 build scores exactly as bm25s's own ``BM25().index`` does, in any batches."""

from __future__ import annotations

import random
from pathlib import Path

import bm25s
import numpy as np
import numpy.typing as npt
import pytest

from mentor.rag.bm25 import BM25Index, tokenize

WORDS = [
    "board",
    "guest",
    "export",
    "member",
    "invite",
    "plan",
    "price",
    "storage",
    "sync",
    "team",
    "project",
    "file",
    "comment",
    "archive",
    "admin",
    "billing",
    "seat",
    "workspace",
    "folder",
    "search",
    "label",
    "report",
    "running",
    "runs",
    "ran",
    "café",
    "naïve",
    "東京",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "with",
    "on",
    "as",
    "it",
    "by",
]


def corpus(n: int = 300) -> list[str]:
    rng = random.Random(7)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(n)]
    # an empty text, one of only stop words, unicode and punctuation, a repeated word
    texts[5] = ""
    texts[17] = "the of and to a"
    texts[42] = "Ünïcode wörds: naïve CAFÉ, café! 東京 — running?"
    texts[99] = "billing " * 40
    return texts


def reference(texts: list[str]) -> bm25s.BM25:
    model = bm25s.BM25()
    model.index(tokenize(texts), show_progress=False)
    return model


def dense(model: bm25s.BM25) -> dict[str, npt.NDArray[np.float32]]:
    """Each scored term's column of the documents x terms matrix (vocab ids differ by build)."""
    scores = model.scores
    columns = {}
    for term, col in model.vocab_dict.items():
        if col + 1 >= len(scores["indptr"]):
            continue  # the empty token bm25s adds after the scored ones
        start, end = scores["indptr"][col], scores["indptr"][col + 1]
        column = np.zeros(scores["num_docs"], dtype=np.float32)
        column[scores["indices"][start:end]] = scores["data"][start:end]
        columns[term] = column
    return columns


def batched(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def test_the_streamed_matrix_is_bm25s_own() -> None:
    texts = corpus()
    ours = BM25Index.build_batches(batched(texts, 64)).model
    theirs = reference(texts)
    assert set(ours.vocab_dict) == set(theirs.vocab_dict)
    mine, want = dense(ours), dense(theirs)
    assert mine.keys() == want.keys() and len(mine) > 20
    for term in want:
        np.testing.assert_allclose(mine[term], want[term], rtol=1e-6, err_msg=term)
    assert ours.scores["num_docs"] == theirs.scores["num_docs"] == len(texts)
    assert ours.scores["data"].dtype == theirs.scores["data"].dtype
    assert ours.scores["indices"].dtype == theirs.scores["indices"].dtype
    assert ours.scores["indptr"].dtype == theirs.scores["indptr"].dtype


@pytest.mark.parametrize("query", ["billing seat", "café running", "東京 archive", "zyxxy board"])
def test_retrieval_matches_bm25s(query: str) -> None:
    texts = corpus()
    ours = BM25Index.build_batches(batched(texts, 50))
    theirs = reference(texts)
    tokens = tokenize([query])
    rows, scores = theirs.retrieve(tokens, k=10, show_progress=False, n_threads=1)
    got = ours.search(query, 10)
    np.testing.assert_allclose([s for _, s in got], scores[0][scores[0] > 0], rtol=1e-6)
    # ties may come in either order: compare the rows of each distinct score
    want = {(int(r), round(float(s), 5)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0}
    assert {(r, round(s, 5)) for r, s in got} == want


def test_batch_size_does_not_change_the_index() -> None:
    texts = corpus(120)
    whole = BM25Index.build_batches([texts]).model
    for size in (1, 7, 1000):
        model = BM25Index.build_batches(batched(texts, size)).model
        assert model.vocab_dict == whole.vocab_dict
        for key in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(model.scores[key], whole.scores[key])


@pytest.mark.parametrize("texts", [[], ["the of and", ""]], ids=["no texts", "no words"])
def test_an_empty_corpus_finds_nothing(texts: list[str], tmp_path: Path) -> None:
    index = BM25Index.build(texts)
    assert index.size == 0 and index.search("billing", 5) == []
    index.save(tmp_path)
    assert BM25Index.load(tmp_path).search("billing", 5) == []


def test_saved_and_loaded_it_searches_the_same(tmp_path: Path) -> None:
    index = BM25Index.build_batches(batched(corpus(), 33))
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    assert loaded.size == index.size == 300
    assert loaded.search("billing seat", 5) == index.search("billing seat", 5)
    assert len(index.search("billing seat", 5)) == 5
