"""Self-evaluation on synthetic questions and the fusion tuner, on corpora built in code.

The corpus: documents of random pseudo-words, so a question made of three of a chunk's words
is answered by BM25 exactly, while a :class:`NoiseEmbedder` (a random vector per text) gives
dense retrieval no signal at all: the tuner must end up on BM25.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mentor.models.protocols import ChatMessage
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.selfeval import (
    BATCH,
    SelfEvalSet,
    as_eval_set,
    build_selfeval,
    split_by_document,
    stratified_sample,
)
from mentor.rag.synthetic import SyntheticQuestion
from mentor.rag.tune import (
    PREFERENCE,
    load_fusion,
    offline_ranking,
    resolve_search,
    retrieve_once,
    simplest_within_noise,
    tune_fusion,
)
from mentor.testing import HashEmbedder, ScriptedGenerator


class NoiseEmbedder:
    """A unit vector drawn from the text's hash: same text, same vector, no meaning."""

    def __init__(self, dim: int = 32, name: str = "noise") -> None:
        self.dim, self.name = dim, name

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def corpus(root: Path, docs: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    vocab = [f"zq{i}x" for i in range(600)]
    folder = root / "docs"
    folder.mkdir(parents=True)
    for d in range(docs):
        (folder / f"doc{d}.txt").write_text(" ".join(rng.sample(vocab, 30)))
    return folder


def ask_about_words(messages: Sequence[ChatMessage]) -> str:
    """A scripted question writer: three of the passage's words, not in their order."""
    passage = re.search(r"<passage>\n(.*?)\n</passage>", messages[-1]["content"], re.S)
    assert passage is not None
    words = passage.group(1).split()[-30:]
    return f"What is known about {words[20]} and {words[5]} or {words[12]}?"


@pytest.fixture
def noisy(tmp_path: Path) -> Retriever:
    embedder = NoiseEmbedder()
    build_index(tmp_path / "idx", [corpus(tmp_path)], embedder)
    return Retriever(tmp_path / "idx", embedder)


def test_stratified_sample_spreads_over_documents_and_split_keeps_them_apart() -> None:
    from mentor.rag.records import Chunk

    words = " ".join(["word"] * 20)
    sizes = {"a": 5, "b": 1, "c": 1, "d": 1}
    chunks = [
        Chunk(f"{d}#{i}", d, f"{d}.txt", d, words, 0, 1) for d, n in sizes.items() for i in range(n)
    ]
    picked = stratified_sample(chunks, 4, seed=1)
    assert sorted(c.doc_id for c in picked) == ["a", "b", "c", "d"]  # one each before seconds
    assert stratified_sample(chunks, 4, seed=1) == picked
    assert len(stratified_sample(chunks, 100, seed=1)) == 8

    questions = [SyntheticQuestion(f"q{i}?", f"c{i}", f"doc{i % 10}") for i in range(50)]
    tuning, held = split_by_document(questions, 0.3, seed=0)
    assert {q.doc_id for q in tuning}.isdisjoint({q.doc_id for q in held})
    assert len(tuning) + len(held) == 50 and 15 <= len(held) <= 20
    assert split_by_document(questions, 0.3, seed=0) == (tuning, held)
    evalset = as_eval_set(held)
    assert evalset.qrels["synthetic-0"] == {held[0].doc_id: 1}


def test_build_selfeval_is_cached_and_resumable(noisy: Retriever) -> None:
    writer = ScriptedGenerator(ask_about_words)
    first = build_selfeval(noisy.folder, noisy.chunks, writer, questions=30, budget_s=0.0)
    assert len(writer.calls) == BATCH  # the budget stops it after the first batch
    assert len(first.tuning) + len(first.held_out) == BATCH
    second = build_selfeval(noisy.folder, noisy.chunks, writer, questions=30)
    assert len(writer.calls) == 30  # only those not asked before
    assert len(second.tuning) + len(second.held_out) == 30
    assert SelfEvalSet.load(noisy.folder) == second


def test_offline_scores_match_what_search_returns(noisy: Retriever) -> None:
    query = {"q": "zq1x zq2x zq3x zq4x"}
    found = retrieve_once(noisy, query, depth=20)["q"]
    for config in (
        SearchConfig(mode="bm25", candidates=20),
        SearchConfig(mode="dense", candidates=20),
        SearchConfig(rrf_k=10, dense_weight=0.5, candidates=20),
        SearchConfig(fusion="convex", alpha=0.3, candidates=20),
        SearchConfig(fusion="convex", alpha=0.7, normalization="zscore", candidates=10),
    ):
        searched = noisy.search(query["q"], replace(config, k=config.candidates)).hits
        offline = offline_ranking(found, config)[: config.candidates]
        assert offline == [h.chunk.chunk_id for h in searched], config


def test_the_tuner_picks_bm25_when_dense_retrieval_carries_no_signal(noisy: Retriever) -> None:
    selfeval = build_selfeval(
        noisy.folder, noisy.chunks, ScriptedGenerator(ask_about_words), questions=40
    )
    tuned = tune_fusion(noisy, selfeval.tuning, selfeval.held_out, resamples=300)
    assert tuned.chosen == "bm25"
    assert tuned.setting["mode"] == "bm25"
    assert tuned.held_out_ndcg["bm25"] > tuned.held_out_ndcg["dense"] + 0.5
    assert tuned.held_out_ndcg["bm25"] >= tuned.held_out_ndcg["hybrid"]

    # Saved with the index and used wherever the user set nothing.
    tuned.save(noisy.folder)
    assert load_fusion(noisy.folder) == tuned
    assert resolve_search(noisy.folder, {"k": 3}) == SearchConfig(mode="bm25", k=3)
    assert resolve_search(noisy.folder, {"mode": "hybrid", "rrf_k": None}).mode == "hybrid"
    assert resolve_search(None, {}) == SearchConfig()
    with pytest.raises(ValueError, match="not SearchConfig fields"):
        resolve_search(noisy.folder, {"depth": 3})


def test_the_tuner_keeps_fusion_where_both_retrievers_carry_signal(tmp_path: Path) -> None:
    embedder = HashEmbedder(256)  # lexical too: dense is as good as BM25 here
    build_index(tmp_path / "idx", [corpus(tmp_path)], embedder)
    retriever = Retriever(tmp_path / "idx", embedder)
    selfeval = build_selfeval(
        retriever.folder, retriever.chunks, ScriptedGenerator(ask_about_words), questions=40
    )
    tuned = tune_fusion(retriever, selfeval.tuning, selfeval.held_out, resamples=300)
    assert tuned.held_out_ndcg[tuned.chosen] >= max(tuned.held_out_ndcg.values()) - 0.05


def test_the_guard_keeps_the_simpler_setting_within_noise() -> None:
    rng = np.random.default_rng(0)
    simple = rng.uniform(0, 1, 60)
    noisy_gain = simple + rng.normal(0.01, 0.2, 60)  # better on average, by less than noise
    chosen, gaps = simplest_within_noise(
        {"bm25": list(simple), "tuned": list(noisy_gain)}, ["bm25", "tuned"], resamples=500
    )
    assert np.mean(noisy_gain) > np.mean(simple)
    assert chosen == "bm25" and gaps["bm25"].low < 0 < gaps["bm25"].high

    clear_gain = np.minimum(simple + 0.3, 1.0)  # better on every question
    chosen, gaps = simplest_within_noise(
        {"bm25": list(simple), "tuned": list(clear_gain)}, ["bm25", "tuned"], resamples=500
    )
    assert chosen == "tuned" and gaps["bm25"].high < 0


def test_the_default_hybrid_stays_unless_another_is_better_beyond_noise() -> None:
    rng = np.random.default_rng(1)
    hybrid = rng.uniform(0, 1, 60)
    scores = {
        "hybrid": list(hybrid),
        "bm25": list(hybrid + rng.normal(0.01, 0.2, 60)),  # cheaper, a little better: noise
        "dense": list(hybrid - 0.2),
    }
    order = [n for n in PREFERENCE if n in scores]
    assert simplest_within_noise(scores, order, resamples=500)[0] == "hybrid"
    scores["bm25"] = list(np.minimum(hybrid + 0.3, 1.0))  # better on every question
    assert simplest_within_noise(scores, order, resamples=500)[0] == "bm25"


def test_the_tuned_setting_comes_before_a_single_retriever_within_noise_of_it() -> None:
    # SciFact's shape: hybrid loses to the tuned fusion beyond noise, BM25 is within noise of
    # the tuned one on synthetic questions (which lean lexical): the tuned setting is kept.
    rng = np.random.default_rng(2)
    hybrid = rng.uniform(0, 0.7, 120)
    scores = {
        "hybrid": list(hybrid),
        "tuned": list(np.minimum(hybrid + 0.3, 1.0)),
        "bm25": list(np.minimum(hybrid + 0.3 + rng.normal(0.0, 0.2, 120), 1.0)),
        "dense": list(hybrid - 0.2),
    }
    order = [n for n in PREFERENCE if n in scores]
    chosen, gaps = simplest_within_noise(scores, order, resamples=500)
    assert gaps["hybrid"].high < 0 and gaps["bm25"].high >= 0
    assert chosen == "tuned"


def test_tuning_needs_both_parts(noisy: Retriever) -> None:
    question = SyntheticQuestion("What about zq1x?", "c", "d")
    with pytest.raises(ValueError, match="need questions in both parts"):
        tune_fusion(noisy, [question], [])


def test_fusion_json_written_by_an_older_mentor_still_loads(noisy: Retriever) -> None:
    selfeval = build_selfeval(
        noisy.folder, noisy.chunks, ScriptedGenerator(ask_about_words), questions=20
    )
    tune_fusion(noisy, selfeval.tuning, selfeval.held_out, resamples=50).save(noisy.folder)
    path = noisy.folder / "fusion.json"
    raw = json.loads(path.read_text())
    raw["setting"]["retired_field"] = 1  # a field this version no longer tunes is ignored
    path.write_text(json.dumps(raw))
    assert load_fusion(noisy.folder) is not None
