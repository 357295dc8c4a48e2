"""Metrics shared by every method, so each is scored the same way on the user's own data."""

from mentor.evaluate.retrieval import (
    Qrels,
    RetrievalReport,
    Run,
    evaluate_run,
    reciprocal_rank_fusion,
)
from mentor.evaluate.stats import (
    LatencySummary,
    bootstrap_ci,
    latency_summary,
    paired_bootstrap_diff,
    percentile,
)
from mentor.evaluate.text import exact_match, normalize_answer, rouge_l, token_f1

__all__ = [
    "LatencySummary",
    "Qrels",
    "RetrievalReport",
    "Run",
    "bootstrap_ci",
    "evaluate_run",
    "exact_match",
    "latency_summary",
    "normalize_answer",
    "paired_bootstrap_diff",
    "percentile",
    "reciprocal_rank_fusion",
    "rouge_l",
    "token_f1",
]
