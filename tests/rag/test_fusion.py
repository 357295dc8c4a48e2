"""The fusion functions against hand-computed numbers, and Retriever.search against them."""

from __future__ import annotations

import math

import pytest

from mentor.rag.fusion import convex_weights, fuse, fuse_convex, normalise


def test_normalise_minmax_and_zscore() -> None:
    assert normalise([3.0, 1.0, 2.0], "minmax") == [1.0, 0.0, 0.5]
    sd = math.sqrt(2 / 3)  # population sd of 1, 2, 3
    assert normalise([1.0, 2.0, 3.0], "zscore") == pytest.approx([-1 / sd, 0.0, 1 / sd])
    assert normalise([5.0, 5.0], "minmax") == [0.0, 0.0]  # constant: no spread to scale
    assert normalise([5.0, 5.0], "zscore") == [0.0, 0.0]
    assert normalise([], "minmax") == []
    with pytest.raises(ValueError, match="normalization 'rank'"):
        normalise([1.0], "rank")  # type: ignore[arg-type]


LISTS = {"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "bm25": [("c", 10.0), ("a", 5.0)]}


def test_convex_minmax_by_hand() -> None:
    # dense -> a 1, b .5, c 0; bm25 -> c 1, a 0, and b (missing) its floor 0.
    fused = fuse_convex(LISTS, {"dense": 0.7, "bm25": 0.3}, "minmax")
    assert [d for d, _ in fused] == ["a", "b", "c"]
    assert [s for _, s in fused] == pytest.approx([0.7, 0.35, 0.3])


def test_convex_zscore_by_hand() -> None:
    # dense z: a 1.2247, b 0, c -1.2247; bm25 z (mean 7.5, sd 2.5): c 1, a -1, floor -1.
    fused = dict(fuse_convex(LISTS, {"dense": 0.5, "bm25": 0.5}, "zscore"))
    z = 0.4 / math.sqrt(0.32 / 3)
    assert fused == pytest.approx({"a": 0.5 * z - 0.5, "b": -0.5, "c": -0.5 * z + 0.5})
    assert sorted(fused, key=lambda d: -fused[d]) == ["a", "c", "b"]


def test_rrf_and_depth_by_hand() -> None:
    lists = {"dense": [("a", 9.0), ("b", 8.0)], "bm25": [("b", 1.0), ("c", 0.5)]}
    weights = {"dense": 1.0, "bm25": 1.0}
    fused = fuse(lists, weights, fusion="rrf", rrf_k=1.0)
    assert [d for d, _ in fused] == ["b", "a", "c"]
    assert [s for _, s in fused] == pytest.approx([1 / 3 + 1 / 2, 1 / 2, 1 / 3])
    # Cut to one candidate each: a and b tie at 1/2, broken by id.
    assert fuse(lists, weights, fusion="rrf", rrf_k=1.0, depth=1) == [("a", 0.5), ("b", 0.5)]
    weighted = fuse(lists, {"dense": 3.0, "bm25": 1.0}, fusion="rrf", rrf_k=1.0)
    assert [d for d, _ in weighted] == ["a", "b", "c"]  # 3/2 > 3/3 + 1/2 > 1/3
    with pytest.raises(ValueError, match="fusion 'max'"):
        fuse(lists, weights, fusion="max")  # type: ignore[arg-type]


def test_convex_weights_share_alpha_among_probes() -> None:
    assert convex_weights(["dense:0", "bm25:0"], 0.8) == pytest.approx(
        {"dense:0": 0.8, "bm25:0": 0.2}
    )
    assert convex_weights(["dense:0", "dense:1", "bm25:0"], 0.5) == pytest.approx(
        {"dense:0": 0.25, "dense:1": 0.25, "bm25:0": 0.5}
    )
    with pytest.raises(ValueError, match="alpha"):
        convex_weights(["dense:0"], 1.5)
    with pytest.raises(ValueError, match="weights missing"):
        fuse_convex(LISTS, {"dense": 1.0})


def test_search_config_rejects_bad_fusion_fields() -> None:
    from mentor.rag.retrieve import SearchConfig

    with pytest.raises(ValueError, match="alpha"):
        SearchConfig(alpha=2.0)
    with pytest.raises(ValueError, match="fusion 'sum'"):
        SearchConfig(fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode 'both'"):
        SearchConfig(mode="both")  # type: ignore[arg-type]
