"""Retrieval evaluation on the user's own judgements: BEIR metrics and latency per stage.

Chunks are scored at the document level (a document ranks where its best chunk ranks), which is
how BEIR judges SciFact-style corpora and what qrels refer to.

Run: ``mentor rag eval --index idx --queries queries.jsonl --qrels qrels.tsv``
(or ``--queries qa.jsonl`` whose records carry ``doc_ids``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mentor.data import QARecord, QrelRow, QueryRecord, read_qrels, read_records
from mentor.evaluate.retrieval import Qrels, RetrievalReport, evaluate_run
from mentor.evaluate.stats import LatencySummary, latency_summary
from mentor.rag.retrieve import Reranker, SearchConfig, Searcher


@dataclass
class EvalSet:
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_eval_set(queries: Path, qrels: Path | None = None) -> EvalSet:
    """BEIR queries.jsonl + qrels TSV, or a qa JSONL whose ``doc_ids`` are the judgements."""
    if qrels is not None:
        loaded = read_records(queries, "query")
        _raise_on(loaded.problems, queries)
        judged = read_qrels(qrels)
        _raise_on(judged.problems, qrels)
        table: dict[str, dict[str, int]] = {}
        for record in judged.records:
            assert isinstance(record.data, QrelRow)
            row = record.data
            table.setdefault(row.query_id, {})[row.doc_id] = row.score
        texts = {r.data.id: r.data.text for r in loaded.records if isinstance(r.data, QueryRecord)}
        return EvalSet({q: texts[q] for q in table if q in texts}, table)
    loaded = read_records(queries, "qa")
    _raise_on(loaded.problems, queries)
    questions: dict[str, str] = {}
    table = {}
    for record in loaded.records:
        assert isinstance(record.data, QARecord)
        qid = record.data.id or f"line-{record.line}"
        if not record.data.doc_ids:
            raise ValueError(
                f"{queries}:{record.line}: no doc_ids, so nothing to judge against; "
                "give --qrels or add doc_ids"
            )
        questions[qid] = record.data.question
        table[qid] = dict.fromkeys(record.data.doc_ids, 1)
    return EvalSet(questions, table)


def _raise_on(problems: Sequence[object], path: Path) -> None:
    errors = [str(p) for p in problems if getattr(p, "severity", "error") == "error"]
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad lines:\n" + "\n".join(errors[:20]))


@dataclass
class RagEvalReport:
    retrieval: RetrievalReport
    latency: dict[str, LatencySummary]
    """Per stage (embed, dense, bm25, fuse, rerank) and "total"."""
    config: SearchConfig
    reranker: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "config": {**self.config.__dict__, "filters": dict(self.config.filters)},
            "reranker": self.reranker,
            "retrieval": self.retrieval.to_dict(),
            "latency_ms": {stage: s.to_dict() for stage, s in self.latency.items()},
        }

    def to_markdown(self) -> str:
        lines = [
            self.retrieval.to_markdown(),
            "",
            "| stage | p50 ms | p95 ms | mean ms |",
            "|---|---|---|---|",
        ]
        for stage, s in self.latency.items():
            lines.append(f"| {stage} | {s.p50_ms:.1f} | {s.p95_ms:.1f} | {s.mean_ms:.1f} |")
        return "\n".join(lines)


def document_run(doc_ids_in_rank_order: list[str]) -> dict[str, float]:
    """Scores that rank each document where its best chunk ranked (ties impossible)."""
    run: dict[str, float] = {}
    for position, doc_id in enumerate(doc_ids_in_rank_order):
        run.setdefault(doc_id, -float(position))
    return run


def evaluate_retrieval(
    retriever: Searcher,
    eval_set: EvalSet,
    config: SearchConfig,
    *,
    reranker: Reranker | None = None,
    ks: tuple[int, ...] = (1, 3, 5, 10, 100),
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> RagEvalReport:
    # The whole candidate list, in the order a search with ``config`` gives it: asking for
    # ``candidates`` hits leaves each retriever's depth (max(candidates, k)) as search has it,
    # so a tuned candidate depth is what is measured (a cutoff deeper than the candidates
    # sees only what search can return).
    deep = replace(config, k=max(config.k, config.candidates))
    run: dict[str, dict[str, float]] = {}
    stages: dict[str, list[float]] = {}
    for done, (qid, text) in enumerate(eval_set.queries.items(), start=1):
        result = retriever.search(text, deep, reranker=reranker)
        run[qid] = document_run([h.chunk.doc_id for h in result.hits])
        for stage, seconds in result.timings.items():
            stages.setdefault(stage, []).append(seconds)
        stages.setdefault("total", []).append(sum(result.timings.values()))
        progress(done, len(eval_set.queries))
    qrels: Qrels = {q: rel for q, rel in eval_set.qrels.items() if q in eval_set.queries}
    return RagEvalReport(
        retrieval=evaluate_run(qrels, run, ks),
        latency={stage: latency_summary(values) for stage, values in stages.items()},
        config=config,
        reranker=getattr(reranker, "name", None) if reranker else None,
    )


def write_report(report: RagEvalReport, out: Path) -> None:
    from mentor.utils.fs import atomic_write_text

    if out.suffix == ".json":
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2))
    else:
        atomic_write_text(out, report.to_markdown() + "\n")


def subset(eval_set: EvalSet, ids: Mapping[str, object]) -> EvalSet:
    return EvalSet(
        {q: t for q, t in eval_set.queries.items() if q in ids},
        {q: r for q, r in eval_set.qrels.items() if q in ids},
    )
