"""Before/after: two models scored on the same examples, each change with a paired bootstrap
interval (:func:`mentor.evaluate.stats.paired_bootstrap`, :data:`~mentor.evaluate.stats.RESAMPLES`
resamples), and forgetting measured as the rise in general-English perplexity.

The fine-tune recipes (generation and classification) and the quantization report build their
tables here.

Usage::

    report = compare_generation(scores["base"], scores["tuned"], ppl["base"], ppl["tuned"])
    print(report.to_markdown())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mentor.evaluate.labels import correct_labels
from mentor.evaluate.stats import CONFIDENCE, mean_of, paired_bootstrap

if TYPE_CHECKING:
    from mentor.evaluate.answers import GenerationScores

FORGETTING_THRESHOLD = 0.10
"""Relative rise in general-text perplexity above which a report flags forgetting."""


@dataclass(frozen=True)
class MetricChange:
    """One metric of the base and the tuned model on the same examples."""

    name: str
    base: float
    tuned: float
    change: float
    """tuned - base."""
    low: float
    high: float
    """Paired bootstrap interval on ``change`` (coverage :data:`CONFIDENCE`)."""


@dataclass(frozen=True)
class PerplexityChange:
    """Perplexity on the general-English sample before and after fine-tuning."""

    base: float
    tuned: float

    @property
    def relative_change(self) -> float:
        """tuned / base - 1: 0.15 means perplexity rose by 15%."""
        return self.tuned / self.base - 1.0

    @property
    def forgetting(self) -> bool:
        return self.relative_change > FORGETTING_THRESHOLD


@dataclass(frozen=True)
class BeforeAfter:
    """The base model against the tuned one: metrics on the held-out set, and forgetting."""

    n: int
    """Held-out examples both models were scored on."""
    metrics: list[MetricChange]
    general: PerplexityChange | None
    """``None`` where no perplexity applies (a classifier head)."""

    @property
    def forgetting(self) -> bool:
        return self.general is not None and self.general.forgetting

    @property
    def forgetting_note(self) -> str | None:
        """A sentence for the report when general-text perplexity rose past the threshold."""
        if self.general is None or not self.general.forgetting:
            return None
        g = self.general
        return (
            f"Forgetting: perplexity on general English rose {g.relative_change:.1%} "
            f"({g.base:.2f} -> {g.tuned:.2f}), more than the {FORGETTING_THRESHOLD:.0%} "
            "threshold; consider a lower learning rate, fewer epochs, a smaller LoRA rank or "
            "mixing general data into training."
        )

    def to_dict(self) -> dict[str, Any]:
        general = None
        if self.general is not None:
            general = {
                "base": self.general.base,
                "tuned": self.general.tuned,
                "relative_change": self.general.relative_change,
            }
        return {
            "n": self.n,
            "confidence": CONFIDENCE,
            "metrics": [vars(m) for m in self.metrics],
            "general_perplexity": general,
            "forgetting": self.forgetting,
            "forgetting_note": self.forgetting_note,
        }

    def to_markdown(self) -> str:
        """A table ``metric | base | tuned | change (95% CI)``, then the forgetting note if any."""
        ci = f"{CONFIDENCE:.0%} CI"
        rows = [f"| metric | base | tuned | change ({ci}) |", "|---|---|---|---|"]
        for m in self.metrics:
            rows.append(
                f"| {m.name} | {m.base:.3f} | {m.tuned:.3f} "
                f"| {m.change:+.3f} ({m.low:+.3f}, {m.high:+.3f}) |"
            )
        if self.general is not None:
            g = self.general
            rows.append(
                f"| general perplexity | {g.base:.2f} | {g.tuned:.2f} | {g.relative_change:+.1%} |"
            )
        out = [
            *rows,
            "",
            f"n = {self.n} held-out examples; changes are tuned - base ({ci}: "
            "paired bootstrap over examples).",
        ]
        if self.forgetting_note:
            out += ["", f"**{self.forgetting_note}**"]
        return "\n".join(out) + "\n"


def compare_scores(
    base: Mapping[str, Sequence[float]],
    tuned: Mapping[str, Sequence[float]],
    general: PerplexityChange | None = None,
) -> BeforeAfter:
    """Per-example scores of both models (metric name -> one score per example) as a report."""
    if list(base) != list(tuned):
        raise ValueError(f"different metrics: {list(base)} vs {list(tuned)}")
    sizes = {len(v) for v in (*base.values(), *tuned.values())}
    if len(sizes) != 1:
        raise ValueError(f"the models were scored on different numbers of examples: {sizes}")
    n = sizes.pop()
    rows = []
    for name in base:
        b, t = base[name], tuned[name]
        diff = paired_bootstrap(mean_of(t), mean_of(b), n)
        mean_b, mean_t = sum(b) / len(b), sum(t) / len(t)
        rows.append(MetricChange(name, mean_b, mean_t, diff.value, diff.low, diff.high))
    return BeforeAfter(n=n, metrics=rows, general=general)


def compare_generation(
    base: GenerationScores, tuned: GenerationScores, ppl_base: float, ppl_tuned: float
) -> BeforeAfter:
    """Held-out answer quality and general-text perplexity, base against tuned."""
    if base.references != tuned.references:
        raise ValueError("base and tuned were scored against different references")
    return compare_scores(
        base.per_example, tuned.per_example, PerplexityChange(ppl_base, ppl_tuned)
    )


def compare_classification(
    base_predicted: Sequence[str],
    tuned_predicted: Sequence[str],
    gold: Sequence[str],
    *,
    ppl_base: float | None = None,
    ppl_tuned: float | None = None,
) -> BeforeAfter:
    """Accuracy of both models on the same labels; perplexity only where the models are LMs."""
    if (ppl_base is None) != (ppl_tuned is None):
        raise ValueError("give both perplexities or neither")
    general = None
    if ppl_base is not None and ppl_tuned is not None:
        general = PerplexityChange(ppl_base, ppl_tuned)
    return compare_scores(
        {"accuracy": correct_labels(base_predicted, gold)},
        {"accuracy": correct_labels(tuned_predicted, gold)},
        general,
    )
