"""Metrics shared by every method, so each is scored the same way on the user's own data.

- ``text.py``: per-answer text metrics (``exact_match``, ``token_f1``, ``rouge_l``, ``contains``)
  and ``TEXT_METRICS``, the one registry of them by name;
- ``labels.py``: label metrics: the label an answer names (``label_of``), ``accuracy`` and
  ``macro_f1``;
- ``stats.py``: percentiles, latency summaries and the one bootstrap (``bootstrap``,
  ``bootstrap_mean``, ``paired_bootstrap``) with its result type ``Estimate``;
- ``retrieval.py``: BEIR retrieval metrics and reciprocal rank fusion;
- ``grounding.py``: lexical support of an answer by its evidence, and invented numbers;
- ``answers.py``: held-out prompts and references, the model's answers and their text scores;
- ``perplexity.py``: perplexity on held-out text and the packaged general-English sample;
- ``compare.py``: the before/after report of two models on the same examples.

``answers.py``, ``perplexity.py`` and ``compare.py`` import torch, so they are not re-exported
here; import them from their modules.
"""

from mentor.evaluate.labels import LABEL_METRICS, accuracy, label_of, macro_f1
from mentor.evaluate.retrieval import (
    Qrels,
    RetrievalReport,
    Run,
    evaluate_run,
    reciprocal_rank_fusion,
)
from mentor.evaluate.stats import (
    CONFIDENCE,
    RESAMPLES,
    Estimate,
    LatencySummary,
    bootstrap,
    bootstrap_mean,
    latency_summary,
    mean_of,
    paired_bootstrap,
    percentile,
)
from mentor.evaluate.text import (
    TEXT_METRICS,
    contains,
    exact_match,
    normalize_answer,
    rouge_l,
    text_scores,
    token_f1,
)

__all__ = [
    "CONFIDENCE",
    "LABEL_METRICS",
    "RESAMPLES",
    "TEXT_METRICS",
    "Estimate",
    "LatencySummary",
    "Qrels",
    "RetrievalReport",
    "Run",
    "accuracy",
    "bootstrap",
    "bootstrap_mean",
    "contains",
    "evaluate_run",
    "exact_match",
    "label_of",
    "latency_summary",
    "macro_f1",
    "mean_of",
    "normalize_answer",
    "paired_bootstrap",
    "percentile",
    "reciprocal_rank_fusion",
    "rouge_l",
    "text_scores",
    "token_f1",
]
