"""What quantizing cost and saved: size, speed and quality of the quantized model against the
unquantized one, measured the same way on both.

- size on disk: the bytes of an fp32 safetensors file of the reference's weights (each tensor
  once) against the quantized folder's weights file; and in memory, the bytes of every parameter
  and buffer as loaded (the CPU kernel's int4 copy included);
- speed: greedy generation of a fixed prompt set (:data:`SPEED_PROMPTS`), exactly
  ``new_tokens`` tokens per answer, after one warm-up call: latency is wall time per generated
  token answering one prompt at a time, throughput is tokens/s with all prompts in one batch;
- quality: perplexity on held-out text (:func:`mentor.evaluate.perplexity.perplexity`, by
  default on the packaged general-English sample) and, given a held-out chat/qa set, exact match,
  token F1 and ROUGE-L of greedy answers, with paired bootstrap intervals on the changes.

Both models always run on the builtin engine (:class:`~mentor.models.engine.HFEngine`, never
``--engine vllm``): the quantized one is mentor's own int8/int4 format, which vLLM cannot load,
and the reference runs on the same loop so that the speed ratio is about the weights alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from mentor.evaluate.answers import EvalItem, generate_answers, score_generations
from mentor.evaluate.compare import MetricChange, compare_scores
from mentor.evaluate.perplexity import perplexity
from mentor.evaluate.stats import CONFIDENCE
from mentor.models.chat import encode_chat
from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.utils.fs import human_bytes

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SPEED_PROMPTS = (
    "Explain in two sentences why the sky is blue.",
    "Write a short note to a colleague asking to move our meeting to Thursday.",
    "List three things to check before a long drive.",
    "What is the difference between weather and climate?",
)
"""The fixed prompts every speed measurement answers."""

TARGET_SIZE_RATIO = 2.0
TARGET_PERPLEXITY_LOSS = 0.01
"""The issue's bar for int8: at least 2x smaller than fp32, at most 1% relative quality loss."""


def memory_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, each shared tensor counted once."""
    tensors = [*model.parameters(), *model.buffers()]
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def fp32_file_bytes(model: nn.Module) -> int:
    """Bytes of the floating-point weights an fp32 safetensors file of ``model`` would hold
    (its state dict, each shared tensor once; integer tensors at their own width)."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        width = 4 if tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * width
    return total


@dataclass(frozen=True)
class Speed:
    latency_ms_per_token: float
    """Wall time per generated token, one prompt at a time (prefill included)."""
    tokens_per_s: float
    """Generated tokens per second with every prompt in one batch."""
    new_tokens: int
    prompts: int


def _encode(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    if tokenizer.chat_template:
        return encode_chat(tokenizer, [{"role": "user", "content": prompt}])
    ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids


def _generate(engine: HFEngine, rows: Sequence[list[int]], new_tokens: int) -> int:
    """Greedy, exactly ``new_tokens`` per row (end of sequence ignored); returns the count."""
    fixed = SamplingConfig(max_new_tokens=new_tokens, ignore_eos=True)
    done = engine.generate([Request(row, fixed) for row in rows], batch_size=len(rows))
    return sum(c.completion_tokens for c in done)


def measure_speed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompts: Sequence[str] = SPEED_PROMPTS,
    new_tokens: int = 32,
) -> Speed:
    """Latency per token (one prompt at a time) and batched throughput; see the module doc."""
    if new_tokens < 1 or not prompts:
        raise ValueError("speed needs at least one prompt and one new token")
    engine = HFEngine(model, tokenizer)
    rows = [_encode(tokenizer, p) for p in prompts]
    _generate(engine, rows[:1], min(4, new_tokens))  # warm-up: allocations, kernels
    started = time.perf_counter()
    single = sum(_generate(engine, [row], new_tokens) for row in rows)
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = _generate(engine, rows, new_tokens)
    batched_s = time.perf_counter() - started
    return Speed(
        latency_ms_per_token=1000 * single_s / single,
        tokens_per_s=batched / batched_s,
        new_tokens=new_tokens,
        prompts=len(rows),
    )


@dataclass(frozen=True)
class Measurement:
    """One model measured: the reference or the quantized one."""

    label: str
    disk_bytes: int
    memory_bytes: int
    latency_ms_per_token: float
    tokens_per_s: float
    perplexity: float
    task: dict[str, float] | None
    """Mean exact match, token F1 and ROUGE-L on the held-out set; None without one."""


@dataclass(frozen=True)
class Quality:
    """Greedy answers to a held-out set, scored per example (for the paired comparison)."""

    per_example: dict[str, list[float]]

    def means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.per_example.items()}


