"""The contract of :class:`mentor.rag.store.VectorStore`, run against every store.

Every test takes a store from :data:`STORES`: a function that fills a new store, under a folder
of its own, with the given chunks and their vectors in that order. Adding a store to the suite
is one line there. The data are hand-made so the answers are known: nine unit vectors at known
angles from the first axis (the score of a chunk for that axis is the cosine of its angle), and
chunks whose fields test the filter language (:mod:`mentor.rag.filters`), quotes and SQL's
own wildcards included.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mentor.rag.index import IndexConfig, Manifest, build_index, commit, embed_input, open_store
from mentor.rag.records import Chunk
from mentor.rag.store import LanceStore, VectorStore
from mentor.testing import HashEmbedder, MemoryStore

Vectors = npt.NDArray[np.float32]
Factory = Callable[[Path, Sequence[Chunk], Vectors], VectorStore]


def memory(folder: Path, chunks: Sequence[Chunk], vectors: Vectors) -> VectorStore:
    return MemoryStore(chunks, vectors)


def lance(
    folder: Path, chunks: Sequence[Chunk], vectors: Vectors, *, lancedb_search: bool = False
) -> VectorStore:
    """Written as ``build_index`` writes (appends in groups, then the commit: BM25, manifest,
    compaction), then opened as the retriever opens it. ``lancedb_search`` sends every search
    through LanceDB's own query, the path of collections too big for exact search in memory."""
    writer = LanceStore(folder / "lance", vectors.shape[1])
    half = len(chunks) // 2
    for part in (slice(0, half), slice(half, None)):
        writer.add(chunks[part], vectors[part], {c.doc_id: "sha" for c in chunks})
    commit(folder, writer, IndexConfig())
    if not lancedb_search:
        return open_store(folder)
    manifest = Manifest.read(folder)
    store = LanceStore(folder / "lance", manifest.dim, exact_below=0)
    store.checkout(manifest.lance_version)
    return store


STORES: dict[str, Factory] = {
    "memory": memory,
    "lance": lance,
    "lance-lancedb-search": functools.partial(lance, lancedb_search=True),
}


