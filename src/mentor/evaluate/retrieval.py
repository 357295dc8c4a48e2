"""Retrieval metrics (nDCG, MAP, recall, precision, MRR, hit rate) and reciprocal rank fusion.

The definitions are trec_eval's, as BEIR reports them through pytrec_eval, so numbers here can be
set beside published BEIR tables:

- A run is ranked by score descending, ties broken by doc id descending (trec_eval sorts on
  ``(sim desc, docno desc)``; the test suite checks this against pytrec_eval).
- A document is relevant when its qrels grade is > 0; unjudged documents are not relevant.
- ``precision@k`` divides by k even when the run is shorter (trec_eval ``P_k``).
- ``ndcg@k`` uses linear gain (the grade itself) and discount log2(rank + 1), with the ideal DCG
  taken from the query's grades sorted descending and cut at k (trec_eval ``ndcg_cut_k``;
  Järvelin & Kekäläinen, 2002).
- ``map@k`` sums precision at each relevant rank within k and divides by *all* relevant documents,
  not min(k, relevant) (trec_eval ``map_cut_k``).
- ``mrr@k`` is trec_eval's ``recip_rank`` stopped at k; with k >= the run length they agree.

Usage::

    report = evaluate_run(qrels, run, ks=(1, 5, 10))
    print(report.to_markdown())
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

Qrels = Mapping[str, Mapping[str, int]]
"""query id -> doc id -> graded relevance; > 0 means relevant."""
Run = Mapping[str, Mapping[str, float]]
"""query id -> doc id -> retrieval score; higher is better."""


def rank(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending, as trec_eval orders a run."""
    # One reversed sort on (score, doc id) gives both keys descending, as trec_eval wants.
    return sorted(scores, key=lambda doc: (scores[doc], doc), reverse=True)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"cutoff k must be >= 1, got {k}")


def _relevant_count(relevance: Mapping[str, int]) -> int:
    return sum(1 for grade in relevance.values() if grade > 0)


