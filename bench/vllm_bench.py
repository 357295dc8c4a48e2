"""The vLLM benchmark: how fast a vLLM server answers through mentor's engine, alone and under load.

:func:`throughput` takes any :class:`~mentor.models.engine.TextEngine` and a concurrency level
(requests in flight at once) and returns aggregate tokens per second and per-request latencies,
so other engines' rows can go in the same table. Every request decodes exactly ``--tokens`` new
tokens (``ignore_eos``), greedy. This script starts vLLM for the model (timing the start), or
attaches to ``--url``, and prints one row per concurrency level.

Run: ``python bench/vllm_bench.py [--model smollm2-135m-instruct] [--tokens 64] [--url URL]``
(needs ``make vllm``; without it, it says so and stops).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from mentor.models.engine import Request, TextEngine
from mentor.models.protocols import SamplingConfig

QUESTIONS = [
    "How do I export a board to CSV?",
    "Can guests create boards in the free plan?",
    "What does the Pro plan cost per member?",
    "Summarise the refund policy in one sentence.",
    "Which browsers are supported?",
    "How long are deleted boards kept before they are purged for good?",
    "Who can change the billing address?",
    "Write a haiku about databases.",
]


@dataclass(frozen=True)
class Throughput:
    """One engine at one concurrency level."""

    engine: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    p50_s: float
    """Median seconds from sending a request to its last token."""
    p95_s: float
    first_token_p50_s: float | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def throughput(
    engine: TextEngine, concurrency: int, *, tokens: int = 64, rounds: int = 2
) -> Throughput:
    """``rounds * concurrency`` chat requests (at least 4), ``concurrency`` at a time."""
    count = max(4, rounds * concurrency)
    prompts = [engine.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    sampling = SamplingConfig(max_new_tokens=tokens, temperature=0.0, ignore_eos=True)
    requests = [Request(prompts[i % len(prompts)], sampling) for i in range(count)]
    started = time.perf_counter()
    done = engine.generate(requests, batch_size=concurrency)
    seconds = time.perf_counter() - started
    latencies = sorted(c.seconds for c in done)
    firsts = [c.first_token_s for c in done if c.first_token_s is not None]
    return Throughput(
        engine=engine.name,
        concurrency=concurrency,
        requests=count,
        tokens=sum(c.completion_tokens for c in done),
        seconds=seconds,
        p50_s=statistics.median(latencies),
        p95_s=latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        first_token_p50_s=statistics.median(firsts) if firsts else None,
    )


def table(rows: list[Throughput], title: str) -> Table:
    out = Table("engine", "concurrent", "requests", "tok/s", "p50 s", "p95 s", "1st token p50 s",
                title=title)  # fmt: skip
    for r in rows:
        first = f"{r.first_token_p50_s:.2f}" if r.first_token_p50_s is not None else "-"
        out.add_row(r.engine, str(r.concurrency), str(r.requests), f"{r.tokens_per_s:.1f}",
                    f"{r.p50_s:.2f}", f"{r.p95_s:.2f}", first)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--url", default=None, help="attach to this vLLM /v1 root")
    parser.add_argument("--no-builtin", action="store_true", help="skip mentor's own engine rows")
    args = parser.parse_args()
    console = Console()

    from mentor.models.loading import load_tokenizer, resolve_model_path
    from mentor.models.vllm import open_vllm
    from mentor.models.vllm_server import VLLMError, VLLMSettings, vllm_command
    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    settings = VLLMSettings(url=args.url)
    if args.url is None:
        try:
            vllm_command(settings)
        except VLLMError as exc:
            console.print(f"skipped: {exc}")
            return
    folder = resolve_model_path(args.model)
    tokenizer = load_tokenizer(folder)
    started = time.perf_counter()
    with open_vllm(folder, tokenizer, name=f"vllm:{args.model}", settings=settings) as engine:
        start_s = time.perf_counter() - started
        throughput(engine, 1, tokens=8, rounds=1)  # warm up
        rows = [throughput(engine, c, tokens=args.tokens) for c in args.concurrency]
    what = "attached" if args.url else f"started in {start_s:.0f} s"
    if not args.no_builtin:  # the same requests through mentor's own engine, in this process
        from mentor.models.engine import HFEngine
        from mentor.models.loading import load_causal_lm

        model = load_causal_lm(folder, dtype="float32", device="cpu")
        ours = HFEngine(model, tokenizer, name="builtin", max_running=max(args.concurrency))
        throughput(ours, 1, tokens=8, rounds=1)
        rows += [throughput(ours, c, tokens=args.tokens) for c in args.concurrency]
        for c in args.concurrency:
            theirs = next(r for r in rows if r.engine != "builtin" and r.concurrency == c)
            mine = next(r for r in rows if r.engine == "builtin" and r.concurrency == c)
            console.print(f"{c} concurrent: builtin / vLLM = "
                          f"{mine.tokens_per_s / theirs.tokens_per_s:.2f}x")  # fmt: skip
    console.print(table(rows, f"vLLM (CPU build, {what}): {args.tokens} new tokens a request"))


if __name__ == "__main__":
    main()
