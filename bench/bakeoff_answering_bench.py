"""The bakeoff's answering phase: the held-out questions one at a time against in batches.

Every arm of ``mentor bakeoff`` answers its test and update questions for the scores, then a few
one at a time for latency. This times the scoring part on the Tidepool test questions, with the
bakeoff's own prompt and settings (greedy, ``max_new_tokens`` 32), four ways in one run, each
repeated and interleaved (the median is shown) so that a busy machine slows them alike:

- one at a time (what a user waits for: the reference);
- batches of 8, 16 questions per ``generate_answers`` call (the bakeoff before issue 18);
- batches of 8, 64 questions per call (now: the engine refills a finished row's place at once,
  and only a call's end drains the batch);
- batches of 16, 64 questions per call.

"same answers" counts the answers equal to the one-at-a-time ones: in bf16 (the default on a
CPU with AMX) a batch's padding and row order change the rounding and so about half the greedy
answers (fp32: all equal), which is why the batch size is part of a bakeoff arm's fingerprint.
Measured on 2 shared CPU cores: one at a time 0.99 questions/s; batches of 8 4.0x that; of 16 5.1x.

Run: ``python bench/bakeoff_answering_bench.py [--model smollm2-135m-instruct] [--questions 30]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentor.evaluate.answers import generate_answers
from mentor.models.engine import HFEngine
from mentor.models.loading import load_causal_lm, load_tokenizer
from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.utils.logs import quiet_libraries

TEST = Path(__file__).parents[1] / "examples/bakeoff/tidepool/questions/test.jsonl"
SYSTEM = "You are the support assistant of Tidepool Labs. Answer in a few words."


def answer(
    engine: HFEngine, prompts: list[list[ChatMessage]], batch: int, per_call: int
) -> list[str]:
    sampling = SamplingConfig(max_new_tokens=32)
    texts: list[str] = []
    for start in range(0, len(prompts), per_call):
        texts += generate_answers(
            engine, prompts[start : start + per_call], sampling, batch_size=batch
        )
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_libraries()
    rows = [json.loads(line) for line in TEST.read_text().splitlines() if line.strip()]
    prompts: list[list[ChatMessage]] = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["question"]}]
        for r in rows[: args.questions]
    ]
    engine = HFEngine(load_causal_lm(args.model, device="cpu"), load_tokenizer(args.model))
    ways = {
        "one at a time": (1, 1),
        "batch 8, 16 per call (before)": (8, 16),
        "batch 8, 64 per call (now)": (8, 64),
        "batch 16, 64 per call": (16, 64),
    }
    answer(engine, prompts[:2], 2, 2)  # warm-up
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    answers: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for way, (batch, per_call) in ways.items():
            started = time.perf_counter()
            answers[way] = answer(engine, prompts, batch, per_call)
            seconds[way].append(time.perf_counter() - started)
    reference = statistics.median(seconds["one at a time"])
    table = Table(title=f"{args.model}: {len(prompts)} Tidepool questions, greedy, 32 tokens, CPU")
    for column in ("way", "seconds (median)", "questions/s", "x one at a time", "same answers"):
        table.add_column(column)
    for way in ways:
        median = statistics.median(seconds[way])
        same = sum(a == b for a, b in zip(answers[way], answers["one at a time"], strict=True))
        table.add_row(
            way,
            f"{median:.1f}",
            f"{len(prompts) / median:.2f}",
            f"{reference / median:.2f}",
            f"{same} of {len(prompts)}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
