"""Drift statistics against hand-computed values, a plain-loop MMD and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mentor.monitor.drift import (
    _split_statistics,
    mean_cosine_shift,
    median_bandwidth,
    mmd2,
    mmd_permutation_test,
    pca_2d,
    rbf_kernel,
)

X = np.array([[0.0], [1.0]])
Y = np.array([[2.0], [3.0]])


def _loop_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma * sigma))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_hand_computed_tiny_example() -> None:
    # Pooled {0, 1, 2, 3}: distances 1, 1, 1, 2, 2, 3, median 1.5.
    assert median_bandwidth(X, Y) == 1.5
    e = math.exp
    # sigma = 1: k = exp(-d^2 / 2). Within each side one pair at distance 1 (both orders);
    # across, distances 2, 3, 1, 2.
    expected = e(-0.5) + e(-0.5) - 2 * (e(-2) + e(-4.5) + e(-0.5) + e(-2)) / 4
    assert mmd2(X, Y, sigma=1.0) == pytest.approx(expected, abs=1e-12)
    assert mmd2(X, Y) == pytest.approx(_loop_mmd2(X, Y, 1.5), abs=1e-12)
    assert rbf_kernel(X, Y, 1.0)[0, 1] == pytest.approx(e(-4.5))


def test_matches_loop_on_random_data() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5
    assert mmd2(x, y, sigma=1.3) == pytest.approx(_loop_mmd2(x, y, 1.3), abs=1e-12)


def test_vectorised_shuffles_match_the_plain_statistic() -> None:
    rng = np.random.default_rng(1)
    pooled = rng.normal(size=(9, 4))
    m, n = 5, 4
    k0 = rbf_kernel(pooled, pooled, 1.7)
    np.fill_diagonal(k0, 0.0)
    labels = np.zeros((6, m + n))
    for row in range(6):
        labels[row, rng.permutation(m + n)[:m]] = 1.0
    got = _split_statistics(k0, labels, m, n)
    for row in range(6):
        ref, rec = pooled[labels[row] == 1], pooled[labels[row] == 0]
        assert got[row] == pytest.approx(mmd2(ref, rec, sigma=1.7), abs=1e-12)


def test_same_distribution_gives_large_p_values() -> None:
    rng = np.random.default_rng(2)
    p_values = np.array(
        [
            mmd_permutation_test(
                rng.normal(size=(80, 16)), rng.normal(size=(60, 16)), permutations=100, seed=s
            ).p_value
            for s in range(40)
        ]
    )
    # Under the null hypothesis p is uniform on (0, 1]: mean 1/2, 5% of them below 0.05.
    assert 0.35 < p_values.mean() < 0.65
    assert (p_values < 0.05).mean() <= 0.15


def test_shifted_distribution_gives_small_p() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 16)), rng.normal(size=(60, 16))
    y[:, 0] += 1.0
    result = mmd_permutation_test(x, y, permutations=300, seed=0)
    assert result.p_value == 1 / 301  # no shuffle scores as high
    assert result.mmd2 > 0 and result.n_reference == 80 and result.n_recent == 60


def test_permutation_test_is_seeded_and_capped() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(3000, 8)), rng.normal(size=(2500, 8))
    a = mmd_permutation_test(x, y, permutations=50, max_samples=200, seed=5)
    b = mmd_permutation_test(x, y, permutations=50, max_samples=200, seed=5)
    assert a == b and a.n_reference == 200 and a.n_recent == 200
    with pytest.raises(ValueError, match="dimension"):
        mmd_permutation_test(x, y[:, :4])
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd_permutation_test(x[:1], y)


def test_identical_points_keep_a_defined_bandwidth() -> None:
    same = np.ones((4, 3))
    assert median_bandwidth(same, same) == 1.0
    assert mmd2(same, same) == pytest.approx(0.0, abs=1e-12)


def test_mean_cosine_shift() -> None:
    assert mean_cosine_shift([[1.0, 0.0], [1.0, 0.1]], [[2.0, 0.0], [2.0, 0.2]]) == pytest.approx(
        0.0, abs=1e-12
    )
    assert mean_cosine_shift([[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]) == 1.0


def test_pca_matches_scikit_learn() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 5)) * np.array([10.0, 1.0, 3.0, 0.5, 0.1])
    y = rng.normal(size=(20, 5)) + 1.0
    px, py = pca_2d(x, y)
    assert px.shape == (50, 2) and py.shape == (20, 2)
    expected = PCA(n_components=2).fit_transform(np.concatenate([x, y]))
    got = np.concatenate([px, py])
    signs = np.sign((got * expected).sum(0))  # each axis is defined up to its sign
    assert np.allclose(got * signs, expected, atol=1e-9)
