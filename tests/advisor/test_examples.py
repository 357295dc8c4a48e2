"""The six scenarios of the decision matrix in examples/advisor run through the real rules."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mentor.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "advisor"
runner = CliRunner()


def _run(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the command on the YAML's first line, from the repository root, as JSON."""
    first = path.read_text().splitlines()[0]
    assert first == f"# mentor advise --config examples/advisor/{path.name}"
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, [*shlex.split(first)[2:], "--json"])
    assert result.exit_code == 0, result.output
    advice: dict[str, Any] = json.loads(result.stdout)
    return advice


def test_the_six_scenarios_are_shipped() -> None:
    assert {path.stem for path in EXAMPLES.glob("*.yaml")} == {
        "internal-docs-chatbot",
        "medical-assistant-laptop",
        "tweet-sentiment-500-labels",
        "realtime-stock-analysis",
        "edge-device-2gb",
        "hosted-model-finetune",
    }


def _rules(rec: dict[str, Any]) -> list[str]:
    return [reason["rule"] for reason in rec["reasons"]]


def test_internal_docs_chatbot(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _run(EXAMPLES / "internal-docs-chatbot.yaml", monkeypatch)["recommendation"]
    assert rec["methods"] == ["rag"]
    assert _rules(rec)[0] == "knowledge.fresh"


def test_medical_assistant_on_a_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _run(EXAMPLES / "medical-assistant-laptop.yaml", monkeypatch)["recommendation"]
    assert rec["methods"] == ["distillation", "quantization", "rag"]
    assert rec["hosting"] == "on-device"
    assert {"deploy.local-index", "data.local"} <= set(_rules(rec))
    assert "teacher all run there" in rec["reasons"][-1]["because"]


def test_tweet_sentiment_with_500_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _run(EXAMPLES / "tweet-sentiment-500-labels.yaml", monkeypatch)["recommendation"]
    assert rec["methods"] == ["lora"]
    assert "classifier" in rec["model_size"]
    assert any("not for full fine-tuning" in warning for warning in rec["warnings"])


def test_realtime_stock_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _run(EXAMPLES / "realtime-stock-analysis.yaml", monkeypatch)["recommendation"]
    assert rec["methods"] == ["rag"]
    assert not {"lora", "full_finetune"} & set(rec["methods"])
    assert any("feed" in warning for warning in rec["warnings"])
    assert any("1 minute" in watch["threshold"] for watch in rec["monitoring"])


def test_edge_device_with_2_gb(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _run(EXAMPLES / "edge-device-2gb.yaml", monkeypatch)["recommendation"]
    assert rec["methods"] == ["distillation", "quantization"]
    assert rec["quantization"] == "int4" and rec["hosting"] == "on-device"
    assert rec["model_size"].startswith("≤0.")  # a sub-1B student


def test_fine_tuning_a_hosted_model(monkeypatch: pytest.MonkeyPatch) -> None:
    advice = _run(EXAMPLES / "hosted-model-finetune.yaml", monkeypatch)
    rec = advice["recommendation"]
    assert rec["methods"] == ["provider_finetune", "rag"]
    assert rec["hosting"] == "hosted-api"
    assert not {"lora", "full_finetune", "distillation", "quantization"} & set(rec["methods"])
    assert any(line["item"] == "API tokens" for line in advice["costs"]["lines"])
