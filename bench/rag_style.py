"""Do synthetic questions written in the users' style rank search settings as judged ones do?

The tuner trusts its synthetic questions only as far as they score settings the way real
queries would. SmolLM2 asked for "a question" writes "What is the X of Y?", while SciFact's
users write claims. ``--example-queries`` hands the writer a few of the users' own queries (text
only: no judgement is read), shown as worked examples with the passage BM25 ranks first for
each. This bench writes both sets for the same chunks of one untuned index (the built-in
question style, and the style of ``--examples`` queries drawn from the *training* queries, so
none of them is judged here) and, for each, scores every setting of the fusion tuner's grid on
the synthetic and the judged questions: Kendall's tau and Pearson's r between the two, and the
judged score of the setting the synthetic set would pick against the judged best. Columns are
given for the held-out part (what the tuner's guard sees) and for all the questions. Example
queries that are questions are measured here too, though tuning then keeps the built-in prompt.

Judged: SciFact, the held-out fifth of the train judgements (as bench/rag_beir.py splits them;
examples come from the other four fifths); Tidepool, the handbook's train and validation
questions less the ones drawn as examples.

Run (on an index built with ``--no-tune``; the copies and their reply caches go to --work, so a
second run writes nothing):
  python bench/rag_style.py --corpus scifact --index D --work W [--examples 3] [--questions 320]
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentor.models.backends import EngineSettings, open_engine
from mentor.models.generation import EngineGenerator
from mentor.models.loading import load_embedder
from mentor.rag.evaluation import EvalSet, load_eval_set
from mentor.rag.index import Manifest
from mentor.rag.retrieve import Retriever
from mentor.rag.selfeval import SelfEvalSet, as_eval_set, build_selfeval, index_style, save_examples
from mentor.utils.logs import quiet_libraries
from rag_beir import DEFAULT_DATA, split_queries
from rag_selftune import TUNING_FILES, agreement, judged_set

console = Console()


def example_pool(corpus: str, data: Path, judged: EvalSet) -> tuple[dict[str, str], bool]:
    """Queries the examples are drawn from, and whether drawn ones must leave the judged set."""
    if corpus == "scifact":
        full = load_eval_set(data / "queries.jsonl", data / "qrels" / "train.tsv")
        return split_queries(full)[0].queries, False
    return dict(judged.queries), True


def write_set(
    index: Path, copy: Path, examples: list[str], generator: EngineGenerator, questions: int
) -> tuple[SelfEvalSet, Retriever]:
    """The synthetic set of a fresh copy of ``index`` (replies cached in the copy)."""
    if not copy.exists():
        shutil.copytree(index, copy, ignore=shutil.ignore_patterns(*TUNING_FILES))
    if examples:
        save_examples(copy, examples)
    retriever = Retriever(copy, load_embedder(Manifest.read(copy).config.embedder, device="cpu"))
    made = build_selfeval(
        copy,
        retriever.chunks,
        generator,
        questions=questions,
        style=index_style(retriever, questions_too=True),  # measured even where tuning skips it
    )
    return made, retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=("scifact", "tidepool"), required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--index", type=Path, required=True, help="an untuned index")
    parser.add_argument("--work", type=Path, required=True, help="where the copies go")
    parser.add_argument("--examples", type=int, default=3, help="example queries drawn")
    parser.add_argument("--questions", type=int, default=320, help="chunks asked about")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_libraries()
    judged = judged_set(args.corpus, args.data, args.index)
    pool, exclusive = example_pool(args.corpus, args.data, judged)
    drawn = random.Random(args.seed).sample(sorted(pool), args.examples)
    if exclusive:
        judged = EvalSet(
            {q: t for q, t in judged.queries.items() if q not in drawn},
            {q: r for q, r in judged.qrels.items() if q not in drawn},
        )
    examples = [pool[q] for q in drawn]
    console.print("example queries:", *[f"  {e}" for e in examples], sep="\n", highlight=False)

    table = Table(
        title=f"{args.corpus}: synthetic vs judged over the fusion grid "
        f"({len(judged.queries)} judged questions, {args.questions} chunks asked about)"
    )
    for column in (
        "style",
        "kept (dropped)",
        "writing s",
        "held-out tau / r",
        "all tau / r",
        "judged: pick (held-out)",
        "judged: pick (all)",
        "judged: best",
    ):
        table.add_column(column)
    samples: dict[str, list[str]] = {}
    with open_engine("smollm2-135m-instruct", settings=EngineSettings(), device="cpu") as engine:
        generator = EngineGenerator(engine)
        for name, chosen in (("questions (built in)", []), ("example queries", examples)):
            started = time.perf_counter()
            copy = args.work / ("styled" if chosen else "plain")
            made, retriever = write_set(args.index, copy, chosen, generator, args.questions)
            seconds = time.perf_counter() - started
            both = [*made.tuning, *made.held_out]
            held = agreement(retriever, judged, as_eval_set(made.held_out))
            every = agreement(retriever, judged, as_eval_set(both))
            table.add_row(
                name,
                f"{len(both)} ({sum(made.dropped.values())})",
                f"{seconds:.0f}",
                f"{held[0]:.2f} / {held[1]:.2f}",
                f"{every[0]:.2f} / {every[1]:.2f}",
                f"{held[2]:.3f}",
                f"{every[2]:.3f}",
                f"{every[3]:.3f}",
            )
            samples[name] = [q.question for q in both[:5]]
    console.print(table)
    for name, questions in samples.items():
        console.print(f"{name}:", *[f"  {q}" for q in questions], sep="\n", highlight=False)


if __name__ == "__main__":
    main()
