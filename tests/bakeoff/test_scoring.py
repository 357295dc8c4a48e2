"""The bakeoff's own arithmetic against hand-computed numbers: per-answer scores, the statistic of
a metric over resampled answers, grounding, groups and money. The metrics themselves (contains,
label_of, macro-F1) and the bootstrap are tested in tests/evaluate."""

from __future__ import annotations

import numpy as np
import pytest

from mentor.bakeoff.results import Costs, ScoredAnswer
from mentor.bakeoff.scoring import (
    GROUNDING_METHOD,
    costs,
    grounding,
    groups,
    metric_statistic,
    per_point,
    score_answer,
)
from mentor.evaluate.stats import bootstrap, bootstrap_mean

LABELS = ["yes", "no", "maybe"]


def _answer(
    i: int, right: float, *, group: str | None = None, support: float | None = None
) -> ScoredAnswer:
    return ScoredAnswer(
        id=f"q{i}",
        question=f"question {i}?",
        reference="gold",
        answer="gold" if right else "wrong",
        scores={"contains": right, "token_f1": right / 2},
        group=group,
        support=support,
    )


# --- per-answer scores ----------------------------------------------------------------------


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
    assert scored.scores == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0, "contains": 0.0}
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
    assert scored.scores["contains"] == 1.0 and scored.scores["token_f1"] == pytest.approx(0.5)
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


# --- the statistic of a metric -------------------------------------------------------------


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


def test_a_mean_metric_is_bootstrapped_as_the_mean_of_its_scores() -> None:
    answers = [_answer(i, float(i % 3 == 0)) for i in range(30)]
    for metric in ("contains", "token_f1"):
        values = [a.scores[metric] for a in answers]
        assert bootstrap(metric_statistic(metric, answers, None), 30) == bootstrap_mean(values)


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
    out = groups(answers, ["contains", "token_f1"], None)
    assert list(out) == ["seen=false", "seen=true"]  # sorted
    assert out["seen=true"] == pytest.approx({"contains": 2 / 3, "token_f1": 1 / 3, "n": 3.0})
    assert out["seen=false"] == pytest.approx({"contains": 0.5, "token_f1": 0.25, "n": 2.0})
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
