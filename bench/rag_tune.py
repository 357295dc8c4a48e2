"""Self-tuned retrieval on SciFact: default hybrid vs the setting `mentor rag tune` chooses.

Tuning sees only synthetic questions SmolLM2 writes for a stratified sample of the corpus'
chunks; the judged score is on the held-out fifth of SciFact's *train* judgements (the split
bench/rag_beir.py uses; the official test judgements stay held back). The synthetic held-out
score is printed beside the judged one for each row.

Run: ``mentor rag index ../shared/data/scifact/corpus.jsonl --index IDX`` then
``python bench/rag_tune.py --index IDX [--questions 200] [--budget-minutes 20]``.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentor.models.backends import open_engine
from mentor.models.flags import settings_from_flags
from mentor.models.generation import EngineGenerator
from mentor.rag.evaluation import evaluate_retrieval, load_eval_set, subset
from mentor.rag.retrieve import SearchConfig, open_retriever
from mentor.rag.selfeval import as_eval_set, build_selfeval
from mentor.rag.tune import tune_fusion

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--budget-minutes", type=float, default=None)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    retriever = open_retriever(args.index, device="cpu")
    started = time.perf_counter()
    settings = settings_from_flags(None, None, None)
    with open_engine(args.model, settings=settings, device="cpu") as engine:
        selfeval = build_selfeval(
            args.index,
            retriever.chunks,
            EngineGenerator(engine),
            questions=args.questions,
            budget_s=None if args.budget_minutes is None else args.budget_minutes * 60,
            progress=lambda done, total: console.print(f"questions {done}/{total}", end="\r"),
        )
    written = time.perf_counter() - started
    fusion = tune_fusion(retriever, selfeval.tuning, selfeval.held_out)
    fusion.save(args.index)

    # The held-out fifth of the train judgements, as bench/rag_beir.py splits them.
    full = load_eval_set(args.data / "queries.jsonl", args.data / "qrels" / "train.tsv")
    ids = sorted(full.queries)
    random.Random(0).shuffle(ids)
    judged = subset(full, dict.fromkeys(ids[: int(len(ids) * 0.2)]))
    synthetic = as_eval_set(selfeval.held_out)

    table = Table(
        title=f"SciFact: {len(judged.queries)} judged held-out queries; "
        f"{len(selfeval.tuning)} tuning / {len(selfeval.held_out)} held-out synthetic questions "
        f"({written:.0f} s writing, {fusion.seconds:.0f} s tuning)"
    )
    for column in ("setting", "judged nDCG@10", "synthetic nDCG@10", "p50 ms"):
        table.add_column(column)
    tuned = fusion.apply(SearchConfig())
    rows = {"default hybrid": SearchConfig(), f"tuned ({fusion.chosen})": tuned}
    rows.update({"bm25": SearchConfig(mode="bm25"), "dense": SearchConfig(mode="dense")})
    for name, config in rows.items():
        score = evaluate_retrieval(retriever, judged, config, ks=(10,))
        synth = evaluate_retrieval(retriever, synthetic, config, ks=(10,))
        table.add_row(
            name,
            f"{score.retrieval.metrics['ndcg@10']:.3f}",
            f"{synth.retrieval.metrics['ndcg@10']:.3f}",
            f"{score.latency['total'].p50_ms:.0f}",
        )
    console.print(table)
    console.print(f"chosen setting: {fusion.setting}")
    console.print(f"best on the tuning part: {fusion.best_on_tuning}")


if __name__ == "__main__":
    main()
