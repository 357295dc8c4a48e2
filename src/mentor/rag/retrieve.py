"""Search an index: dense, BM25, or both fused by reciprocal rank fusion, then optionally reranked.

Every stage is timed, so evaluation can report latency per stage.

    retriever = Retriever(Path("idx"), embedder)        # or open_retriever(Path("idx"))
    result = retriever.search("how do I export a board?", SearchConfig(k=5), reranker=None)

Pluggable parts, each a small protocol, with the fake that stands in for it in tests (all in
:mod:`mentor.testing`, none of them needing torch):

- the embedder (:class:`mentor.models.protocols.Embedder`): ``HashEmbedder``;
- the vector store (:class:`mentor.rag.store.VectorStore`, passed as ``store=``; by default
  the index's LanceDB table at the manifest's version): ``MemoryStore``;
- the reranker (:class:`Reranker`, per search): ``KeywordReranker``;
- the query expander (:class:`mentor.rag.expansion.QueryExpander`, per search), whose
  generator ``ScriptedGenerator`` fakes.

Filters (``SearchConfig.filters``) are the store-neutral language of :mod:`mentor.rag.filters`:
the store applies them to dense search, the retriever itself to BM25.

Run: ``mentor rag search "how do I export a board?" --index idx``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mentor.evaluate.retrieval import reciprocal_rank_fusion
from mentor.models.protocols import Embedder
from mentor.rag.bm25 import BM25Index
from mentor.rag.expansion import Expansion, QueryExpander
from mentor.rag.filters import FILTER_FIELDS, check_filters, matches
from mentor.rag.fusion import Fusion, Normalization, Scored, fuse, probe_weights
from mentor.rag.index import Manifest, embed_input, embedder_location, open_store
from mentor.rag.records import Chunk, Hit
from mentor.rag.store import VectorStore

Mode = Literal["dense", "bm25", "hybrid"]


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant.

    ``CrossEncoderReranker`` (:mod:`mentor.rag.reranker`) is the real one; the fake is
    :class:`mentor.testing.KeywordReranker`.
    """

    def score(self, query: str, passages: list[str]) -> list[float]:
        """One score per passage, in the order given (an empty list for no passages)."""
        ...


class Searcher(Protocol):
    """What answering and evaluation need from an index; :class:`Retriever` is one."""

    def search(
        self, query: str, config: SearchConfig = ..., reranker: Reranker | None = None
    ) -> SearchResult: ...


@dataclass(frozen=True)
class SearchConfig:
    """How a query is answered."""

    mode: Mode = "hybrid"
    """dense, bm25, or hybrid (both, fused as ``fusion`` says)."""
    k: int = 10
    """Chunks to return."""
    candidates: int = 100
    """How deep each retriever goes before fusion and reranking."""
    rrf_k: float = 60.0
    """The k of reciprocal rank fusion: larger flattens the weight of the top ranks."""
    dense_weight: float = 1.0
    """Weight of the dense ranks in reciprocal rank fusion."""
    bm25_weight: float = 1.0
    """Weight of the BM25 ranks in reciprocal rank fusion."""
    fusion: Fusion = "rrf"
    """How hybrid fuses: rrf (ranks only) or convex (normalised scores, alpha * dense +
    (1 - alpha) * BM25); see :mod:`mentor.rag.fusion`."""
    alpha: float = 0.5
    """Share of the dense score in convex fusion, in [0, 1]."""
    normalization: Normalization = "minmax"
    """How convex fusion puts scores on one scale: minmax or zscore."""
    rerank_depth: int = 30
    """How many fused candidates the reranker rescores (when one is given)."""
    rerank_fusion: bool = True
    """Fuse the reranker's order with the first stage's by RRF instead of replacing it: a
    reranker trained on few examples then adds its signal without discarding the first stage.
    On SciFact (held-out train queries) fusing gave nDCG@10 0.775 against 0.716 for replacing
    and 0.739 for no reranker (bench/rag_beir.py), so it is the default."""
    filters: Mapping[str, str] = field(default_factory=dict)
    """Field -> value; a value with * or ? is a glob (fields: doc_id, source, title, heading,
    page); see :mod:`mentor.rag.filters`."""

    def weights(self, probes: Iterable[str]) -> dict[str, float]:
        """Each probe's weight (``dense:i`` / ``bm25:i``) in the fusion this config asks for."""
        return probe_weights(
            list(probes),
            fusion=self.fusion,
            alpha=self.alpha,
            dense_weight=self.dense_weight,
            bm25_weight=self.bm25_weight,
        )

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "bm25", "hybrid"):
            raise ValueError(f"mode {self.mode!r}: expected dense, bm25 or hybrid")
        if self.fusion not in ("rrf", "convex"):
            raise ValueError(f"fusion {self.fusion!r}: expected rrf or convex")
        if self.normalization not in ("minmax", "zscore"):
            raise ValueError(f"normalization {self.normalization!r}: expected minmax or zscore")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.k < 1 or self.candidates < 1:
            raise ValueError(f"k and candidates must be >= 1, got {self.k} and {self.candidates}")


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
                f"filter {item!r}: expected FIELD=VALUE, FIELD one of {', '.join(FILTER_FIELDS)}"
            )
        filters[key] = value
    check_filters(filters)
    return filters


