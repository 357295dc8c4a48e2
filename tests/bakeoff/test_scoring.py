"""The bakeoff's arithmetic against hand-computed numbers: per-answer scores, labels, macro-F1,
bootstrap intervals (single and paired), grounding, groups and money."""

from __future__ import annotations

import numpy as np
import pytest

from mentor.bakeoff.results import Costs, ScoredAnswer
from mentor.bakeoff.scoring import (
    GROUNDING_METHOD,
    contains,
    costs,
    estimate,
    grounding,
    groups,
    label_of,
    macro_f1,
    mean_of,
    metric_statistic,
    paired_difference,
    per_point,
    score_answer,
)

LABELS = ["yes", "no", "maybe"]


def _answer(
    i: int, right: float, *, group: str | None = None, support: float | None = None
) -> ScoredAnswer:
    return ScoredAnswer(
        id=f"q{i}",
        question=f"question {i}?",
        reference="gold",
        answer="gold" if right else "wrong",
        scores={"contains": right, "f1": right / 2},
        group=group,
        support=support,
    )


# --- per-answer scores ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("It was founded in 2016.", "2016", 1.0),
        ("2016", "2016", 1.0),
        ("In 20161 or so", "2016", 0.0),  # whole words only: 2016 inside 20161 does not count
        ("the year 12016", "2016", 0.0),
        ("Go to Settings > Billing.", "Settings > Billing", 1.0),  # menu path, punctuation gone
        ("Open settings, then billing", "Settings > Billing", 0.0),  # words apart: not the path
        ("Click SETTINGS > BILLING > Legal documents", "Settings > Billing", 1.0),
        ("The plan costs $5,000 a year", "$5,000", 1.0),
        ("An answer", "the", 0.0),  # a reference that normalises to nothing never matches
        ("", "2016", 0.0),
        ("Calm planning for busy teams", "calm planning for busy teams", 1.0),
        ("calm planning for teams", "calm planning for busy teams", 0.0),
    ],
)
def test_contains(prediction: str, reference: str, expected: float) -> None:
    assert contains(prediction, reference) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes.", "yes"),
        ("Maybe, but yes in most trials", "maybe"),  # the first label named wins
        ("NO: the abstract says otherwise", "no"),
        ("Yesterday nobody knew", None),  # labels match whole words only
        ("unclear", None),
        ("", None),
    ],
)
def test_label_of(answer: str, expected: str | None) -> None:
    assert label_of(answer, LABELS) == expected


def test_label_of_returns_the_label_as_configured() -> None:
    assert label_of("the answer is yes", ["Yes", "No"]) == "Yes"


def test_macro_f1_by_hand_with_a_label_never_predicted() -> None:
    gold = ["yes", "yes", "no", "maybe"]
    predicted: list[str | None] = ["yes", "no", "no", "yes"]
    # yes: tp 1, fp 1, fn 1 -> 2/4; no: tp 1, fp 1, fn 0 -> 2/3; maybe: never predicted -> 0
    assert macro_f1(predicted, gold, LABELS) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_macro_f1_counts_an_unparsed_answer_as_a_miss() -> None:
    # yes: tp 1, fn 1 -> 2/3; no: tp 1 -> 1; maybe: neither gold nor predicted -> 0
    assert macro_f1(["yes", None, "no"], ["yes", "yes", "no"], LABELS) == pytest.approx(
        (2 / 3 + 1.0 + 0.0) / 3
    )
    assert macro_f1(["yes", "no"], ["yes", "no"], ["yes", "no"]) == 1.0


def test_score_answer_scores_every_metric_and_flags_an_invented_number() -> None:
    scored = score_answer(
        id="q1",
        question="When was Tidepool founded?",
        reference="2016",
        answer="Founded in 2017 by Ana",
        labels=None,
        evidence=["Tidepool was founded in 2016 by Ana."],
        sources=["company-overview"],
        group="seen=true",
    )
    assert scored.scores == {"contains": 0.0, "exact_match": 0.0, "f1": 0.0, "rouge_l": 0.0}
    assert scored.invented == ["2017"]
    # content words: founded, 2017, ana; the evidence holds founded and ana
    assert scored.support == pytest.approx(2 / 3)
    assert (scored.sources, scored.group) == (["company-overview"], "seen=true")


