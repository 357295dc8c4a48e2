"""Search: dense, BM25, hybrid fusion, filters, expansion and reranking on a small index."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentor.rag.expansion import HyDE, MultiQuery, make_expander
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig, parse_filters
from mentor.testing import HashEmbedder, ScriptedGenerator


@pytest.fixture
def retriever(docs: Path, tmp_path: Path) -> Retriever:
    # Wide enough that hashed words rarely collide, so dense search is meaningful.
    build_index(tmp_path / "idx", [docs], HashEmbedder(dim=1024))
    return Retriever(tmp_path / "idx", HashEmbedder(dim=1024))


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_finds_the_right_document(retriever: Retriever, mode: str) -> None:
    result = retriever.search(
        "are refunds issued after a cancellation", SearchConfig(mode=mode, k=3)
    )  # type: ignore[arg-type]
    assert result.hits[0].chunk.doc_id == "docs/billing.md"
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    assert set(result.timings) >= {"fuse"} | ({"dense", "embed"} if mode != "bm25" else set())


def test_hybrid_keeps_each_retrievers_evidence(retriever: Retriever) -> None:
    hit = retriever.search("CSV export comments", SearchConfig(k=1)).hits[0]
    assert hit.chunk.doc_id == "docs/export.md"
    assert set(hit.stages) == {"dense", "bm25"}
    assert hit.score == pytest.approx(1 / 61 + 1 / 61)  # first in both rankings, RRF k=60


def test_fusion_weights_decide_between_retrievers(retriever: Retriever) -> None:
    only_bm25 = SearchConfig(k=4, dense_weight=0.0)
    bm25 = retriever.search("encrypted", SearchConfig(mode="bm25", k=4))
    fused = retriever.search("encrypted", only_bm25)
    assert [h.chunk.chunk_id for h in fused.hits[: len(bm25.hits)]] == [
        h.chunk.chunk_id for h in bm25.hits
    ]


def test_filters_restrict_every_retriever(retriever: Retriever) -> None:
    filters = parse_filters(["doc_id=docs/g*"])
    for mode in ("dense", "bm25", "hybrid"):
        query = SearchConfig(mode=mode, filters=filters)  # type: ignore[arg-type]
        hits = retriever.search("refunds for boards", query).hits
        assert hits and {h.chunk.doc_id for h in hits} == {"docs/guests.md"}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_filters(["colour=red"])


def test_multi_query_and_hyde_add_probes(retriever: Retriever) -> None:
    rewrites = ScriptedGenerator(["1. money back after cancelling\n2. refund policy\nrefund"])
    expander = MultiQuery(rewrites, n=3)
    assert expander.expand("refunds?").queries == ["money back after cancelling", "refund policy"]
    result = retriever.search(
        "get my money back",
        SearchConfig(k=2),
        expander=MultiQuery(ScriptedGenerator(["refunds cancellation"])),
    )
    assert result.hits[0].chunk.doc_id == "docs/billing.md" and "expand" in result.timings

    hyde = HyDE(ScriptedGenerator(["Refunds are issued within 14 days of cancellation."]))
    assert hyde.expand("q").dense_texts == ["Refunds are issued within 14 days of cancellation."]
    found = retriever.search(
        "how long until I see my money",
        SearchConfig(mode="dense", k=1),
        expander=HyDE(
            ScriptedGenerator(["Refunds are issued within 14 days of a cancellation request."])
        ),
    )
    assert found.hits[0].chunk.doc_id == "docs/billing.md"
    assert make_expander("none", None) is None
    with pytest.raises(ValueError, match="needs a generator"):
        make_expander("hyde", None)


class KeywordReranker:
    name = "keyword"

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [float("AES-256" in p) for p in passages]


def test_a_reranker_reorders_the_head(retriever: Retriever) -> None:
    result = retriever.search(
        "boards",
        SearchConfig(k=3, rerank_depth=10, rerank_fusion=False),
        reranker=KeywordReranker(),
    )
    assert result.hits[0].chunk.doc_id == "docs/security.md"
    assert "rerank" in result.timings and result.hits[0].stages["rerank"] == 1.0


def test_reranker_fusion_keeps_the_first_stage_in_play(retriever: Retriever) -> None:
    plain = retriever.search("refunds cancellation", SearchConfig(k=4))
    fused = retriever.search(
        "refunds cancellation",
        SearchConfig(k=4, rerank_depth=10, rerank_fusion=True),
        reranker=KeywordReranker(),
    )
    replaced = retriever.search(
        "refunds cancellation",
        SearchConfig(k=4, rerank_depth=10, rerank_fusion=False),
        reranker=KeywordReranker(),
    )
    assert replaced.hits[0].chunk.doc_id == "docs/security.md"
    # Fused, the first stage's winner and the reranker's winner share the top two places.
    top_two = {h.chunk.doc_id for h in fused.hits[:2]}
    assert top_two == {plain.hits[0].chunk.doc_id, "docs/security.md"}
