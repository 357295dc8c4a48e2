from __future__ import annotations

import pytest

from mentor.evaluate.text import exact_match, normalize_answer, rouge_l, token_f1


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
