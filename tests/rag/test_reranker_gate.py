"""The faster reranker and its verdict: a measured token budget, early stopping that stops and
keeps the best weights, bf16 scoring that orders like fp32, the rerank depth chosen by
measurement, and a reranker kept only when it beats the first stage. Tiny models only."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import mentor.rag.reranker as reranker_module
from mentor.rag.index import build_index, embed_input
from mentor.rag.records import Chunk, Hit
from mentor.rag.rerank_gate import (
    DECISION,
    RerankDecision,
    choose_depth,
    default_reranker,
    judge_reranker,
    load_decision,
    read_questions,
    rerank_ranking,
    save_decision,
    write_questions,
)
from mentor.rag.reranker import (
    CrossEncoderReranker,
    EarlyStopping,
    TrainingPair,
    choose_max_length,
    pair_lengths,
    train_reranker,
)
from mentor.rag.retrieve import Retriever, SearchConfig, SearchResult
from mentor.rag.synthetic import SyntheticQuestion, split_by_document
from mentor.testing import (
    HashEmbedder,
    KeywordReranker,
    tiny_sentence_transformer_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Shorter pairs, split by document


def test_max_length_covers_the_asked_share_rounded_up_and_bounded() -> None:
    lengths = list(range(1, 101))  # 1..100 tokens
    assert choose_max_length(lengths, coverage=0.8, multiple=32, floor=32, cap=512) == 96
    assert choose_max_length(lengths, coverage=0.5, multiple=16, floor=16, cap=512) == 64
    assert choose_max_length(lengths, coverage=1.0, multiple=32, floor=32, cap=512) == 128
    assert choose_max_length([5, 6], coverage=1.0, multiple=32, floor=64, cap=512) == 64
    assert choose_max_length([900] * 3, cap=128) == 128
    with pytest.raises(ValueError, match="coverage"):
        choose_max_length(lengths, coverage=0.0)
    with pytest.raises(ValueError, match="no pair lengths"):
        choose_max_length([])


def test_pair_lengths_count_question_and_passage_tokens(tiny_cross_encoder: Path) -> None:
    tokenizer = CrossEncoderReranker(tiny_cross_encoder).tokenizer
    pairs = [TrainingPair("a b", "c d e", ["f"])]
    single = len(tokenizer("a b", "f")["input_ids"])
    assert pair_lengths(tokenizer, pairs) == [len(tokenizer("a b", "c d e")["input_ids"]), single]


def _questions(docs: int, per_doc: int) -> list[SyntheticQuestion]:
    return [
        SyntheticQuestion(f"question {d}-{n}?", f"doc{d}#{n}", f"doc{d}")
        for d in range(docs)
        for n in range(per_doc)
    ]


def test_split_by_document_keeps_documents_whole_and_is_seeded() -> None:
    questions = _questions(20, 3)
    train, held = split_by_document(questions, 0.2, seed=3)
    assert len({q.doc_id for q in held}) == 4 and len(held) == 12 and len(train) == 48
    assert not {q.doc_id for q in train} & {q.doc_id for q in held}
    assert split_by_document(questions, 0.2, seed=3) == (train, held)
    assert split_by_document(questions, 0.2, seed=4)[1] != held
    assert split_by_document(_questions(2, 1), 0.01)[1]  # a tiny share still holds one document
    assert split_by_document(questions, 0.0) == (questions, [])
    with pytest.raises(ValueError, match="held_out"):
        split_by_document(questions, 1.0)


# ---------------------------------------------------------------------------------------------
# Early stopping


TOPICS = ("coffee grinder kettle water filter", "desk chair office lamp screen")


def test_training_that_stops_gaining_stops_early(
    tmp_path: Path, topic_task: Callable[[int, int], list[TrainingPair]]
) -> None:
    base = tiny_sentence_transformer_folder(tmp_path / "base")
    report = train_reranker(
        topic_task(64, seed=0),  # 8 steps an epoch, a check every 2 steps
        out=tmp_path / "rr",
        base=base,
        epochs=3,
        lr=0.0,  # nothing changes, so no check gains on the first
        max_length=32,
        validation=topic_task(16, seed=1),
        patience=2,
        checks_per_epoch=4,
    )
    assert report.stopped == "no gain"
    assert report.steps == 6 and report.best_step == 2  # the first check, then two without gain
    assert [step for step, _ in report.validation_curve] == [2, 4, 6]
    assert report.mrr_after == report.mrr_before
    meta = json.loads((tmp_path / "rr" / "mentor-reranker.json").read_text())
    assert meta["stopped"] == "no gain" and meta["max_length"] == 32


def test_a_time_budget_ends_training_after_the_step_that_crosses_it(
    tmp_path: Path, topic_task: Callable[[int, int], list[TrainingPair]]
) -> None:
    base = tiny_sentence_transformer_folder(tmp_path / "base")
    report = train_reranker(
        topic_task(64, seed=0), out=tmp_path / "rr", base=base, max_length=32, max_seconds=1e-9
    )
    assert report.steps == 1 and report.stopped == "time budget"


def test_a_learning_run_is_not_stopped_and_measures_its_token_budget(
    tmp_path: Path, topic_task: Callable[[int, int], list[TrainingPair]]
) -> None:
    base = tiny_sentence_transformer_folder(tmp_path / "base")
    report = train_reranker(
        topic_task(400, seed=0),
        out=tmp_path / "rr",
        base=base,
        epochs=2,
        lr=1e-3,
        validation=topic_task(64, seed=1),
    )
    assert report.mrr_after is not None and report.mrr_after > 0.85
    assert report.max_length == 64  # about a dozen tokens a pair: the floor
    assert CrossEncoderReranker(tmp_path / "rr").max_length == 64


def test_early_stopping_restores_the_best_checks_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = iter([0.5, 0.7, 0.6, 0.65])
    monkeypatch.setattr(reranker_module, "mean_reciprocal_rank", lambda *a: next(scripted))
    model = torch.nn.Linear(2, 1)
    stopping = EarlyStopping([TrainingPair("q", "p", ["n"])], every=1, patience=2)
    weights = []
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights.append(model.weight.clone())
        if stopping.check(model, None, step, 10, 0.0, 32):
            break
    assert step == 4 and stopping.reason == "no gain" and stopping.best_step == 2
    stopping.restore(model)
    assert torch.equal(model.weight, weights[1])


# ---------------------------------------------------------------------------------------------
# bf16 scoring


def test_bf16_scoring_orders_passages_as_fp32_does(
    tiny_cross_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = CrossEncoderReranker(tiny_cross_encoder, batch_size=3)
    query = "how heavy is the coffee grinder?"
    passages = [f"passage {i}: " + " ".join(TOPICS[i % 2].split()[: 1 + i % 5]) for i in range(12)]
    monkeypatch.setattr(reranker_module, "_bf16", lambda device: False)
    fp32 = reranker.score(query, passages)
    monkeypatch.setattr(reranker_module, "_bf16", lambda device: True)
    bf16 = reranker.score(query, passages)
    assert bf16 != fp32  # bf16 did run: it rounds
    assert bf16 == pytest.approx(fp32, abs=0.05)
    # Every pair that fp32 tells apart by more than bf16's rounding keeps its order.
    for i in range(12):
        for j in range(12):
            if fp32[i] > fp32[j] + 0.05:
                assert bf16[i] > bf16[j], (i, j)


# ---------------------------------------------------------------------------------------------
# The rerank stage replayed, the depth, and the verdict


def test_rerank_ranking_replays_the_retrievers_rerank_stage(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    words = ["grinder", "kettle", "desk", "chair", "lamp", "router", "filter", "screen"]
    for i in range(12):
        (docs / f"d{i}.md").write_text(" ".join(words[(i + j) % 8] for j in range(5)) + "\n")
    build_index(tmp_path / "index", [docs], HashEmbedder())
    retriever = Retriever(tmp_path / "index", HashEmbedder())
    reranker = KeywordReranker(["lamp", "chair"])
    query = "grinder kettle desk"
    for fusion in (True, False):
        for depth in (3, 7):
            config = SearchConfig(k=12, rerank_depth=depth, rerank_fusion=fusion)
            first = [h.chunk.chunk_id for h in retriever.search(query, config).hits]
            passages = [embed_input(c) for c in retriever.chunks]
            by_id = dict(zip([c.chunk_id for c in retriever.chunks], passages, strict=True))
            scores = reranker.score(query, [by_id[i] for i in first])
            expected = [
                h.chunk.chunk_id for h in retriever.search(query, config, reranker=reranker).hits
            ]
            replayed = rerank_ranking(first, scores, depth, fusion=fusion, rrf_k=config.rrf_k)
            assert replayed == expected, (fusion, depth)


def test_depth_is_the_shortest_within_noise_of_the_deepest() -> None:
    rng = random.Random(0)
    deep = [rng.random() for _ in range(200)]
    same = list(deep)
    worse = [x - 0.3 for x in deep]
    slightly = [x - 0.005 for x in deep]  # consistently lower: beyond noise, within tolerance
    assert choose_depth({5: worse, 10: same, 30: deep}) == 10
    assert choose_depth({5: same, 10: same, 30: deep}) == 5
    assert choose_depth({5: worse, 10: worse, 30: deep}) == 30
    assert choose_depth({5: slightly, 30: deep}) == 30
    noisy = [x + rng.gauss(0, 0.05) for x in deep]
    assert choose_depth({5: noisy, 30: deep}) == 5
    with pytest.raises(ValueError, match="aligned"):
        choose_depth({5: [1.0], 30: [1.0, 1.0]})


RANKS = (1, 1, 1, 2, 2, 3, 4, 6, 9, 12)
"""Where the first stage ranks question i's passage: RANKS[i % 10], as a decent retriever
would (mostly on top, a tail down to 12)."""


class RankedRetriever:
    """Question ``q{i}`` gets 60 distractors with its own passage at rank RANKS[i % 10]."""

    def __init__(self, questions: int) -> None:
        self.distractors = [
            Chunk(f"x{j}", f"x{j}.md", "", "", f"distractor {j}", 0, 1) for j in range(60)
        ]
        self.answers = [
            Chunk(f"a{i}", f"a{i}.md", "", "", f"fact{i} answers it", 0, 1)
            for i in range(questions)
        ]

    @property
    def chunks(self) -> list[Chunk]:
        return self.distractors + self.answers

    def search(self, query: str, config: SearchConfig) -> SearchResult:
        i = int(query.removeprefix("q"))
        ranked = list(self.distractors)
        ranked.insert(RANKS[i % 10] - 1, self.answers[i])
        return SearchResult(
            query, [Hit(c, 1.0, r) for r, c in enumerate(ranked[: config.k], 1)], {}
        )


class OracleReranker:
    """Scores a question's own passage 1, the rest 0: a reranker that helps."""

    name = "oracle"

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [float(f"fact{query.removeprefix('q')} " in p) for p in passages]


