"""Search: dense, BM25, hybrid fusion, filters, expansion and reranking on a small index.

Every search test runs twice: over the index's own LanceDB store and over a
:class:`mentor.testing.MemoryStore` holding the same chunks in another order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from tests.rag.conftest import memory_store_of

from mentor.rag.expansion import HyDE, MultiQuery, make_expander
from mentor.rag.index import build_index, embed_input, open_store
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, parse_filters
from mentor.rag.store import LanceStore
from mentor.testing import HashEmbedder, KeywordReranker, MemoryStore, ScriptedGenerator


@pytest.fixture(params=["lance", "memory"])
def retriever(docs: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Retriever:
    # Wide enough that hashed words rarely collide, so dense search is meaningful.
    embedder = HashEmbedder(dim=1024)
    build_index(tmp_path / "idx", [docs], embedder)
    if request.param == "lance":
        return Retriever(tmp_path / "idx", embedder)
    return Retriever(tmp_path / "idx", embedder, store=memory_store_of(tmp_path / "idx", embedder))


def test_the_default_store_is_the_index_at_its_manifest_version(docs: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", [docs], HashEmbedder())
    retriever = Retriever(tmp_path / "idx", HashEmbedder())
    assert isinstance(retriever.store, LanceStore)
    assert retriever.store.version == retriever.manifest.lance_version
    assert retriever.chunks == open_store(tmp_path / "idx").chunks()


def test_dense_search_comes_from_the_given_store(docs: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder(dim=1024)
    build_index(tmp_path / "idx", [docs], embedder)
    chunks = open_store(tmp_path / "idx").chunks()
    # The billing chunks carry the vectors of the security ones and the other way round.
    swap = {"docs/billing.md": "docs/security.md", "docs/security.md": "docs/billing.md"}
    texts = {c.doc_id: embed_input(c) for c in chunks}
    vectors = embedder.embed([texts[swap.get(c.doc_id, c.doc_id)] for c in chunks])
    retriever = Retriever(tmp_path / "idx", embedder, store=MemoryStore(chunks, vectors))
    query = "are refunds issued after a cancellation"
    dense = retriever.search(query, SearchConfig(mode="dense", k=1)).hits[0]
    bm25 = retriever.search(query, SearchConfig(mode="bm25", k=1)).hits[0]
    assert (dense.chunk.doc_id, bm25.chunk.doc_id) == ("docs/security.md", "docs/billing.md")


def test_a_store_must_hold_the_chunks_of_the_index(docs: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    build_index(tmp_path / "idx", [docs], embedder)
    chunks = open_store(tmp_path / "idx").chunks()
    vectors = embedder.embed([embed_input(c) for c in chunks])
    with pytest.raises(ValueError, match=f"lacks chunk '{chunks[0].chunk_id}'"):
        Retriever(tmp_path / "idx", embedder, store=MemoryStore(chunks[1:], vectors[1:]))
    more = [*chunks, replace(chunks[0], chunk_id="docs/extra.md#0")]
    store = MemoryStore(more, embedder.embed([embed_input(c) for c in more]))
    with pytest.raises(ValueError, match=f"holds {len(more)} chunks, the index {len(chunks)}"):
        Retriever(tmp_path / "idx", embedder, store=store)


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
    with pytest.raises(ValueError, match="page number"):
        parse_filters(["page=three"])


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_a_filter_on_an_unknown_field_is_refused_in_every_mode(
    retriever: Retriever, mode: str
) -> None:
    config = SearchConfig(mode=mode, filters={"colour": "red"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="filter field 'colour'"):
        retriever.search("boards", config)


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


def test_a_reranker_reorders_the_head(retriever: Retriever) -> None:
    reranker = KeywordReranker(["AES"])
    assert isinstance(reranker, Reranker)
    config = SearchConfig(k=3, rerank_depth=10, rerank_fusion=False)
    first_stage = retriever.search("boards", SearchConfig(k=config.rerank_depth))
    result = retriever.search("boards", config, reranker=reranker)
    assert result.hits[0].chunk.doc_id == "docs/security.md"
    assert "rerank" in result.timings and result.hits[0].stages["rerank"] == 1.0
    # The reranker read the first stage's head, in its order, as the chunks were embedded.
    [call] = reranker.calls
    assert call.query == "boards"
    assert call.passages == tuple(embed_input(h.chunk) for h in first_stage.hits)
    assert [h.stages["rerank"] for h in result.hits] == sorted(call.scores, reverse=True)[:3]


def test_the_rerank_depth_bounds_what_the_reranker_reads(retriever: Retriever) -> None:
    reranker = KeywordReranker()  # shared words with the query
    result = retriever.search(
        "export a board to CSV", SearchConfig(k=2, rerank_depth=3), reranker=reranker
    )
    assert len(reranker.calls[0].passages) == 3
    assert result.hits[0].chunk.doc_id == "docs/export.md"
    assert result.hits[0].stages["rerank"] == max(reranker.calls[0].scores)


def test_reranker_fusion_keeps_the_first_stage_in_play(retriever: Retriever) -> None:
    plain = retriever.search("refunds cancellation", SearchConfig(k=4))
    fused = retriever.search(
        "refunds cancellation",
        SearchConfig(k=4, rerank_depth=10, rerank_fusion=True),
        reranker=KeywordReranker(["AES"]),
    )
    replaced = retriever.search(
        "refunds cancellation",
        SearchConfig(k=4, rerank_depth=10, rerank_fusion=False),
        reranker=KeywordReranker(["AES"]),
    )
    assert replaced.hits[0].chunk.doc_id == "docs/security.md"
    # Fused, the first stage's winner and the reranker's winner share the top two places.
    top_two = {h.chunk.doc_id for h in fused.hits[:2]}
    assert top_two == {plain.hits[0].chunk.doc_id, "docs/security.md"}
