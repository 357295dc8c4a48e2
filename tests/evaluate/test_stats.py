"""Percentiles, latency summaries and the one bootstrap every report uses: unpaired over example
indices (a mean, macro-F1), the mean of values, and the paired difference (scaled to points),
checked by hand, against normal theory, and against an independent computation (a numpy loop and
scipy.stats.bootstrap) with the same draws."""

from __future__ import annotations

import numpy as np
import pytest

from mentor.evaluate.labels import macro_f1_of
from mentor.evaluate.stats import (
    CONFIDENCE,
    RESAMPLES,
    Estimate,
    Statistic,
    bootstrap,
    bootstrap_mean,
    latency_summary,
    mean_of,
    paired_bootstrap,
    percentile,
)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100, 33.3])
def test_percentile_matches_numpy(n: int, q: float) -> None:
    values = np.random.default_rng(n).exponential(size=n).tolist()
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_interpolates_by_hand() -> None:
    # Sorted 1, 2, 3, 4: the 95th percentile sits at index 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3).
    assert percentile([4, 1, 3, 2], 95) == pytest.approx(3.85)
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.004, 0.001, 0.003, 0.002])
    assert summary.count == 4
    assert summary.mean_ms == pytest.approx(2.5)
    assert summary.p50_ms == pytest.approx(2.5)
    assert summary.p95_ms == pytest.approx(3.85)
    assert summary.p99_ms == pytest.approx(3.97)
    assert summary.max_ms == pytest.approx(4.0)
    assert summary.to_dict()["max_ms"] == pytest.approx(4.0)
    with pytest.raises(ValueError):
        latency_summary([])


def _normal(n: int, seed: int = 0) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).normal(loc=5.0, scale=2.0, size=n)]


def _median_of(values: list[float]) -> Statistic:
    array = np.asarray(values)
    return lambda rows: float(np.median(array[rows]))


# --- the result type and the defaults -------------------------------------------------------


def test_estimate_is_a_frozen_value_with_its_interval() -> None:
    e = Estimate(0.5, 0.4, 0.6)
    assert (e.value, e.low, e.high) == (0.5, 0.4, 0.6)
    assert e.excludes_zero() and Estimate(-2.0, -3.0, -1.0).excludes_zero()
    assert not Estimate(0.1, -0.1, 0.3).excludes_zero()
    assert not Estimate(0.0, 0.0, 0.0).excludes_zero()
    with pytest.raises(AttributeError):
        e.value = 1.0  # type: ignore[misc]
    assert isinstance(bootstrap_mean([1.0, 0.0]), Estimate)


def test_the_default_is_2000_resamples_at_95_percent() -> None:
    assert (RESAMPLES, CONFIDENCE) == (2000, 0.95)
    sample = _normal(30)
    explicit = bootstrap_mean(sample, resamples=2000, confidence=0.95, seed=0)
    assert bootstrap_mean(sample) == explicit
    assert bootstrap(mean_of(sample), 30) == explicit
    assert bootstrap_mean(sample, resamples=1000) != explicit


def test_statistic_is_called_once_per_resample_on_n_indices() -> None:
    seen: list[int] = []

    def statistic(rows: np.ndarray) -> float:
        seen.append(len(rows))
        return float(rows.mean())

    bootstrap(statistic, 7)
    assert seen == [7] * (RESAMPLES + 1)  # every resample, then the point on 0..n-1


# --- against an independent computation with the same draws ---------------------------------


def _by_hand(
    statistic: Statistic, n: int, resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile interval written out: numpy's generator, numpy's percentile."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    stats = np.array([statistic(draws[r]) for r in range(resamples)])
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [alpha, 100 - alpha])
    return float(low), float(high)


@pytest.mark.parametrize("seed", [0, 7])
def test_mean_interval_matches_a_hand_written_loop(seed: int) -> None:
    values = np.random.default_rng(seed).exponential(size=60)
    e = bootstrap_mean(values.tolist(), seed=seed)
    assert e.value == pytest.approx(float(values.mean()))
    low, high = _by_hand(lambda rows: float(values[rows].mean()), 60, RESAMPLES, seed)
    assert (e.low, e.high) == pytest.approx((low, high), rel=1e-12)