class NoiseReranker:
    """Seeded random scores: a reranker that learned nothing."""

    name = "noise"

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [self.rng.random() for _ in passages]


def _held_out(n: int) -> tuple[dict[str, str], dict[str, set[str]]]:
    return {f"q{i}": f"q{i}" for i in range(n)}, {f"q{i}": {f"a{i}"} for i in range(n)}


def test_a_reranker_that_helps_is_kept_at_the_depth_that_reaches_its_answers() -> None:
    queries, positives = _held_out(60)
    decision = judge_reranker(RankedRetriever(60), queries, positives, OracleReranker())
    assert decision.keep and decision.gain.low > 0
    assert decision.depth == 15  # a tenth of the answers sit at rank 12: 10 misses them
    assert decision.by_depth[15] == pytest.approx(decision.by_depth[50])
    assert decision.by_depth[5] < decision.by_depth[10] < decision.by_depth[15]
    assert decision.reranked > decision.first_stage and decision.queries == 60
    assert decision.first_stage_config["rerank_fusion"] is True


def test_a_reranker_that_is_noise_is_dropped() -> None:
    queries, positives = _held_out(60)
    decision = judge_reranker(RankedRetriever(60), queries, positives, NoiseReranker())
    assert not decision.keep and decision.gain.low <= 0
    assert "dropped" in decision.reason()


