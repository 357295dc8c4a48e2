"""The bakeoff's own arithmetic, as pure functions: each answer scored, the statistic of a metric
over resampled questions, grounding shares, groups and money.

Every arm is scored by the same functions on the same questions, and those are the ones every
method uses (:mod:`mentor.evaluate`):

- every text metric of :data:`mentor.evaluate.text.TEXT_METRICS` (``contains``, the fair first
  measure for short gold answers such as "2016" or "Settings > Billing"; ``exact_match``,
  ``token_f1`` and ``rouge_l``);
- with a label set (yes/no/maybe): the first label the answer names is its prediction
  (:func:`mentor.evaluate.labels.label_of`), scored by ``accuracy`` and ``macro_f1`` (the mean
  over labels of each label's F1, over the whole set).

Intervals are :mod:`mentor.evaluate.stats`' 95% percentile bootstraps over questions of
:func:`metric_statistic`; a difference between two arms resamples the questions once for both
(``paired_bootstrap``), so it is narrower than the two intervals suggest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mentor.bakeoff.results import Costs, Grounding, ScoredAnswer
from mentor.evaluate.grounding import invented_numbers, support
from mentor.evaluate.labels import correct_labels, label_of, macro_f1_of
from mentor.evaluate.stats import Statistic, mean_of
from mentor.evaluate.text import text_scores

SUPPORTED = 0.8  # share of content words found in the evidence for an answer to count as supported
GROUNDING_METHOD = (
    "Lexical, no LM judge (so no judge variance): an answer is supported when at least 80% of its "
    "content words (stop words and citation markers removed) occur in its evidence, and invents a "
    "fact when it states a number (digits, compared by value) that neither the evidence nor the "
    "question contains. Evidence is the retrieved passages for arms with retrieval and the "
    "question's gold documents for closed-book arms."
)
# How many times a year the knowledge changes, so a trained model is retrained or an index updated.
UPDATES_PER_YEAR = {"static": 1, "monthly": 12, "weekly": 52, "daily": 365, "realtime": 365}


def label_scores(prediction: str, reference: str, labels: Sequence[str]) -> dict[str, float]:
    """Per-answer ``accuracy``: the label the answer names is the reference's (or the reference)."""
    gold = label_of(reference, labels) or reference
    return {"accuracy": correct_labels([label_of(prediction, labels)], [gold])[0]}


def metric_statistic(
    metric: str, answers: Sequence[ScoredAnswer], labels: Sequence[str] | None
) -> Statistic:
    """The statistic of ``metric`` over resampled answers: a mean, or macro-F1 over the set."""
    if metric == "macro_f1":
        if not labels:
            raise ValueError("macro_f1 needs labels")
        predicted = [label_of(a.answer, labels) for a in answers]
        gold = [label_of(a.reference, labels) or a.reference for a in answers]
        return macro_f1_of(predicted, gold, labels)
    return mean_of([a.scores[metric] for a in answers])


def score_answer(
    *,
    id: str,
    question: str,
    reference: str,
    answer: str,
    labels: Sequence[str] | None,
    evidence: Sequence[str],
    sources: Sequence[str] = (),
    group: str | None = None,
) -> ScoredAnswer:
    """One answer with every metric, and its grounding against ``evidence``."""
    scores = text_scores(answer, reference)
    if labels:
        scores.update(label_scores(answer, reference, labels))
    grounded = bool(evidence) and not labels
    return ScoredAnswer(
        id=id,
        question=question,
        reference=reference,
        answer=answer,
        scores=scores,
        group=group,
        support=support(answer, evidence) if grounded else None,
        invented=invented_numbers(answer, [*evidence, question]) if grounded else [],
        sources=list(sources),
    )


def grounding(answers: Sequence[ScoredAnswer]) -> Grounding | None:
    """Shares of supported answers and of answers that invent a number; None without evidence."""
    measured = [a for a in answers if a.support is not None]
    if not measured:
        return None
    supports = [a.support for a in measured if a.support is not None]
    return Grounding(
        supported_share=float(np.mean([s >= SUPPORTED for s in supports])),
        invented_share=float(np.mean([bool(a.invented) for a in measured])),
        mean_support=float(np.mean(supports)),
        method=GROUNDING_METHOD,
    )


def groups(
    answers: Sequence[ScoredAnswer], metrics: Sequence[str], labels: Sequence[str] | None
) -> dict[str, dict[str, float]]:
    """Each metric per value of the answers' group field (with its count ``n``)."""
    out: dict[str, dict[str, float]] = {}
    for value in sorted({a.group for a in answers if a.group is not None}):
        members = [a for a in answers if a.group == value]
        row = {m: metric_statistic(m, members, labels)(np.arange(len(members))) for m in metrics}
        out[value] = {**row, "n": float(len(members))}
    return out


def costs(
    *,
    build_s: float,
    mean_answer_s: float,
    train_usd_per_hour: float,
    serve_usd_per_hour: float,
    concurrency: int,
    updates_per_year: int,
    queries_per_day: int,
    token_usd_per_1k: float | None = None,
) -> Costs:
    """Money from measured time: building once (and again at every knowledge update), and
    serving. ``usd_per_point`` is left for :func:`per_point`, which needs the base's costs.

    ``token_usd_per_1k``: an endpoint billed by the token (:func:`token_usd_per_1k`) serves at
    that price instead of by the hour."""
    training = build_s / 3600 * train_usd_per_hour
    per_1k = mean_answer_s * 1000 / 3600 * serve_usd_per_hour / concurrency
    if token_usd_per_1k is not None:
        per_1k = token_usd_per_1k
    yearly = training * updates_per_year + per_1k * queries_per_day * 365 / 1000
    basis = "time" if token_usd_per_1k is None else "tokens"
    return Costs(training, per_1k, yearly, None, serve_basis=basis)


def token_usd_per_1k(
    prompt_tokens: float,
    completion_tokens: float,
    input_usd_per_million: float,
    output_usd_per_million: float,
) -> float:
    """USD per 1,000 queries of an endpoint billed by the token, from the mean prompt and
    completion tokens per query: ``1000 x (prompt x input + completion x output) / 1e6``."""
    per_query = prompt_tokens * input_usd_per_million + completion_tokens * output_usd_per_million
    return 1000 * per_query / 1e6


def per_point(arm: Costs, base: Costs, gain_points: float) -> float | None:
    """Extra yearly cost over the base per point of quality gained; None when nothing is gained."""
    if gain_points <= 0:
        return None
    return max(0.0, arm.yearly_usd - base.yearly_usd) / gain_points
