"""`mentor rag tune` and `mentor rag eval` without judged questions, end to end on the CLI.

The synthetic questions come from a scripted writer through the same cache the CLI reads, so
the tiny random language model given to the CLI is never asked anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import ScriptedGenerator, save_tiny_llama, tiny_sentence_transformer_folder

from .test_tune_fusion import ask_about_words, corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def embedder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer_folder(tmp_path_factory.mktemp("st") / "tiny-st")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("lm") / "tiny-llama")


def stages(output: str) -> set[str]:
    return {stage for hit in json.loads(output)["hits"] for stage in hit["stages"]}


def test_tune_and_eval_without_queries(
    tmp_path: Path, embedder_folder: Path, tiny_lm: Path
) -> None:
    from mentor.rag.retrieve import open_retriever
    from mentor.rag.selfeval import build_selfeval
    from mentor.rag.tune import load_fusion

    idx = tmp_path / "idx"
    built = runner.invoke(
        app, ["rag", "index", str(corpus(tmp_path)), "--index", str(idx), "--embedder",
              str(embedder_folder), "--no-tune"],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    retriever = open_retriever(idx, device="cpu")
    build_selfeval(idx, retriever.chunks, ScriptedGenerator(ask_about_words), questions=40)

    evaluated = runner.invoke(app, ["rag", "eval", "--index", str(idx), "--ks", "1,10"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "synthetic" in evaluated.output and "| ndcg | " in evaluated.output

    info = runner.invoke(app, ["rag", "info", "--index", str(idx)])
    assert "not tuned" in info.output

    # the fast profile, with the BM25 and embedder steps switched on (no reranker to train)
    tuned = runner.invoke(
        app, ["rag", "tune", "--index", str(idx), "--model", str(tiny_lm), "--questions", "40",
              "--profile", "fast", "--lexical", "--embedder-tune"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "fusion: " in tuned.output and "held-out nDCG@10" in tuned.output
    # the embedder was fine-tuned (kept or not) before fusion
    assert "embedder: " in tuned.output
    assert json.loads((idx / "embedder.json").read_text())["train_loss"]
    fusion = load_fusion(idx)
    assert fusion is not None and fusion.held_out_questions > 0
    assert "lexical: " in tuned.output and (idx / "lexical.json").exists()
    (idx / "lexical.json").unlink()
    skipped = runner.invoke(
        app, ["rag", "tune", "--index", str(idx), "--model", str(tiny_lm), "--questions", "40",
              "--profile", "fast", "--no-lexical", "--no-calibrate"],
    )  # fmt: skip
    assert skipped.exit_code == 0, skipped.output
    steps = {s["name"]: s for s in json.loads((idx / "autotune.json").read_text())["steps"]}
    assert steps["lexical"]["status"] == "skipped" and steps["lexical"]["reason"] == "turned off"
    assert steps["embedder"]["reason"] == "not in the fast profile"
    assert not (idx / "lexical.json").exists()
    info = runner.invoke(app, ["rag", "info", "--index", str(idx)])
    assert f"tuned: {fusion.chosen}" in info.output

    # search without flags follows the tuned mode; an explicit flag overrides it
    expected = {"bm25": {"bm25"}, "dense": {"dense"}, "hybrid": {"dense", "bm25"}}
    found = runner.invoke(app, ["rag", "search", "zq1x zq2x", "--index", str(idx), "--json"])
    assert found.exit_code == 0, found.output
    assert stages(found.output) == expected[fusion.setting["mode"]]
    other = "dense" if fusion.setting["mode"] != "dense" else "bm25"
    forced = runner.invoke(
        app, ["rag", "search", "zq1x zq2x", "--index", str(idx), "--mode", other, "--json"]
    )
    assert stages(forced.output) == expected[other]
    bad = runner.invoke(app, ["rag", "search", "x", "--index", str(idx), "--mode", "both"])
    assert bad.exit_code != 0 and "mode 'both'" in bad.output
