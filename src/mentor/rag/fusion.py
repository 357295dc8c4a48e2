"""Fusion of a dense and a BM25 ranking, as pure functions over (id, score) lists.

Two families, both used by :meth:`mentor.rag.retrieve.Retriever.search` and by the offline
tuner (:mod:`mentor.rag.tune`), which scores every setting on rankings fetched once:

- reciprocal rank fusion (Cormack et al., 2009): only ranks count, score = sum_r w_r / (k + rank);
- convex combination of normalised scores (Bruch, Gai & Ingber, "An Analysis of Fusion Functions
  for Hybrid Retrieval", 2023): score = alpha * norm(dense) + (1 - alpha) * norm(bm25), where
  norm is min-max (to [0, 1]) or z-score over the list. Unlike RRF it keeps how far apart the
  scores are, which helps when one retriever is sure and the other is not.

A document missing from one list gets that list's lowest normalised score (0 for min-max): it
was not retrieved, so it is treated as no better than the worst that was.

    fuse_convex({"dense": [("a", 0.9), ("b", 0.1)], "bm25": [("b", 7.0)]},
                {"dense": 0.5, "bm25": 0.5})   # -> [("a", 0.5), ("b", 0.5)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from mentor.evaluate.retrieval import reciprocal_rank_fusion

Fusion = Literal["rrf", "convex"]
Normalization = Literal["minmax", "zscore"]
Scored = Sequence[tuple[str, float]]
"""Ids with their retriever's scores, best first."""


def normalise(scores: Sequence[float], method: Normalization) -> list[float]:
    """Min-max to [0, 1] or z-score (population standard deviation); constant lists map to 0."""
    if not scores:
        return []
    if method == "minmax":
        low, high = min(scores), max(scores)
        span = high - low
        return [(s - low) / span if span > 0 else 0.0 for s in scores]
    if method == "zscore":
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        return [(s - mean) / sd if sd > 0 else 0.0 for s in scores]
    raise ValueError(f"normalization {method!r}: expected minmax or zscore")


def fuse_convex(
    lists: Mapping[str, Scored],
    weights: Mapping[str, float],
    method: Normalization = "minmax",
) -> list[tuple[str, float]]:
    """sum_r w_r * norm_r(d), a missing d taking list r's lowest normalised score.

    Returns (id, score) by score descending, ties by id ascending (as RRF does). A repeated id
    in one list counts at its first (best) place."""
    if missing := set(lists) - set(weights):
        raise ValueError(f"weights missing for retrievers: {sorted(missing)}")
    normalised: dict[str, dict[str, float]] = {}
    floors: dict[str, float] = {}
    for name, scored in lists.items():
        values = normalise([s for _, s in scored], method)
        table: dict[str, float] = {}
        for (doc, _), value in zip(scored, values, strict=True):
            table.setdefault(doc, value)
        normalised[name] = table
        floors[name] = min(values) if values else 0.0
    docs = {doc for table in normalised.values() for doc in table}
    fused = {
        doc: sum(weights[name] * table.get(doc, floors[name]) for name, table in normalised.items())
        for doc in docs
    }
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def fuse(
    lists: Mapping[str, Scored],
    weights: Mapping[str, float],
    *,
    fusion: Fusion = "rrf",
    rrf_k: float = 60.0,
    method: Normalization = "minmax",
    depth: int | None = None,
) -> list[tuple[str, float]]:
    """Each list cut to ``depth`` (None: whole), then fused by RRF or the convex combination."""
    cut = {name: list(scored)[:depth] for name, scored in lists.items()}
    if fusion == "rrf":
        ranked = {name: [doc for doc, _ in scored] for name, scored in cut.items()}
        return reciprocal_rank_fusion(ranked, k=rrf_k, weights=weights)
    if fusion == "convex":
        return fuse_convex(cut, weights, method)
    raise ValueError(f"fusion {fusion!r}: expected rrf or convex")


def probe_weights(
    names: Sequence[str], *, fusion: str, alpha: float, dense_weight: float, bm25_weight: float
) -> dict[str, float]:
    """The weight of each probe (``dense:i`` / ``bm25:i``) in a fusion: the convex split of
    ``alpha``, or each retriever's own weight for RRF."""
    if fusion == "convex":
        return convex_weights(names, alpha)
    return {n: dense_weight if n.startswith("dense") else bm25_weight for n in names}


def convex_weights(names: Sequence[str], alpha: float) -> dict[str, float]:
    """Weights for probes named ``dense:i`` / ``bm25:i``: alpha shared among the dense ones,
    1 - alpha among the BM25 ones (one probe each: alpha and 1 - alpha)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dense = [n for n in names if n.startswith("dense")]
    lexical = [n for n in names if n.startswith("bm25")]
    weights = {n: alpha / len(dense) for n in dense}
    weights.update({n: (1.0 - alpha) / len(lexical) for n in lexical})
    return weights
