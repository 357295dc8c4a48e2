"""The chunk store: what retrieval needs of one (:class:`VectorStore`), and LanceDB's store.

**Pluggable.** :class:`mentor.rag.retrieve.Retriever` reads chunks and runs dense search only
through :class:`VectorStore`: pass any store that satisfies it as ``Retriever(index, embedder,
store=...)`` (by default the retriever opens the index's own :class:`LanceStore`). Filters are
store-neutral (:mod:`mentor.rag.filters`); each store translates them. The in-memory fake is
:class:`mentor.testing.MemoryStore` (numpy, exact cosine search), and
``tests/rag/test_store_conformance.py`` is the contract every store must pass: add a store to
its ``STORES`` to check one.

**LanceDB.** :class:`LanceStore`, the one real store, keeps vectors, text and metadata on disk.
LanceDB writes every change as a new table version and never touches old versions, so a build
killed mid-write leaves the last committed version intact. Readers open the table at the version
the index manifest names (:mod:`mentor.rag.index`), which makes the manifest the commit point.

Small collections are searched exactly with one matrix product over vectors held in memory
(faster than any index at this size); from ``ANN_THRESHOLD`` rows up, an IVF index in LanceDB
answers instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch

from mentor.rag.filters import Filters, check_filters, is_glob
from mentor.rag.records import Chunk

TABLE = "chunks"
ANN_THRESHOLD = 100_000
"""Rows from which dense search uses the ANN index instead of exact search."""

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class VectorStore(Protocol):
    """What retrieval needs from a store of embedded chunks.

    A store holds chunks, each with one vector, in a fixed order: a chunk's *row* is its position
    in :meth:`chunks`. Chunk ids are unique. Vectors (stored and queried) are unit length, as
    embedders return them. A store is read-only to retrieval; how it is filled is its own affair.
    """

    def __len__(self) -> int:
        """The number of chunks (0 for an empty store)."""
        ...

    def chunks(self) -> list[Chunk]:
        """Every chunk, in row order (the order BM25 indexes them in); callers do not modify it."""
        ...

    def row_of(self, chunk_id: str) -> int:
        """The row of the chunk with this id; ``KeyError`` when the store has none."""
        ...

    def search(
        self, vector: Vectors, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """The ``(row, score)`` of the ``k`` chunks nearest to ``vector`` (shape ``(dim,)``).

        The score is the cosine similarity, higher is nearer; the list is best first (equal
        scores in any order). Fewer than ``k`` come back when fewer chunks pass the filters,
        none when ``k <= 0``. ``filters`` is the language of :mod:`mentor.rag.filters` (None or
        empty: every chunk); a field it does not know raises ``ValueError``.
        """
        ...


def schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string()),
            pa.field("doc_id", pa.string()),
            pa.field("doc_hash", pa.string()),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("page", pa.int64()),
            pa.field("metadata", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def _rows_to_chunk(row: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        source=row["source"],
        title=row["title"],
        text=row["text"],
        start=int(row["start"]),
        end=int(row["end"]),
        page=None if row["page"] < 0 else int(row["page"]),
        heading=row["heading"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
    )


@dataclass
class DocState:
    hashes: set[str]
    source: str


def sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lance_where(filters: Filters) -> str | None:
    """A filter (:mod:`mentor.rag.filters`) as a LanceDB SQL predicate; None for no filter."""
    check_filters(filters)
    parts = []
    for key, value in filters.items():
        if key == "page":
            parts.append(f"page = {int(value)}")
        elif is_glob(value):
            # LIKE's escape character is the backslash: a literal one (a Windows path) doubles
            literal = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            like = literal.replace("*", "%").replace("?", "_")
            parts.append(f"{key} LIKE {sql_quote(like)}")
        else:
            parts.append(f"{key} = {sql_quote(value)}")
    return " AND ".join(parts) or None


class LanceStore:
    """One LanceDB table of chunks under ``<index>/lance``: a :class:`VectorStore`.

    ``exact_below``: with fewer rows than this, search without filters is one exact matrix
    product in memory; from there on (and with filters always) LanceDB answers, through its
    ANN index once :meth:`create_ann_index` has built one.
    """

    def __init__(self, path: Path, dim: int, *, exact_below: int = ANN_THRESHOLD) -> None:
        import lancedb

        self.path = path
        self.dim = dim
        self.exact_below = exact_below
        self.db = lancedb.connect(str(path))
        if TABLE in self.db.list_tables().tables:
            self.table = self.db.open_table(TABLE)
        else:
            self.table = self.db.create_table(TABLE, schema=schema(dim))
        self.nprobes: int | None = None
        """IVF partitions probed per ANN query (LanceDB's default when None)."""
        self._chunks: list[Chunk] | None = None
        self._matrix: Vectors | None = None
        self._row_of: dict[str, int] | None = None

    # --- writing (always at the latest version) ------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.table.version)

    def latest(self) -> None:
        """Move to the newest version (writers work there; readers stay pinned)."""
        self.table.checkout_latest()  # type: ignore[no-untyped-call]
        self._forget()

    def checkout(self, version: int) -> None:
        self.table.checkout(version)
        self._forget()

    def add(self, chunks: Sequence[Chunk], vectors: Vectors, doc_hashes: dict[str, str]) -> None:
        """Append chunks in one write: a kill leaves either all of them or none."""
        if not chunks:
            return
        if vectors.shape != (len(chunks), self.dim):
            raise ValueError(f"vectors {vectors.shape} do not match {len(chunks)} x {self.dim}")
        columns = {
            "chunk_id": [c.chunk_id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "doc_hash": [doc_hashes[c.doc_id] for c in chunks],
            "source": [c.source for c in chunks],
            "title": [c.title for c in chunks],
            "heading": [c.heading for c in chunks],
            "text": [c.text for c in chunks],
            "start": [c.start for c in chunks],
            "end": [c.end for c in chunks],
            "page": [-1 if c.page is None else c.page for c in chunks],
            "metadata": [
                json.dumps(c.metadata, sort_keys=True) if c.metadata else "" for c in chunks
            ],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)), self.dim
            ),
        }
        self.table.add(pa.table(columns, schema=schema(self.dim)))
        self._forget()

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        for start in range(0, len(doc_ids), 500):
            batch = ", ".join(sql_quote(d) for d in doc_ids[start : start + 500])
            self.table.delete(f"doc_id IN ({batch})")
        self._forget()

    def set_hash(self, doc_id: str, old: str, new: str) -> None:
        """Relabel a document's rows from hash ``old`` to ``new`` in one write."""
        where = f"doc_id = {sql_quote(doc_id)} AND doc_hash = {sql_quote(old)}"
        self.table.update(where=where, values={"doc_hash": new})
        self._forget()

    def delete_where(self, predicate: str) -> None:
        self.table.delete(predicate)
        self._forget()

    def documents(self) -> dict[str, DocState]:
        """What is stored of each document (two hashes after an interrupted update)."""
        found: dict[str, DocState] = {}
        data = self.table.to_arrow().select(["doc_id", "doc_hash", "source"]).to_pydict()
        for doc_id, digest, source in zip(
            data["doc_id"], data["doc_hash"], data["source"], strict=True
        ):
            found.setdefault(doc_id, DocState(set(), source)).hashes.add(digest)
        return found

    def column_batches(self, columns: Sequence[str], rows: int) -> Iterator[dict[str, list[Any]]]:
        """The given columns, up to ``rows`` rows at a time, in row order (that of :meth:`chunks`).

        Only those columns are read, a batch at a time: what a pass over a large table (the BM25
        rebuild) needs without holding every chunk and vector.
        """
        query = self.table.search().select(list(columns)).limit(None)
        for batch in query.to_batches(rows):
            yield {name: batch.column(name).to_pylist() for name in columns}

    def compact(self, keep: int) -> None:
        """Merge small fragments and drop the versions older than version ``keep``.

        LanceDB cleans up by age, so the cut-off is the age of ``keep`` (plus a second):
        ``keep`` and everything after it survive, which is what pinned readers need.
        """
        from datetime import datetime, timedelta

        stamps = {int(v["version"]): v["timestamp"] for v in self.table.list_versions()}
        kept = stamps[keep]
        now = datetime.now(kept.tzinfo) if kept.tzinfo else datetime.now()
        self.table.optimize(cleanup_older_than=now - kept + timedelta(seconds=1))
        self._forget()

    def create_ann_index(self, partitions: int | None = None) -> None:
        """An IVF index with exact distances inside the probed partitions (IVF_FLAT).

        On 200k random vectors it built in 5 s against 70-120 s for IVF_HNSW_SQ and gave the
        same or better recall at each probe depth (bench/rag_beir.py, scale part).
        """
        partitions = partitions or max(1, int(np.sqrt(len(self))))
        self.table.create_index(
            metric="cosine",
            vector_column_name="vector",
            index_type="IVF_FLAT",
            num_partitions=partitions,
            replace=True,
        )

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.table.count_rows())

    def _forget(self) -> None:
        self._chunks, self._matrix, self._row_of = None, None, None

    def _load(self) -> None:
        data = self.table.to_arrow()
        rows = data.drop_columns(["vector"]).to_pylist()
        self._chunks = [_rows_to_chunk(r) for r in rows]
        self._row_of = {c.chunk_id: i for i, c in enumerate(self._chunks)}
        if len(self) < self.exact_below:
            flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            # a writable copy: torch reads it in place for the dense scores
            self._matrix = np.array(flat, dtype=np.float32).reshape(-1, self.dim)

    def chunks(self) -> list[Chunk]:
        if self._chunks is None:
            self._load()
        assert self._chunks is not None
        return self._chunks

    def row_of(self, chunk_id: str) -> int:
        if self._row_of is None:
            self._load()
        assert self._row_of is not None
        return self._row_of[chunk_id]

    def search(
        self, vector: Vectors, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        where = lance_where(filters or {})
        if k <= 0:
            return []
        if self._chunks is None:
            self._load()
        if self._matrix is not None and where is None:
            # torch, not numpy: OpenBLAS's own threads spin after each call and then fight
            # torch's for the cores, which tripled the next query's embedding time on 2 cores
            query_vec = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
            scores = (torch.from_numpy(self._matrix) @ query_vec).numpy()
            k = min(k, len(scores))
            top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=int)
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(int(i), float(scores[i])) for i in top]
        query = self.table.search(vector.astype(np.float32)).metric("cosine").limit(k)  # type: ignore[attr-defined]
        if self.nprobes is not None:
            query = query.nprobes(self.nprobes)
        if where:
            query = query.where(where, prefilter=True)
        found = query.select(["chunk_id", "_distance"]).to_list()
        return [(self.row_of(r["chunk_id"]), 1.0 - float(r["_distance"])) for r in found]
