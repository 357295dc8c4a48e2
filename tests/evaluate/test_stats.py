from __future__ import annotations

import numpy as np
import pytest

from mentor.evaluate.stats import (
    bootstrap_ci,
    latency_summary,
    paired_bootstrap_diff,
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


def test_bootstrap_ci_contains_true_mean_and_matches_normal_theory() -> None:
    sample = _normal(4000)
    point, low, high = bootstrap_ci(sample)
    assert point == pytest.approx(float(np.mean(sample)))
    assert low < 5.0 < high
    # For a mean the percentile interval approaches point +- 1.96 * s / sqrt(n).
    half_width = 1.96 * float(np.std(sample, ddof=1)) / np.sqrt(len(sample))
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_ci_is_deterministic_with_a_seed() -> None:
    sample = _normal(200)
    assert bootstrap_ci(sample, seed=3) == bootstrap_ci(sample, seed=3)
    assert bootstrap_ci(sample, seed=3) != bootstrap_ci(sample, seed=4)


def test_bootstrap_ci_narrows_as_n_grows() -> None:
    widths = []
    for n in (50, 500, 5000):
        _, low, high = bootstrap_ci(_normal(n))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_ci_takes_other_statistics_and_confidences() -> None:
    sample = _normal(500)
    point, low, high = bootstrap_ci(sample, lambda x: float(np.median(x)))
    assert point == pytest.approx(float(np.median(sample)))
    assert low < point < high
    _, low90, high90 = bootstrap_ci(sample, confidence=0.90)
    _, low99, high99 = bootstrap_ci(sample, confidence=0.99)
    assert low99 < low90 and high90 < high99


def test_bootstrap_ci_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], resamples=0)


def test_paired_diff_excludes_zero_for_a_clearly_better_system() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, size=100)  # per-query effect shared by both systems
    b = difficulty + rng.normal(0, 0.05, size=100)
    a = b + 0.05 + rng.normal(0, 0.05, size=100)
    point, low, high = paired_bootstrap_diff(a.tolist(), b.tolist())
    assert point == pytest.approx(float(np.mean(a) - np.mean(b)))
    assert 0 < low < point < high
    # Swapping the systems flips the sign of the interval.
    assert paired_bootstrap_diff(b.tolist(), a.tolist())[2] < 0


def test_paired_diff_includes_zero_for_identical_systems() -> None:
    scores = _normal(100)
    assert paired_bootstrap_diff(scores, scores) == (0.0, 0.0, 0.0)
    # Same scores on shuffled queries: equal means, noisy pairs.
    shuffled = np.random.default_rng(2).permutation(scores).tolist()
    point, low, high = paired_bootstrap_diff(scores, shuffled)
    assert point == pytest.approx(0.0, abs=1e-12)
    assert low < 0 < high


def test_paired_diff_requires_equal_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap_diff([1.0, 2.0], [1.0])