def test_the_first_stage_to_beat_is_a_parameter() -> None:
    queries, positives = _held_out(20)
    replaced = judge_reranker(
        RankedRetriever(20), queries, positives, OracleReranker(), SearchConfig(rerank_fusion=False)
    )
    assert replaced.fusion is False and replaced.reranked == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no held-out questions"):
        judge_reranker(RankedRetriever(2), {"q0": "q0"}, {}, OracleReranker())


def test_the_verdict_round_trips_and_picks_the_default_reranker(
    tmp_path: Path, tiny_cross_encoder: Path
) -> None:
    from mentor.rag.commands import _chosen_reranker

    queries, positives = _held_out(30)
    decision = judge_reranker(RankedRetriever(30), queries, positives, OracleReranker())
    decision.reranker = str(tiny_cross_encoder)
    index = tmp_path / "index"
    index.mkdir()
    assert load_decision(index) is None and default_reranker(index) is None
    assert _chosen_reranker(index, None, None, "cpu") == (None, None)

    save_decision(decision, index, tiny_cross_encoder)
    again = load_decision(index)
    assert again == decision
    assert json.loads((tiny_cross_encoder / DECISION).read_text())["keep"] is True
    scorer, depth = _chosen_reranker(index, None, None, "cpu")
    assert isinstance(scorer, CrossEncoderReranker) and depth == decision.depth
    assert _chosen_reranker(index, None, False, "cpu") == (None, None)  # --no-reranker
    explicit, no_depth = _chosen_reranker(index, tiny_cross_encoder, None, "cpu")
    assert explicit is not None and no_depth is None

    dropped = RerankDecision(**{**decision.__dict__, "keep": False})
    save_decision(dropped, index)
    assert default_reranker(index) is None
    assert _chosen_reranker(index, None, None, "cpu") == (None, None)
    (index / DECISION).write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        load_decision(index)


