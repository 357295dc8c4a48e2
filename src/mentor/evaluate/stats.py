"""Small statistics for evaluation reports: percentiles, latency summaries and the bootstrap.

``percentile`` interpolates linearly between order statistics, as ``numpy.percentile``'s default
(Hyndman & Fan, 1996, definition 7). Every confidence interval in mentor (the fine-tune
before/after report, quantization, the bakeoff) is a percentile bootstrap interval (Efron &
Tibshirani, 1993, ch. 13) computed here, with :data:`RESAMPLES` resamples by default and a seeded
numpy ``Generator``, so a report is reproducible and two reports agree on the same scores.

The bootstrap resamples *example indices*: a statistic is a function of the indices ``rows`` of
the examples drawn (:data:`Statistic`), so a statistic that is not a mean of per-example scores,
such as macro-F1 over a label set, is resampled the same way as a mean (:func:`mean_of` turns
per-example scores into one). :func:`paired_bootstrap` evaluates two systems' statistics on the
same resampled indices: the paired bootstrap used to compare systems in MT (Koehn, 2004) and IR
(Sakai, 2006), far tighter than setting two independent intervals side by side.

Usage::

    accuracy = bootstrap_mean(correct)  # Estimate(value, low, high)
    f1 = bootstrap(macro_f1_of(predicted, gold, labels), len(gold))  # not a mean
    gain = paired_bootstrap(mean_of(tuned), mean_of(base), n, scale=100.0)  # in points
    gain.excludes_zero()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

RESAMPLES = 2000
"""Bootstrap resamples of every interval unless a caller asks for another number."""

CONFIDENCE = 0.95
"""Coverage of every interval unless a caller asks for another."""

Statistic = Callable[[NDArray[np.intp]], float]
"""A statistic of the examples at the given indices (drawn with replacement), e.g. their mean."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between sorted values."""
    if len(values) == 0:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0  # 0-based fractional index into the sorted sample
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LatencySummary:
    """Latency distribution of ``count`` calls, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def latency_summary(seconds: Sequence[float]) -> LatencySummary:
    """Summarise per-call latencies given in seconds (as ``time.perf_counter`` differences)."""
    if len(seconds) == 0:
        raise ValueError("latency_summary needs at least one measurement")
    ms = [s * 1000.0 for s in seconds]
    return LatencySummary(
        count=len(ms),
        mean_ms=sum(ms) / len(ms),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
    )


@dataclass(frozen=True)
class Estimate:
    """A measured value with its percentile bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0: for a difference, beyond resampling noise."""
        return self.low > 0 or self.high < 0


def mean_of(values: Sequence[float]) -> Statistic:
    """The mean of ``values`` at the drawn indices: the statistic of per-example scores."""
    array = np.asarray(values, dtype=np.float64)
    return lambda rows: float(array[rows].mean())


def bootstrap(
    statistic: Statistic,
    n: int,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of all ``n`` examples, with its percentile bootstrap interval.

    Each resample draws n indices from 0..n-1 with replacement; the interval is the
    (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of the resampled statistics.
    """
    if n < 1:
        raise ValueError("nothing to resample: no examples")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))  # (resamples, n): one resample per row
    stats = [statistic(rows) for rows in draws]
    alpha = (1.0 - confidence) / 2.0
    return Estimate(
        statistic(np.arange(n)),
        percentile(stats, 100.0 * alpha),
        percentile(stats, 100.0 * (1.0 - alpha)),
    )


def bootstrap_mean(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The mean of ``values`` (one score per example), with its percentile bootstrap interval."""
    return bootstrap(
        mean_of(values), len(values), confidence=confidence, resamples=resamples, seed=seed
    )


def paired_bootstrap(
    a: Statistic,
    b: Statistic,
    n: int,
    *,
    scale: float = 1.0,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """``scale * (a - b)`` for two systems scored on the same ``n`` examples, with its paired
    percentile bootstrap interval (``scale=100`` turns shares into points).

    Both statistics see the same resampled indices, so the per-example pairing is kept and the
    interval reflects only how the *difference* varies. An interval that excludes 0 says a beats
    (or trails) b beyond resampling noise.
    """
    return bootstrap(
        lambda rows: scale * (a(rows) - b(rows)),
        n,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
