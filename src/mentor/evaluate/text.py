"""Answer-quality metrics for generated text, each ``(prediction, reference) -> score in [0, 1]``,
and :data:`TEXT_METRICS`, the one registry of them by name that every method scores with.

- ``exact_match`` and ``token_f1`` follow the SQuAD v1.1 evaluation script's definitions
  (Rajpurkar et al., 2016): lower-case, drop punctuation and the articles a/an/the, split on
  whitespace; F1 is the harmonic mean of token precision and recall with multiset overlap;
- ``rouge_l`` is the LCS-based F-measure of Lin (2004) with beta = 1, on the same normalised
  tokens;
- ``contains``: the normalised reference occurs in the normalised prediction as whole words, the
  fair first measure for short gold answers such as "2016" or "Settings > Billing".

Usage::

    text_scores("It was founded in 2016.", "2016")
    # {'exact_match': 0.0, 'token_f1': 0.333..., 'rouge_l': 0.333..., 'contains': 1.0}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

TextMetric = Callable[[str, str], float]
"""``(prediction, reference) -> score in [0, 1]``."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty is a match, one empty is not
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised tokens."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference occurs in the normalised prediction as whole words."""
    ref = normalize_answer(reference)
    if not ref:
        return 0.0  # a reference that normalises to nothing ("the") never matches
    found = re.search(rf"(?:^| ){re.escape(ref)}(?: |$)", normalize_answer(prediction))
    return 1.0 if found else 0.0


TEXT_METRICS: dict[str, TextMetric] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "contains": contains,
}
"""Every per-answer text metric, by the name reports, configs and JSON use for it."""


def text_scores(prediction: str, reference: str) -> dict[str, float]:
    """One answer scored with every metric of :data:`TEXT_METRICS`, by name."""
    return {name: metric(prediction, reference) for name, metric in TEXT_METRICS.items()}
