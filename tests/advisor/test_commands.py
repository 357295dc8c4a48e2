"""``mentor advise``: flags, YAML, interactive questions, JSON and the rich report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mentor.advisor.situation import Situation
from mentor.cli import app

runner = CliRunner()


def test_flags_to_json() -> None:
    result = runner.invoke(
        app, ["advise", "--documents", "--freshness", "daily", "--labels", "800", "--json"]
    )
    assert result.exit_code == 0, result.output
    advice = json.loads(result.stdout)
    assert advice["recommendation"]["methods"] == ["lora", "rag"]
    assert advice["recommendation"]["reasons"][0]["rule"] == "knowledge.fresh"
    assert advice["situation"]["labelled_examples"] == 800
    assert set(advice["costs"]) >= {"one_time", "yearly", "per_query", "break_even_months"}
    assert advice["costs"]["one_time"]["low"] <= advice["costs"]["one_time"]["high"]


def test_flags_override_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("hardware: edge\nmemory_gb: 2\nunlabelled_text: true\n")
    result = runner.invoke(app, ["advise", "--config", str(path), "--json"])
    assert json.loads(result.stdout)["recommendation"]["quantization"] == "int4"
    result = runner.invoke(app, ["advise", "--config", str(path), "--memory-gb", "12", "--json"])
    assert json.loads(result.stdout)["recommendation"]["quantization"] == "int8"
    result = runner.invoke(app, ["advise", "--config", str(path), "--no-teacher", "--json"])
    assert json.loads(result.stdout)["recommendation"]["methods"] == ["prompting", "quantization"]


def test_rich_report_has_every_part() -> None:
    result = runner.invoke(app, ["advise", "--hosted-only", "--labels", "300", "--documents"])
    assert result.exit_code == 0, result.output
    for part in (
        "Recommendation",
        "provider_finetune + rag",
        "Reasoning (the branch taken)",
        "behaviour.provider-finetune",
        "Cost estimate",
        "per 1k queries",
        "break-even against the baseline",
        "Fallback",
        "Monitoring plan",
    ):
        assert part in result.output, part


def test_bad_yaml_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("freshness: hourly\n")
    result = runner.invoke(app, ["advise", "--config", str(path)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "bad.yaml" in text and "freshness: Input should be" in text


def test_bad_flag_and_bad_costs_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["advise", "--budget", "lots"])
    assert result.exit_code == 1 and "budget" in result.output
    costs = tmp_path / "costs.yaml"
    costs.write_text("gpu_usd_per_hour: [9, 1]\n")
    result = runner.invoke(app, ["advise", "--costs", str(costs)])
    assert result.exit_code == 1
    assert "costs.yaml: gpu_usd_per_hour" in " ".join(result.output.split())


def test_costs_file_changes_the_estimate(tmp_path: Path) -> None:
    costs = tmp_path / "costs.yaml"
    costs.write_text("engineer_usd_per_day: 0\nvector_db_usd_per_month: 0\n")
    result = runner.invoke(app, ["advise", "--documents", "--costs", str(costs), "--json"])
    lines = json.loads(result.stdout)["costs"]["lines"]
    assert [line["high"] for line in lines if line["item"].startswith("setup")] == [0]


def test_interactive_asks_every_field_and_re_asks_bad_answers() -> None:
    answers = {
        "task": "chat",
        "freshness": "daily",
        "documents": "y",
        "labelled_examples": "-5\n800",  # rejected, then accepted
        "budget": "plenty\n20000",
    }
    lines = [answers.get(name, "") for name in Situation.model_fields]
    result = runner.invoke(
        app, ["advise", "--interactive", "--json"], input="\n".join(lines) + "\n"
    )
    assert result.exit_code == 0, result.output
    # The test runner echoes the typed answers to stdout; in a terminal only the JSON goes there.
    advice = json.loads(result.stdout[result.stdout.index("{\n") :])
    situation = advice["situation"]
    assert situation["freshness"] == "daily" and situation["documents"] is True
    assert situation["labelled_examples"] == 800 and situation["budget"] == 20000
    assert advice["recommendation"]["methods"] == ["lora", "rag"]
    assert "greater than or equal to 0" in result.stderr
