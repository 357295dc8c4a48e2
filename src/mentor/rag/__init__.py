"""Retrieval-augmented generation: index documents, retrieve, rerank, answer with citations.

    from mentor.rag import Retriever, SearchConfig, build_index

The command-line face is ``mentor rag index | search | ask | eval | calibrate | tune |
diagnose | train-reranker``.
"""

from mentor.rag.index import BuildReport, IndexConfig, build_index
from mentor.rag.retrieve import Retriever, SearchConfig, SearchResult

__all__ = ["BuildReport", "IndexConfig", "Retriever", "SearchConfig", "SearchResult", "build_index"]