class Retriever:
    """An opened index, ready to answer queries.

    The index folder gives the manifest and the BM25 index; ``store`` answers dense search and
    holds the chunks. By default (None) it is the index's LanceDB table at the version the
    manifest names; any :class:`mentor.rag.store.VectorStore` holding the same chunks (same ids,
    any row order) and vectors from the same embedder may stand in for it.
    """

    def __init__(self, folder: Path, embedder: Embedder, store: VectorStore | None = None) -> None:
        self.folder = folder
        self.manifest = Manifest.read(folder)
        if embedder.dim != self.manifest.dim:
            raise ValueError(
                f"{folder}: built with {self.manifest.config.embedder} ({self.manifest.dim}-d); "
                f"the given embedder {embedder.name} is {embedder.dim}-d"
            )
        self.embedder = embedder
        # not `store or ...`: a store with __len__ is falsy when empty
        self.store: VectorStore = open_store(folder, self.manifest) if store is None else store
        bm25_folder = folder / self.manifest.bm25_dir
        self.bm25 = BM25Index.load(bm25_folder)
        ids: list[str] = json.loads((bm25_folder / "ids.json").read_text())
        self._bm25_rows = np.array([self._row_in_store(i) for i in ids], dtype=np.int64)
        if len(self.store) != len(ids):
            raise ValueError(
                f"{folder}: the store holds {len(self.store)} chunks, the index {len(ids)}"
            )
        self._mask_cache: dict[tuple[tuple[str, str], ...], npt.NDArray[np.bool_]] = {}

    def _row_in_store(self, chunk_id: str) -> int:
        try:
            return self.store.row_of(chunk_id)
        except KeyError:
            raise ValueError(
                f"{self.folder}: the store lacks chunk {chunk_id!r} of the index"
            ) from None

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
                [matches(chunks[row], filters) for row in self._bm25_rows], dtype=bool
            )
        return self._mask_cache[key]

    def search(
        self,
        query: str,
        config: SearchConfig = SearchConfig(),
        reranker: Reranker | None = None,
        expander: QueryExpander | None = None,
    ) -> SearchResult:
        check_filters(config.filters)  # before any work, whichever retrievers run
        timings: dict[str, float] = {}
        expansion = Expansion()
        if expander is not None:
            t0 = time.perf_counter()
            expansion = expander.expand(query)
            timings["expand"] = time.perf_counter() - t0
        texts = [query, *expansion.queries]
        dense_texts = [*texts, *expansion.dense_texts] if config.mode != "bm25" else []
        lexical_texts = texts if config.mode != "dense" else []
        depth = max(config.candidates, config.k)

        # One ranking per probe; the first of each kind is the original query, whose scores are
        # kept as evidence (comparable across queries, unlike fused scores). Rankings name chunks
        # by id, not row: fusion breaks ties by name, and rows are the store's own order.
        chunks = self.chunks
        row_of = self.store.row_of
        rankings: dict[str, Scored] = {}
        evidence: dict[str, dict[int, float]] = {}
        if dense_texts:
            t0 = time.perf_counter()
            vectors = self.embedder.embed(dense_texts)
            timings["embed"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i, vector in enumerate(vectors):
                found = self.store.search(vector, depth, config.filters)
                rankings[f"dense:{i}"] = [(chunks[row].chunk_id, s) for row, s in found]
                if i == 0:
                    evidence["dense"] = dict(found)
            timings["dense"] = time.perf_counter() - t0
        if lexical_texts:
            t0 = time.perf_counter()
            mask = self._bm25_mask(config.filters)
            for i, text in enumerate(lexical_texts):
                found = self.bm25.search(text, depth, mask=mask)
                mapped = [(int(self._bm25_rows[row]), score) for row, score in found]
                rankings[f"bm25:{i}"] = [(chunks[row].chunk_id, s) for row, s in mapped]
                if i == 0:
                    evidence["bm25"] = dict(mapped)
            timings["bm25"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if len(rankings) == 1:  # a single retriever keeps its own scores
            kind = next(iter(evidence))
            [ranking] = rankings.values()
            order = [(row, evidence[kind][row]) for row in (row_of(c) for c, _ in ranking)]
        else:
            fused = fuse(
                rankings,
                config.weights(rankings),
                fusion=config.fusion,
                rrf_k=config.rrf_k,
                method=config.normalization,
            )
            order = [(row_of(chunk_id), score) for chunk_id, score in fused]
        timings["fuse"] = time.perf_counter() - t0

        if reranker is not None and order:
            t0 = time.perf_counter()
            head = order[: config.rerank_depth]
            scores = reranker.score(query, [embed_input(chunks[row]) for row, _ in head])
            evidence["rerank"] = {row: s for (row, _), s in zip(head, scores, strict=True)}
            reranked = sorted(zip(head, scores, strict=True), key=lambda x: -x[1])
            if config.rerank_fusion:
                both = {
                    "first": [chunks[row].chunk_id for row, _ in head],
                    "rerank": [chunks[row].chunk_id for (row, _), _ in reranked],
                }
                fused = reciprocal_rank_fusion(both, k=config.rrf_k)
                top = [(row_of(chunk_id), score) for chunk_id, score in fused]
            else:
                top = [(row, s) for (row, _), s in reranked]
            order = top + order[config.rerank_depth :]
            timings["rerank"] = time.perf_counter() - t0

        hits = []
        for rank, (row, score) in enumerate(order[: config.k], start=1):
            stages = {name: values[row] for name, values in evidence.items() if row in values}
            hits.append(Hit(chunks[row], float(score), rank, stages))
        return SearchResult(query, hits, timings)


def open_retriever(index: Path, *, device: str = "auto") -> Retriever:
    """The retriever of the index folder ``index``, with the embedder its manifest names.

    Raises ``FileNotFoundError`` when there is no index there, ``ValueError`` when its manifest is
    unreadable."""
    from mentor.models.loading import load_embedder

    manifest = Manifest.read(index)
    return Retriever(index, load_embedder(embedder_location(index, manifest.config), device=device))
