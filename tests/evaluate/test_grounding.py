"""Grounding measures against hand-computed values."""

from __future__ import annotations

import pytest

from mentor.evaluate.grounding import (
    answer_in_sources,
    content_tokens,
    invented_numbers,
    is_supported,
    numbers,
    support,
    unsupported_tokens,
)

SOURCE = "Heat the water to 94 degrees Celsius before pouring it over the grounds."


def test_content_tokens_drop_citations_stop_words_and_punctuation() -> None:
    # normalised: "water is 94 degrees celsius"; "is" is a stop word; "[1]" is no content.
    assert content_tokens("The water is 94 degrees Celsius [1].") == [
        "water",
        "94",
        "degrees",
        "celsius",
    ]


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The water is 94 degrees Celsius [1].", 1.0),  # water, 94, degrees, celsius: 4/4
        ("Boil the water at 150 kelvin.", 0.25),  # boil, water, 150, kelvin: only water
        ("kelvin kelvin water", 1 / 3),  # counted with repetition
        ("", 1.0),  # claims nothing
        ("It is what it is.", 1.0),  # only stop words: claims nothing
        ("According to the sources, pouring it over the grounds.", 1.0),  # framing words drop out
    ],
)
def test_support_reference_values(answer: str, value: float) -> None:
    assert support(answer, [SOURCE]) == pytest.approx(value)


def test_support_pools_all_sources() -> None:
    assert support("coffee water", ["coffee", "water"]) == 1.0
    assert support("coffee water", []) == 0.0


def test_is_supported_threshold_is_inclusive() -> None:
    # heat, water, 94, degrees supported, fahrenheit not: 4/5 = 0.8
    answer = "Heat water to 94 degrees Fahrenheit"
    assert support(answer, [SOURCE]) == pytest.approx(0.8)
    assert is_supported(answer, [SOURCE])
    assert not is_supported(answer, [SOURCE], threshold=0.81)


def test_unsupported_tokens_once_each_in_order() -> None:
    assert unsupported_tokens("Boil the water at 150 kelvin, 150 kelvin!", [SOURCE]) == [
        "boil",
        "150",
        "kelvin",
    ]


def test_numbers_skip_word_tails_and_citations() -> None:
    assert numbers("SmolLM2 v2 costs 3.50 dollars [1] in 2024, 10GB, 25%.") == [
        "3.50",
        "2024",
        "10",
        "25",
    ]


def test_invented_numbers_compare_values() -> None:
    sources = ["Price: 1200.5 dollars, due 2024 3 5."]
    assert invented_numbers("It costs $1,200.50, due 2024-03-05 [2].", sources) == []
    assert invented_numbers("It costs 13 dollars in 2025, or 13 in 2024.", sources) == [
        "13",
        "2025",
    ]
    assert invented_numbers("No numbers here.", []) == []


def test_answer_in_sources() -> None:
    assert answer_in_sources("94 degrees Celsius", [SOURCE]) == 1.0
    assert answer_in_sources("94 degrees Fahrenheit", [SOURCE]) == pytest.approx(2 / 3)
    assert answer_in_sources("penguins migrate", [SOURCE]) == 0.0
