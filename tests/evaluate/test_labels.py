"""Label metrics against hand-computed numbers: the label an answer names, accuracy, macro-F1
(and scikit-learn's macro F1 on the same labels), and macro-F1 as a bootstrap statistic."""

from __future__ import annotations

import numpy as np
import pytest

from mentor.evaluate.labels import (
    LABEL_METRICS,
    accuracy,
    correct_labels,
    label_of,
    macro_f1,
    macro_f1_of,
)

LABELS = ["yes", "no", "maybe"]


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


def test_accuracy() -> None:
    assert accuracy(["a", "b", "b", "c"], ["a", "b", "c", "c"]) == 0.75
    assert accuracy([None, "yes"], ["yes", "yes"]) == 0.5  # no label named: wrong
    assert accuracy(["Yes"], ["yes"]) == 0.0  # labels are compared as given
    assert correct_labels(["a", "b", "b", "c"], ["a", "b", "c", "c"]) == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no labels"):
        accuracy([], [])


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


def test_macro_f1_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold = [str(x) for x in rng.choice(LABELS, size=200, p=[0.6, 0.3, 0.1])]
    predicted = [g if rng.random() < 0.6 else str(rng.choice(LABELS)) for g in gold]
    expected = metrics.f1_score(gold, predicted, labels=LABELS, average="macro", zero_division=0)
    assert macro_f1(predicted, gold, LABELS) == pytest.approx(float(expected), rel=1e-12)


def test_macro_f1_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predicted labels for 1"):
        macro_f1(["yes", "no"], ["yes"], LABELS)
    with pytest.raises(ValueError, match="at least one label"):
        macro_f1(["yes"], ["yes"], [])


def test_macro_f1_of_is_macro_f1_of_the_drawn_examples() -> None:
    gold = ["yes", "yes", "no", "maybe"]
    predicted: list[str | None] = ["yes", "no", "no", "yes"]
    statistic = macro_f1_of(predicted, gold, LABELS)
    assert statistic(np.arange(4)) == pytest.approx((0.5 + 2 / 3) / 3)
    # rows 0, 0, 2: yes and no each right, maybe absent -> (1 + 1 + 0) / 3
    assert statistic(np.array([0, 0, 2])) == pytest.approx(2 / 3)


def test_label_metric_names() -> None:
    assert LABEL_METRICS == ("accuracy", "macro_f1")
