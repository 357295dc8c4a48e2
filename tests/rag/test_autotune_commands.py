"""The tuned path on the command line: `rag index` tunes by default, a re-run tunes again only
when the index changed enough, `rag tune --profile` runs the same steps; and the kept reranker
is used by `rag eval`, the server and the bakeoff, by the one rule search and ask follow.

The question writer is a :class:`ScriptedGenerator` put in place of the CLI's engine, so no
language model is loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.evaluate.stats import Estimate
from mentor.rag.autotune import AUTOTUNE, load_report
from mentor.rag.rerank_gate import RerankDecision, save_decision
from mentor.rag.retrieve import Retriever, SearchConfig, SearchResult
from mentor.testing import HashEmbedder, ScriptedGenerator, tiny_sentence_transformer_folder

from .test_tune_fusion import ask_about_words, corpus

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def embedder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer_folder(tmp_path_factory.mktemp("st") / "tiny-st")


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch) -> ScriptedGenerator:
    """The CLI's question writer, scripted (its calls are counted)."""
    scripted = ScriptedGenerator(ask_about_words)

    @contextmanager
    def engine(*_: Any, **__: Any) -> Iterator[ScriptedGenerator]:
        yield scripted

    monkeypatch.setattr("mentor.rag.commands._generator", engine)
    return scripted


def test_index_tunes_by_default_and_a_small_change_does_not_retune(
    tmp_path: Path, embedder_folder: Path, writer: ScriptedGenerator
) -> None:
    docs, idx = corpus(tmp_path), tmp_path / "idx"
    flags = ["--embedder", str(embedder_folder), "--device", "cpu", "--profile", "fast"]
    built = runner.invoke(app, ["rag", "index", str(docs), "--index", str(idx), *flags])
    assert built.exit_code == 0, built.output
    assert "tuning the index (never tuned)" in built.output and "tuned in" in built.output
    report = load_report(idx)
    assert report is not None and report.finished
    assert {s.name for s in report.steps if s.status == "done"} == {
        "questions",
        "fusion",
        "calibration",
    }
    assert (idx / "fusion.json").exists() and (idx / "calibration.json").exists()
    asked = len(writer.calls)
    assert asked > 0

    (docs / "doc0.txt").write_text("zq1x zq2x zq3x " * 10)  # 1 of 40 documents
    saved = (idx / AUTOTUNE).read_bytes()
    again = runner.invoke(app, ["rag", "index", str(docs), "--index", str(idx), "--sync"])
    assert again.exit_code == 0, again.output
    assert "not tuned again" in again.output and (idx / AUTOTUNE).read_bytes() == saved

    forced = runner.invoke(
        app, ["rag", "index", str(docs), "--index", str(idx), "--retune", "--profile", "fast"]
    )
    assert forced.exit_code == 0, forced.output
    assert "tuning the index (asked)" in forced.output
    assert len(writer.calls) == asked  # the saved questions were read back

    info = runner.invoke(app, ["rag", "info", "--index", str(idx)], env={"COLUMNS": "300"})
    assert "fast profile" in info.output and "skipped: lexical" in info.output

    tuned = runner.invoke(app, ["rag", "tune", "--index", str(idx), "--profile", "fast"])
    assert tuned.exit_code == 0, tuned.output
    assert "questions: unchanged since the last run" in tuned.output
    bad = runner.invoke(app, ["rag", "tune", "--index", str(idx), "--profile", "fastest"])
    assert bad.exit_code == 1 and "profile 'fastest'" in bad.output


