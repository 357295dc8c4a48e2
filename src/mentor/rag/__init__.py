"""Retrieval-augmented generation: index documents, retrieve, rerank, answer with citations.

    from mentor.rag import Retriever, SearchConfig, build_index

Tuning without labels (what ``mentor rag index`` runs after building):

    from mentor.rag.autotune import TuneOptions, autotune
    report = autotune(index, embedder, lambda: writer_context(), TuneOptions(profile="auto"))

or one step at a time: :func:`build_selfeval` (the synthetic questions), :func:`tune_lexical`,
:func:`tune_embedder`, :func:`tune_fusion`, then :func:`resolve_search` gives every caller the
index's tuned setting.

Pluggable: the store (:class:`VectorStore`; LanceDB by default) and the :class:`Reranker`, with
fakes of both in :mod:`mentor.testing`.

The command-line face is ``mentor rag index | search | ask | eval | calibrate | tune |
diagnose | train-reranker | judge-reranker``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.rag.autotune import AutotuneReport, TuneOptions
    from mentor.rag.embed_tune import tune_embedder
    from mentor.rag.index import BuildReport, IndexConfig, build_index
    from mentor.rag.lexical import tune_lexical
    from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, SearchResult, open_retriever
    from mentor.rag.selfeval import SelfEvalSet, build_selfeval
    from mentor.rag.store import VectorStore
    from mentor.rag.tune import resolve_search, tune_fusion

__all__ = [
    "AutotuneReport",
    "BuildReport",
    "IndexConfig",
    "Reranker",
    "Retriever",
    "SearchConfig",
    "SearchResult",
    "SelfEvalSet",
    "TuneOptions",
    "VectorStore",
    "build_index",
    "build_selfeval",
    "open_retriever",
    "resolve_search",
    "tune_embedder",
    "tune_fusion",
    "tune_lexical",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "AutotuneReport": "mentor.rag.autotune",
        "TuneOptions": "mentor.rag.autotune",
        "tune_embedder": "mentor.rag.embed_tune",
        "tune_lexical": "mentor.rag.lexical",
        "SelfEvalSet": "mentor.rag.selfeval",
        "build_selfeval": "mentor.rag.selfeval",
        "resolve_search": "mentor.rag.tune",
        "tune_fusion": "mentor.rag.tune",
        "BuildReport": "mentor.rag.index",
        "IndexConfig": "mentor.rag.index",
        "build_index": "mentor.rag.index",
        "Reranker": "mentor.rag.retrieve",
        "Retriever": "mentor.rag.retrieve",
        "SearchConfig": "mentor.rag.retrieve",
        "SearchResult": "mentor.rag.retrieve",
        "open_retriever": "mentor.rag.retrieve",
        "VectorStore": "mentor.rag.store",
    },
)
