from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
import pytrec_eval

from mentor.evaluate.retrieval import (
    Qrels,
    Run,
    average_precision,
    evaluate_run,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    rank,
    recall_at_k,
    reciprocal_rank_fusion,
)

# One query: d1 is highly relevant (2), d3 partly (1); the run ranks d2, d1, d3.
RELEVANCE = {"d1": 2, "d3": 1}
RANKING = ["d2", "d1", "d3"]


@pytest.mark.parametrize(
    ("k", "precision", "recall", "hit"),
    [
        (1, 0 / 1, 0 / 2, 0.0),
        (2, 1 / 2, 1 / 2, 1.0),
        (3, 2 / 3, 2 / 2, 1.0),
        (10, 2 / 10, 2 / 2, 1.0),  # k past the run: precision still divides by k (trec_eval P_k)
    ],
)
def test_counting_metrics_by_hand(k: int, precision: float, recall: float, hit: float) -> None:
    assert precision_at_k(RELEVANCE, RANKING, k) == pytest.approx(precision)
    assert recall_at_k(RELEVANCE, RANKING, k) == pytest.approx(recall)
    assert hit_rate_at_k(RELEVANCE, RANKING, k) == hit


def test_mrr_by_hand() -> None:
    assert mrr_at_k(RELEVANCE, RANKING, 1) == 0.0  # first relevant (d1) is at rank 2
    assert mrr_at_k(RELEVANCE, RANKING, 2) == pytest.approx(1 / 2)
    assert mrr_at_k(RELEVANCE, RANKING, 10) == pytest.approx(1 / 2)


def test_ndcg_by_hand() -> None:
    # DCG@3  = sum gain_r / log2(r + 1) = 0/log2(2) + 2/log2(3) + 1/log2(4)
    # IDCG@3 = ideal order d1, d3       = 2/log2(2) + 1/log2(3)
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(RELEVANCE, RANKING, 3) == pytest.approx(dcg / idcg)
    # @1: the top doc d2 has gain 0.
    assert ndcg_at_k(RELEVANCE, RANKING, 1) == 0.0
    # @2: DCG = 2/log2(3); the ideal is cut at 2 as well.
    assert ndcg_at_k(RELEVANCE, RANKING, 2) == pytest.approx((2 / math.log2(3)) / idcg)


def test_ndcg_uses_graded_gain() -> None:
    # Same two relevant docs retrieved, but the grade-2 one first scores higher.
    best_first = ndcg_at_k(RELEVANCE, ["d1", "d3"], 2)
    worst_first = ndcg_at_k(RELEVANCE, ["d3", "d1"], 2)
    assert best_first == pytest.approx(1.0)
    assert worst_first == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert worst_first < best_first


def test_average_precision_by_hand() -> None:
    # Relevant at ranks 2 and 3: precisions 1/2 and 2/3, over 2 relevant docs.
    assert average_precision(RELEVANCE, RANKING) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # Cut at 2: only rank 2 counts, still divided by all 2 relevant (trec_eval map_cut).
    assert average_precision(RELEVANCE, RANKING, 2) == pytest.approx((1 / 2) / 2)
    assert average_precision(RELEVANCE, RANKING, 100) == average_precision(RELEVANCE, RANKING)


@pytest.mark.parametrize(
    "metric", [precision_at_k, recall_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, average_precision]
)
def test_no_relevant_retrieved_or_empty_ranking_scores_zero(metric: Callable[..., float]) -> None:
    assert metric(RELEVANCE, ["x", "y"], 5) == 0.0
    assert metric(RELEVANCE, [], 5) == 0.0
    assert metric({"d1": 0}, ["d1"], 5) == 0.0  # a grade of 0 is judged non-relevant


@pytest.mark.parametrize("metric", [precision_at_k, recall_at_k, ndcg_at_k, mrr_at_k])
def test_cutoff_must_be_positive(metric: Callable[..., float]) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        metric(RELEVANCE, RANKING, 0)


