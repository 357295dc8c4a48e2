"""Self-tuned retrieval end to end: default vs tuned vs tuned + reranker, judged beside synthetic.

The issue-21 table. For one corpus it takes an index built with the fixed recipe (``--no-tune``)
and a copy of it tuned by ``mentor rag tune`` (run here and timed, unless ``--no-run``), then
scores every row on two question sets: the judged one (SciFact: the held-out fifth of the
*train* judgements, split as bench/rag_beir.py does; Tidepool: the handbook's train and val
questions; test splits stay held out) and the index's own held-out synthetic questions. No
judgement is seen by the tuning.

Rows: the fixed recipe (hybrid, RRF k 60), BM25 alone and dense alone on the untuned index; the
tuned first stage; the tuned first stage with the index's reranker at its judged depth (marked
"dropped" when the judge did not keep it, so its effect is shown either way). Latency is the
whole search per query (p50 and p95, this machine, the judged set).

It then asks how far the synthetic questions can be trusted: every setting of the fusion
tuner's grid is scored offline on both sets, and the table gives the rank correlation
(Kendall's tau), Pearson's r, and the judged score of the setting the synthetic set would pick
against the judged best ("regret").

Run:
  mentor rag index ../shared/data/scifact/corpus.jsonl --index D --no-tune
  python bench/rag_selftune.py --corpus scifact --default-index D --tuned-index T
  (T is created as a copy of D and tuned; ``--no-run`` scores an existing T.)
For Tidepool: ``mentor rag index examples/bakeoff/tidepool/docs --index D --no-tune`` and
``--corpus tidepool``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table
from scipy import stats

from mentor.evaluate.retrieval import ndcg_at_k
from mentor.models.loading import load_embedder
from mentor.models.protocols import Embedder
from mentor.rag.evaluation import EvalSet, RagEvalReport, evaluate_retrieval, load_eval_set
from mentor.rag.index import Manifest
from mentor.rag.rerank_gate import load_decision
from mentor.rag.reranker import CrossEncoderReranker
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig
from mentor.rag.selfeval import SelfEvalSet, as_eval_set
from mentor.rag.tune import candidate_grid, offline_ranking, resolve_search, retrieve_once
from mentor.utils.logs import quiet_libraries
from rag_beir import DEFAULT_DATA, split_queries

ROOT = Path(__file__).resolve().parents[1]
TIDEPOOL = ROOT / "examples" / "bakeoff" / "tidepool"
TUNING_FILES = (
    "selfeval.json",
    "synthetic-replies.jsonl",
    "fusion.json",
    "tuning.json",
    "reranker.json",
    "calibration.json",
    "autotune.json",
)
"""What a tuning run writes beside the index: left out of the copy, so its time is all paid."""
console = Console()


def judged_set(corpus: str, data: Path, default_index: Path) -> EvalSet:
    """The judged questions, their document ids mapped to the index's own."""
    if corpus == "scifact":
        full = load_eval_set(data / "queries.jsonl", data / "qrels" / "train.tsv")
        held_out: EvalSet = split_queries(full)[1]
        return held_out
    questions = EvalSet({}, {})
    for split in ("train", "validation"):
        part = load_eval_set(TIDEPOOL / "questions" / f"{split}.jsonl")
        questions.queries.update(part.queries)
        questions.qrels.update(part.qrels)
    # Files are indexed as "docs/NAME.md"; the questions name "NAME".
    retriever = Retriever(default_index, _embedder(default_index))
    by_stem = {c.doc_id.rsplit("/", 1)[-1].rsplit(".", 1)[0]: c.doc_id for c in retriever.chunks}
    questions.qrels = {
        q: {by_stem[d]: r for d, r in rel.items()} for q, rel in questions.qrels.items()
    }
    return questions


def _embedder(index: Path) -> Embedder:
    return load_embedder(Manifest.read(index).config.embedder, device="cpu")


def tune_copy(default_index: Path, tuned_index: Path, extra: list[str]) -> float:
    """Copy the untuned index (without any tuning files) and run ``mentor rag tune`` on it."""
    if tuned_index.exists():
        shutil.rmtree(tuned_index)
    shutil.copytree(default_index, tuned_index, ignore=shutil.ignore_patterns(*TUNING_FILES))
    mentor = str(Path(sys.executable).with_name("mentor"))
    command = [mentor, "rag", "tune", "--index", str(tuned_index), *extra]
    console.print("running: mentor " + " ".join(command[1:]), highlight=False)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _row(
    table: Table,
    name: str,
    retriever: Retriever,
    config: SearchConfig,
    judged: EvalSet,
    synthetic: EvalSet,
    reranker: Reranker | None = None,
) -> RagEvalReport:
    score = evaluate_retrieval(retriever, judged, config, reranker=reranker, ks=(10,))
    synth = evaluate_retrieval(retriever, synthetic, config, reranker=reranker, ks=(10,))
    total = score.latency["total"]
    table.add_row(
        name,
        f"{score.retrieval.metrics['ndcg@10']:.3f}",
        f"{synth.retrieval.metrics['ndcg@10']:.3f}",
        f"{total.p50_ms:.0f}",
        f"{total.p95_ms:.0f}",
    )
    return score