def test_mean_interval_matches_scipy_percentile_bootstrap() -> None:
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(3).normal(size=80)
    e = bootstrap_mean(values.tolist(), seed=11, confidence=0.9)
    reference = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=RESAMPLES,
        batch=RESAMPLES,  # one draw of (resamples, n) indices, as ours
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert (e.low, e.high) == pytest.approx((reference.low, reference.high), rel=1e-12)


def test_macro_f1_interval_resamples_indices_not_scores() -> None:
    labels = ["yes", "no", "maybe"]
    rng = np.random.default_rng(5)
    gold = [str(x) for x in rng.choice(labels, size=50)]
    predicted: list[str | None] = [g if rng.random() < 0.7 else "yes" for g in gold]
    statistic = macro_f1_of(predicted, gold, labels)
    e = bootstrap(statistic, 50, resamples=500, seed=2)
    assert e.value == pytest.approx(statistic(np.arange(50)))
    assert (e.low, e.high) == pytest.approx(_by_hand(statistic, 50, 500, 2), rel=1e-12)
    assert e.low < e.value < e.high
    # macro-F1 of a resample is not the mean of per-example scores: its interval differs
    correct = [float(p == g) for p, g in zip(predicted, gold, strict=True)]
    assert bootstrap_mean(correct, resamples=500, seed=2) != e


def test_paired_interval_matches_a_hand_written_loop_and_scales() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.uniform(size=40), rng.uniform(size=40)
    diff = paired_bootstrap(mean_of(a.tolist()), mean_of(b.tolist()), 40, scale=100.0, seed=9)
    assert diff.value == pytest.approx(100 * float(a.mean() - b.mean()))
    low, high = _by_hand(
        lambda rows: 100 * float(a[rows].mean() - b[rows].mean()), 40, RESAMPLES, 9
    )
    assert (diff.low, diff.high) == pytest.approx((low, high), rel=1e-9)
    unscaled = paired_bootstrap(mean_of(a.tolist()), mean_of(b.tolist()), 40, seed=9)
    assert (diff.value, diff.low, diff.high) == pytest.approx(
        (100 * unscaled.value, 100 * unscaled.low, 100 * unscaled.high)
    )


# --- the mean's interval --------------------------------------------------------------------


def test_bootstrap_mean_contains_true_mean_and_matches_normal_theory() -> None:
    sample = _normal(4000)
    e = bootstrap_mean(sample)
    assert e.value == pytest.approx(float(np.mean(sample)))
    assert e.low < 5.0 < e.high
    # For a mean the percentile interval approaches point +- 1.96 * s / sqrt(n).
    half_width = 1.96 * float(np.std(sample, ddof=1)) / np.sqrt(len(sample))
    assert (e.high - e.low) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_of_a_share_is_close_to_the_normal_approximation() -> None:
    values = [1.0] * 50 + [0.0] * 50
    e = bootstrap(mean_of(values), 100, resamples=2000, seed=0)
    half = 1.96 * np.sqrt(0.25 / 100)  # ~0.098
    assert e.low == pytest.approx(0.5 - half, abs=0.02)
    assert e.high == pytest.approx(0.5 + half, abs=0.02)


def test_bootstrap_is_deterministic_with_a_seed() -> None:
    sample = _normal(200)
    assert bootstrap_mean(sample, seed=3) == bootstrap_mean(sample, seed=3)
    assert bootstrap_mean(sample, seed=3) != bootstrap_mean(sample, seed=4)
    values = [1.0] * 7 + [0.0] * 13
    first = bootstrap(mean_of(values), len(values), resamples=500, seed=3)
    assert first.value == pytest.approx(0.35)
    assert first.low <= first.value <= first.high
    assert 0.0 < first.low < first.high < 1.0
    assert bootstrap(mean_of(values), len(values), resamples=500, seed=3) == first