def test_held_out_questions_round_trip(tmp_path: Path) -> None:
    queries, positives = _held_out(3)
    write_questions(tmp_path / "h.jsonl", queries, positives)
    assert read_questions(tmp_path / "h.jsonl") == (queries, positives)
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        read_questions(tmp_path / "bad.jsonl")


def test_train_judge_and_search_from_the_cli(tmp_path: Path) -> None:
    """train-reranker holds documents out, judges, saves the verdict; search follows it."""
    from typer.testing import CliRunner

    from mentor.cli import app
    from mentor.testing.fake_openai import FakeOpenAI

    runner = CliRunner()
    docs = tmp_path / "docs"
    docs.mkdir()
    words = ["invoice", "refund", "export", "security", "guest", "board", "plan", "seat"]
    for i, word in enumerate(words):
        text = f"The {word} rules: " + " ".join(
            f"{word}{j} applies to {words[j]}" for j in range(8)
        )
        (docs / f"{word}.md").write_text(f"# {word.title()}\n\n{text}.\n")
        del i
    encoder = tiny_sentence_transformer_folder(tmp_path / "tiny-st")
    idx = tmp_path / "idx"
    built = runner.invoke(
        app,
        ["rag", "index", str(docs), "--index", str(idx), "--embedder", str(encoder), "--no-tune"],
    )
    assert built.exit_code == 0, built.output

    def ask(messages: Any) -> str:
        import re

        word = re.findall(r"The (\w+) rules", messages[-1]["content"])[-1]
        return f"What do the {word} rules say about seats and plans?"

    with FakeOpenAI(ask, model="writer").serve() as url:
        trained = runner.invoke(
            app,
            ["rag", "train-reranker", "--index", str(idx), "--out", str(idx / "rr"),
             "--model", "writer", "--model-url", url, "--model-key-env", "",
             "--base", str(encoder), "--epochs", "1", "--batch-size", "2",
             "--validation-share", "0.25", "--device", "cpu"],
        )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    said = " ".join(trained.output.split())  # rich wraps lines at the terminal's width
    assert "2 of them, on 2 documents, held out" in said
    decision = load_decision(idx)
    assert decision is not None and decision.queries == 2
    assert f"reranker {'kept' if decision.keep else 'dropped'}" in said
    assert (idx / "rr" / "held-out-questions.jsonl").exists()

    def search(*flags: str) -> dict[str, Any]:
        result = runner.invoke(
            app, ["rag", "search", "refund", "--index", str(idx), "--json", *flags]
        )
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output))

    save_decision(RerankDecision(**{**decision.__dict__, "keep": False}), idx)
    assert "rerank" not in search()["timings_ms"]
    assert "rerank" in search("--reranker", str(idx / "rr"))["timings_ms"]
    save_decision(RerankDecision(**{**decision.__dict__, "keep": True, "depth": 3}), idx)
    kept = search("-k", "8")
    assert "rerank" in kept["timings_ms"]
    assert sum("rerank" in h["stages"] for h in kept["hits"]) == 3  # the judged depth
    assert "rerank" not in search("--no-reranker")["timings_ms"]
    judged = runner.invoke(
        app, ["rag", "judge-reranker", "--index", str(idx), "--reranker", str(idx / "rr")]
    )
    assert judged.exit_code == 0, judged.output
    assert "on 2 held-out questions" in " ".join(judged.output.split())