def test_example_queries_from_the_command_line(
    tmp_path: Path, embedder_folder: Path, writer: ScriptedGenerator
) -> None:
    docs, idx = corpus(tmp_path), tmp_path / "idx"
    flags = ["--embedder", str(embedder_folder), "--device", "cpu", "--profile", "fast"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a claim about zq1x"}\n{"text": 7}\n')
    refused = runner.invoke(
        app, ["rag", "index", str(docs), "--index", str(idx), *flags, "--example-queries", str(bad)]
    )
    assert refused.exit_code == 1 and "bad.jsonl:2: expected" in refused.output
    assert not idx.exists()  # refused before anything was built

    words = (docs / "doc1.txt").read_text().split()
    examples = tmp_path / "queries.txt"
    examples.write_text(f"{words[0]} lowers {words[1]}.\n{words[2]} comes with {words[3]}.\n")
    index = ["rag", "index", str(docs), "--index", str(idx)]
    built = runner.invoke(app, [*index, *flags, "--example-queries", str(examples)])
    assert built.exit_code == 0, built.output
    assert "in the style of 2 example queries" in built.output
    assert writer.calls[0].messages[0]["content"].startswith("You write search queries")
    asked = len(writer.calls)
    flags = ["--profile", "fast", "--example-queries", str(examples)]
    same = runner.invoke(app, ["rag", "index", str(docs), "--index", str(idx), *flags])
    assert same.exit_code == 0 and "not tuned again" in same.output
    examples.write_text(f"{words[4]} comes with {words[5]}.\n")
    other = runner.invoke(app, ["rag", "index", str(docs), "--index", str(idx), *flags])
    assert other.exit_code == 0 and "tuning the index (new example queries)" in other.output
    assert "in the style of 1 example query" in other.output and len(writer.calls) > asked
    info = runner.invoke(app, ["rag", "info", "--index", str(idx)], env={"COLUMNS": "300"})
    assert "1 kept (example-queries.json" in info.output
    assert "in the style of the example queries" in info.output


def test_no_tune_only_calibrates(tmp_path: Path, embedder_folder: Path) -> None:
    idx = tmp_path / "idx"
    examples = tmp_path / "queries.txt"
    examples.write_text("zq1x raises zq2x.\n")
    flags = ["--embedder", str(embedder_folder), "--device", "cpu", "--no-tune"]
    flags += ["--example-queries", str(examples)]
    built = runner.invoke(app, ["rag", "index", str(corpus(tmp_path)), "--index", str(idx), *flags])
    assert built.exit_code == 0, built.output
    assert not (idx / AUTOTUNE).exists() and (idx / "calibration.json").exists()
    assert json.loads((idx / "example-queries.json").read_text()) == ["zq1x raises zq2x."]


def _keep(index: Path, reranker: Path, depth: int = 7) -> None:
    decision = RerankDecision(
        keep=True,
        depth=depth,
        fusion=True,
        first_stage=0.5,
        reranked=0.6,
        gain=Estimate(0.1, 0.05, 0.15),
        by_depth={depth: 0.6},
        queries=10,
        reranker=str(reranker),
    )
    save_decision(decision, index)


def _hash_index(tmp_path: Path) -> Path:
    from mentor.rag.index import build_index
    from mentor.rag.selfeval import build_selfeval

    idx = tmp_path / "idx"
    build_index(idx, [corpus(tmp_path)], HashEmbedder(64))
    chunks = Retriever(idx, HashEmbedder(64)).chunks
    build_selfeval(idx, chunks, ScriptedGenerator(ask_about_words), questions=20)
    return idx


@pytest.fixture
def hash_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexes built with the hash embedder open with it wherever the CLI loads an embedder."""
    monkeypatch.setattr("mentor.models.loading.load_embedder", lambda *_, **__: HashEmbedder(64))


@pytest.mark.usefixtures("hash_embedder")
def test_eval_uses_the_kept_reranker_at_its_depth(tmp_path: Path, tiny_cross_encoder: Path) -> None:
    idx = _hash_index(tmp_path)
    plain = runner.invoke(app, ["rag", "eval", "--index", str(idx), "--json", "--ks", "1,10"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.output[plain.output.index("{") :])["reranker"] is None

    _keep(idx, tiny_cross_encoder)
    kept = runner.invoke(app, ["rag", "eval", "--index", str(idx), "--json", "--ks", "1,10"])
    assert kept.exit_code == 0, kept.output
    report = json.loads(kept.output[kept.output.index("{") :])
    assert report["reranker"] == f"cross-encoder:{tiny_cross_encoder.name}"
    assert report["config"]["rerank_depth"] == 7 and "rerank" in report["latency_ms"]
    off = runner.invoke(
        app, ["rag", "eval", "--index", str(idx), "--json", "--ks", "1,10", "--no-reranker"]
    )
    assert json.loads(off.output[off.output.index("{") :])["reranker"] is None


def test_eval_measures_the_candidate_depth_search_uses(tmp_path: Path) -> None:
    from mentor.rag.evaluation import evaluate_retrieval
    from mentor.rag.selfeval import SelfEvalSet, as_eval_set

    idx = _hash_index(tmp_path)
    retriever = Retriever(idx, HashEmbedder(64))
    selfeval = SelfEvalSet.load(idx)
    assert selfeval is not None
    seen: list[SearchConfig] = []

    class Spy:
        def search(self, query: str, config: SearchConfig, reranker: Any = None) -> SearchResult:
            seen.append(config)
            return retriever.search(query, config, reranker)

    config = SearchConfig(candidates=20)
    evaluate_retrieval(Spy(), as_eval_set(selfeval.held_out), config, ks=(1, 10, 100))
    assert seen and all(c.candidates == 20 and max(c.k, c.candidates) == 20 for c in seen)


@pytest.mark.usefixtures("hash_embedder")
def test_the_server_and_the_bakeoff_use_the_kept_reranker(
    tmp_path: Path, tiny_cross_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentor.bakeoff.arms import Retrieval as ArmRetrieval
    from mentor.bakeoff.config import RetrievalSettings
    from mentor.rag.reranker import CrossEncoderReranker
    from mentor.serve import commands as serve_commands

    idx = _hash_index(tmp_path)
    _keep(idx, tiny_cross_encoder, depth=9)

    captured: dict[str, Any] = {}

    class StopError(Exception):
        pass

    def server(_engine: Any, _limits: Any, _keys: Any, retrieval: Any, *_: Any) -> None:
        captured["retrieval"] = retrieval
        raise StopError

    monkeypatch.setattr("mentor.serve.state.Server", server)
    with pytest.raises(StopError):
        serve_commands._serve(
            object(),  # type: ignore[arg-type]
            "m", rag=idx, rag_search="always", top_k=3, device="cpu", embedder=None, log=None,
            log_sample=1.0, log_text=False, limits_args=(64, 10.0, 4, 1 << 20), keys=(),
            admin_keys=(), roots=(), host="127.0.0.1", port=1,
        )  # fmt: skip
    retrieval = captured["retrieval"]
    assert isinstance(retrieval.reranker, CrossEncoderReranker)
    assert retrieval.search.rerank_depth == 9
    found = retrieval.run("zq1x zq2x", 1)
    assert found.hits and any("rerank" in h.stages for h in found.hits)

    calls: list[tuple[SearchConfig, Any]] = []
    inner = Retriever(idx, HashEmbedder(64))

    class Spy:
        folder = idx

        def search(self, query: str, config: SearchConfig, reranker: Any = None) -> SearchResult:
            calls.append((config, reranker))
            return inner.search(query, config, reranker)

    arm = ArmRetrieval(Spy(), RetrievalSettings(), "Answer from the sources.")
    arm.search("zq1x zq2x")
    arm.search("zq3x")
    assert len(calls) == 2 and all(isinstance(r, CrossEncoderReranker) for _, r in calls)
    assert calls[0][1] is calls[1][1] and calls[0][0].rerank_depth == 9  # loaded once


@pytest.mark.usefixtures("hash_embedder")
def test_train_reranker_reuses_the_index_questions(tmp_path: Path, embedder_folder: Path) -> None:
    idx = _hash_index(tmp_path)
    args = ["rag", "train-reranker", "--index", str(idx), "--out", str(idx / "rr"), "--base",
            str(embedder_folder), "--epochs", "1", "--negatives", "2", "--device", "cpu",
            "--model", "no-such-model"]  # fmt: skip
    trained = runner.invoke(app, args)  # writing questions would need the model: it is not asked
    assert trained.exit_code == 0, trained.output
    assert "the index's synthetic questions:" in trained.output
    assert (idx / "reranker.json").exists() and (idx / "rr" / "held-out-questions.jsonl").exists()
    fresh = runner.invoke(app, [*args, "--new-questions"])
    assert fresh.exit_code != 0 and "no-such-model" in f"{fresh.output}{fresh.exception}"
