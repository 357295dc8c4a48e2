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

Every name is imported on first use, so ``import mentor.evaluate`` loads no torch until a name
from ``answers.py``, ``perplexity.py`` or ``compare.py`` is read. The function ``perplexity``
shares its module's name, so it is imported from ``mentor.evaluate.perplexity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.evaluate.answers import (
        EvalItem,
        GenerationScores,
        generate_answers,
        load_eval_items,
        score_generations,
    )
    from mentor.evaluate.compare import (
        BeforeAfter,
        compare_classification,
        compare_generation,
        compare_scores,
    )
    from mentor.evaluate.grounding import invented_numbers, support
    from mentor.evaluate.labels import LABEL_METRICS, accuracy, label_of, macro_f1
    from mentor.evaluate.perplexity import general_sample
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
    "BeforeAfter",
    "Estimate",
    "EvalItem",
    "GenerationScores",
    "LatencySummary",
    "Qrels",
    "RetrievalReport",
    "Run",
    "accuracy",
    "bootstrap",
    "bootstrap_mean",
    "compare_classification",
    "compare_generation",
    "compare_scores",
    "contains",
    "evaluate_run",
    "exact_match",
    "general_sample",
    "generate_answers",
    "invented_numbers",
    "label_of",
    "latency_summary",
    "load_eval_items",
    "macro_f1",
    "mean_of",
    "normalize_answer",
    "paired_bootstrap",
    "percentile",
    "reciprocal_rank_fusion",
    "rouge_l",
    "score_generations",
    "support",
    "text_scores",
    "token_f1",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "EvalItem": "mentor.evaluate.answers",
        "GenerationScores": "mentor.evaluate.answers",
        "generate_answers": "mentor.evaluate.answers",
        "load_eval_items": "mentor.evaluate.answers",
        "score_generations": "mentor.evaluate.answers",
        "BeforeAfter": "mentor.evaluate.compare",
        "compare_classification": "mentor.evaluate.compare",
        "compare_generation": "mentor.evaluate.compare",
        "compare_scores": "mentor.evaluate.compare",
        "invented_numbers": "mentor.evaluate.grounding",
        "support": "mentor.evaluate.grounding",
        "LABEL_METRICS": "mentor.evaluate.labels",
        "accuracy": "mentor.evaluate.labels",
        "label_of": "mentor.evaluate.labels",
        "macro_f1": "mentor.evaluate.labels",
        "general_sample": "mentor.evaluate.perplexity",
        "Qrels": "mentor.evaluate.retrieval",
        "RetrievalReport": "mentor.evaluate.retrieval",
        "Run": "mentor.evaluate.retrieval",
        "evaluate_run": "mentor.evaluate.retrieval",
        "reciprocal_rank_fusion": "mentor.evaluate.retrieval",
        "CONFIDENCE": "mentor.evaluate.stats",
        "Estimate": "mentor.evaluate.stats",
        "LatencySummary": "mentor.evaluate.stats",
        "RESAMPLES": "mentor.evaluate.stats",
        "bootstrap": "mentor.evaluate.stats",
        "bootstrap_mean": "mentor.evaluate.stats",
        "latency_summary": "mentor.evaluate.stats",
        "mean_of": "mentor.evaluate.stats",
        "paired_bootstrap": "mentor.evaluate.stats",
        "percentile": "mentor.evaluate.stats",
        "TEXT_METRICS": "mentor.evaluate.text",
        "contains": "mentor.evaluate.text",
        "exact_match": "mentor.evaluate.text",
        "normalize_answer": "mentor.evaluate.text",
        "rouge_l": "mentor.evaluate.text",
        "text_scores": "mentor.evaluate.text",
        "token_f1": "mentor.evaluate.text",
    },
)
