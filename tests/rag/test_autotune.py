"""The one-step tuning run (:mod:`mentor.rag.autotune`) on corpora built in code.

Documents of random pseudo-words, a hash embedder, and a scripted question writer (three of a
chunk's words): everything runs in seconds, and the scripted writer counts its calls, so a
resumed run that writes no question again is checked directly."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mentor.models.protocols import Generator
from mentor.rag.autotune import (
    AUTOTUNE,
    SCRATCH,
    Step,
    TuneOptions,
    _fingerprint,
    autotune,
    changed_share,
    chunk_digests,
    default_steps,
    load_report,
    needs_tuning,
    swap_in,
)
from mentor.rag.index import IndexConfig, Manifest, build_index, remove_unnamed
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.selfeval import EXAMPLES, SELFEVAL, build_selfeval
from mentor.rag.synthetic import STYLE_SYSTEM
from mentor.rag.tune import load_fusion, resolve_search
from mentor.testing import HashEmbedder, ScriptedGenerator, tiny_sentence_transformer_folder

from .test_tune_fusion import ask_about_words

pytestmark = pytest.mark.usefixtures("one_thread")


def long_corpus(root: Path, docs: int = 24, words: int = 200, seed: int = 0) -> Path:
    """Documents long enough that 128-token chunks split them and 384-token ones do not."""
    rng = random.Random(seed)
    vocab = [f"zq{i}x" for i in range(900)]
    folder = root / "docs"
    folder.mkdir(parents=True)
    for d in range(docs):
        (folder / f"doc{d}.txt").write_text(" ".join(rng.choices(vocab, k=words)))
    return folder


def built(tmp_path: Path, chunk_tokens: int = 384) -> tuple[Path, Path]:
    docs = long_corpus(tmp_path)
    index = tmp_path / "idx"
    build_index(index, [docs], HashEmbedder(64), config=IndexConfig(chunk_tokens=chunk_tokens))
    return index, docs


def writer() -> ScriptedGenerator:
    return ScriptedGenerator(ask_about_words)


def opener(generator: ScriptedGenerator) -> Callable[[], AbstractContextManager[Generator]]:
    return lambda: nullcontext(generator)


def statuses(index: Path) -> dict[str, str]:
    report = load_report(index)
    assert report is not None
    return {s.name: s.status for s in report.steps}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer_folder(tmp_path_factory.mktemp("st") / "tiny-st")


def test_one_run_tunes_every_step_and_the_index_reloads_with_its_settings(
    tmp_path: Path, tiny_base: Path
) -> None:
    index, _ = built(tmp_path)
    options = TuneOptions(
        profile="full",
        questions=40,
        chunk_sizes=(128, 384),
        reranker_base=str(tiny_base),
        reranker_minutes=0.05,
        device="cpu",
    )
    report = autotune(index, HashEmbedder(64), opener(writer()), options)

    assert statuses(index) == {
        "questions": "done",
        "lexical": "done",
        "embedder": "skipped",
        "chunk_size": "done",
        "fusion": "done",
        "reranker": "done",
        "calibration": "done",
    }
    # a hash embedder has no weights to fine-tune: the step says so and the run goes on
    assert report.record("embedder").reason  # type: ignore[union-attr]
    for name in ("lexical.json",):
        assert (index / name).is_file(), name
    for name in ("selfeval.json", "fusion.json", "reranker.json", "calibration.json", AUTOTUNE):
        assert (index / name).is_file(), name
    assert all(s.seconds > 0 for s in report.steps if s.status == "done")
    chunking = report.record("chunk_size")
    assert chunking is not None and set(chunking.result["tuning_ndcg"]) == {"128", "384"}
    assert not (index / SCRATCH).exists()

    # Reopened, the index searches with what was chosen.
    saved = json.loads((index / AUTOTUNE).read_text())
    assert saved["finished"] and saved["settings"] == report.settings
    assert Manifest.read(index).config.chunk_tokens == report.settings["chunk_tokens"]
    fusion = load_fusion(index)
    assert fusion is not None and report.settings["search_chosen"] == fusion.chosen
    assert fusion.apply(SearchConfig()) == resolve_search(index, {})
    assert report.settings["reranker"]["depth"] >= 1
    hits = Retriever(index, HashEmbedder(64)).search("zq1x zq2x", resolve_search(index, {})).hits
    assert hits


def test_a_tight_budget_makes_auto_skip_the_slow_steps_and_say_why(tmp_path: Path) -> None:
    index, _ = built(tmp_path)
    retriever = Retriever(index, HashEmbedder(64))
    build_selfeval(index, retriever.chunks, writer(), questions=40)
    options = TuneOptions(profile="auto", budget_s=0.001, questions=40)
    report = autotune(index, HashEmbedder(64), opener(writer()), options)

    for name in ("chunk_size", "reranker"):
        record = report.record(name)
        assert record is not None and record.status == "skipped"
        assert "budget" in record.reason and "estimated" in record.reason
    # the cheap steps always run: a tuned search and a threshold come out of any budget
    assert statuses(index)["fusion"] == "done" and statuses(index)["calibration"] == "done"


def test_fast_runs_only_its_steps(tmp_path: Path) -> None:
    index, _ = built(tmp_path)
    report = autotune(index, HashEmbedder(64), opener(writer()), TuneOptions(profile="fast"))
    skipped = {s.name: s.reason for s in report.steps if s.status == "skipped"}
    assert set(skipped) == {"lexical", "embedder", "chunk_size", "reranker"}
    assert skipped["chunk_size"] == "not in the fast profile"


def test_a_second_run_reuses_questions_and_finished_steps(tmp_path: Path) -> None:
    index, docs = built(tmp_path)
    first = writer()
    autotune(index, HashEmbedder(64), opener(first), TuneOptions(profile="fast", questions=40))
    assert len(first.calls) > 0
    fusion_file = (index / "fusion.json").read_bytes()
    build_index(index, [docs], HashEmbedder(64), sync=True)  # nothing changed...
    stamped = replace(Manifest.read(index), updated="2000-01-01T00:00:00Z")
    stamped.write(index)  # ...but the time stamp: the steps' inputs are the same

    second = writer()
    again = autotune(
        index, HashEmbedder(64), opener(second), TuneOptions(profile="fast", questions=40)
    )
    assert second.calls == []
    assert {s.name: s.status for s in again.steps if s.status != "skipped"} == {
        "questions": "reused",
        "fusion": "reused",
        "calibration": "reused",
    }
    assert (index / "fusion.json").read_bytes() == fusion_file


def test_a_killed_run_resumes_without_writing_questions_again(tmp_path: Path) -> None:
    index, _ = built(tmp_path)

    def killed(_: Any) -> tuple[str, dict[str, Any]]:
        raise KeyboardInterrupt

    steps = [
        s if s.name != "fusion" else Step("fusion", killed, s.profiles) for s in default_steps()
    ]
    first = writer()
    with pytest.raises(KeyboardInterrupt):
        autotune(index, HashEmbedder(64), opener(first), TuneOptions("fast", questions=40),
                 steps=steps)  # fmt: skip
    assert statuses(index)["questions"] == "done" and len(first.calls) > 0
    ok, why = needs_tuning(index, Retriever(index, HashEmbedder(64)).chunks)
    assert ok and why == "the last tuning did not finish"

    second = writer()
    autotune(index, HashEmbedder(64), opener(second), TuneOptions("fast", questions=40))
    assert second.calls == []
    assert statuses(index)["questions"] == "reused" and statuses(index)["fusion"] == "done"


def test_changed_share_and_the_retune_threshold(tmp_path: Path) -> None:
    assert changed_share(list("abcde"), list("abcdx")) == pytest.approx(0.2)
    assert changed_share(list("abcd"), list("abcdefgh")) == pytest.approx(0.5)
    assert changed_share([], []) == 0.0

    index, docs = built(tmp_path)
    autotune(index, HashEmbedder(64), opener(writer()), TuneOptions("fast", questions=40))
    chunks = Retriever(index, HashEmbedder(64)).chunks
    assert needs_tuning(index, chunks)[0] is False
    # 2 of 24 documents edited: about 8% of the chunks, under the 20% threshold
    for name in ("doc0.txt", "doc1.txt"):
        (docs / name).write_text("edited " * 50)
    build_index(index, [docs], HashEmbedder(64), sync=True)
    chunks = Retriever(index, HashEmbedder(64)).chunks
    assert changed_share(load_report(index).chunk_digests, chunk_digests(chunks)) < 0.2  # type: ignore[union-attr]
    assert needs_tuning(index, chunks)[0] is False
    for d in range(2, 8):
        (docs / f"doc{d}.txt").write_text(f"rewritten {d} " * 40)
    build_index(index, [docs], HashEmbedder(64), sync=True)
    due, why = needs_tuning(index, Retriever(index, HashEmbedder(64)).chunks)
    assert due and "of the chunks changed" in why


def test_a_swap_killed_before_its_commit_leaves_the_old_index_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, docs = built(tmp_path)
    autotune(index, HashEmbedder(64), opener(writer()), TuneOptions("fast", questions=40))
    kept = {n: (index / n).read_bytes() for n in (SELFEVAL, "fusion.json", "calibration.json")}
    before = Manifest.read(index)
    candidate = tmp_path / "c128"
    build_index(candidate, [docs], HashEmbedder(64), config=IndexConfig(chunk_tokens=128))

    def killed(self: Manifest, folder: Path) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Manifest, "write", killed)
        with pytest.raises(KeyboardInterrupt):
            swap_in(index, candidate)
    assert Manifest.read(index) == before
    hits = Retriever(index, HashEmbedder(64)).search("zq1x zq5x").hits
    assert hits and len(Retriever(index, HashEmbedder(64)).chunks) == before.chunks
    orphans = remove_unnamed(index)
    assert orphans and all(n.startswith(("lance-c128", "bm25-")) for n in orphans)

    candidate = tmp_path / "c128-again"
    build_index(candidate, [docs], HashEmbedder(64), config=IndexConfig(chunk_tokens=128))
    swap_in(index, candidate)
    after = Manifest.read(index)
    assert after.config.chunk_tokens == 128 and after.chunks > before.chunks
    assert after.sources == before.sources
    assert not (index / before.lance_dir).exists() and not (index / before.bm25_dir).exists()
    assert {n: (index / n).read_bytes() for n in kept} == kept
    assert len(Retriever(index, HashEmbedder(64)).chunks) == after.chunks
    # a later sync goes on from the swapped-in table
    (docs / "new.txt").write_text("zq1x " * 30)
    report = build_index(index, [docs], HashEmbedder(64), sync=True)
    assert report.indexed == ["docs/new.txt"] and Manifest.read(index).lance_dir == after.lance_dir


def test_chunk_size_is_skipped_when_the_documents_are_gone(tmp_path: Path) -> None:
    index, docs = built(tmp_path)
    for path in docs.iterdir():
        path.unlink()
    docs.rmdir()
    report = autotune(
        index, HashEmbedder(64), opener(writer()), TuneOptions("full", questions=40),
        steps=[s for s in default_steps() if s.name != "reranker"],
    )  # fmt: skip
    record = report.record("chunk_size")
    assert record is not None and record.status == "skipped"
    assert "the documents are gone" in record.reason


def test_the_reranker_trains_on_more_questions_but_none_about_held_out_documents(
    tmp_path: Path,
) -> None:
    from mentor.rag.autotune import Context, Quiet, training_questions

    index, _ = built(tmp_path)
    retriever = Retriever(index, HashEmbedder(64))
    selfeval = build_selfeval(index, retriever.chunks, writer(), questions=20)
    options = TuneOptions(profile="full", reranker_questions=30)
    ctx = Context(index, HashEmbedder(64), opener(writer()), options, Quiet(), selfeval=selfeval)
    more = training_questions(ctx, share=1.0)
    held_docs = {q.doc_id for q in selfeval.held_out}
    asked = {q.chunk_id for q in [*selfeval.tuning, *selfeval.held_out]}
    assert 0 < len(more) <= 30
    assert not {q.doc_id for q in more} & held_docs
    assert not {q.chunk_id for q in more} & asked
    # cached with the self-evaluation replies: asked again, nothing is written
    again = writer()
    ctx = Context(index, HashEmbedder(64), opener(again), options, Quiet(), selfeval=selfeval)
    assert training_questions(ctx, share=1.0) == more and again.calls == []


def test_example_queries_set_the_style_and_are_kept_for_later_runs(tmp_path: Path) -> None:
    index, docs = built(tmp_path)
    words = [(docs / f"doc{d}.txt").read_text().split() for d in range(3)]
    examples = tuple(f"{w[3]} raises {w[7]} in {w[11]}." for w in words)
    first = writer()
    options = TuneOptions(profile="fast", questions=40)
    autotune(index, HashEmbedder(64), opener(first), replace(options, example_queries=examples))
    assert json.loads((index / EXAMPLES).read_text()) == list(examples)
    shown = first.calls[0].messages
    assert shown[0]["content"] == STYLE_SYSTEM
    assert sorted(m["content"] for m in shown if m["role"] == "assistant") == sorted(examples)
    saved = json.loads((index / SELFEVAL).read_text())
    assert saved["style"]

    # Later runs keep the style without being given the examples again...
    second = writer()
    again = autotune(index, HashEmbedder(64), opener(second), options)
    assert second.calls == [] and statuses(index)["questions"] == "reused"
    assert again.record("questions") is not None
    # ...and other examples write the questions again, in their style.
    third = writer()
    autotune(index, HashEmbedder(64), opener(third), replace(options, example_queries=examples[:1]))
    assert third.calls and json.loads((index / SELFEVAL).read_text())["style"] != saved["style"]
    assert third.calls[0].messages[2]["content"] == examples[0]


def test_example_questions_keep_the_built_in_prompt(tmp_path: Path) -> None:
    index, docs = built(tmp_path)
    words = (docs / "doc0.txt").read_text().split()
    examples = (f"Does {words[3]} raise {words[7]}?", f"Where is {words[11]} kept?")
    generator = writer()
    options = TuneOptions(profile="fast", questions=40, example_queries=examples)
    report = autotune(index, HashEmbedder(64), opener(generator), options)
    assert generator.calls[0].messages[0]["content"] != STYLE_SYSTEM
    assert json.loads((index / SELFEVAL).read_text())["style"] == ""
    questions = report.record("questions")
    assert questions is not None and "the example queries are questions" in questions.reason


def test_more_embedder_time_runs_the_embedder_step_again(tmp_path: Path) -> None:
    index, _ = built(tmp_path)
    step = next(s for s in default_steps() if s.name == "embedder")
    autotune(index, HashEmbedder(64), opener(writer()), TuneOptions(profile="fast"))
    short = _fingerprint(index, step, TuneOptions(embedder_budget_s=300.0))
    assert short == _fingerprint(index, step, TuneOptions(embedder_budget_s=300.0))
    assert short != _fingerprint(index, step, TuneOptions(embedder_budget_s=1200.0))
