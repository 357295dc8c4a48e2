from __future__ import annotations

import pytest

from mentor.evaluate.text import (
    TEXT_METRICS,
    contains,
    exact_match,
    normalize_answer,
    rouge_l,
    text_scores,
    token_f1,
)


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"


@pytest.mark.parametrize(
    ("prediction", "reference", "f1"),
    [
        ("Paris", "paris.", 1.0),
        ("the capital is Paris", "Paris", 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # p=1/3, r=1 -> 0.5
        ("cat sat on mat", "the cat sat on the hat", 2 * 0.75 * 0.75 / 1.5),  # p=r=3/4
        ("dog", "cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("a a b", "a b b", 2 / 3),  # multiset overlap is {a, b}: p = r = 2/3
    ],
)
def test_token_f1_reference_values(prediction: str, reference: str, f1: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(f1)


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match("The answer.", "answer") == 1.0
    assert exact_match("answers", "answer") == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference", "score"),
    [
        # LCS("police killed gunman", "police kill gunman") = 2 -> p = r = 2/3 (Lin 2004 example)
        ("police killed the gunman", "police kill the gunman", 2 / 3),
        ("gunman killed police", "police kill the gunman", 1 / 3),
        ("identical words here", "identical words here", 1.0),
        ("x", "y", 0.0),
    ],
)
def test_rouge_l_reference_values(prediction: str, reference: str, score: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(score)


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


def test_one_registry_names_every_text_metric() -> None:
    assert list(TEXT_METRICS.items()) == [  # in report order
        ("exact_match", exact_match),
        ("token_f1", token_f1),
        ("rouge_l", rouge_l),
        ("contains", contains),
    ]
    # "it was founded in 2016" vs "2016": P = 1/5, R = 1 -> F1 = 1/3; the LCS is "2016" too
    assert text_scores("It was founded in 2016.", "2016") == pytest.approx(
        {"exact_match": 0.0, "token_f1": 1 / 3, "rouge_l": 1 / 3, "contains": 1.0}
    )
