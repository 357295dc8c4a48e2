"""The Situation: validation, budgets, memory defaults, YAML loading with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mentor.advisor.situation import DEFAULT_MEMORY_GB, Situation, load_situation


def test_every_field_has_help() -> None:
    for name, info in Situation.model_fields.items():
        assert info.description, name


@pytest.mark.parametrize(
    ("budget", "value", "tier"),
    [
        ("low", "low", "low"),
        (" HIGH ", "high", "high"),
        (9_999, 9_999.0, "low"),
        ("10000", 10_000.0, "medium"),
        ("$250,000", 250_000.0, "high"),
        (100_000, 100_000.0, "high"),
    ],
)
def test_budget_as_tier_or_amount(budget: Any, value: Any, tier: str) -> None:
    s = Situation(budget=budget)
    assert s.budget == value
    assert s.budget_tier() == tier


@pytest.mark.parametrize("budget", ["lots", "-5", "nan"])
def test_bad_budget_is_explained(budget: str) -> None:
    with pytest.raises(ValidationError, match="budget"):
        Situation(budget=budget)


def test_memory_defaults_to_the_hardware() -> None:
    assert Situation(hardware="edge").memory() == DEFAULT_MEMORY_GB["edge"]
    assert Situation(hardware="edge", memory_gb=2).memory() == 2.0


@pytest.mark.parametrize(
    "bad",
    [
        {"freshness": "hourly"},
        {"hardware": "toaster"},
        {"labelled_examples": -1},
        {"memory_gb": 0},
        {"latency_budget_ms": 0},
        {"documnets": True},
    ],
)
def test_bad_values_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Situation(**bad)


def test_yaml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("# mentor advise --config s.yaml\ndocuments: true\nfreshness: weekly\n")
    s = load_situation(path, {"freshness": "daily", "labelled_examples": None})
    assert s.documents and s.freshness == "daily" and s.labelled_examples == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("freshnes: daily\n", "freshnes: Extra inputs are not permitted"),
        ("hardware: toaster\n", "hardware: Input should be"),
        ("budget: plenty\n", "budget: Value error, expected low, medium, high"),
        ("- a list\n", "expected a mapping"),
        ("documents: [\n", "not valid YAML"),
    ],
)
def test_yaml_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.yaml") as caught:
        load_situation(path, {})
    assert message in str(caught.value)


def test_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such config file"):
        load_situation(tmp_path / "nope.yaml", {})
