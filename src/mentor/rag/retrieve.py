"""Search an index: dense, BM25, or both fused by reciprocal rank fusion, then optionally reranked.

Every stage is timed, so evaluation can report latency per stage.

Run: ``mentor rag search "how do I export a board?" --index idx``.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from mentor.evaluate.retrieval import reciprocal_rank_fusion
from mentor.models.protocols import Embedder
from mentor.rag.bm25 import BM25Index
from mentor.rag.index import Manifest, embed_input
from mentor.rag.store import LanceStore, sql_quote
from mentor.rag.types import Chunk, Hit

Mode = Literal["dense", "bm25", "hybrid"]
FILTER_FIELDS = ("doc_id", "source", "title", "heading", "page")


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    def score(self, query: str, passages: list[str]) -> list[float]: ...


@dataclass(frozen=True)
class SearchConfig:
    """How a query is answered."""

    mode: Mode = "hybrid"
    """dense, bm25, or hybrid (both, fused by reciprocal rank fusion)."""
    k: int = 10
    """Chunks to return."""
    candidates: int = 100
    """How deep each retriever goes before fusion and reranking."""
    rrf_k: float = 60.0
    """The k of reciprocal rank fusion: larger flattens the weight of the top ranks."""
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    rerank_depth: int = 30
    """How many fused candidates the reranker rescores (when one is given)."""
    filters: Mapping[str, str] = field(default_factory=dict)
    """Field -> value; a value with * or ? is a glob (fields: doc_id, source, title, heading,
    page)."""


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    timings: dict[str, float]
    """Seconds per stage: embed, dense, bm25, fuse, rerank."""


def parse_filters(items: list[str]) -> dict[str, str]:
    """``["doc_id=a.md", "source=*.pdf"]`` -> a filter mapping, with a clear error."""
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_FIELDS:
            raise ValueError(
                f"filter {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(FILTER_FIELDS)}"
            )
        filters[key] = value
    return filters


def _sql(filters: Mapping[str, str]) -> str | None:
    parts = []
    for key, value in filters.items():
        if key == "page":
            parts.append(f"page = {int(value)}")
        elif any(ch in value for ch in "*?"):
            like = value.replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_")
            parts.append(f"{key} LIKE {sql_quote(like)}")
        else:
            parts.append(f"{key} = {sql_quote(value)}")
    return " AND ".join(parts) or None


def _matches(chunk: Chunk, filters: Mapping[str, str]) -> bool:
    for key, value in filters.items():
        actual = "" if getattr(chunk, key) is None else str(getattr(chunk, key))
        if not fnmatch.fnmatchcase(actual, value):
            return False
    return True


class Retriever:
    """An opened index, ready to answer queries."""

    def __init__(self, folder: Path, embedder: Embedder) -> None:
        self.folder = folder
        self.manifest = Manifest.read(folder)
        if embedder.dim != self.manifest.dim:
            raise ValueError(
                f"{folder}: built with {self.manifest.config.embedder} ({self.manifest.dim}-d); "
                f"the given embedder {embedder.name} is {embedder.dim}-d"
            )
        self.embedder = embedder
        self.store = LanceStore(folder / "lance", self.manifest.dim)
        self.store.checkout(self.manifest.lance_version)
        bm25_folder = folder / self.manifest.bm25_dir
        self.bm25 = BM25Index.load(bm25_folder)
        ids: list[str] = json.loads((bm25_folder / "ids.json").read_text())
        self._bm25_rows = np.array([self.store.row_of(i) for i in ids], dtype=np.int64)
        self._mask_cache: dict[tuple[tuple[str, str], ...], npt.NDArray[np.bool_]] = {}

    @property
    def chunks(self) -> list[Chunk]:
        return self.store.chunks()

    def _bm25_mask(self, filters: Mapping[str, str]) -> npt.NDArray[np.bool_] | None:
        if not filters:
            return None
        key = tuple(sorted(filters.items()))
        if key not in self._mask_cache:
            chunks = self.chunks
            self._mask_cache[key] = np.array(
                [_matches(chunks[row], filters) for row in self._bm25_rows], dtype=bool
            )
        return self._mask_cache[key]

    def search(
        self, query: str, config: SearchConfig = SearchConfig(), reranker: Reranker | None = None
    ) -> SearchResult:
        timings: dict[str, float] = {}
        stage: dict[str, dict[int, float]] = {}
        rankings: dict[str, list[str]] = {}
        depth = max(config.candidates, config.k)
        if config.mode in ("dense", "hybrid"):
            t0 = time.perf_counter()
            vector = self.embedder.embed([query])[0]
            timings["embed"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            found = self.store.search(vector, depth, where=_sql(config.filters))
            timings["dense"] = time.perf_counter() - t0
            stage["dense"] = dict(found)
            rankings["dense"] = [str(row) for row, _ in found]
        if config.mode in ("bm25", "hybrid"):
            t0 = time.perf_counter()
            found = self.bm25.search(query, depth, mask=self._bm25_mask(config.filters))
            mapped = [(int(self._bm25_rows[row]), score) for row, score in found]
            timings["bm25"] = time.perf_counter() - t0
            stage["bm25"] = dict(mapped)
            rankings["bm25"] = [str(row) for row, _ in mapped]

        t0 = time.perf_counter()
        if config.mode == "hybrid":
            weights = {"dense": config.dense_weight, "bm25": config.bm25_weight}
            fused = reciprocal_rank_fusion(rankings, k=config.rrf_k, weights=weights)
            order = [(int(row), score) for row, score in fused]
        else:
            only = rankings[config.mode]
            order = [(int(row), stage[config.mode][int(row)]) for row in only]
        timings["fuse"] = time.perf_counter() - t0

        chunks = self.chunks
        if reranker is not None and order:
            t0 = time.perf_counter()
            head = order[: config.rerank_depth]
            scores = reranker.score(query, [embed_input(chunks[row]) for row, _ in head])
            stage["rerank"] = {row: s for (row, _), s in zip(head, scores, strict=True)}
            reranked = sorted(zip(head, scores, strict=True), key=lambda x: -x[1])
            order = [(row, s) for (row, _), s in reranked] + order[config.rerank_depth :]
            timings["rerank"] = time.perf_counter() - t0

        hits = []
        for rank, (row, score) in enumerate(order[: config.k], start=1):
            evidence = {name: scores[row] for name, scores in stage.items() if row in scores}
            hits.append(Hit(chunks[row], float(score), rank, evidence))
        return SearchResult(query, hits, timings)
