"""``run_bakeoff`` with incumbent arms on tiny models: a PEFT adapter trained elsewhere on the base,
one trained on another base (refused, naming the field), another model folder, and an
OpenAI-compatible endpoint (a scripted server on localhost that knows the answers), closed-book
and with retrieval. The endpoint's cost is its reported tokens x the prices, its latency the
client's; the report marks the incumbents and the verdict keeps the endpoint, the only arm that
answers right."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from rich.console import Console

from mentor.bakeoff import runner
from mentor.bakeoff.config import BakeoffConfig
from mentor.bakeoff.results import BakeoffResult
from mentor.models.loading import load_causal_lm
from mentor.models.protocols import ChatMessage
from mentor.testing import save_tiny_llama, tiny_sentence_transformer_folder
from mentor.testing.fake_openai import FakeOpenAI
from mentor.train.adapters import save_adapter
from mentor.train.lora import LoRAConfig, add_lora

COLOURS = ["red", "green", "blue", "amber"]
PRICES = {"input_usd_per_million": 3.0, "output_usd_per_million": 15.0}


def _adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter on the model in ``base`` with non-zero B (it changes the answers)."""
    model = load_causal_lm(str(base), device="cpu")
    config = LoRAConfig(r=2, alpha=4, dropout=0.0)
    add_lora(model, config, "default")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return save_adapter(model, out, config=config, base_model=str(base))


def _knows(messages: Sequence[ChatMessage]) -> str:
    """The hosted model: answers the colour of the box the question names."""
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    found = re.search(r"box (\d)", question)
    return f"It is {COLOURS[int(found.group(1))]}." if found else "I do not know."


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[BakeoffResult, str, FakeOpenAI]:
    root = tmp_path_factory.mktemp("incumbents")
    tiny = {"tie_word_embeddings": False, "max_position_embeddings": 2048}
    base = save_tiny_llama(root / "llm", seed=0, **tiny)
    other = save_tiny_llama(root / "other", seed=5, **tiny)
    tiny_sentence_transformer_folder(root / "embedder")
    docs = root / "docs"
    docs.mkdir()
    for i, colour in enumerate(COLOURS):
        (docs / f"box-{i}.md").write_text(f"# Box {i}\n\nBox {i} is painted {colour}.\n")
    test = root / "test.jsonl"
    test.write_text(
        "".join(
            json.dumps({"id": f"te{i}", "question": f"What colour is box {i}?", "answer": c,
                        "doc_ids": [f"box-{i}"]}) + "\n"
            for i, c in enumerate(COLOURS)
        )
    )  # fmt: skip
    fake = FakeOpenAI(_knows, model="hosted-big")
    with fake.serve() as url:
        endpoint = {"base_url": url, "model": "hosted-big", "api_key_env": "", **PRICES}
        config = BakeoffConfig.model_validate(
            {
                "name": "incumbents",
                "data": {"docs": str(docs), "test": str(test)},
                "models": {"base": str(base), "embedder": str(root / "embedder")},
                "answer": {
                    "max_new_tokens": 5,
                    "batch_size": 2,
                    "latency_queries": 2,
                    "bootstrap": 200,
                },
                "primary": "contains",
                "incumbents": {
                    "current-ft": {
                        "adapter": str(_adapter(base, root / "adapter")),
                        "description": "support bot v3",
                    },
                    "foreign-ft": {"adapter": str(_adapter(other, root / "foreign"))},
                    "old-model": {"model": str(other)},
                    "hosted": {"endpoint": endpoint},
                },
                "arms": [
                    {"name": "closed-book"},
                    {"name": "current-ft", "model": "current-ft"},
                    {"name": "foreign-ft", "model": "foreign-ft"},
                    {"name": "old-model", "model": "old-model"},
                    {"name": "hosted", "model": "hosted"},
                    {
                        "name": "hosted+rag",
                        "model": "hosted",
                        "retrieval": {"k": 1, "chunk_tokens": 32},
                    },
                ],
                "situation": {"freshness": "static", "queries_per_day": 1000},
                "out": str(root / "run"),
            }
        )
        out = io.StringIO()
        console = Console(file=out, width=160, force_terminal=False, color_system=None)
        result = runner.run_bakeoff(config, console=console)
        requests_first = fake.count
        again = runner.run_bakeoff(config, console=Console(file=io.StringIO()))
        assert [a.name for a in again.arms] == [a.name for a in result.arms]
        assert fake.count == requests_first  # every arm reused, nothing asked twice
    return result, out.getvalue(), fake