def test_rank_breaks_ties_by_doc_id_descending() -> None:
    assert rank({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    # Doc ids compare as strings, like trec_eval's strcmp: "9" > "10".
    assert rank({"10": 0.5, "9": 0.5}) == ["9", "10"]


@pytest.mark.parametrize(
    ("docs", "relevant", "p_at_1"),
    [
        (["a", "b", "c"], "c", 1.0),  # all tied: the largest doc id comes first
        (["a", "b", "c"], "a", 0.0),
        (["10", "9"], "9", 1.0),
    ],
)
def test_tie_breaking_matches_trec_eval(docs: list[str], relevant: str, p_at_1: float) -> None:
    qrels = {"q": {relevant: 1}}
    run = {"q": dict.fromkeys(docs, 1.0)}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"P_1"}).evaluate(run)["q"]["P_1"]
    ours = evaluate_run(qrels, run, ks=(1,)).per_query["q"]["precision@1"]
    assert ours == reference == p_at_1


def test_evaluate_run_counts_queries_like_trec_eval_minus_c() -> None:
    qrels: Qrels = {
        "q1": RELEVANCE,
        "q2": {"d9": 1},  # judged but absent from the run: scores 0
        "q3": {"d4": 0},  # nothing relevant: skipped
    }
    run: Run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d3": 0.7},
        "q4": {"d1": 1.0},  # no judgements: ignored
    }
    report = evaluate_run(qrels, run, ks=(1, 3))
    assert report.queries_evaluated == 2
    assert report.queries_missing_from_run == 1
    assert report.queries_without_judgements == 1
    assert report.queries_without_relevant == 1
    assert set(report.per_query) == {"q1", "q2"}
    assert all(value == 0.0 for value in report.per_query["q2"].values())
    assert report.per_query["q1"]["mrr@3"] == pytest.approx(1 / 2)
    assert report.metrics["mrr@3"] == pytest.approx((1 / 2 + 0) / 2)
    assert report.metrics["recall@3"] == pytest.approx((1 + 0) / 2)
    assert report.ks == (1, 3)
    assert set(report.metrics) == {
        f"{name}@{k}"
        for name in ("ndcg", "map", "recall", "precision", "mrr", "hit_rate")
        for k in (1, 3)
    }


def test_evaluate_run_empty_run_dict_scores_zero() -> None:
    report = evaluate_run({"q": {"d": 1}}, {"q": {}}, ks=(10,))
    assert report.metrics["ndcg@10"] == 0.0
    assert report.queries_missing_from_run == 0


def test_evaluate_run_rejects_bad_cutoffs() -> None:
    with pytest.raises(ValueError):
        evaluate_run({"q": {"d": 1}}, {}, ks=())
    with pytest.raises(ValueError):
        evaluate_run({"q": {"d": 1}}, {}, ks=(0, 5))


def test_report_serialises() -> None:
    report = evaluate_run({"q": RELEVANCE}, {"q": {"d2": 3.0, "d1": 2.0, "d3": 1.0}}, ks=(1, 10))
    as_dict = report.to_dict()
    assert as_dict["queries_evaluated"] == 1
    assert as_dict["metrics"] == report.metrics
    table = report.to_markdown()
    assert table.splitlines()[0] == "| metric | @1 | @10 |"
    assert "| mrr | 0.0000 | 0.5000 |" in table
    assert "1 queries evaluated" in table


# --- independent check against trec_eval (pytrec_eval) on a random fixture ---


def _random_fixture(seed: int = 13) -> tuple[Qrels, Run]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(50)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(30):
        qid = f"q{q}"
        qrels[qid] = {
            doc: rng.choice([0, 0, 1, 2, 3]) for doc in rng.sample(docs, rng.randint(1, 15))
        }
        # Scores rounded to one decimal, so most rankings contain ties.
        run[qid] = {doc: round(rng.random(), 1) for doc in rng.sample(docs, rng.randint(1, 50))}
    run["q_unjudged"] = {"d1": 1.0}
    return qrels, run