def _hits(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> int:
    return sum(1 for doc in ranking[:k] if relevance.get(doc, 0) > 0)


def precision_at_k(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """Relevant documents in the top k over k (not over the run length: trec_eval ``P_k``)."""
    _check_k(k)
    return _hits(relevance, ranking, k) / k


def recall_at_k(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """Relevant documents in the top k over all relevant documents; 0 when there are none."""
    _check_k(k)
    total = _relevant_count(relevance)
    return _hits(relevance, ranking, k) / total if total else 0.0


def hit_rate_at_k(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """1.0 if any relevant document is in the top k, else 0.0 (a.k.a. success@k)."""
    _check_k(k)
    return float(_hits(relevance, ranking, k) > 0)


def mrr_at_k(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """Reciprocal (1-based) rank of the first relevant document within the top k, else 0."""
    _check_k(k)
    for position, doc in enumerate(ranking[:k], start=1):
        if relevance.get(doc, 0) > 0:
            return 1.0 / position
    return 0.0


def _dcg(gains: Iterable[float]) -> float:
    # Rank r (1-based) is discounted by log2(r + 1), so rank 1 keeps its full gain.
    return sum(gain / math.log2(position + 1) for position, gain in enumerate(gains, start=1))


def ndcg_at_k(relevance: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """nDCG@k with linear gain (the grade), as trec_eval ``ndcg_cut_k``; 0 with no relevant doc."""
    _check_k(k)
    ideal = _dcg(sorted((g for g in relevance.values() if g > 0), reverse=True)[:k])
    if ideal == 0.0:
        return 0.0
    return _dcg(max(relevance.get(doc, 0), 0) for doc in ranking[:k]) / ideal


def average_precision(
    relevance: Mapping[str, int], ranking: Sequence[str], k: int | None = None
) -> float:
    """Average precision over the whole ranking, or its first k (trec_eval ``map``/``map_cut_k``).

    Precision is taken at the rank of each relevant document retrieved and the sum divided by the
    number of relevant documents in the qrels, so relevant documents never retrieved count as 0.
    """
    if k is not None:
        _check_k(k)
        ranking = ranking[:k]
    total = _relevant_count(relevance)
    if total == 0:
        return 0.0
    hits, summed = 0, 0.0
    for position, doc in enumerate(ranking, start=1):
        if relevance.get(doc, 0) > 0:
            hits += 1
            summed += hits / position
    return summed / total


# Metric name in report keys -> per-query function of (relevance, ranking, k).
_METRICS: dict[str, Callable[[Mapping[str, int], Sequence[str], int], float]] = {
    "ndcg": ndcg_at_k,
    "map": average_precision,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": mrr_at_k,
    "hit_rate": hit_rate_at_k,
}


@dataclass(frozen=True)
class RetrievalReport:
    """Mean and per-query retrieval metrics, keyed like ``"ndcg@10"``."""

    metrics: dict[str, float]
    """Mean over the evaluated queries of each metric."""
    per_query: dict[str, dict[str, float]]
    """query id -> metric key -> value, for every evaluated query (missing from the run: 0)."""
    ks: tuple[int, ...]
    queries_evaluated: int
    """Queries in the qrels with at least one relevant document."""
    queries_missing_from_run: int = 0
    """Evaluated queries the run has no results for; they score 0 on every metric."""
    queries_without_judgements: int = 0
    """Queries in the run that the qrels do not judge; ignored."""
    queries_without_relevant: int = 0
    """Queries in the qrels whose judged documents are all non-relevant; ignored."""

    def to_dict(self) -> dict[str, object]:
        return {
            "metrics": dict(self.metrics),
            "per_query": {qid: dict(values) for qid, values in self.per_query.items()},
            "ks": list(self.ks),
            "queries_evaluated": self.queries_evaluated,
            "queries_missing_from_run": self.queries_missing_from_run,
            "queries_without_judgements": self.queries_without_judgements,
            "queries_without_relevant": self.queries_without_relevant,
        }

    def to_markdown(self) -> str:
        """A table with one row per metric and one column per cutoff, then the query counts."""
        lines = [
            "| metric | " + " | ".join(f"@{k}" for k in self.ks) + " |",
            "|---|" + "---:|" * len(self.ks),
        ]
        for name in _METRICS:
            cells = " | ".join(f"{self.metrics[f'{name}@{k}']:.4f}" for k in self.ks)
            lines.append(f"| {name} | {cells} |")
        lines.append("")
        lines.append(
            f"{self.queries_evaluated} queries evaluated"
            f" ({self.queries_missing_from_run} missing from the run, scored 0); ignored:"
            f" {self.queries_without_judgements} run queries without judgements,"
            f" {self.queries_without_relevant} judged queries with no relevant document."
        )
        return "\n".join(lines)


def evaluate_run(qrels: Qrels, run: Run, ks: Sequence[int] = (1, 3, 5, 10, 100)) -> RetrievalReport:
    """Score a run against qrels at each cutoff in ``ks``; means are over judged queries.

    Queries in the qrels with no results in the run score 0 on every metric (trec_eval's ``-c``;
    pytrec_eval, and so BEIR's own mean, would skip them and flatter a run that drops queries).
    Queries the qrels judge without a single relevant document are skipped, since recall and
    nDCG are undefined for them.
    """
    cutoffs = tuple(sorted(set(ks)))
    if not cutoffs:
        raise ValueError("ks must name at least one cutoff")
    for k in cutoffs:
        _check_k(k)
    judged = [qid for qid, rel in qrels.items() if _relevant_count(rel) > 0]
    per_query: dict[str, dict[str, float]] = {}
    for qid in judged:
        ranking = rank(run.get(qid, {}))
        per_query[qid] = {
            f"{name}@{k}": metric(qrels[qid], ranking, k)
            for name, metric in _METRICS.items()
            for k in cutoffs
        }
    keys = [f"{name}@{k}" for name in _METRICS for k in cutoffs]
    n = len(per_query)
    means = {key: (sum(v[key] for v in per_query.values()) / n if n else 0.0) for key in keys}
    return RetrievalReport(
        metrics=means,
        per_query=per_query,
        ks=cutoffs,
        queries_evaluated=n,
        queries_missing_from_run=sum(1 for qid in judged if qid not in run),
        queries_without_judgements=sum(1 for qid in run if qid not in qrels),
        queries_without_relevant=len(qrels) - n,
    )


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str]],
    *,
    k: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked lists by RRF (Cormack, Clarke & Büttcher, SIGIR 2009).

    score(d) = sum over retrievers r that return d of w_r / (k + rank_r(d)), rank 1-based and
    w_r = 1 unless ``weights`` says otherwise. ``rankings`` maps a retriever name to its doc ids,
    best first; a doc repeated in one list counts at its best rank. Returns (doc id, score) by
    score descending, ties by doc id ascending so the output is deterministic.
    """
    if k < 0:
        raise ValueError(f"RRF constant k must be >= 0, got {k}")
    if weights is not None and (missing := set(rankings) - set(weights)):
        raise ValueError(f"weights missing for retrievers: {sorted(missing)}")
    scores: dict[str, float] = {}
    for name, ranked in rankings.items():
        weight = 1.0 if weights is None else weights[name]
        seen: set[str] = set()
        for position, doc in enumerate(ranked, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + weight / (k + position)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