def task_quality(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> Quality:
    answers = generate_answers(
        HFEngine(model, tokenizer),
        [i.prompt for i in items],
        SamplingConfig(max_new_tokens=max_new_tokens),
        batch_size=batch_size,
    )
    return Quality(score_generations(answers, [i.reference for i in items]).per_example)


def measure(
    label: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    disk_bytes: int,
    text: str,
    items: Sequence[EvalItem] = (),
    new_tokens: int = 32,
    max_new_tokens: int = 128,
    seq_len: int = 512,
) -> tuple[Measurement, Quality | None]:
    """Size, speed, perplexity on ``text`` and, with ``items``, the task metrics of one model."""
    speed = measure_speed(model, tokenizer, new_tokens=new_tokens)
    ppl = perplexity(model, tokenizer, text, seq_len=seq_len)
    quality = (
        task_quality(model, tokenizer, items, max_new_tokens=max_new_tokens) if items else None
    )
    return (
        Measurement(
            label=label,
            disk_bytes=disk_bytes,
            memory_bytes=memory_bytes(model),
            latency_ms_per_token=speed.latency_ms_per_token,
            tokens_per_s=speed.tokens_per_s,
            perplexity=ppl,
            task=quality.means() if quality else None,
        ),
        quality,
    )


@dataclass(frozen=True)
class QuantizeReport:
    """The quantized model against the unquantized one (``report.json`` / ``report.md``)."""

    model: str
    method: str
    group_size: int | None
    smooth_alpha: float | None
    """SmoothQuant strength of the int8 layers; None: not smoothed."""
    adapter: str | None
    layers: int
    """Linear layers quantized."""
    fallback_note: str | None
    """Int4 layers that took a smaller group size, and why; None when none did."""
    reference: Measurement
    quantized: Measurement
    task_changes: list[MetricChange]
    """quantized - reference per task metric, with paired bootstrap intervals; empty without
    a held-out set."""
    n_eval: int
    new_tokens: int
    device: str

    @property
    def disk_ratio(self) -> float:
        """How many times smaller on disk (reference / quantized)."""
        return self.reference.disk_bytes / self.quantized.disk_bytes

    @property
    def memory_ratio(self) -> float:
        return self.reference.memory_bytes / self.quantized.memory_bytes

    @property
    def speedup(self) -> float:
        """Batched throughput, quantized / reference."""
        return self.quantized.tokens_per_s / self.reference.tokens_per_s

    @property
    def perplexity_change(self) -> float:
        """quantized / reference - 1: 0.01 means perplexity rose by 1%."""
        return self.quantized.perplexity / self.reference.perplexity - 1.0

    @property
    def meets_target(self) -> bool:
        """At least 2x smaller on disk and at most 1% higher perplexity (the issue's int8 bar)."""
        return (
            self.disk_ratio >= TARGET_SIZE_RATIO
            and self.perplexity_change <= TARGET_PERPLEXITY_LOSS
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "group_size": self.group_size,
            "smooth_alpha": self.smooth_alpha,
            "adapter": self.adapter,
            "layers": self.layers,
            "fallback_note": self.fallback_note,
            "device": self.device,
            "new_tokens": self.new_tokens,
            "n_eval": self.n_eval,
            "reference": asdict(self.reference),
            "quantized": asdict(self.quantized),
            "disk_ratio": self.disk_ratio,
            "memory_ratio": self.memory_ratio,
            "speedup": self.speedup,
            "perplexity_change": self.perplexity_change,
            "meets_target": self.meets_target,
            "confidence": CONFIDENCE,
            "task_changes": [asdict(c) for c in self.task_changes],
        }

    def to_markdown(self) -> str:
        ref, q = self.reference, self.quantized
        rows = [
            f"# {self.model}: {self.method}"
            + (f", group size {self.group_size}" if self.group_size else "")
            + (f", SmoothQuant alpha {self.smooth_alpha}" if self.smooth_alpha is not None else "")
            + (f", adapter {self.adapter} merged" if self.adapter else ""),
            "",
            f"| measure | {ref.label} | {q.label} | change |",
            "|---|---|---|---|",
            f"| weights on disk | {human_bytes(ref.disk_bytes)} | {human_bytes(q.disk_bytes)} "
            f"| {self.disk_ratio:.2f}x smaller |",
            f"| in memory | {human_bytes(ref.memory_bytes)} | {human_bytes(q.memory_bytes)} "
            f"| {self.memory_ratio:.2f}x smaller |",
            f"| latency, ms/token | {ref.latency_ms_per_token:.1f} | {q.latency_ms_per_token:.1f} "
            f"| {q.latency_ms_per_token / ref.latency_ms_per_token:.2f}x |",
            f"| throughput, tokens/s | {ref.tokens_per_s:.1f} | {q.tokens_per_s:.1f} "
            f"| {self.speedup:.2f}x |",
            f"| perplexity | {ref.perplexity:.3f} | {q.perplexity:.3f} "
            f"| {self.perplexity_change:+.2%} |",
        ]
        ci = f"{CONFIDENCE:.0%} CI"
        for c in self.task_changes:
            rows.append(
                f"| {c.name} | {c.base:.3f} | {c.tuned:.3f} "
                f"| {c.change:+.3f} ({ci} {c.low:+.3f}, {c.high:+.3f}) |"
            )
        verdict = "meets" if self.meets_target else "misses"
        notes = [
            "",
            f"{self.layers} linear layers quantized; {self.device}; speed: greedy, "
            f"{self.new_tokens} tokens per answer to {len(SPEED_PROMPTS)} fixed prompts "
            "(latency one at a time, throughput batched), after a warm-up.",
            f"Target (>= {TARGET_SIZE_RATIO:.0f}x smaller than fp32 on disk, <= "
            f"{TARGET_PERPLEXITY_LOSS:.0%} perplexity rise): {verdict}.",
        ]
        if self.n_eval:
            notes.append(f"Task metrics on {self.n_eval} held-out examples, greedy answers.")
        if self.fallback_note:
            notes.append(self.fallback_note)
        return "\n".join(rows + notes) + "\n"


def compare_quality(reference: Quality | None, quantized: Quality | None) -> list[MetricChange]:
    if reference is None or quantized is None:
        return []
    return compare_scores(reference.per_example, quantized.per_example).metrics