# (our key, trec_eval measure); recip_rank has no cutoff, so compare with k >= the run length (50).
PAIRS = [
    ("ndcg@10", "ndcg_cut_10"),
    ("ndcg@1", "ndcg_cut_1"),
    ("ndcg@5", "ndcg_cut_5"),
    ("ndcg@100", "ndcg_cut_100"),
    ("recall@100", "recall_100"),
    ("recall@5", "recall_5"),
    ("precision@5", "P_5"),
    ("precision@1", "P_1"),
    ("precision@100", "P_100"),
    ("map@100", "map_cut_100"),
    ("map@10", "map_cut_10"),
    ("mrr@100", "recip_rank"),
]


def test_matches_pytrec_eval_per_query() -> None:
    qrels, run = _random_fixture()
    measures = {measure for _, measure in PAIRS}
    reference = pytrec_eval.RelevanceEvaluator(
        {q: dict(d) for q, d in qrels.items()}, measures
    ).evaluate({q: dict(d) for q, d in run.items()})
    report = evaluate_run(qrels, run, ks=(1, 5, 10, 100))
    assert report.queries_evaluated > 20  # the fixture leaves a few queries with nothing relevant
    for qid, ours in report.per_query.items():
        for key, measure in PAIRS:
            assert ours[key] == pytest.approx(reference[qid][measure], abs=1e-9), (qid, key)
    # With every judged query in the run, our means are pytrec_eval's means over those queries.
    for key, measure in PAIRS:
        expected = sum(reference[q][measure] for q in report.per_query) / len(report.per_query)
        assert report.metrics[key] == pytest.approx(expected, abs=1e-9)


def test_full_map_matches_pytrec_eval() -> None:
    qrels, run = _random_fixture(seed=7)
    reference = pytrec_eval.RelevanceEvaluator(dict(qrels), {"map"}).evaluate(dict(run))
    for qid, relevance in qrels.items():
        if any(grade > 0 for grade in relevance.values()):
            ours = average_precision(relevance, rank(run[qid]))
            assert ours == pytest.approx(reference[qid]["map"], abs=1e-9)


# --- reciprocal rank fusion ---

RANKINGS = {"bm25": ["a", "b", "c"], "dense": ["b", "c", "d"]}


def test_rrf_by_hand() -> None:
    fused = reciprocal_rank_fusion(RANKINGS)
    expected = {
        "a": 1 / (60 + 1),
        "b": 1 / (60 + 2) + 1 / (60 + 1),
        "c": 1 / (60 + 3) + 1 / (60 + 2),
        "d": 1 / (60 + 3),
    }
    assert [doc for doc, _ in fused] == ["b", "c", "a", "d"]
    for doc, score in fused:
        assert score == pytest.approx(expected[doc])


def test_rrf_weights_change_the_order() -> None:
    fused = reciprocal_rank_fusion(RANKINGS, weights={"bm25": 1.0, "dense": 3.0})
    expected = {
        "a": 1 / 61,  # 0.0164
        "b": 1 / 62 + 3 / 61,  # 0.0653
        "c": 1 / 63 + 3 / 62,  # 0.0643
        "d": 3 / 63,  # 0.0476: now above a
    }
    assert [doc for doc, _ in fused] == ["b", "c", "d", "a"]
    for doc, score in fused:
        assert score == pytest.approx(expected[doc])


def test_rrf_constant_ties_and_duplicates() -> None:
    assert reciprocal_rank_fusion({"x": ["a", "b"]}, k=0) == [("a", 1.0), ("b", 0.5)]
    # Equal scores: doc id ascending.
    assert reciprocal_rank_fusion({"x": ["b"], "y": ["a"]}) == [("a", 1 / 61), ("b", 1 / 61)]
    # A repeated doc counts once, at its best rank.
    assert reciprocal_rank_fusion({"x": ["a", "b", "a"]}) == [("a", 1 / 61), ("b", 1 / 62)]
    assert reciprocal_rank_fusion({}) == []


def test_rrf_rejects_missing_weights_and_negative_k() -> None:
    with pytest.raises(ValueError, match="dense"):
        reciprocal_rank_fusion(RANKINGS, weights={"bm25": 1.0})
    with pytest.raises(ValueError):
        reciprocal_rank_fusion(RANKINGS, k=-1)
