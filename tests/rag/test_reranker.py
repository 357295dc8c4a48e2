"""Reranker: scores in input order, hard negatives that exclude positives, training that improves
ranking on held-out pairs, and a saved folder that reloads to the same scores. Tiny models only."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mentor.rag.index import build_index, embed_input
from mentor.rag.records import Chunk, Hit
from mentor.rag.reranker import (
    METADATA,
    CrossEncoderReranker,
    TrainingPair,
    listwise_loss,
    mean_reciprocal_rank,
    mine_pairs,
    train_reranker,
)
from mentor.rag.retrieve import Retriever, SearchConfig, SearchResult
from mentor.testing import (
    HashEmbedder,
    tiny_sentence_transformer_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_logits(folder: Path, query: str, passages: list[str]) -> list[float]:
    """The same folder read by plain transformers: the reference for raw logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([query] * len(passages), passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        return [float(x) for x in model(**batch).logits[:, 0]]


# ---------------------------------------------------------------------------------------------
# Scoring

PASSAGES = [
    "the coffee grinder weighs 3 kilograms",
    "refunds are issued within 5 business days",
    "the standing desk ships within 2 weeks",
    "the wireless router supports 8 devices at once",
    "the water filter holds up to 2 litres",
]


def test_scores_are_raw_logits_in_input_order(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(tiny_cross_encoder, batch_size=2)
    query = "how heavy is the coffee grinder?"
    scores = reranker.score(query, PASSAGES)
    assert len(scores) == len(PASSAGES) and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) == len(PASSAGES)
    # bf16 autocast (where the CPU has it) rounds; orders of magnitude apart from any sigmoid.
    assert scores == pytest.approx(_hf_logits(tiny_cross_encoder, query, PASSAGES), abs=0.03)
    assert reranker.score(query, PASSAGES[::-1]) == pytest.approx(scores[::-1], abs=0.03)
    assert reranker.score(query, []) == []
    assert reranker.name == "cross-encoder:tiny-ce"


def test_a_sentence_embedder_is_refused(tmp_path: Path) -> None:
    # It would load with a random scoring head and rerank by noise.
    folder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    with pytest.raises(ValueError, match="not a cross-encoder"):
        CrossEncoderReranker(folder)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        CrossEncoderReranker(tmp_path)


# ---------------------------------------------------------------------------------------------
# Mining


def _chunk(doc: str, n: int, text: str) -> Chunk:
    return Chunk(
        f"{doc}#{n}", doc, f"/docs/{doc}", doc.removesuffix(".md"), text, n * 100, n * 100 + 99
    )


CHUNKS = [
    _chunk("grinder.md", 0, "The coffee grinder has twelve settings."),
    _chunk("grinder.md", 1, "The coffee grinder weighs three kilograms."),
    _chunk("kettle.md", 0, "The kettle weighs one kilogram and boils water."),
    _chunk("desk.md", 0, "The desk weighs thirty kilograms."),
    _chunk("router.md", 0, "The router supports eight devices."),
    _chunk("chair.md", 0, "The office chair has a warranty."),
    _chunk("filter.md", 0, "The water filter holds two litres."),
    _chunk("lamp.md", 0, "The lamp has three brightness levels."),
]


class OverlapRetriever:
    """A stand-in for ``Retriever``: chunks ranked by words shared with the query."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self._chunks = chunks
        self.configs: list[SearchConfig] = []

    @property
    def chunks(self) -> list[Chunk]:
        return list(self._chunks)

    def search(self, query: str, config: SearchConfig) -> SearchResult:
        self.configs.append(config)
        words = set(query.lower().replace("?", "").split())

        def shared(chunk: Chunk) -> int:
            return len(words & set(embed_input(chunk).lower().rstrip(".").split()))

        ranked = sorted(self._chunks, key=lambda c: (-shared(c), c.chunk_id))[: config.k]
        return SearchResult(query, [Hit(c, 1.0, i) for i, c in enumerate(ranked, 1)], {})


def _text(chunk_id: str) -> str:
    return embed_input(next(c for c in CHUNKS if c.chunk_id == chunk_id))


def test_mined_positive_is_the_best_ranked_positive_and_negatives_exclude_it() -> None:
    retriever = OverlapRetriever(CHUNKS)
    queries = {"q1": "how many kilograms does the coffee grinder weigh?"}
    pairs = mine_pairs(retriever, queries, {"q1": {"grinder.md"}}, negatives_per_query=3)
    assert retriever.configs[0].mode == "hybrid" and retriever.configs[0].k == 30
    [pair] = pairs
    assert pair.query == queries["q1"]
    assert pair.positive == _text("grinder.md#1")  # outranks grinder.md#0
    assert len(pair.negatives) == 3
    assert not any("grinder" in n for n in pair.negatives)  # no chunk of the relevant doc
    assert pair.negatives[0] in (_text("kettle.md#0"), _text("desk.md#0"))  # hardest first


def test_a_chunk_id_as_positive_keeps_its_sibling_chunks_out_of_the_negatives() -> None:
    # A synthetic question names the chunk it was written for: that chunk is the positive,
    # and another chunk of the same document (same title, overlapping text) is no negative.
    retriever = OverlapRetriever(CHUNKS)
    query = "what does the coffee grinder weigh?"
    assert "grinder.md#1" in [
        h.chunk.chunk_id for h in retriever.search(query, SearchConfig(k=3)).hits
    ]
    pairs = mine_pairs(retriever, {"s": query}, {"s": {"grinder.md#0"}}, negatives_per_query=2)
    assert pairs[0].positive == _text("grinder.md#0")
    assert len(pairs[0].negatives) == 2
    assert not any("grinder" in n for n in pairs[0].negatives)


def test_unretrieved_positive_falls_back_to_the_document_start_and_topping_up() -> None:
    retriever = OverlapRetriever(CHUNKS)
    queries = {"q": "which lamp has brightness levels?", "lost": "anything", "none": "x"}
    positives = {"q": {"grinder.md"}, "lost": {"missing.md"}}
    pairs = mine_pairs(retriever, queries, positives, negatives_per_query=4, depth=2, skip_top=1)
    [pair] = pairs  # "lost" names no indexed doc, "none" has no positives
    assert pair.positive == _text("grinder.md#0")
    assert _text("lamp.md#0") not in pair.negatives  # the top hit was skipped
    assert len(pair.negatives) == len(set(pair.negatives)) == 4  # 1 mined + 3 random
    assert not any("grinder" in n for n in pair.negatives)
    again = mine_pairs(retriever, queries, positives, negatives_per_query=4, depth=2, skip_top=1)
    assert again == pairs
    other_seed = mine_pairs(
        retriever, queries, positives, negatives_per_query=4, depth=2, skip_top=1, seed=1
    )
    assert other_seed[0].negatives[0] == pair.negatives[0]


def test_mining_and_reranking_on_a_real_index(tmp_path: Path, tiny_cross_encoder: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for chunk in CHUNKS:
        with (docs / chunk.doc_id).open("a") as fh:
            fh.write(f"{chunk.text}\n\n")
    build_index(tmp_path / "index", [docs], HashEmbedder())
    retriever = Retriever(tmp_path / "index", HashEmbedder())
    query = "how heavy is the coffee grinder?"
    [pair] = mine_pairs(retriever, {"q": query}, {"q": {"docs/grinder.md"}}, negatives_per_query=3)
    assert "grinder" in pair.positive
    assert len(pair.negatives) == 3 and not any("grinder" in n for n in pair.negatives)

    reranker = CrossEncoderReranker(tiny_cross_encoder)
    result = retriever.search(query, SearchConfig(k=3, rerank_fusion=False), reranker=reranker)
    scores = [h.stages["rerank"] for h in result.hits]
    assert scores == sorted(scores, reverse=True) and "rerank" in result.timings


# ---------------------------------------------------------------------------------------------
# Training


def test_listwise_loss_matches_a_reference() -> None:
    scores = torch.tensor([2.0, 1.0, 0.0, 0.5, 3.0])
    expected = (
        -2.0 + math.log(math.exp(2) + math.exp(1) + math.exp(0))
        - 0.5 + math.log(math.exp(0.5) + math.exp(3))
    ) / 2  # fmt: skip
    assert float(listwise_loss(scores, [3, 2])) == pytest.approx(expected, rel=1e-6)
    equal = torch.randn(12)
    reference = torch.nn.functional.cross_entropy(
        equal.view(3, 4), torch.zeros(3, dtype=torch.long)
    )
    assert float(listwise_loss(equal, [4, 4, 4])) == pytest.approx(float(reference), rel=1e-6)
    scores.requires_grad_(True)
    listwise_loss(scores, [3, 2]).backward()  # type: ignore[no-untyped-call]
    assert scores.grad is not None and float(scores.grad[0]) < 0 < float(scores.grad[1])


def test_training_improves_held_out_ranking_and_saves_a_reloadable_model(
    tmp_path: Path, topic_task: Callable[[int, int], list[TrainingPair]]
) -> None:
    base = tiny_sentence_transformer_folder(tmp_path / "base")
    out = tmp_path / "reranker"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    validation = topic_task(64, seed=1)
    seen: list[tuple[int, int, float]] = []
    report = train_reranker(
        topic_task(400, seed=0),
        out=out,
        base=base,
        epochs=2,
        batch_size=8,
        lr=1e-3,  # a random tiny model takes a far larger step than a pretrained MiniLM
        max_length=32,
        validation=validation,
        patience=None,  # the full run: early stopping has its own tests
        progress=lambda step, total, loss: seen.append((step, total, loss)),
    )
    assert report.steps == 100 and [s for s, _, _ in seen] == list(range(1, 101))
    assert all(total == 100 for _, total, _ in seen)
    assert report.mrr_before is not None and report.mrr_after is not None
    assert report.mrr_before < 0.6 and report.mrr_after > 0.85, (
        report.mrr_before,
        report.mrr_after,
    )
    assert report.final_loss < report.losses[0]
    assert report.pairs == 400 and report.pairs_per_second > 0

    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "reranker"]  # no temp folders
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    meta = json.loads((out / METADATA).read_text())
    assert meta["base"] == str(base) and meta["pairs"] == 400 and meta["epochs"] == 2
    assert meta["mrr_after"] == report.mrr_after and len(meta["losses"]) == 20

    assert CrossEncoderReranker(out).max_length == 32  # as trained, from the metadata
    reranker = CrossEncoderReranker(out, max_length=32)
    reloaded = mean_reciprocal_rank(reranker.model, reranker.tokenizer, validation, 32)
    assert reloaded == report.mrr_after
    pair = validation[0]
    passages = [pair.positive, *pair.negatives]
    assert reranker.score(pair.query, passages) == pytest.approx(
        _hf_logits(out, pair.query, passages), abs=0.05
    )


def test_training_needs_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training pairs"):
        train_reranker([], out=tmp_path / "r")
