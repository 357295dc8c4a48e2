"""Retrieval-augmented generation: index documents, retrieve, rerank, answer with citations.

    from mentor.rag import Retriever, SearchConfig, build_index

Pluggable: the store (:class:`VectorStore`; LanceDB by default) and the :class:`Reranker`, with
fakes of both in :mod:`mentor.testing`.

The command-line face is ``mentor rag index | search | ask | eval | calibrate | tune |
diagnose | train-reranker``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.rag.index import BuildReport, IndexConfig, build_index
    from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, SearchResult, open_retriever
    from mentor.rag.store import VectorStore

__all__ = [
    "BuildReport",
    "IndexConfig",
    "Reranker",
    "Retriever",
    "SearchConfig",
    "SearchResult",
    "VectorStore",
    "build_index",
    "open_retriever",
]

__getattr__ = lazy_exports(
    __name__,
    {
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
