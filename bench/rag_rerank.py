"""The reranker's old and new training and scoring settings, side by side on SciFact.

Both rerankers train on the same questions (the train judgements minus the held-out fifth of
bench/rag_beir.py; ``--train-queries`` subsamples them) and are scored on that held-out fifth,
never on the test split:

- old: 7 hard negatives a question, 128 tokens, 3 full epochs, rescoring the top 30;
- new: 3 hard negatives, the token budget measured on the pairs, early stopping on a
  validation fifth of the training questions (split off by query, seeded), and the rerank depth
  and the keep-or-drop verdict from ``rerank_gate.judge_reranker`` on that same validation part.

Queries run interleaved (first stage, old, new, one query at a time), so a busy machine slows
every arm alike: compare the ratios. Training times are each run's own wall time.

Run: ``python bench/rag_rerank.py --index IDX [--train-queries 200]`` where IDX is a MiniLM
index of ``corpus.jsonl`` (``mentor rag index DATA/corpus.jsonl --index IDX``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from mentor.evaluate.retrieval import evaluate_run
from mentor.evaluate.stats import latency_summary
from mentor.models.loading import cpu_bf16_flags, load_embedder
from mentor.rag.evaluation import document_run, load_eval_set
from mentor.rag.rerank_gate import judge_reranker
from mentor.rag.reranker import CrossEncoderReranker, mine_pairs, train_reranker
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig
from mentor.utils.fs import mentor_home
from mentor.utils.logs import quiet_libraries
from rag_beir import DEFAULT_DATA, split_queries

console = Console()


def positives_of(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, set[str]]:
    return {q: {d for d, r in rel.items() if r > 0} for q, rel in qrels.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--index", type=Path, default=mentor_home() / "bench" / "scifact-minilm-l6")
    parser.add_argument("--work", type=Path, default=mentor_home() / "bench" / "rerank")
    parser.add_argument("--train-queries", type=int, default=0, help="0: all of them")
    parser.add_argument("--eval-queries", type=int, default=0, help="0: the whole held-out fifth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-old", action="store_true", help="train only the new settings")
    args = parser.parse_args()
    quiet_libraries()
    load = os.getloadavg()[0]
    retriever = Retriever(args.index, load_embedder("minilm-l6", device="cpu"))
    full = load_eval_set(args.data / "queries.jsonl", args.data / "qrels" / "train.tsv")
    train, held_out = split_queries(full)
    ids = sorted(q for q in train.queries if q in train.qrels)
    random.Random(args.seed).shuffle(ids)
    if args.train_queries:
        ids = ids[: args.train_queries]
    cut = len(ids) // 5
    fit = {q: train.queries[q] for q in ids[cut:]}
    check = {q: train.queries[q] for q in ids[:cut]}
    positives = positives_of(train.qrels)
    console.print(
        f"load {load:.1f} on {os.cpu_count()} cores, bf16 flags {cpu_bf16_flags() or 'none'}; "
        f"{len(fit)} training questions, {len(check)} validation, "
        f"{len(held_out.queries)} held-out for the figures"
    )
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"load": load, "train": len(fit), "validation": len(check)}

    # Old settings: as bench/rag_beir.py trained before.
    old_s = float("nan")
    if not args.skip_old:
        pairs7 = mine_pairs(retriever, fit, positives, negatives_per_query=7)
        t0 = time.perf_counter()
        train_reranker(
            pairs7, out=args.work / "old", epochs=3, max_length=128, patience=None, seed=args.seed
        )
        old_s = time.perf_counter() - t0
    # New settings: fewer negatives, measured length, early stopping, judged depth.
    pairs3 = mine_pairs(retriever, fit, positives, negatives_per_query=3)
    val3 = mine_pairs(retriever, check, positives, negatives_per_query=3)
    t0 = time.perf_counter()
    new = train_reranker(pairs3, out=args.work / "new", validation=val3, seed=args.seed)
    new_train_s = time.perf_counter() - t0
    new_scorer = CrossEncoderReranker(args.work / "new")
    decision = judge_reranker(
        retriever, check, positives, new_scorer, SearchConfig(), reranker_name="new"
    )
    new_s = time.perf_counter() - t0
    console.print(decision.reason())
    report |= {
        "old": {"seconds": old_s},
        "new": {
            "seconds": new_s,
            "train_seconds": new_train_s,
            "steps": new.steps,
            "max_length": new.max_length,
            "stopped": new.stopped,
            "best_step": new.best_step,
            "curve": new.validation_curve,
        },
        "decision": decision.to_dict(),
    }

    base = SearchConfig(k=100, candidates=100)
    arms: dict[str, tuple[Reranker | None, SearchConfig]] = {
        "first stage (hybrid)": (None, base),
        **(
            {}
            if args.skip_old
            else {"old reranker, top 30": (CrossEncoderReranker(args.work / "old"), base)}
        ),
        "new reranker, top 30": (new_scorer, base),
        f"new reranker, judged top {decision.depth}": (
            new_scorer,
            replace(base, rerank_depth=decision.depth),
        ),
    }
    queries = dict(held_out.queries)
    if args.eval_queries:
        queries = dict(list(queries.items())[: args.eval_queries])
    runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in arms}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    rerank_s: dict[str, list[float]] = {name: [] for name in arms}
    with torch.inference_mode():
        for qid, text in queries.items():
            for name, (scorer, config) in arms.items():
                t0 = time.perf_counter()
                result = retriever.search(text, config, reranker=scorer)
                seconds[name].append(time.perf_counter() - t0)
                rerank_s[name].append(result.timings.get("rerank", 0.0))
                runs[name][qid] = document_run([h.chunk.doc_id for h in result.hits])
    qrels = {q: rel for q, rel in held_out.qrels.items() if q in queries}
    table = Table(
        title=f"SciFact held-out fifth of the train judgements ({len(queries)} queries), "
        f"load {load:.1f}"
    )
    for column in ("arm", "train s", "nDCG@10", "p50 ms", "p95 ms", "p95 / first stage"):
        table.add_column(column)
    first_p95 = latency_summary(seconds["first stage (hybrid)"]).p95_ms
    train_s = {"old reranker, top 30": f"{old_s:.0f}", "new reranker, top 30": f"{new_s:.0f}"}
    for name in arms:
        ndcg = evaluate_run(qrels, runs[name], (10,)).metrics["ndcg@10"]
        lat = latency_summary(seconds[name])
        table.add_row(
            name,
            train_s.get(name, "-"),
            f"{ndcg:.3f}",
            f"{lat.p50_ms:.0f}",
            f"{lat.p95_ms:.0f}",
            f"{lat.p95_ms / first_p95:.2f}x",
        )
        report[name] = {
            "ndcg@10": ndcg,
            "p50_ms": lat.p50_ms,
            "p95_ms": lat.p95_ms,
            "rerank_p95_ms": latency_summary(rerank_s[name]).p95_ms,
        }
    console.print(table)
    console.print(
        f"training: old {old_s:.0f} s (128 tokens, 7 negatives, 3 epochs); "
        f"new {new_s:.0f} s with judging ({new.steps} steps, {new.max_length} tokens, "
        f"3 negatives, stopped: {new.stopped or 'no'}, best step {new.best_step}): "
        f"{old_s / new_s:.2f}x faster"
    )
    out = args.work / "rag_rerank.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"full figures: {out}")


if __name__ == "__main__":
    main()
