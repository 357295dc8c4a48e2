"""Length and label statistics of a dataset: what ``max_tokens`` to use, how skewed labels are.

Lengths are counted by any ``count_tokens(text) -> int``; pass a real tokenizer's for exact
numbers. Without one, :func:`approx_token_count` gives an approximation (see its docstring).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from pydantic import BaseModel

from mentor.data.schemas import (
    ChatRecord,
    ClassificationRecord,
    CorpusRecord,
    QARecord,
    QrelRow,
    QueryRecord,
    TextRecord,
    schema_name,
)

TokenCounter = Callable[[str], int]
_PIECES = re.compile(r"\w+|[^\w\s]")
_CHARS_PER_PIECE = 6


def approx_token_count(text: str) -> int:
    """A rough token count that needs no tokenizer; an approximation, not any model's count.

    Words and single punctuation marks are pieces; a word counts one token per started
    6 characters (``"tokenization"`` counts 2), a punctuation mark counts 1. Real subword
    tokenizers differ by model and language (and count far more for code or non-Latin
    scripts); pass a tokenizer's counter to the stats for exact numbers.
    """
    return sum(1 + (len(piece) - 1) // _CHARS_PER_PIECE for piece in _PIECES.findall(text))


def full_text(record: BaseModel, schema: str | None = None) -> str:
    """All the text of one example that a model reads or writes, for length statistics."""
    kind = schema or schema_name(record)
    if kind == "chat":
        return "\n".join(m.content for m in cast(ChatRecord, record).messages)
    if kind == "qa":
        qa = cast(QARecord, record)
        return "\n".join(part for part in (qa.context, qa.question, qa.answer) if part)
    if kind == "classification":
        return cast(ClassificationRecord, record).text
    if kind == "corpus":
        doc = cast(CorpusRecord, record)
        return f"{doc.title}\n{doc.text}".strip()
    if kind == "query":
        return cast(QueryRecord, record).text
    if kind == "text":
        return cast(TextRecord, record).text
    qrel = cast(QrelRow, record)
    return f"{qrel.query_id}\t{qrel.doc_id}"


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of a set of texts; ``over_limit`` counts texts longer than ``limit``."""

    count: int
    min: int
    mean: float
    p50: float
    p95: float
    max: int
    limit: int | None = None
    over_limit: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min": self.min,
            "mean": round(self.mean, 2),
            "p50": round(self.p50, 2),
            "p95": round(self.p95, 2),
            "max": self.max,
            "limit": self.limit,
            "over_limit": self.over_limit,
        }


def length_stats(
    texts: Iterable[str],
    count_tokens: TokenCounter | None = None,
    max_tokens: int | None = None,
) -> LengthStats:
    """Token length statistics; ``count_tokens`` defaults to :func:`approx_token_count`."""
    counter = count_tokens or approx_token_count
    lengths = np.array([counter(t) for t in texts], dtype=np.int64)
    if lengths.size == 0:
        return LengthStats(0, 0, 0.0, 0.0, 0.0, 0, max_tokens, 0)
    over = int((lengths > max_tokens).sum()) if max_tokens is not None else 0
    return LengthStats(
        count=int(lengths.size),
        min=int(lengths.min()),
        mean=float(lengths.mean()),
        p50=float(np.percentile(lengths, 50)),
        p95=float(np.percentile(lengths, 95)),
        max=int(lengths.max()),
        limit=max_tokens,
        over_limit=over,
    )


DEFAULT_MAX_LENGTH = 1024
"""``mentor finetune``'s default ``--max-length``: what ``data check`` holds chat and qa to."""


@dataclass(frozen=True)
class Overlong:
    """Chat or qa examples of one file longer than ``limit`` tokens, and what a cut would lose.

    Counted from the message contents alone: the chat template adds a few tokens per message
    on top, so ``mentor finetune``'s own count (exact, before training) can be a little higher.
    """

    path: str
    limit: int
    lines: list[int]
    longest: int
    longest_line: int
    answer_tokens: int
    """Assistant (answer) tokens of the over-long examples."""
    answer_tokens_cut: int
    """Of those, how many lie past ``limit``: what truncation would not train on."""

    def __str__(self) -> str:
        n = len(self.lines)
        return (
            f"{self.path}: {n} example{'s' if n != 1 else ''} longer than {self.limit:,} tokens "
            f"(longest {self.longest:,}, line {self.longest_line}); truncation to {self.limit:,} "
            f"would cut {self.answer_tokens_cut:,} of their {self.answer_tokens:,} answer tokens "
            "(mentor finetune --max-length / --overlong)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "limit": self.limit,
            "count": len(self.lines),
            "lines": self.lines,
            "longest": self.longest,
            "longest_line": self.longest_line,
            "answer_tokens": self.answer_tokens,
            "answer_tokens_cut": self.answer_tokens_cut,
        }


def _turns(record: BaseModel) -> list[tuple[str, bool]]:
    """``(text, is an answer)`` of an example, in the order a model reads them."""
    if isinstance(record, ChatRecord):
        return [(m.content, m.role == "assistant") for m in record.messages]
    if isinstance(record, QARecord):
        prompt = [(part, False) for part in (record.context, record.question) if part]
        return [*prompt, (record.answer, True)]
    return []


def overlong_examples(
    path: str,
    records: Iterable[tuple[int, BaseModel]],
    limit: int,
    count_tokens: TokenCounter | None = None,
) -> Overlong | None:
    """The ``(line, record)`` chat/qa examples longer than ``limit`` tokens; ``None`` if none."""
    counter = count_tokens or approx_token_count
    lines: list[int] = []
    longest, longest_line, answer, cut = 0, 0, 0, 0
    for line, record in records:
        sizes = [(counter(text), is_answer) for text, is_answer in _turns(record)]
        total = sum(n for n, _ in sizes)
        if total <= limit:
            continue
        lines.append(line)
        if total > longest:
            longest, longest_line = total, line
        start = 0
        for n, is_answer in sizes:
            if is_answer:
                answer += n
                cut += n - max(0, min(start + n, limit) - start)
            start += n
    if not lines:
        return None
    return Overlong(path, limit, lines, longest, longest_line, answer, cut)


@dataclass(frozen=True)
class LabelBalance:
    """Label counts of a training set (and optionally of its test set).

    ``imbalance_ratio`` is the most frequent label's count over the rarest one's (1.0 = balanced);
    ``missing_in_train`` lists labels that occur in the test set but never in training.
    """

    counts: dict[str, int]
    shares: dict[str, float]
    imbalance_ratio: float
    test_counts: dict[str, int] = field(default_factory=dict)
    missing_in_train: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "imbalance_ratio": round(self.imbalance_ratio, 4),
            "test_counts": self.test_counts,
            "missing_in_train": self.missing_in_train,
        }


def _ordered_counts(labels: Iterable[str]) -> dict[str, int]:
    counts = Counter(labels)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def label_balance(
    train_labels: Sequence[str], test_labels: Sequence[str] | None = None
) -> LabelBalance:
    """Counts (most frequent first), shares, imbalance ratio and labels unseen in training."""
    counts = _ordered_counts(train_labels)
    total = sum(counts.values())
    shares = {k: v / total for k, v in counts.items()} if total else {}
    ratio = max(counts.values()) / min(counts.values()) if counts else 1.0
    test_counts = _ordered_counts(test_labels or [])
    missing = sorted(label for label in test_counts if label not in counts)
    return LabelBalance(counts, shares, ratio, test_counts, missing)
