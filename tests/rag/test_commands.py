"""The `mentor rag` commands end to end, with a tiny real sentence-transformers embedder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import FakeVLLM, tiny_sentence_transformer_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def embedder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer_folder(tmp_path_factory.mktemp("st") / "tiny-st")


def test_index_search_info_eval(docs: Path, tmp_path: Path, embedder_folder: Path) -> None:
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.7\ngarbage")
    idx = str(tmp_path / "idx")
    built = runner.invoke(
        app,
        [
            "rag",
            "index",
            str(docs),
            "--index",
            idx,
            "--embedder",
            str(embedder_folder),
            "--device",
            "cpu",
            "--no-tune",
        ],
    )
    assert built.exit_code == 0, built.output
    assert "corrupt.pdf" in built.output and "4 new or changed documents" in built.output
    assert "1 failed" in built.output

    again = runner.invoke(app, ["rag", "index", str(docs), "--index", idx, "--sync", "--no-tune"])
    assert again.exit_code == 0 and "0 new or changed" in again.output
    assert "4 unchanged" in again.output

    found = runner.invoke(
        app,
        [
            "rag",
            "search",
            "refunds cancellation",
            "--index",
            idx,
            "--mode",
            "bm25",
            "-k",
            "2",
            "--json",
        ],
    )
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["doc_id"] == "docs/billing.md" and hits[0]["stages"]["bm25"] > 0

    table = runner.invoke(
        app, ["rag", "search", "export", "--index", idx, "--filter", "doc_id=docs/export.md"]
    )
    assert table.exit_code == 0 and "docs/export.md" in table.stdout
    bad = runner.invoke(app, ["rag", "search", "x", "--index", idx, "--filter", "nope"])
    assert bad.exit_code == 1 and "FIELD=VALUE" in bad.output

    info = runner.invoke(app, ["rag", "info", "--index", idx])
    assert info.exit_code == 0 and "documents" in info.stdout

    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps(
            {
                "question": "refunds after cancellation",
                "answer": "14 days",
                "doc_ids": ["docs/billing.md"],
            }
        )
        + "\n"
    )
    report = tmp_path / "report.json"
    evaluated = runner.invoke(
        app,
        [
            "rag",
            "eval",
            "--index",
            idx,
            "--queries",
            str(qa),
            "--mode",
            "bm25",
            "--ks",
            "1,5",
            "--out",
            str(report),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(report.read_text())["retrieval"]["metrics"]["recall@5"] == 1.0


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rag", "search", "x", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and "mentor rag index" in result.output


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mentor.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("lm") / "tiny-llama")


@pytest.fixture
def built(docs: Path, tmp_path: Path, embedder_folder: Path) -> str:
    idx = str(tmp_path / "idx")
    result = runner.invoke(
        app,
        [
            "rag",
            "index",
            str(docs),
            "--index",
            idx,
            "--embedder",
            str(embedder_folder),
            "--device",
            "cpu",
            "--no-tune",
        ],
    )
    assert result.exit_code == 0, result.output
    return idx


def test_calibrate_then_ask_refuses_off_domain_and_answers_in_domain(
    built: str, tiny_lm: Path, tmp_path: Path
) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "\n".join(
            json.dumps({"question": q, "answer": "x"})
            for q in [
                "When are refunds issued?",
                "Can guests create boards?",
                "Is data encrypted at rest?",
                "Are comments in the CSV export?",
            ]
        )
        + "\n"
    )
    calibrated = runner.invoke(
        app, ["rag", "calibrate", "--index", built, "--queries", str(qa), "--mode", "dense"]
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert (Path(built) / "calibration.json").exists() and "threshold" in calibrated.output

    off = runner.invoke(
        app,
        [
            "rag",
            "ask",
            "What is the boiling point of water in Kelvin?",
            "--index",
            built,
            "--model",
            str(tiny_lm),
            "--threshold",
            "2",
            "--json",
        ],
    )
    assert off.exit_code == 0, off.output
    refused = json.loads(off.stdout)
    assert refused["abstained"] and refused["answer"] == "I cannot answer that from the documents."

    on = runner.invoke(
        app,
        [
            "rag",
            "ask",
            "When are refunds issued?",
            "--index",
            built,
            "--model",
            str(tiny_lm),
            "--threshold",
            "-1",
            "--max-new-tokens",
            "8",
        ],
    )
    assert on.exit_code == 0, on.output


def test_diagnose_and_tune_run_end_to_end(built: str, tiny_lm: Path, tmp_path: Path) -> None:
    diagnosed = runner.invoke(
        app,
        [
            "rag",
            "diagnose",
            "When are refunds issued?",
            "--index",
            built,
            "--model",
            str(tiny_lm),
            "--reference",
            "within 14 days",
            "--json",
        ],
    )
    assert diagnosed.exit_code == 0, diagnosed.output
    verdict = json.loads(diagnosed.stdout)["verdict"]
    assert verdict in {"generator-ignored-context", "ok", "low-scores"}

    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps(
            {
                "question": "refunds after cancellation",
                "answer": "14 days",
                "doc_ids": ["docs/billing.md"],
            }
        )
        + "\n"
    )
    tuned = runner.invoke(
        app, ["rag", "tune", "--index", built, "--queries", str(qa), "--model", str(tiny_lm)]
    )
    assert tuned.exit_code == 0, tuned.output
    saved = json.loads((Path(built) / "tuning.json").read_text())
    assert set(saved["ndcg_at_10"]) == {"none", "multi-query", "hyde"}
    assert saved["expansion"] in {"none", "multi-query", "hyde"}


def test_search_and_eval_with_a_reranker(docs: Path, tmp_path: Path, embedder_folder: Path) -> None:
    from mentor.testing import save_model_folder, tiny_bert

    model, tokenizer = tiny_bert(num_labels=1)
    reranker = save_model_folder(model, tokenizer, tmp_path / "ce")
    idx = str(tmp_path / "idx")
    built = runner.invoke(
        app,
        [
            "rag",
            "index",
            str(docs),
            "--index",
            idx,
            "--embedder",
            str(embedder_folder),
            "--no-tune",
        ],
    )
    assert built.exit_code == 0, built.output
    for flag in ("--rerank-fusion", "--rerank-replace"):
        found = runner.invoke(
            app,
            ["rag", "search", "refund policy", "--index", idx, "--reranker", str(reranker),
             flag, "--json"],
        )  # fmt: skip
        assert found.exit_code == 0, found.output
        data = json.loads(found.output)
        assert "rerank" in data["timings_ms"] and data["hits"]


def test_ask_and_diagnose_generate_on_the_engine_the_flags_pick(
    built: str, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", fake.module())
    flags = ["--model", str(tiny_lm), "--engine", "vllm", "--vllm-url", "http://gpu:8000"]
    question = ["When are refunds issued?", "--index", built, "--threshold", "-1"]
    asked = runner.invoke(app, ["rag", "ask", *question, *flags])
    assert asked.exit_code == 0, asked.output
    assert "nothing scripted" in asked.stdout  # vLLM (faked) wrote the answer
    assert fake.opened[0].folder == tiny_lm and fake.opened[0].settings.url == "http://gpu:8000"
    diagnosed = runner.invoke(app, ["rag", "diagnose", "Refunds?", "--index", built, *flags])
    assert diagnosed.exit_code == 0, diagnosed.output
    assert len(fake.opened) == 2
    wrong = runner.invoke(app, ["rag", "ask", "Refunds?", "--index", built, "--vllm-url", "x"])
    assert wrong.exit_code == 1 and "need --engine vllm" in wrong.output


def test_index_calibrates_refusal_and_info_says_where_from(built: str, tmp_path: Path) -> None:
    calibration = json.loads((Path(built) / "calibration.json").read_text())
    assert calibration["source"] == "chunks"
    info = runner.invoke(app, ["rag", "info", "--index", built])
    assert info.exit_code == 0 and "refusal threshold" in info.output
    assert "keyword questions" in info.output


def test_no_calibrate_opts_out(docs: Path, tmp_path: Path, embedder_folder: Path) -> None:
    idx = tmp_path / "plain"
    flags = ["--embedder", str(embedder_folder), "--device", "cpu", "--no-calibrate", "--no-tune"]
    result = runner.invoke(app, ["rag", "index", str(docs), "--index", str(idx), *flags])
    assert result.exit_code == 0, result.output
    assert not (idx / "calibration.json").exists()
    info = runner.invoke(app, ["rag", "info", "--index", str(idx)])
    assert "none: ask answers every question" in info.output