@pytest.mark.e2e
def test_local_incumbents_are_measured_and_a_foreign_adapter_refused(
    run: tuple[BakeoffResult, str, FakeOpenAI],
) -> None:
    result, _, _ = run
    ft = result.arm("current-ft")
    assert ft.ok, ft.error
    assert ft.incumbent == "adapter" and ft.methods == ["incumbent"] and ft.training_s == 0.0
    assert "incumbent adapter" in ft.description and "support bot v3" in ft.description
    assert ft.costs is not None and ft.costs.serve_basis == "time"
    foreign = result.arm("foreign-ft")
    assert not foreign.ok and foreign.error is not None
    assert "incumbents.foreign-ft.adapter" in foreign.error and "different base" in foreign.error
    old = result.arm("old-model")
    assert old.ok and old.incumbent == "model" and old.artifact_mb > 0


@pytest.mark.e2e
def test_the_endpoint_is_scored_timed_and_costed_from_its_usage(
    run: tuple[BakeoffResult, str, FakeOpenAI],
) -> None:
    result, output, fake = run
    hosted, rag = result.arm("hosted"), result.arm("hosted+rag")
    for arm in (hosted, rag):
        assert arm.ok, arm.error
        assert arm.quality["contains"].value == 1.0
        assert arm.methods[0] == "hosted" and arm.incumbent == "endpoint" and not arm.offsite
        assert arm.answer_engine == "endpoint" and arm.latency_ms["queries"] == 2
        assert arm.latency_ms["p50"] > 0 and arm.model_memory_mb < 1  # no weights held here
        u = arm.usage
        assert u["reported_share"] == 1.0 and u["input_usd_per_million"] == 3.0
        expected = 1000 * (u["prompt_tokens"] * 3.0 + u["completion_tokens"] * 15.0) / 1e6
        assert arm.costs is not None and arm.costs.serve_basis == "tokens"
        assert arm.costs.serve_usd_per_1k == pytest.approx(expected)
        assert arm.costs.yearly_usd == pytest.approx(
            365 * expected + arm.costs.training_usd
        )  # static: built once a year
    # the fake counts words: 3 per answer ("It is red."); the prompt grows with the passage
    assert hosted.usage["completion_tokens"] == 3.0
    assert rag.usage["prompt_tokens"] > hosted.usage["prompt_tokens"]
    asked = [c.body for c in fake.calls]
    assert any("Box 2 is painted blue" in json.dumps(b["messages"]) for b in asked)
    assert "hosted: endpoint usage: " in output


@pytest.mark.e2e
def test_the_report_marks_incumbents_and_the_verdict_keeps_the_endpoint(
    run: tuple[BakeoffResult, str, FakeOpenAI],
) -> None:
    result, output, _ = run
    verdict = result.verdict
    assert verdict is not None and verdict.arm in ("hosted", "hosted+rag")
    assert verdict.paragraph.startswith(f"Keep {verdict.arm}")
    assert "what you run today" in verdict.paragraph
    html = (Path(result.config["out"]) / "report.html").read_text()
    assert html.count('class="badge incumbent"') >= 2 * 4  # quality and cost tables, 4 done
    assert "incumbent endpoint" in html and "input price" in html
    assert "hosted (incumbent)" in output