def test_score_answer_grounded_answer_invents_nothing() -> None:
    scored = score_answer(
        id="q1",
        question="When was Tidepool founded?",
        reference="2016",
        answer="Founded in 2016.",
        labels=None,
        evidence=["Tidepool was founded in 2016 by Ana."],
    )
    assert scored.scores["contains"] == 1.0 and scored.scores["f1"] == pytest.approx(0.5)
    assert scored.support == 1.0 and scored.invented == []


def test_score_answer_number_from_the_question_is_not_invented() -> None:
    scored = score_answer(
        id="q1",
        question="What happened in 2019?",
        reference="the move",
        answer="In 2019 the office moved.",
        labels=None,
        evidence=["The office moved to Utrecht."],
    )
    assert scored.invented == []


def test_score_answer_without_evidence_or_with_labels_is_not_grounded() -> None:
    plain = score_answer(
        id="q", question="q?", reference="2016", answer="2016", labels=None, evidence=[]
    )
    assert plain.support is None and plain.invented == []
    labelled = score_answer(
        id="q", question="q?", reference="yes", answer="Yes.", labels=LABELS, evidence=["x 12"]
    )
    assert labelled.scores["accuracy"] == 1.0 and labelled.support is None
    wrong = score_answer(
        id="q", question="q?", reference="no", answer="Maybe not", labels=LABELS, evidence=[]
    )
    assert wrong.scores["accuracy"] == 0.0


# --- intervals ------------------------------------------------------------------------------


def test_estimate_interval_holds_the_point_and_is_deterministic() -> None:
    values = [1.0] * 7 + [0.0] * 13
    first = estimate(mean_of(values), len(values), resamples=500, seed=3)
    assert first.value == pytest.approx(0.35)
    assert first.low <= first.value <= first.high
    assert 0.0 < first.low < first.high < 1.0
    assert estimate(mean_of(values), len(values), resamples=500, seed=3) == first


def test_estimate_of_an_all_equal_sample_has_zero_width() -> None:
    for value in (0.0, 1.0, 0.25):
        e = estimate(mean_of([value] * 9), 9, resamples=200)
        assert e.value == e.low == e.high == pytest.approx(value)


def test_estimate_refuses_no_questions() -> None:
    with pytest.raises(ValueError, match="no questions"):
        estimate(mean_of([]), 0)


def test_estimate_interval_is_close_to_the_normal_approximation() -> None:
    values = [1.0] * 50 + [0.0] * 50
    e = estimate(mean_of(values), 100, resamples=2000, seed=0)
    half = 1.96 * np.sqrt(0.25 / 100)  # ~0.098
    assert e.low == pytest.approx(0.5 - half, abs=0.02)
    assert e.high == pytest.approx(0.5 + half, abs=0.02)


def test_paired_difference_of_identical_arms_is_zero_with_zero_width() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    diff = paired_difference(mean_of(values), mean_of(values), len(values))
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes_zero()


def test_paired_difference_of_a_clearly_better_arm_excludes_zero() -> None:
    better = [1.0] * 30 + [0.0] * 10
    worse = [1.0] * 18 + [0.0] * 22  # right on a subset of the better arm's questions
    diff = paired_difference(mean_of(better), mean_of(worse), 40, resamples=500)
    assert diff.value == pytest.approx(30.0)  # points
    assert diff.low > 0 and diff.excludes_zero()
    # pairing: unpaired intervals of 75% and 45% on 40 questions would overlap far more
    assert diff.high - diff.low < 35
    reverse = paired_difference(mean_of(worse), mean_of(better), 40, resamples=500)
    assert reverse.value == pytest.approx(-30.0) and reverse.high < 0


def test_paired_difference_of_a_small_gap_reaches_zero() -> None:
    a = [1.0] * 11 + [0.0] * 9
    b = [1.0] * 10 + [0.0] * 10
    diff = paired_difference(mean_of(a), mean_of(b), 20, resamples=500)
    assert diff.value == pytest.approx(5.0) and diff.low <= 0 <= diff.high


