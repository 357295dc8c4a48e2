"""The engine benchmark: mentor's decode loop (HFEngine) against transformers' ``generate``.

Every local model answers through :class:`mentor.models.engine.HFEngine`, our own loop (so it can
check deadlines, stream by character and give each row of a batch its own settings). This prints
its speed beside ``model.generate`` on the same prompts, greedy, with the same number of new
tokens per row (transformers suppresses the end of sequence, we decode past it), one prompt at a
time and batched, measured in one run as ratios; and whether greedy answers that stop at the end
of sequence come out the same.

Run: ``python bench/engine_bench.py [--model smollm2-135m-instruct] [--tokens 32] [--batch 8]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from mentor.models.engine import HFEngine, Request, left_pad, padding_id
from mentor.models.loading import load_causal_lm, load_tokenizer
from mentor.models.protocols import SamplingConfig
from mentor.utils.logs import quiet_libraries

PROMPTS = [
    "How do I export a board to CSV?",
    "Can guests create boards in the free plan?",
    "What does the Pro plan cost per member?",
    "Summarise the refund policy in one sentence.",
    "Which browsers are supported?",
    "How long are deleted boards kept before they are purged for good?",
    "Who can change the billing address?",
    "Write a haiku about databases.",
]


def hf_generate(
    model: torch.nn.Module, rows: list[list[int]], tokens: int, pad: int
) -> list[list[int]]:
    batch = left_pad(rows, pad, model.device)
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]
            **batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=pad,
        )  # fmt: skip
    return [row.tolist() for row in out[:, batch["input_ids"].shape[1] :]]


def ours(engine: HFEngine, rows: list[list[int]], tokens: int) -> list[str]:
    fixed = SamplingConfig(max_new_tokens=tokens, ignore_eos=True)
    return [
        c.text for c in engine.generate([Request(r, fixed) for r in rows], batch_size=len(rows))
    ]


def plain_hf(
    model: torch.nn.Module, tokenizer: Any, rows: list[list[int]], tokens: int
) -> list[str]:
    """Greedy answers that stop at the end of sequence, as evaluation asks for them."""
    batch = left_pad(rows, padding_id(tokenizer), model.device)
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]
            **batch, max_new_tokens=tokens, do_sample=False, temperature=None, top_p=None,
            top_k=None, pad_token_id=padding_id(tokenizer),
        )  # fmt: skip
    new = out[:, batch["input_ids"].shape[1] :]
    return [str(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def plain_ours(engine: HFEngine, rows: list[list[int]], tokens: int) -> list[str]:
    greedy = SamplingConfig(max_new_tokens=tokens)
    return [
        c.text for c in engine.generate([Request(r, greedy) for r in rows], batch_size=len(rows))
    ]


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    quiet_libraries()
    model = load_causal_lm(args.model, dtype="float32", device="cpu")
    tokenizer = load_tokenizer(args.model)
    engine = HFEngine(model, tokenizer, name=args.model)
    rows = [engine.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS[: args.batch]]
    pad = padding_id(tokenizer)
    n = args.tokens
    hf_generate(model, rows[:1], 4, pad), ours(engine, rows[:1], 4)  # warm-up
    hf_one = timed(lambda: [hf_generate(model, [r], n, pad) for r in rows])
    our_one = timed(lambda: [ours(engine, [r], n) for r in rows])
    hf_batch = timed(lambda: hf_generate(model, rows, n, pad))
    our_batch = timed(lambda: ours(engine, rows, n))
    theirs_text, ours_text = plain_hf(model, tokenizer, rows, n), plain_ours(engine, rows, n)
    agree = sum(a == b for a, b in zip(theirs_text, ours_text, strict=True))
    total = n * len(rows)
    table = Table(title=f"{args.model}: {len(rows)} prompts x {n} new tokens, greedy, fp32, CPU")
    for column in ("", "transformers generate", "mentor HFEngine", "ratio (ours / theirs)"):
        table.add_column(column)
    for label, theirs, mine in (
        ("one at a time", hf_one, our_one),
        ("batched", hf_batch, our_batch),
    ):
        table.add_row(f"{label}: tokens/s", f"{total / theirs:.0f}", f"{total / mine:.0f}",
                      f"{theirs / mine:.2f}")  # fmt: skip
    table.add_row("same greedy answers (batched, stop at EOS)", "", f"{agree} of {len(rows)}", "")
    Console().print(table)
    Console().print("reference: the ratio should be about 1.0 (the same forward passes)")


if __name__ == "__main__":
    main()