def agreement(
    retriever: Retriever, judged: EvalSet, synthetic: EvalSet
) -> tuple[float, float, float, float, float, int]:
    """Over the fusion grid: (tau, r, judged score of the synthetic pick, judged best, judged
    score of the default, settings)."""
    grid = candidate_grid()
    depth = max(max(c.candidates, c.k) for c in grid)
    texts = {f"j:{q}": t for q, t in judged.queries.items()}
    texts.update({f"s:{q}": t for q, t in synthetic.queries.items()})
    found = retrieve_once(retriever, texts, depth)
    doc_of = {c.chunk_id: c.doc_id for c in retriever.chunks}

    def mean_ndcg(
        prefix: str, qrels: Mapping[str, Mapping[str, int]], config: SearchConfig
    ) -> float:
        values = []
        for qid, rel in qrels.items():
            ranking = offline_ranking(found[f"{prefix}{qid}"], config)
            docs = list(dict.fromkeys(doc_of[c] for c in ranking))
            values.append(ndcg_at_k(dict(rel), docs, 10))
        return sum(values) / len(values)

    judged_scores = [mean_ndcg("j:", judged.qrels, c) for c in grid]
    synthetic_scores = [mean_ndcg("s:", synthetic.qrels, c) for c in grid]
    tau = float(stats.kendalltau(synthetic_scores, judged_scores).statistic)
    r = float(stats.pearsonr(synthetic_scores, judged_scores).statistic)
    pick = max(range(len(grid)), key=lambda i: (synthetic_scores[i], -i))
    default = grid.index(SearchConfig())
    return tau, r, judged_scores[pick], max(judged_scores), judged_scores[default], len(grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=("scifact", "tidepool"), required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--default-index", type=Path, required=True)
    parser.add_argument("--tuned-index", type=Path, required=True)
    parser.add_argument("--no-run", action="store_true", help="score an already tuned copy")
    parser.add_argument(
        "--tune-args", default="", help="extra arguments for `mentor rag tune` (one string)"
    )
    args = parser.parse_args()
    quiet_libraries()
    load = os.getloadavg()[0]
    seconds = (
        None
        if args.no_run
        else tune_copy(args.default_index, args.tuned_index, args.tune_args.split())
    )
    judged = judged_set(args.corpus, args.data, args.default_index)
    selfeval = SelfEvalSet.load(args.tuned_index)
    if selfeval is None:
        raise SystemExit(f"{args.tuned_index}: not tuned (no selfeval.json)")
    synthetic = as_eval_set(selfeval.held_out)
    manifest = Manifest.read(args.default_index)
    untuned = Retriever(args.default_index, load_embedder(manifest.config.embedder, device="cpu"))
    tuned_manifest = Manifest.read(args.tuned_index)
    tuned = Retriever(args.tuned_index, load_embedder(tuned_manifest.config.embedder, device="cpu"))

    steps = ""
    autotune = args.tuned_index / "autotune.json"
    if autotune.exists():
        record = json.loads(autotune.read_text())
        steps = ", ".join(
            f"{s['name']} {s['seconds']:.0f} s" for s in record.get("steps", []) if "seconds" in s
        )
    timing = f"tuning {seconds / 60:.1f} min" if seconds is not None else "tuning not timed here"
    table = Table(
        title=f"{args.corpus}: {manifest.documents:,} documents, {manifest.chunks:,} chunks; "
        f"{len(judged.queries)} judged / {len(synthetic.queries)} held-out synthetic questions; "
        f"{timing}{f' ({steps})' if steps else ''}; load {load:.1f} on {os.cpu_count()} cores"
    )
    for column in ("setting", "judged nDCG@10", "synthetic nDCG@10", "p50 ms", "p95 ms"):
        table.add_column(column)
    for name, config in (
        ("fixed recipe (hybrid, RRF 60)", SearchConfig()),
        ("BM25 alone", SearchConfig(mode="bm25")),
        ("dense alone", SearchConfig(mode="dense")),
    ):
        _row(table, name, untuned, config, judged, synthetic)
    first_stage = resolve_search(args.tuned_index, {})
    _row(table, "tuned first stage", tuned, first_stage, judged, synthetic)
    decision = load_decision(args.tuned_index)
    if decision is not None and decision.reranker:
        folder = Path(decision.reranker)
        reranker = CrossEncoderReranker(
            folder if folder.is_absolute() else args.tuned_index / folder, device="cpu"
        )
        kept = "kept" if decision.keep else "dropped by the judge"
        _row(
            table,
            f"tuned + reranker, depth {decision.depth} ({kept})",
            tuned,
            replace(first_stage, rerank_depth=decision.depth, rerank_fusion=decision.fusion),
            judged,
            synthetic,
            reranker,
        )
    console.print(table)

    tau, r, picked, best, default, n = agreement(tuned, judged, synthetic)
    check = Table(
        title=f"does the synthetic set rank settings as the judged one does? ({n} settings)"
    )
    for column in (
        "Kendall tau",
        "Pearson r",
        "judged: synthetic pick",
        "judged: best",
        "judged: default",
    ):
        check.add_column(column)
    check.add_row(f"{tau:.2f}", f"{r:.2f}", f"{picked:.3f}", f"{best:.3f}", f"{default:.3f}")
    console.print(check)


if __name__ == "__main__":
    main()
