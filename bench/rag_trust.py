"""Answers a newcomer can trust: the loop guard and the automatic refusal threshold, measured.

Two measurements on the Tidepool example, with the defaults of ``mentor rag ask`` (hybrid
retrieval, 4 sources, SmolLM2-135M, greedy, 256 new tokens):

1. **Loops.** The 60 bakeoff test questions (examples/bakeoff/tidepool, all answerable) answered
   from their retrieved sources three ways: no guard, the loop guard (the default), and a
   repetition penalty of 1.2 with no guard. For each: the share of replies that ran to the token
   limit, the share that repeat a stretch of 8 words (looping), contains / token F1 against the
   gold answers, and how many replies differ from the unguarded ones (the guard must change
   only the looping ones). The unguarded token ids also give, offline, what each guard length
   would cut (``find_loop`` is exactly what the engine does): the table that chose
   ``LOOP_NGRAM``.
2. **Refusal.** Two indexes built as ``mentor rag index`` builds them now (auto-calibrated from
   keyword questions drawn from their own chunks against the built-in off-domain questions):
   the help centre alone (examples/tidepool/docs, 22 articles, the issue's index) and the whole
   handbook (examples/bakeoff/tidepool/docs). Answered share of in-domain questions (train,
   validation and test questions whose documents are in the index), refused share of off-domain
   ones (HELD_OUT_OFF_DOMAIN, never used to calibrate, and on the help centre also the
   questions about the company documents it lacks), before (no threshold: everything answered)
   and after; and the issue's travel-expenses question.

Run: ``python bench/rag_trust.py [--limit 60] [--out runs/bench/rag_trust]`` (about 10 minutes
on 2 CPU cores; the indexes are kept in --out and reused).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentor.evaluate.text import contains, token_f1
from mentor.models.backends import EngineSettings, open_engine
from mentor.models.engine import Completion, Request, TextEngine
from mentor.models.loading import load_embedder
from mentor.models.protocols import Embedder, SamplingConfig
from mentor.models.repetition import LOOP_NGRAM, find_loop
from mentor.rag.answer import build_messages, confidence
from mentor.rag.calibrate import auto_calibrate, load_calibration
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.utils.logs import quiet_libraries

ROOT = Path(__file__).parents[1]
HANDBOOK = ROOT / "examples/bakeoff/tidepool/docs"
HELP_CENTRE = ROOT / "examples/tidepool/docs"
QUESTIONS = ROOT / "examples/bakeoff/tidepool/questions"
TRAVEL = "How long do I have to file travel expenses?"

HELD_OUT_OFF_DOMAIN = (
    "How do I descale an espresso machine?",
    "What is the speed of sound in air?",
    "Who wrote Pride and Prejudice?",
    "How many strings does a cello have?",
    "What is the tallest building in the world?",
    "How do I remove rust from a cast iron pan?",
    "When is the best time to prune roses?",
    "What is the chemical symbol for gold?",
    "How many minutes are in a basketball quarter in the NBA?",
    "Which language is spoken in Brazil?",
    "How do I convert Celsius to Fahrenheit?",
    "What is the population of Canada?",
    "How do I tie a bowline knot?",
    "Who discovered penicillin?",
    "What does a sommelier do?",
    "How long does it take to fly from Paris to Tokyo?",
    "What is a haiku?",
    "How do I stop my dog from barking at night?",
    "What vaccines do I need to travel to Kenya?",
    "How do I file my income tax return?",
)
"""Off-domain questions for measuring refusal, never used to calibrate (the calibration's own
negatives are ``OFF_DOMAIN_QUESTIONS``)."""

_WORDS = re.compile(r"\w+")


def looping(text: str, words: int = 8) -> bool:
    """Whether a reply repeats a stretch of ``words`` words: an independent measure of loops
    (word level, not the guard's token level)."""
    tokens = _WORDS.findall(text.lower())
    grams = Counter(tuple(tokens[i : i + words]) for i in range(len(tokens) - words + 1))
    return any(count >= 2 for count in grams.values())


def load_questions(names: tuple[str, ...]) -> list[dict[str, object]]:
    rows = []
    for name in names:
        with (QUESTIONS / f"{name}.jsonl").open() as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def index(folder: Path, docs: Path, embedder: Embedder) -> Retriever:
    if not (folder / "index.json").exists():
        build_index(folder, [docs], embedder)
    retriever = Retriever(folder, embedder)
    auto_calibrate(retriever)  # what `mentor rag index` now does after building
    return retriever


def answer_all(
    engine: TextEngine, retriever: Retriever, questions: list[str], sampling: SamplingConfig
) -> list[Completion]:
    search = SearchConfig(mode="hybrid", k=4)
    requests = [
        Request(engine.encode_chat([dict(m) for m in build_messages(q, hits)]), sampling)
        for q in questions
        for hits in [retriever.search(q, search).hits]
    ]
    return engine.generate(requests, batch_size=8)


def loops(engine: TextEngine, retriever: Retriever, limit: int, console: Console) -> None:
    test = load_questions(("test",))[:limit]
    questions = [str(r["question"]) for r in test]
    gold = [str(r["answer"]) for r in test]
    arms = {
        "no guard": SamplingConfig(max_new_tokens=256, loop_ngram=0, logprobs=0),
        f"loop guard ({LOOP_NGRAM})": SamplingConfig(max_new_tokens=256),
        "repetition penalty 1.2": SamplingConfig(
            max_new_tokens=256, loop_ngram=0, repetition_penalty=1.2
        ),
    }
    done = {name: answer_all(engine, retriever, questions, s) for name, s in arms.items()}
    base = done["no guard"]
    loop_free = [i for i, c in enumerate(base) if not looping(c.text)]
    table = Table(title=f"{len(test)} Tidepool test questions, SmolLM2-135M, greedy, 256 tokens")
    for column in ("arm", "ran to limit", "looping", "contains", "token F1",
                   "on non-looping: contains / F1", "changed non-looping", "tokens"):  # fmt: skip
        table.add_column(column)
    for name, completions in done.items():
        texts = [c.text.strip() for c in completions]
        n = len(texts)
        cont = [contains(t, g) for t, g in zip(texts, gold, strict=True)]
        f1 = [token_f1(t, g) for t, g in zip(texts, gold, strict=True)]
        changed = sum(texts[i] != base[i].text.strip() for i in loop_free)
        clean_c = sum(cont[i] for i in loop_free) / max(1, len(loop_free))
        clean_f = sum(f1[i] for i in loop_free) / max(1, len(loop_free))
        table.add_row(
            name,
            f"{sum(c.finish_reason == 'length' for c in completions) / n:.0%}",
            f"{sum(looping(t) for t in texts) / n:.0%}",
            f"{sum(cont) / n:.3f}",
            f"{sum(f1) / n:.3f}",
            f"{clean_c:.3f} / {clean_f:.3f} (n={len(loop_free)})",
            f"{changed}",
            f"{sum(c.completion_tokens for c in completions)}",
        )
    console.print(table)
    # What each guard length would do to the unguarded replies (exactly the engine's rule).
    sweep = Table(title="guard length, offline on the unguarded replies' token ids")
    for column in ("ngram", "replies cut", "looping replies cut", "non-looping cut",
                   "tokens saved"):  # fmt: skip
        sweep.add_column(column)
    ids = [[entry.chosen.token_id for entry in c.logprobs] for c in base]
    for ngram in (6, 8, 12, 16, 24, 32):
        cuts = [find_loop(row, ngram) for row in ids]
        looped = [i for i, c in enumerate(cuts) if c is not None]
        saved = sum(len(ids[i]) - cuts[i][0] for i in looped)  # type: ignore[index]
        sweep.add_row(
            str(ngram),
            str(len(looped)),
            str(sum(i not in loop_free for i in looped)),
            str(sum(i in loop_free for i in looped)),
            str(saved),
        )
    console.print(sweep)
    for i, c in enumerate(done[f"loop guard ({LOOP_NGRAM})"][:limit]):
        if c.loop_dropped:
            console.print(f"[dim]cut[/dim] {questions[i]!r} -> {c.text.strip()!r}", markup=True)
            break


def refusal(out: Path, embedder: Embedder, console: Console) -> None:
    rows = load_questions(("train", "validation", "test"))
    table = Table(title="refusal: hybrid, k=4 (answered = retrieval confidence >= threshold)")
    for column in ("index", "threshold (source)", "in-domain answered", "off-domain refused",
                   "company questions refused", "travel expenses"):  # fmt: skip
        table.add_column(column)
    for name, docs in (("help centre", HELP_CENTRE), ("handbook", HANDBOOK)):
        retriever = index(out / name.replace(" ", "-"), docs, embedder)
        calibration = load_calibration(retriever.folder)
        held = {p.stem for p in docs.glob("*.md")}
        inside = [str(r["question"]) for r in rows if set(r["doc_ids"]) <= held]  # type: ignore[arg-type]
        outside = [str(r["question"]) for r in rows if not set(r["doc_ids"]) & held]  # type: ignore[arg-type]
        search = SearchConfig(mode="hybrid", k=4)

        def score(qs: list[str], r: Retriever = retriever, c: SearchConfig = search) -> list[float]:
            return [confidence(r.search(q, c).hits) for q in qs]

        inside_s, off_s, outside_s = score(inside), score(list(HELD_OUT_OFF_DOMAIN)), score(outside)
        travel = score([TRAVEL])[0]
        for label, threshold in (("before", None), ("after", calibration)):
            t = -1.0 if threshold is None else threshold.threshold
            source = "none" if threshold is None else f"{t:.3f} ({threshold.source})"
            table.add_row(
                f"{name} ({label})",
                source,
                f"{sum(s >= t for s in inside_s) / len(inside_s):.0%} of {len(inside_s)}",
                f"{sum(s < t for s in off_s) / len(off_s):.0%} of {len(off_s)}",
                f"{sum(s < t for s in outside_s) / len(outside_s):.0%} of {len(outside_s)}"
                if outside_s
                else "-",
                f"{'refused' if travel < t else 'answered'} ({travel:.3f})",
            )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="Test questions for the loops.")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/rag_trust"))
    parser.add_argument("--skip-loops", action="store_true")
    args = parser.parse_args()
    quiet_libraries()
    console = Console(width=160)
    embedder = load_embedder("minilm-l6", device="cpu")
    refusal(args.out, embedder, console)
    with open_engine("smollm2-135m-instruct", settings=EngineSettings(), device="cpu") as engine:
        if not args.skip_loops:
            handbook = index(args.out / "handbook", HANDBOOK, embedder)
            loops(engine, handbook, args.limit, console)


if __name__ == "__main__":
    main()
