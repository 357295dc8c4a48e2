"""The BM25 tuner on a real index: what it keeps on synthetic questions, against judged ones.

Runs :func:`mentor.rag.lexical.tune_lexical` on an index (it REBUILDS that index's BM25: give it
a copy), then scores BM25 alone with every setting the tuner tried on judged questions it never
saw (SciFact's train judgements: the official test ones stay held back), so the synthetic
choice can be read side by side with the judged score of each candidate.

Without ``selfeval.json`` in the index, the questions are made from the cached generator
replies (``synthetic-replies.jsonl``) alone, split as ``mentor rag tune`` splits them: no model
is loaded.

Run: ``cp -r IDX /tmp/copy && python bench/rag_lexical.py --index /tmp/copy``
(``--queries``/``--qrels`` for another BEIR corpus, ``--queries qa.jsonl --qrels ''`` for a qa
file with doc_ids, ``--no-judged`` for the synthetic part only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mentor.evaluate.retrieval import ndcg_at_k
from mentor.rag.bm25 import Analyzer, BM25Index, TermCounts, count_terms
from mentor.rag.evaluation import EvalSet, load_eval_set
from mentor.rag.index import Manifest, bm25_texts, open_store
from mentor.rag.lexical import describe_setting, tune_lexical
from mentor.rag.selfeval import REPLIES, SelfEvalSet, split_by_document
from mentor.rag.store import LanceStore
from mentor.rag.synthetic import SyntheticQuestion, clean_question

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
console = Console()


def selfeval_from_replies(index: Path, store: LanceStore) -> SelfEvalSet:
    """The cached replies, cleaned as the question writer cleans them, split by document."""
    texts = {c.chunk_id: c for c in store.chunks()}
    written = []
    for line in (index / REPLIES).read_text().splitlines():
        reply = json.loads(line)
        chunk = texts.get(reply["chunk_id"])
        if chunk is None:
            continue
        question, _ = clean_question(reply["reply"], chunk.text)
        if question is not None:
            written.append(SyntheticQuestion(question, chunk.chunk_id, chunk.doc_id))
    tuning, held = split_by_document(written, 0.3, seed=0)
    return SelfEvalSet(tuning, held, "cached replies", 0)


def judged_ndcg(
    store: LanceStore,
    settings: list[dict[str, Any]],
    judged: EvalSet,
) -> list[float]:
    """Mean nDCG@10 (document level, graded) of BM25 alone with each setting."""
    cache: dict[tuple[Analyzer, int], tuple[TermCounts, list[str], list[str]]] = {}
    indexed = {d for batch in store.column_batches(("doc_id",), 4096) for d in batch["doc_id"]}
    judged_ids = {d for rel in judged.qrels.values() for d in rel}
    # a qa file may name documents by file stem ("kb-api") where the index says "docs/kb-api.md"
    name = (lambda d: d) if judged_ids & indexed else (lambda d: Path(d).stem)
    out = []
    for setting in settings:
        analyzer = Analyzer(
            setting["bm25_language"], setting["bm25_stem"], setting["bm25_stopwords"]
        )
        key = (analyzer, setting["bm25_heading_weight"])
        if key not in cache:
            cache.clear()  # one tokenization in memory at a time (settings come grouped)
            ids: list[str] = []
            docs: list[str] = []
            counts = count_terms(bm25_texts(store, key[1], ids, docs), analyzer)
            cache[key] = (counts, ids, docs)
        counts, ids, docs = cache[key]
        index = BM25Index.from_counts(counts, k1=setting["bm25_k1"], b=setting["bm25_b"])
        scores = []
        for qid, text in judged.queries.items():
            ranked = list(dict.fromkeys(name(docs[row]) for row, _ in index.search(text, 100)))
            scores.append(ndcg_at_k(judged.qrels[qid], ranked, 10))
        out.append(sum(scores) / len(scores))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a COPY: its BM25 is rebuilt")
    parser.add_argument("--queries", type=Path, default=DEFAULT_DATA / "queries.jsonl")
    parser.add_argument("--qrels", default=str(DEFAULT_DATA / "qrels" / "train.tsv"))
    parser.add_argument("--no-judged", action="store_true")
    args = parser.parse_args()

    store = open_store(args.index, Manifest.read(args.index))
    selfeval = SelfEvalSet.load(args.index) or selfeval_from_replies(args.index, store)
    started = time.perf_counter()
    result = tune_lexical(args.index, selfeval)
    seconds = time.perf_counter() - started
    console.print(
        f"language {result.language} (shares {result.language_shares}); "
        f"{len(result.tried)} settings in {seconds:.0f} s; kept {result.chosen}: "
        f"{describe_setting(result.setting)}"
    )

    settings = [t["setting"] for t in result.tried]
    judged = (
        None
        if args.no_judged
        else judged_ndcg(
            store, settings, load_eval_set(args.queries, Path(args.qrels) if args.qrels else None)
        )
    )
    table = Table(
        title=f"BM25 alone, nDCG@10: {result.tuning_questions} synthetic tuning questions"
        + ("" if judged is None else f" vs the judged {Path(args.qrels or args.queries).name}")
    )
    for column in ("stage", "setting", "synthetic", "judged"):
        table.add_column(column)
    for i, tried in enumerate(result.tried):
        table.add_row(
            tried["stage"],
            describe_setting(tried["setting"]),
            f"{tried['tuning_ndcg']:.3f}",
            "" if judged is None else f"{judged[i]:.3f}",
        )
    console.print(table)
    guard = Table(title=f"the guard: {result.held_out_questions} held-out synthetic questions")
    for column in ("stage", "setting", "tuning", "held out", "vs best (95% CI)", "judged"):
        guard.add_column(column)
    for name, setting in result.stage_settings.items():
        gap = result.held_out_gap[name]
        at = settings.index(setting) if setting in settings else -1
        guard.add_row(
            name,
            describe_setting(setting),
            f"{result.tuning_ndcg[name]:.3f}",
            f"{result.held_out_ndcg[name]:.3f}",
            f"{gap[0]:+.3f} [{gap[1]:+.3f}, {gap[2]:+.3f}]",
            "" if judged is None or at < 0 else f"{judged[at]:.3f}",
        )
    console.print(guard)


if __name__ == "__main__":
    main()
