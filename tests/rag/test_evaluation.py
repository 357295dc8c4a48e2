from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentor.rag.evaluation import document_run, evaluate_retrieval, load_eval_set, write_report
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.testing import HashEmbedder


def test_documents_rank_where_their_best_chunk_ranks() -> None:
    run = document_run(["a", "b", "a", "c"])
    assert sorted(run, key=lambda d: -run[d]) == ["a", "b", "c"]


def test_beir_files_and_qa_doc_ids_both_load(tmp_path: Path) -> None:
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "refunds"}\n{"_id": "q2", "text": "unjudged"}\n'
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdocs/billing.md\t1\n")
    beir = load_eval_set(tmp_path / "queries.jsonl", tmp_path / "qrels.tsv")
    assert beir.queries == {"q1": "refunds"} and beir.qrels == {"q1": {"docs/billing.md": 1}}
    (tmp_path / "qa.jsonl").write_text(
        json.dumps({"question": "q?", "answer": "a", "doc_ids": ["docs/export.md"]}) + "\n"
    )
    qa = load_eval_set(tmp_path / "qa.jsonl")
    assert qa.qrels == {"line-1": {"docs/export.md": 1}}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: no doc_ids"):
        load_eval_set(tmp_path / "bad.jsonl")


def test_evaluation_scores_and_times_every_stage(docs: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", [docs], HashEmbedder())
    retriever = Retriever(tmp_path / "idx", HashEmbedder())
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "1",
                    "question": "when are refunds issued",
                    "answer": "14 days",
                    "doc_ids": ["docs/billing.md"],
                },
                {
                    "id": "2",
                    "question": "is data encrypted at rest",
                    "answer": "yes",
                    "doc_ids": ["docs/security.md"],
                },
            ]
        )
        + "\n"
    )
    report = evaluate_retrieval(retriever, load_eval_set(qa), SearchConfig(), ks=(1, 10))
    assert report.retrieval.metrics["recall@10"] == 1.0
    assert report.retrieval.metrics["ndcg@1"] == 1.0
    assert set(report.latency) >= {"embed", "dense", "bm25", "fuse", "total"}
    write_report(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["retrieval"]["metrics"]["ndcg@1"] == 1.0
    write_report(report, tmp_path / "r.md")
    assert "| total |" in (tmp_path / "r.md").read_text()
