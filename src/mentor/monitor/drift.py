"""Has the stream of queries drifted? Two-sample statistics on query embeddings.

The main test is the maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample Test",
JMLR 2012) with a Gaussian RBF kernel ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, ``sigma``
the median distance between pooled points (the median heuristic). The unbiased estimate is

    MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
            - 2 sum_{i, j} k(x_i, y_j) / (m n)

and its p-value comes from a permutation test: pool the two samples, reshuffle which points
are "reference" and which "recent", and count how often a shuffle scores at least as high.
The pooled kernel matrix is computed once; every shuffle is then a label vector ``a`` (1 for
reference) and its statistic three quadratic forms in the zero-diagonal kernel matrix ``K0``:
``a^T K0 a``, ``a^T K0 (1 - a)`` and the rest from the total, which numpy does for a block of
shuffles at once (one matrix product per block). Samples are capped by subsampling, so a
month of queries costs the same as a thousand.

``mean_cosine_shift`` is the cheap summary: one minus the cosine between the two mean
embeddings. ``pca_2d`` projects both sets onto the pooled top two principal axes for a plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MMDTest",
    "mean_cosine_shift",
    "median_bandwidth",
    "mmd2",
    "mmd_permutation_test",
    "pca_2d",
    "rbf_kernel",
]

Array = npt.NDArray[np.float64]
_BLOCK = 64  # shuffles per matrix product: (64, n) @ (n, n)


def _as_2d(x: npt.ArrayLike, name: str) -> Array:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must be a 2-D array with at least 2 rows, got {array.shape}")
    return array


def _squared_distances(a: Array, b: Array) -> Array:
    sq: Array = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0)  # rounding can make |a - a|^2 slightly negative


def median_bandwidth(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Median distance between distinct points of the pooled sample (the median heuristic).

    Falls back to 1.0 when every point is the same, so the kernel stays defined."""
    pooled = np.concatenate([_as_2d(x, "x"), _as_2d(y, "y")])
    upper = np.triu_indices(len(pooled), k=1)
    distances = np.sqrt(_squared_distances(pooled, pooled)[upper])
    median = float(np.median(distances))
    return median if median > 0.0 else 1.0


def rbf_kernel(a: npt.ArrayLike, b: npt.ArrayLike, sigma: float) -> Array:
    """``exp(-|a_i - b_j|^2 / (2 sigma^2))`` for every pair, shape (len(a), len(b))."""
    if sigma <= 0.0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    a2, b2 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.asarray(np.exp(-_squared_distances(a2, b2) / (2.0 * sigma * sigma)))


def mmd2(x: npt.ArrayLike, y: npt.ArrayLike, sigma: float | None = None) -> float:
    """Unbiased MMD^2 between samples ``x`` (m, d) and ``y`` (n, d); median-heuristic ``sigma``
    when None. Near zero (it can be slightly negative) when both come from one distribution."""
    xa, ya = _as_2d(x, "x"), _as_2d(y, "y")
    sigma = median_bandwidth(xa, ya) if sigma is None else sigma
    m, n = len(xa), len(ya)
    kxx, kyy, kxy = rbf_kernel(xa, xa, sigma), rbf_kernel(ya, ya, sigma), rbf_kernel(xa, ya, sigma)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


@dataclass(frozen=True)
class MMDTest:
    """The result of a permutation MMD test between a reference and a recent sample."""

    mmd2: float
    """Unbiased MMD^2 of the (subsampled) samples."""
    p_value: float
    """Share of shuffles scoring at least as high, ``(1 + count) / (1 + permutations)``."""
    sigma: float
    """RBF bandwidth used (median heuristic unless given)."""
    n_reference: int
    """Reference points used (after the cap)."""
    n_recent: int
    """Recent points used (after the cap)."""
    permutations: int
    """Shuffles drawn."""


def _subsample(x: Array, cap: int, rng: np.random.Generator) -> Array:
    if len(x) <= cap:
        return x
    return x[np.sort(rng.choice(len(x), size=cap, replace=False))]


def _split_statistics(k0: Array, labels: Array, m: int, n: int) -> Array:
    """Unbiased MMD^2 for each row of ``labels`` (B, m + n), 1 marking the reference points.

    ``k0`` is the pooled kernel matrix with a zero diagonal, so quadratic forms in it sum
    only over distinct pairs."""
    total = k0.sum()
    ka = labels @ k0  # (B, m + n): each point's summed kernel to the reference points
    s_xx = (ka * labels).sum(1)
    s_xy = (ka * (1.0 - labels)).sum(1)
    s_yy = total - s_xx - 2.0 * s_xy
    result: Array = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)
    return result


def mmd_permutation_test(
    reference: npt.ArrayLike,
    recent: npt.ArrayLike,
    *,
    permutations: int = 500,
    max_samples: int = 1000,
    sigma: float | None = None,
    seed: int = 0,
) -> MMDTest:
    """MMD^2 between ``reference`` and ``recent`` with a permutation p-value.

    Each side is first subsampled (seeded) to at most ``max_samples`` rows. Cost: one (N, N)
    kernel matrix, N = the two sizes together, and ``permutations`` products of it with a
    label vector."""
    if permutations < 1:
        raise ValueError(f"permutations must be positive, got {permutations}")
    if max_samples < 2:
        raise ValueError(f"max_samples must be at least 2, got {max_samples}")
    rng = np.random.default_rng(seed)
    x = _subsample(_as_2d(reference, "reference"), max_samples, rng)
    y = _subsample(_as_2d(recent, "recent"), max_samples, rng)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has dimension {x.shape[1]}, recent {y.shape[1]}")
    m, n = len(x), len(y)
    sigma = median_bandwidth(x, y) if sigma is None else sigma
    pooled = np.concatenate([x, y])
    k0 = rbf_kernel(pooled, pooled, sigma)
    np.fill_diagonal(k0, 0.0)

    observed_labels = np.zeros((1, m + n))
    observed_labels[0, :m] = 1.0
    observed = float(_split_statistics(k0, observed_labels, m, n)[0])
    at_least = 0
    for start in range(0, permutations, _BLOCK):
        size = min(_BLOCK, permutations - start)
        # Row-wise shuffles of the observed labels: argsort of uniform noise is a uniform
        # random permutation per row.
        order = np.argsort(rng.random((size, m + n)), axis=1)
        labels = (order < m).astype(np.float64)
        # A tiny tolerance: a shuffle equal to the observed split must count as "as high".
        at_least += int((_split_statistics(k0, labels, m, n) >= observed - 1e-12).sum())
    p_value = (1 + at_least) / (1 + permutations)
    return MMDTest(observed, p_value, sigma, m, n, permutations)


def mean_cosine_shift(reference: npt.ArrayLike, recent: npt.ArrayLike) -> float:
    """One minus the cosine similarity of the two mean embeddings (0: same direction)."""
    a = _as_2d(reference, "reference").mean(0)
    b = _as_2d(recent, "recent").mean(0)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 0.0
    return float(1.0 - (a @ b) / norms)


def pca_2d(reference: npt.ArrayLike, recent: npt.ArrayLike) -> tuple[Array, Array]:
    """Both sets projected onto the top two principal axes of the pooled, centred sample:
    arrays of shape (m, 2) and (n, 2). Fewer than two axes of variance pad with zeros."""
    x, y = _as_2d(reference, "reference"), _as_2d(recent, "recent")
    pooled = np.concatenate([x, y])
    centre = pooled.mean(0)
    _, _, vt = np.linalg.svd(pooled - centre, full_matrices=False)
    axes = np.zeros((2, pooled.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    return (x - centre) @ axes.T, (y - centre) @ axes.T
