"""Held-out answers: the prompts and references of a qa or chat file, the model's answers to them,
and every text metric of :data:`mentor.evaluate.text.TEXT_METRICS` on each answer.

    items = load_eval_items(Path("test.jsonl"))
    answers = generate_answers(HFEngine(model, tokenizer), [i.prompt for i in items])
    scores = score_generations(answers, [i.reference for i in items])
    scores.mean("token_f1")

Classifiers are scored with :mod:`mentor.evaluate.labels` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mentor.data.convert import qa_to_chat
from mentor.data.io import read_records
from mentor.data.schemas import ChatRecord, QARecord
from mentor.evaluate.text import TEXT_METRICS
from mentor.models.protocols import ChatMessage

if TYPE_CHECKING:
    pass
from mentor.models.engine import Request, TextEngine
from mentor.models.protocols import SamplingConfig

EVAL_SAMPLING = SamplingConfig(max_new_tokens=128)
"""Greedy answers of at most 128 tokens: how held-out sets are answered unless a caller says."""


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
            "generation are qa or chat (score classifiers with mentor.evaluate.labels.accuracy)"
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


def generate_answers(
    engine: TextEngine,
    prompts: Sequence[Sequence[ChatMessage]],
    sampling: SamplingConfig | Sequence[SamplingConfig] = EVAL_SAMPLING,
    *,
    batch_size: int = 8,
) -> list[str]:
    """Answers to ``prompts``, in order, stripped: each conversation rendered with the engine's
    chat template plus the assistant's generation prompt, decoded in batches of ``batch_size``
    (:meth:`~mentor.models.engine.TextEngine.generate`). ``sampling`` is one setting for every
    prompt or one per prompt (each its own seed)."""
    each = [sampling] * len(prompts) if isinstance(sampling, SamplingConfig) else list(sampling)
    if len(each) != len(prompts):
        raise ValueError(f"{len(each)} sampling settings for {len(prompts)} prompts")
    requests = [Request(engine.encode_chat(p), s) for p, s in zip(prompts, each, strict=True)]
    return [c.text.strip() for c in engine.generate(requests, batch_size=batch_size)]


@dataclass(frozen=True)
class GenerationScores:
    """Answers to a held-out set and their score on every metric of :data:`TEXT_METRICS`."""

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

    @property
    def contains(self) -> float:
        return self.mean("contains")

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, **{name: self.mean(name) for name in self.per_example}}


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> GenerationScores:
    """Score each prediction against its reference with every metric of :data:`TEXT_METRICS`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    per_example = {
        name: [metric(p, r) for p, r in zip(predictions, references, strict=True)]
        for name, metric in TEXT_METRICS.items()
    }
    return GenerationScores(list(predictions), list(references), per_example)
