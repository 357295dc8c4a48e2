"""``mentor data check`` as a library call: what to know about a dataset before training on it.

:func:`check_dataset` validates a file (and optionally a test file ``against`` it) and gathers,
into one :class:`CheckReport`: every validation problem of both files, exact and near duplicates
within each, train/test leakage, token lengths, and for classification data the label balance and
labels that contradict each other (the same normalised text with different labels).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mentor.data.dedup import (
    DuplicateGroup,
    LeakPair,
    find_duplicates,
    find_duplicates_and_leakage,
    key_text,
    normalize_text,
)
from mentor.data.io import LoadResult, Problem, Record, read_records
from mentor.data.schemas import ClassificationRecord
from mentor.data.stats import (
    DEFAULT_MAX_LENGTH,
    LabelBalance,
    LengthStats,
    Overlong,
    TokenCounter,
    full_text,
    label_balance,
    length_stats,
    overlong_examples,
)


@dataclass(frozen=True)
class LabelConflict:
    """One text (after normalisation) that carries different labels on different lines."""

    path: Path
    lines: list[int]
    labels: list[str]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "lines": self.lines,
            "labels": self.labels,
            "text": self.text,
        }


@dataclass
class CheckReport:
    """The findings of :func:`check_dataset`; ``test`` and its fields stay empty without a test."""

    train: LoadResult
    test: LoadResult | None
    near_threshold: float
    approximate_tokens: bool
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    against_duplicates: list[DuplicateGroup] = field(default_factory=list)
    leakage: list[LeakPair] = field(default_factory=list)
    lengths: dict[str, LengthStats] = field(default_factory=dict)
    """Token lengths by role, "train" and (with a test file) "test"."""
    labels: LabelBalance | None = None
    conflicts: list[LabelConflict] = field(default_factory=list)
    overlong: list[Overlong] = field(default_factory=list)
    """Chat/qa examples longer than ``max_tokens`` (default: finetune's max length), per file."""

    @property
    def schema(self) -> str | None:
        return self.train.schema

    @property
    def problems(self) -> list[Problem]:
        return self.train.problems + (self.test.problems if self.test else [])

    @property
    def has_errors(self) -> bool:
        """True when either file has a validation error (warnings do not count)."""
        return any(p.severity == "error" for p in self.problems)

    @property
    def has_findings(self) -> bool:
        """True on duplicates, leakage, conflicting labels or over-long examples (what
        ``--strict`` fails on)."""
        return bool(
            self.duplicates
            or self.against_duplicates
            or self.leakage
            or self.conflicts
            or self.overlong
        )

    @property
    def leaked_test_lines(self) -> list[int]:
        return sorted({p.test_line for p in self.leakage})

    def to_dict(self) -> dict[str, Any]:
        files = [r for r in (self.train, self.test) if r is not None]
        return {
            "schema": self.schema,
            "format": self.train.format,
            "format_note": self.train.format_note,
            "files": [
                {
                    "path": str(r.path),
                    "role": role,
                    "records": len(r.records),
                    "lines": r.lines,
                    "blank_lines": r.blank_lines,
                    "errors": len(r.errors),
                    "warnings": len(r.warnings),
                }
                for r, role in zip(files, ("train", "test"), strict=False)
            ],
            "problems": [p.to_dict() for p in self.problems],
            "near_threshold": self.near_threshold,
            "duplicates": [g.to_dict() for g in self.duplicates],
            "against_duplicates": [g.to_dict() for g in self.against_duplicates],
            "leakage": [p.to_dict() for p in self.leakage],
            "approximate_tokens": self.approximate_tokens,
            "lengths": {k: v.to_dict() for k, v in self.lengths.items()},
            "labels": self.labels.to_dict() if self.labels else None,
            "conflicts": [c.to_dict() for c in self.conflicts],
            "overlong": [o.to_dict() for o in self.overlong],
            "has_errors": self.has_errors,
            "has_findings": self.has_findings,
        }


def _keys(records: Sequence[Record], schema: str) -> tuple[list[str], list[int]]:
    return [key_text(r.data, schema) for r in records], [r.line for r in records]


def _conflicts(result: LoadResult) -> list[LabelConflict]:
    by_text: dict[str, list[Record]] = defaultdict(list)
    for record in result.records:
        by_text[normalize_text(cast(ClassificationRecord, record.data).text)].append(record)
    conflicts = []
    for group in by_text.values():
        labels = sorted({cast(ClassificationRecord, r.data).label for r in group})
        if len(labels) > 1:
            text = cast(ClassificationRecord, group[0].data).text
            conflicts.append(LabelConflict(result.path, [r.line for r in group], labels, text))
    return conflicts


def check_dataset(
    path: Path | str,
    against: Path | str | None = None,
    schema: str | None = None,
    count_tokens: TokenCounter | None = None,
    near_threshold: float = 0.8,
    max_tokens: int | None = None,
    mapping: Mapping[str, str] | None = None,
) -> CheckReport:
    """Validate ``path`` (and ``against``, a test set) and collect every finding into a report.

    ``schema`` is detected from the keys when ``None``; the test file is read with the training
    file's schema. ``count_tokens`` defaults to the approximate counter. ``near_threshold`` is the
    Jaccard similarity from which two texts count as near duplicates (``1.0`` = exact only).
    ``mapping`` (field -> column) applies to CSV files. Chat and qa examples longer than
    ``max_tokens`` (default :data:`DEFAULT_MAX_LENGTH`, what ``mentor finetune`` cuts at) are
    reported with the answer tokens a cut would lose.
    """
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    train = read_records(path, schema, mapping)
    test = None
    if against is not None:
        test_mapping = mapping if Path(against).suffix.lower() == ".csv" else None
        test = read_records(against, schema or train.schema, test_mapping)
    report = CheckReport(train, test, near_threshold, approximate_tokens=count_tokens is None)
    kind = train.schema or (test.schema if test else None)
    if kind is None:
        return report
    _find_duplicates(report, kind)
    if kind != "qrels":  # qrels rows are ids and scores: no text to measure
        for role, result in (("train", train), ("test", test)):
            if result is not None:
                texts = (full_text(r.data, kind) for r in result.records)
                report.lengths[role] = length_stats(texts, count_tokens, max_tokens)
    if kind in ("chat", "qa"):
        limit = max_tokens if max_tokens is not None else DEFAULT_MAX_LENGTH
        for result in (train, test):
            if result is None:
                continue
            records = ((r.line, r.data) for r in result.records)
            found = overlong_examples(str(result.path), records, limit, count_tokens)
            if found is not None:
                report.overlong.append(found)
    if kind == "classification":
        report.labels = label_balance(_labels(train), _labels(test) if test else None)
        report.conflicts = _conflicts(train) + (_conflicts(test) if test else [])
    return report


def _find_duplicates(report: CheckReport, kind: str) -> None:
    """Fill in duplicates within each file and leakage from train into test."""
    ids = kind == "qrels"  # qrels rows are ids: compared verbatim, never "nearly"
    options: dict[str, Any] = {
        "near": not ids and report.near_threshold < 1.0,
        "normalize": str.strip if ids else normalize_text,
    }
    threshold = report.near_threshold
    texts, lines = _keys(report.train.records, kind)
    if report.test is None:
        report.duplicates = find_duplicates(texts, lines=lines, threshold=threshold, **options)
        return
    test_texts, test_lines = _keys(report.test.records, kind)
    report.duplicates, report.against_duplicates, report.leakage = find_duplicates_and_leakage(
        texts, test_texts, threshold, train_lines=lines, test_lines=test_lines, **options
    )


def _labels(result: LoadResult) -> list[str]:
    return [cast(ClassificationRecord, r.data).label for r in result.records]
