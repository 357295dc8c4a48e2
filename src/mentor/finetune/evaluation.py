"""Before/after evaluation of a fine-tune: held-out answer quality and forgetting on general text.

The base and the tuned model answer the same held-out prompts (greedy, batched); each answer is
scored with exact match, token F1 and ROUGE-L (:mod:`mentor.evaluate.text`), and each change is
reported as tuned - base with a paired bootstrap 95% interval over the examples
(:func:`mentor.evaluate.stats.paired_bootstrap_diff`). Forgetting is probed by perplexity on a
packaged sample of general English prose (``general.txt``): a rise of more than
:data:`FORGETTING_THRESHOLD` is flagged in the report.

Usage::

    items = load_eval_items(Path("test.jsonl"))
    prompts, references = [i.prompt for i in items], [i.reference for i in items]
    scores, ppl = {}, {}
    for name, (model, tokenizer) in {"base": base, "tuned": tuned}.items():
        answers = generate_answers(model, tokenizer, prompts)
        scores[name] = score_generations(answers, references)
        ppl[name] = perplexity(model, tokenizer, general_sample())
    report = compare_generation(scores["base"], scores["tuned"], ppl["base"], ppl["tuned"])
    print(report.to_markdown())
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)

from mentor.data.convert import qa_to_chat
from mentor.data.io import read_records
from mentor.data.schemas import ChatRecord, QARecord
from mentor.evaluate.stats import paired_bootstrap_diff
from mentor.evaluate.text import exact_match, rouge_l, token_f1
from mentor.models.protocols import ChatMessage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}
"""The answer-quality metrics, each ``(prediction, reference) -> score in [0, 1]``, by name."""

FORGETTING_THRESHOLD = 0.10
"""Relative rise in general-text perplexity above which a report flags forgetting."""

CONFIDENCE = 0.95
"""Coverage of the paired bootstrap interval on each change."""


def general_sample() -> str:
    """About 3,000 words of plain encyclopedic English on everyday topics: the forgetting probe."""
    return files("mentor.finetune").joinpath("general.txt").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Perplexity


def token_windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """``(start, end)`` of non-overlapping windows that tile ``range(n_tokens)``; the last may
    be shorter."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    return [(start, min(start + seq_len, n_tokens)) for start in range(0, n_tokens, seq_len)]


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    # Dropout must be off while scoring, but the caller's model may be mid-training: restore it.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    seq_len: int = 512,
    batch_size: int = 4,
) -> float:
    """exp(mean next-token NLL) of ``text`` over non-overlapping windows of ``seq_len`` tokens.

    The text is tokenised without special tokens and cut by :func:`token_windows`; each window is
    scored on its own, so its first token is context only and every other token is predicted
    once. Log-probabilities are taken in fp32 and summed in float64 whatever the model's dtype;
    the model runs on whatever device it is on. Windows of one token predict nothing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    windows = [w for w in token_windows(len(ids), seq_len) if w[1] - w[0] >= 2]
    if not windows:
        raise ValueError("perplexity needs a text of at least 2 tokens")
    all_ids = torch.tensor(ids, dtype=torch.long, device=model.device)
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode(), _eval_mode(model):
        # Only the last window can be shorter, so a batch splits into at most two equal-length
        # groups and no padding is ever needed.
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            for _, group in itertools.groupby(batch, key=lambda w: w[1] - w[0]):
                inputs = torch.stack([all_ids[a:b] for a, b in group])  # (B, T)
                logits = model(input_ids=inputs).logits  # (B, T, V)
                for row, targets in zip(logits, inputs, strict=True):  # one row at a time: fp32
                    nll = F.cross_entropy(row[:-1].float(), targets[1:], reduction="sum")
                    total_nll += float(nll)
                    total_tokens += targets.numel() - 1
    return math.exp(total_nll / total_tokens)


# ---------------------------------------------------------------------------------------------
# Held-out answers


@dataclass(frozen=True)
class EvalItem:
    """One held-out example: the conversation to answer and the reference answer."""

    prompt: list[ChatMessage]
    reference: str
    line: int
    """1-based line of the source file, to trace a score back to its example."""


def _split_chat(record: ChatRecord) -> tuple[list[ChatMessage], str] | None:
    """Everything before the last assistant turn, and that turn; ``None`` if no user precedes."""
    last = max(i for i, m in enumerate(record.messages) if m.role == "assistant")
    prompt: list[ChatMessage] = [
        {"role": m.role, "content": m.content} for m in record.messages[:last]
    ]
    if not any(m["role"] == "user" for m in prompt):
        return None
    return prompt, record.messages[last].content


def load_eval_items(path: Path) -> list[EvalItem]:
    """The held-out set in ``path`` (``qa`` or ``chat`` JSONL) as prompts and reference answers.

    A qa record becomes the user turn :func:`~mentor.data.convert.qa_to_chat` builds for training
    (the context first, when there is one); a chat record is cut before its last assistant turn,
    which is the reference. Any bad line raises ``ValueError`` naming ``path:line``.
    """
    loaded = read_records(path)
    if loaded.schema not in (None, "qa", "chat"):
        raise ValueError(
            f"{path}: {loaded.schema} records have no answer to generate; held-out sets for "
            "generation are qa or chat (score classifiers with classification_accuracy)"
        )
    errors = [str(p) for p in loaded.errors]
    items: list[EvalItem] = []
    for record in loaded.records:
        data = record.data
        chat = qa_to_chat(data) if isinstance(data, QARecord) else data
        assert isinstance(chat, ChatRecord)
        split = _split_chat(chat)
        if split is None:
            errors.append(f"{path}:{record.line}: no user message before the last assistant turn")
            continue
        items.append(EvalItem(prompt=split[0], reference=split[1], line=record.line))
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad lines:\n" + "\n".join(errors[:20]))
    return items


def _render(tokenizer: PreTrainedTokenizerBase, prompt: Sequence[ChatMessage]) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in prompt],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert isinstance(text, str)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad generation batches with: the pad token, else the end-of-sequence token."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if not isinstance(pad_id, int):
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return pad_id


def left_pad(rows: Sequence[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Rows of ids left padded into one batch, so every row's new tokens start at one column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[ChatMessage]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:
    """Answers to ``prompts``, in order, decoded without special tokens and stripped; greedy
    unless ``temperature`` > 0 (then sampled with ``top_p``, from torch's global generator).

    Prompts are rendered with the tokenizer's chat template plus the assistant's generation
    prompt, sorted by length so a batch carries little padding, and left padded, so every row's
    new tokens start at the same column. The tokenizer is not modified.
    """
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pad_id = padding_id(tokenizer)
    encoded = [_render(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers = [""] * len(encoded)
    with torch.inference_mode(), _eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            inputs = left_pad([encoded[i] for i in chunk], pad_id, model.device)
            output = model.generate(  # type: ignore[operator]
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                # the checkpoint's sampling defaults must not leak into ours
                temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None,
                top_k=None,
                pad_token_id=pad_id,
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]  # (B, generated)
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text in zip(chunk, texts, strict=True):
                answers[i] = text.strip()
    return answers


# ---------------------------------------------------------------------------------------------
# Scores and the before/after report


@dataclass(frozen=True)
class GenerationScores:
    """Answers to a held-out set and their score on every metric of :data:`METRICS`."""

    predictions: list[str]
    references: list[str]
    per_example: dict[str, list[float]]
    """Metric name -> its score on each example, in the order of ``predictions``."""

    @property
    def n(self) -> int:
        return len(self.predictions)

    def mean(self, metric: str) -> float:
        values = self.per_example[metric]
        return sum(values) / len(values)

    @property
    def exact_match(self) -> float:
        return self.mean("exact_match")

    @property
    def token_f1(self) -> float:
        return self.mean("token_f1")

    @property
    def rouge_l(self) -> float:
        return self.mean("rouge_l")

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, **{name: self.mean(name) for name in self.per_example}}


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> GenerationScores:
    """Score each prediction against its reference with every metric of :data:`METRICS`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    per_example = {
        name: [metric(p, r) for p, r in zip(predictions, references, strict=True)]
        for name, metric in METRICS.items()
    }
    return GenerationScores(list(predictions), list(references), per_example)


def classification_accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """Fraction of labels predicted exactly (labels are compared as given, case included)."""
    return sum(_correct(predicted, gold)) / len(gold)


def _correct(predicted: Sequence[str], gold: Sequence[str]) -> list[float]:
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted labels for {len(gold)} gold labels")
    if not gold:
        raise ValueError("nothing to score: no labels")
    return [float(p == g) for p, g in zip(predicted, gold, strict=True)]


@dataclass(frozen=True)
class MetricChange:
    """One metric of the base and the tuned model on the same examples."""

    name: str
    base: float
    tuned: float
    change: float
    """tuned - base."""
    low: float
    high: float
    """Paired bootstrap interval on ``change`` (coverage :data:`CONFIDENCE`)."""


@dataclass(frozen=True)
class PerplexityChange:
    """Perplexity on the general-English sample before and after fine-tuning."""

    base: float
    tuned: float

    @property
    def relative_change(self) -> float:
        """tuned / base - 1: 0.15 means perplexity rose by 15%."""
        return self.tuned / self.base - 1.0

    @property
    def forgetting(self) -> bool:
        return self.relative_change > FORGETTING_THRESHOLD


@dataclass(frozen=True)
class BeforeAfter:
    """The base model against the tuned one: metrics on the held-out set, and forgetting."""

    n: int
    """Held-out examples both models were scored on."""
    metrics: list[MetricChange]
    general: PerplexityChange | None
    """``None`` where no perplexity applies (a classifier head)."""

    @property
    def forgetting(self) -> bool:
        return self.general is not None and self.general.forgetting

    @property
    def forgetting_note(self) -> str | None:
        """A sentence for the report when general-text perplexity rose past the threshold."""
        if self.general is None or not self.general.forgetting:
            return None
        g = self.general
        return (
            f"Forgetting: perplexity on general English rose {g.relative_change:.1%} "
            f"({g.base:.2f} -> {g.tuned:.2f}), more than the {FORGETTING_THRESHOLD:.0%} "
            "threshold; consider a lower learning rate, fewer epochs, a smaller LoRA rank or "
            "mixing general data into training."
        )

    def to_dict(self) -> dict[str, Any]:
        general = None
        if self.general is not None:
            general = {
                "base": self.general.base,
                "tuned": self.general.tuned,
                "relative_change": self.general.relative_change,
            }
        return {
            "n": self.n,
            "confidence": CONFIDENCE,
            "metrics": [vars(m) for m in self.metrics],
            "general_perplexity": general,
            "forgetting": self.forgetting,
            "forgetting_note": self.forgetting_note,
        }

    def to_markdown(self) -> str:
        """A table ``metric | base | tuned | change (95% CI)``, then the forgetting note if any."""
        ci = f"{CONFIDENCE:.0%} CI"
        rows = [f"| metric | base | tuned | change ({ci}) |", "|---|---|---|---|"]
        for m in self.metrics:
            rows.append(
                f"| {m.name} | {m.base:.3f} | {m.tuned:.3f} "
                f"| {m.change:+.3f} ({m.low:+.3f}, {m.high:+.3f}) |"
            )
        if self.general is not None:
            g = self.general
            rows.append(
                f"| general perplexity | {g.base:.2f} | {g.tuned:.2f} | {g.relative_change:+.1%} |"
            )
        out = [
            *rows,
            "",
            f"n = {self.n} held-out examples; changes are tuned - base ({ci}: "
            "paired bootstrap over examples).",
        ]
        if self.forgetting_note:
            out += ["", f"**{self.forgetting_note}**"]
        return "\n".join(out) + "\n"


def compare_scores(
    base: Mapping[str, Sequence[float]],
    tuned: Mapping[str, Sequence[float]],
    general: PerplexityChange | None = None,
) -> BeforeAfter:
    """Per-example scores of both models (metric name -> one score per example) as a report."""
    if list(base) != list(tuned):
        raise ValueError(f"different metrics: {list(base)} vs {list(tuned)}")
    sizes = {len(v) for v in (*base.values(), *tuned.values())}
    if len(sizes) != 1:
        raise ValueError(f"the models were scored on different numbers of examples: {sizes}")
    rows = []
    for name in base:
        change, low, high = paired_bootstrap_diff(tuned[name], base[name], confidence=CONFIDENCE)
        b, t = base[name], tuned[name]
        rows.append(MetricChange(name, sum(b) / len(b), sum(t) / len(t), change, low, high))
    return BeforeAfter(n=sizes.pop(), metrics=rows, general=general)


def compare_generation(
    base: GenerationScores, tuned: GenerationScores, ppl_base: float, ppl_tuned: float
) -> BeforeAfter:
    """Held-out answer quality and general-text perplexity, base against tuned."""
    if base.references != tuned.references:
        raise ValueError("base and tuned were scored against different references")
    return compare_scores(
        base.per_example, tuned.per_example, PerplexityChange(ppl_base, ppl_tuned)
    )


def compare_classification(
    base_predicted: Sequence[str],
    tuned_predicted: Sequence[str],
    gold: Sequence[str],
    *,
    ppl_base: float | None = None,
    ppl_tuned: float | None = None,
) -> BeforeAfter:
    """Accuracy of both models on the same labels; perplexity only where the models are LMs."""
    if (ppl_base is None) != (ppl_tuned is None):
        raise ValueError("give both perplexities or neither")
    general = None
    if ppl_base is not None and ppl_tuned is not None:
        general = PerplexityChange(ppl_base, ppl_tuned)
    return compare_scores(
        {"accuracy": _correct(base_predicted, gold)},
        {"accuracy": _correct(tuned_predicted, gold)},
        general,
    )