def test_metric_statistic_macro_f1_resamples_answers() -> None:
    answers = [
        ScoredAnswer(f"q{i}", "?", gold, said, {"accuracy": float(gold == said)})
        for i, (gold, said) in enumerate(
            [("yes", "yes"), ("yes", "no"), ("no", "no"), ("maybe", "yes")]
        )
    ]
    stat = metric_statistic("macro_f1", answers, LABELS)
    assert stat(np.arange(4)) == pytest.approx((0.5 + 2 / 3) / 3)
    assert stat(np.array([0, 0, 2])) == pytest.approx((1 + 1 + 0) / 3)
    assert metric_statistic("accuracy", answers, LABELS)(np.arange(4)) == 0.5
    with pytest.raises(ValueError, match="needs labels"):
        metric_statistic("macro_f1", answers, None)


# --- grounding and groups -------------------------------------------------------------------


def test_grounding_shares_by_hand() -> None:
    answers = [
        _answer(0, 1.0, support=1.0),
        _answer(1, 1.0, support=0.8),  # exactly at the threshold: supported
        _answer(2, 0.0, support=0.5),
        _answer(3, 0.0, support=0.0),
        _answer(4, 0.0),  # not measured: left out of every share
    ]
    answers[2].invented = ["2017"]
    g = grounding(answers)
    assert g is not None
    assert g.supported_share == pytest.approx(2 / 4)
    assert g.invented_share == pytest.approx(1 / 4)
    assert g.mean_support == pytest.approx((1.0 + 0.8 + 0.5 + 0.0) / 4)
    assert g.method == GROUNDING_METHOD


def test_grounding_without_evidence_is_none() -> None:
    assert grounding([_answer(0, 1.0), _answer(1, 0.0)]) is None
    assert grounding([]) is None


def test_groups_by_hand() -> None:
    answers = [
        _answer(0, 1.0, group="seen=true"),
        _answer(1, 1.0, group="seen=true"),
        _answer(2, 0.0, group="seen=true"),
        _answer(3, 0.0, group="seen=false"),
        _answer(4, 1.0, group="seen=false"),
        _answer(5, 1.0),  # no group: only in the overall score
    ]
    out = groups(answers, ["contains", "f1"], None)
    assert list(out) == ["seen=false", "seen=true"]  # sorted
    assert out["seen=true"] == pytest.approx({"contains": 2 / 3, "f1": 1 / 3, "n": 3.0})
    assert out["seen=false"] == pytest.approx({"contains": 0.5, "f1": 0.25, "n": 2.0})
    assert groups([_answer(0, 1.0)], ["contains"], None) == {}


# --- money ----------------------------------------------------------------------------------


def test_costs_by_hand() -> None:
    c = costs(
        build_s=1800,  # half an hour at $0.20: $0.10 per build
        mean_answer_s=0.72,  # 720 s per 1,000 answers at $0.10/h over 2 at once: $0.01
        train_usd_per_hour=0.20,
        serve_usd_per_hour=0.10,
        concurrency=2,
        updates_per_year=12,
        queries_per_day=1000,
    )
    assert c.training_usd == pytest.approx(0.10)
    assert c.serve_usd_per_1k == pytest.approx(0.01)
    assert c.yearly_usd == pytest.approx(12 * 0.10 + 0.01 * 365)  # 4.85
    assert c.usd_per_point is None


def test_costs_free_machines_cost_nothing() -> None:
    c = costs(
        build_s=100,
        mean_answer_s=1.0,
        train_usd_per_hour=0.0,
        serve_usd_per_hour=0.0,
        concurrency=1,
        updates_per_year=365,
        queries_per_day=10_000,
    )
    assert (c.training_usd, c.serve_usd_per_1k, c.yearly_usd) == (0.0, 0.0, 0.0)


def test_per_point_by_hand() -> None:
    base = Costs(0.0, 0.05, 20.0, None)
    arm = Costs(1.0, 0.10, 50.0, None)
    assert per_point(arm, base, 15.0) == pytest.approx(2.0)  # $30 a year more for 15 points
    assert per_point(base, arm, 10.0) == 0.0  # cheaper and better: nothing extra per point
    assert per_point(arm, base, 0.0) is None
    assert per_point(arm, base, -5.0) is None