@pytest.fixture(params=list(STORES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., VectorStore]:
    factory = STORES[request.param]
    made = iter(range(100))
    return lambda chunks, vectors: factory(tmp_path / f"store-{next(made)}", chunks, vectors)


def _chunk(
    doc_id: str,
    n: int,
    title: str,
    text: str,
    *,
    page: int | None = None,
    heading: str = "",
    metadata: dict[str, str] | None = None,
) -> Chunk:
    source = f"/docs/{doc_id}"
    return Chunk(
        f"{doc_id}#{n}", doc_id, source, title, text, 0, len(text), page, heading, metadata or {}
    )


CHUNKS = [
    _chunk("guide.md", 0, "Guide", "Install the app.", heading="Setup"),
    _chunk("guide.md", 1, "Guide", "Reset a password.", heading="Setup > Accounts"),
    _chunk("report.pdf", 0, "Report", "Revenue grew.", page=1),
    _chunk("report.pdf", 1, "Report", "Costs fell.", page=2),
    _chunk("report.pdf", 2, "Report", "Outlook.", page=2, heading="Summary"),
    _chunk("o'brien.txt", 0, "O'Brien's notes", "Call back on Monday."),
    _chunk("rates.md", 0, "100% rates_2024", "Rates rise in May."),
    _chunk("misc/a.md", 0, "A", "Odds and ends.", metadata={"lang": "en"}),
    _chunk("win.txt", 0, r"C:\docs\win", "Paths."),
]
DEGREES = [50, 10, 70, 30, 0, 60, 20, 40, 80]
"""Angle of each row's vector from the first axis; the rows nearest that axis: 4, 1, 6, 3, ..."""


def _vectors() -> Vectors:
    rows = []
    for row, degrees in enumerate(DEGREES):
        angle = math.radians(degrees)
        vector = np.zeros(4)
        vector[0] = math.cos(angle)
        vector[1 + row % 3] = math.sin(angle)  # off-axis parts in different directions
        rows.append(vector)
    return np.array(rows, dtype=np.float32)


VECTORS = _vectors()
AXIS = np.eye(4, dtype=np.float32)[0]
BY_ANGLE = sorted(range(len(DEGREES)), key=lambda row: DEGREES[row])


@pytest.fixture
def store(make_store: Callable[..., VectorStore]) -> VectorStore:
    return make_store(CHUNKS, VECTORS)


def _rows(found: list[tuple[int, float]]) -> list[int]:
    return [row for row, _ in found]


# --- what it holds ----------------------------------------------------------------------------


def test_it_is_a_vector_store(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


def test_count_chunks_in_order_and_ids(store: VectorStore) -> None:
    assert len(store) == len(CHUNKS)
    assert store.chunks() == CHUNKS  # every field, page None and metadata included, in order
    assert store.chunks() == store.chunks()  # rows are stable between calls


def test_row_of_is_the_position_in_chunks(store: VectorStore) -> None:
    for row, chunk in enumerate(store.chunks()):
        assert store.row_of(chunk.chunk_id) == row
    with pytest.raises(KeyError):
        store.row_of("absent.md#0")


# --- search ------------------------------------------------------------------------------------


def test_top_k_is_best_first_with_cosine_scores(store: VectorStore) -> None:
    found = store.search(AXIS, 3)
    assert _rows(found) == [4, 1, 6]
    scores = [score for _, score in found]
    assert scores == pytest.approx([1.0, math.cos(math.radians(10)), math.cos(math.radians(20))])
    everything = store.search(AXIS, len(CHUNKS))
    assert _rows(everything) == BY_ANGLE
    expected = [math.cos(math.radians(DEGREES[row])) for row in BY_ANGLE]
    assert [s for _, s in everything] == pytest.approx(expected, abs=1e-6)


def test_scores_are_cosine_similarities_for_any_query(store: VectorStore) -> None:
    query = np.array([-0.3, 0.2, -0.8, 0.1], dtype=np.float32)
    query /= np.linalg.norm(query)
    cosines = VECTORS.astype(np.float64) @ query
    found = store.search(query, len(CHUNKS))
    assert _rows(found) == list(np.argsort(-cosines, kind="stable"))
    assert [s for _, s in found] == pytest.approx(sorted(cosines, reverse=True), abs=1e-6)
    assert min(s for _, s in found) < 0  # opposite vectors score below zero: no clipping


def test_each_chunk_finds_itself_first(store: VectorStore) -> None:
    for row, vector in enumerate(VECTORS):
        [(best, score)] = store.search(vector, 1)
        assert best == row and score == pytest.approx(1.0, abs=1e-6)


def test_k_larger_than_the_store_returns_everything_once(store: VectorStore) -> None:
    found = store.search(AXIS, 100)
    assert _rows(found) == BY_ANGLE
    assert store.search(AXIS, 0) == []


# --- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "rows"),
    [
        ({}, {0, 1, 2, 3, 4, 5, 6, 7, 8}),
        ({"doc_id": "guide.md"}, {0, 1}),
        ({"doc_id": "guide"}, set()),  # a value without wildcards matches the whole field
        ({"source": "*.pdf"}, {2, 3, 4}),
        ({"source": "*.pdf", "page": "2"}, {3, 4}),  # every pair must hold
        ({"page": "1"}, {2}),  # chunks without a page never match one
        ({"heading": "Setup"}, {0}),
        ({"heading": "Setup*"}, {0, 1}),
        ({"doc_id": "misc/?.md"}, {7}),
        ({"doc_id": "?.md"}, set()),  # ? is exactly one character
        ({"title": "guide"}, set()),  # case-sensitive
        ({"title": "O'Brien's notes"}, {5}),  # quotes are quoted
        ({"title": "O'Brien*"}, {5}),
        ({"title": "100% rates_2024"}, {6}),
        ({"title": "100% rates?2024"}, {6}),
        ({"title": "1%"}, set()),  # SQL's wildcards are plain characters here
        ({"title": "100_*"}, set()),
        ({"title": "[RG]*"}, set()),  # and so are brackets
        ({"title": r"C:\docs\win"}, {8}),
        ({"title": r"C:\docs*"}, {8}),  # and backslashes, SQL's escape character
        ({"title": r"C:\\docs*"}, set()),
        ({"doc_id": "nothing*"}, set()),
    ],
)
def test_filters_select_the_same_chunks_in_every_store(
    store: VectorStore, filters: dict[str, str], rows: set[int]
) -> None:
    found = store.search(AXIS, 100, filters)
    assert set(_rows(found)) == rows
    # Filtering removes rows and changes nothing else: same order, same scores.
    unfiltered = [(row, score) for row, score in store.search(AXIS, 100) if row in rows]
    assert _rows(found) == _rows(unfiltered)
    assert [s for _, s in found] == pytest.approx([s for _, s in unfiltered], abs=1e-6)
    assert _rows(store.search(AXIS, 1, filters)) == _rows(unfiltered)[:1]


def test_a_filter_on_an_unknown_field_or_a_bad_page_is_refused(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="colour"):
        store.search(AXIS, 3, {"colour": "red"})
    with pytest.raises(ValueError, match="page"):
        store.search(AXIS, 3, {"page": "*"})


# --- an empty store -----------------------------------------------------------------------------


def test_an_empty_store(make_store: Callable[..., VectorStore]) -> None:
    empty = make_store([], np.zeros((0, 4), dtype=np.float32))
    assert len(empty) == 0 and empty.chunks() == []
    assert empty.search(AXIS, 5) == []
    assert empty.search(AXIS, 5, {"source": "*.pdf"}) == []
    with pytest.raises(KeyError):
        empty.row_of("guide.md#0")


# --- against the store build_index writes ------------------------------------------------------


def test_agrees_with_the_store_build_index_wrote(
    make_store: Callable[..., VectorStore], docs: Path, tmp_path: Path
) -> None:
    """A store holding what ``build_index`` stored for a small corpus answers as the built one:
    same chunks, and the same hits with the same scores for every query and filter."""
    embedder = HashEmbedder(dim=256)
    build_index(tmp_path / "idx", [docs], embedder)
    built = open_store(tmp_path / "idx")
    chunks = built.chunks()
    store = make_store(chunks, embedder.embed([embed_input(c) for c in chunks]))
    assert store.chunks() == chunks
    queries = embedder.embed(["refunds after cancellation", "export a board", "encrypted data"])
    for filters in (None, {"doc_id": "docs/b*"}, {"doc_id": "docs/*s*.md"}, {"title": "B*"}):
        for query in queries:
            want = built.search(query, 4, filters)
            got = store.search(query, 4, filters)
            assert want and _rows(got) == _rows(want)
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
