"""Label metrics: for a classifier's predicted labels, and for free-text answers that must name
one of a fixed set of labels (yes/no/maybe).

- :func:`label_of`: the first of the labels an answer names, as a whole word, or ``None``;
- :func:`correct_labels` and :func:`accuracy`: per example 1.0 when the predicted label is the
  gold one (compared as given, case included), and their mean;
- :func:`macro_f1`: each label's F1 over the whole set, averaged over the labels, so a rare label
  counts as much as a common one (scikit-learn's ``f1_score(average="macro")`` given the labels).
  It is not a mean of per-example scores: bootstrap it over examples with :func:`macro_f1_of`.

Usage::

    predicted = [label_of(answer, ["yes", "no", "maybe"]) for answer in answers]
    accuracy(predicted, gold), macro_f1(predicted, gold, ["yes", "no", "maybe"])
    bootstrap(macro_f1_of(predicted, gold, labels), len(gold))  # with its interval
"""

from __future__ import annotations

from collections.abc import Sequence

from mentor.evaluate.stats import Statistic
from mentor.evaluate.text import normalize_answer

LABEL_METRICS = ("accuracy", "macro_f1")
"""The label metrics, by the name reports, configs and JSON use for them."""


def label_of(answer: str, labels: Sequence[str]) -> str | None:
    """The first of ``labels`` the answer names as a whole word (case-insensitive), or None."""
    wanted = {normalize_answer(label): label for label in labels}
    for word in normalize_answer(answer).split():
        if word in wanted:
            return wanted[word]
    return None


def correct_labels(predicted: Sequence[str | None], gold: Sequence[str]) -> list[float]:
    """1.0 where the predicted label is the gold one, else 0.0 (``None``, no label, is wrong)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted labels for {len(gold)} gold labels")
    if not gold:
        raise ValueError("nothing to score: no labels")
    return [float(p == g) for p, g in zip(predicted, gold, strict=True)]


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Share of examples whose label is predicted exactly (labels compared as given)."""
    return sum(correct_labels(predicted, gold)) / len(gold)


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Mean over ``labels`` of per-label F1; a label never predicted nor gold scores 0."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted labels for {len(gold)} gold labels")
    if not labels:
        raise ValueError("macro_f1 needs at least one label")
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold, strict=True))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def macro_f1_of(
    predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]
) -> Statistic:
    """Macro-F1 of the examples at the drawn indices: the statistic to bootstrap."""
    return lambda rows: macro_f1([predicted[i] for i in rows], [gold[i] for i in rows], labels)