def test_bootstrap_of_an_all_equal_sample_has_zero_width() -> None:
    for value in (0.0, 1.0, 0.25):
        e = bootstrap(mean_of([value] * 9), 9, resamples=200)
        assert e.value == e.low == e.high == pytest.approx(value)


def test_bootstrap_narrows_as_n_grows() -> None:
    widths = []
    for n in (50, 500, 5000):
        e = bootstrap_mean(_normal(n))
        widths.append(e.high - e.low)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_takes_other_statistics_and_confidences() -> None:
    sample = _normal(500)
    e = bootstrap(_median_of(sample), len(sample))
    assert e.value == pytest.approx(float(np.median(sample)))
    assert e.low < e.value < e.high
    e90 = bootstrap_mean(sample, confidence=0.90)
    e99 = bootstrap_mean(sample, confidence=0.99)
    assert e99.low < e90.low and e90.high < e99.high


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nothing to resample"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="nothing to resample"):
        bootstrap(mean_of([]), 0)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0], resamples=0)


# --- the paired difference ------------------------------------------------------------------


def test_paired_diff_excludes_zero_for_a_clearly_better_system() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, size=100)  # per-query effect shared by both systems
    b = difficulty + rng.normal(0, 0.05, size=100)
    a = b + 0.05 + rng.normal(0, 0.05, size=100)
    diff = paired_bootstrap(mean_of(a.tolist()), mean_of(b.tolist()), 100)
    assert diff.value == pytest.approx(float(np.mean(a) - np.mean(b)))
    assert 0 < diff.low < diff.value < diff.high
    # Swapping the systems flips the sign of the interval.
    assert paired_bootstrap(mean_of(b.tolist()), mean_of(a.tolist()), 100).high < 0


def test_paired_diff_includes_zero_for_identical_systems() -> None:
    scores = _normal(100)
    assert paired_bootstrap(mean_of(scores), mean_of(scores), 100) == Estimate(0.0, 0.0, 0.0)
    # Same scores on shuffled queries: equal means, noisy pairs.
    shuffled = np.random.default_rng(2).permutation(scores).tolist()
    diff = paired_bootstrap(mean_of(scores), mean_of(shuffled), 100)
    assert diff.value == pytest.approx(0.0, abs=1e-12)
    assert diff.low < 0 < diff.high


def test_paired_difference_of_identical_arms_is_zero_with_zero_width() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    diff = paired_bootstrap(mean_of(values), mean_of(values), len(values), scale=100.0)
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes_zero()


def test_paired_difference_of_a_clearly_better_arm_excludes_zero() -> None:
    better = [1.0] * 30 + [0.0] * 10
    worse = [1.0] * 18 + [0.0] * 22  # right on a subset of the better arm's questions
    diff = paired_bootstrap(mean_of(better), mean_of(worse), 40, scale=100.0, resamples=500)
    assert diff.value == pytest.approx(30.0)  # points
    assert diff.low > 0 and diff.excludes_zero()
    # pairing: unpaired intervals of 75% and 45% on 40 questions would overlap far more
    assert diff.high - diff.low < 35
    reverse = paired_bootstrap(mean_of(worse), mean_of(better), 40, scale=100.0, resamples=500)
    assert reverse.value == pytest.approx(-30.0) and reverse.high < 0


def test_paired_difference_of_a_small_gap_reaches_zero() -> None:
    a = [1.0] * 11 + [0.0] * 9
    b = [1.0] * 10 + [0.0] * 10
    diff = paired_bootstrap(mean_of(a), mean_of(b), 20, scale=100.0, resamples=500)
    assert diff.value == pytest.approx(5.0) and diff.low <= 0 <= diff.high


def test_paired_diff_needs_examples() -> None:
    with pytest.raises(ValueError, match="nothing to resample"):
        paired_bootstrap(mean_of([]), mean_of([]), 0)
