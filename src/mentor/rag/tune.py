"""Decide, on the user's own questions, whether query expansion helps; remember the answer.

``mentor rag tune`` evaluates retrieval with no expansion, multi-query and HyDE on up to
``max_queries`` judged questions and writes ``tuning.json`` beside the index. ``search``, ``ask``
and ``diagnose`` then use expansion only when it beat plain retrieval by at least ``margin``
nDCG@10 there ("on by default only where it helps").

Run: ``mentor rag tune --index idx --queries qa.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from mentor.models.protocols import Generator
from mentor.rag.evaluation import EvalSet, evaluate_retrieval, subset
from mentor.rag.expansion import ExpansionName, QueryExpander, make_expander
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, SearchResult
from mentor.utils.fs import atomic_write_text

TUNING = "tuning.json"


@dataclass
class Tuning:
    expansion: ExpansionName
    """The setting chosen: the best one if it beat "none" by the margin, else "none"."""
    ndcg_at_10: dict[str, float]
    p50_ms: dict[str, float]
    queries: int
    margin: float
    created: str

    def save(self, index: Path) -> None:
        atomic_write_text(index / TUNING, json.dumps(asdict(self), indent=2))


def load_tuning(index: Path) -> Tuning | None:
    path = index / TUNING
    return Tuning(**json.loads(path.read_text())) if path.exists() else None


class ExpandingSearcher:
    """A retriever that always expands queries with one expander (for ask and diagnose)."""

    def __init__(self, retriever: Retriever, expander: QueryExpander | None) -> None:
        self.retriever = retriever
        self.expander = expander

    @property
    def chunks(self) -> list[object]:
        return list(self.retriever.chunks)

    def search(
        self, query: str, config: SearchConfig = SearchConfig(), reranker: Reranker | None = None
    ) -> SearchResult:
        return self.retriever.search(query, config, reranker=reranker, expander=self.expander)


def tune_expansion(
    retriever: Retriever,
    eval_set: EvalSet,
    generator: Generator,
    config: SearchConfig,
    *,
    max_queries: int = 40,
    margin: float = 0.01,
    seed: int = 0,
) -> Tuning:
    ids = sorted(eval_set.queries)
    random.Random(seed).shuffle(ids)
    sample = subset(eval_set, dict.fromkeys(ids[:max_queries]))
    scores: dict[str, float] = {}
    latency: dict[str, float] = {}
    for name in get_args(ExpansionName):
        expander = make_expander(name, generator)
        probe = ExpandingSearcher(retriever, expander)
        report = evaluate_retrieval(probe, sample, config, ks=(10,))
        scores[name] = report.retrieval.metrics["ndcg@10"]
        latency[name] = report.latency["total"].p50_ms
    best = max(scores, key=lambda n: (scores[n], n == "none"))
    chosen: ExpansionName = best if scores[best] >= scores["none"] + margin else "none"  # type: ignore[assignment]
    return Tuning(
        chosen,
        scores,
        latency,
        len(sample.queries),
        margin,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
