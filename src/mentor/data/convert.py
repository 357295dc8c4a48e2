"""Converting datasets between kinds: CSV to JSONL, qa or classification records to chat, and
other tools' shapes (ShareGPT, Alpaca, TRL prompt/completion; :mod:`mentor.data.formats`) to chat
or, for single exchanges, to qa.

:func:`convert_file` reads a source file (JSONL or CSV), turns each valid record into the target
kind and writes the result atomically. A bad source line is never dropped silently: it is reported
as a :class:`~mentor.data.io.Problem` and counted, and nothing is written unless ``skip_bad`` asks
for the good records anyway.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from mentor.data.formats import FORMATS
from mentor.data.io import LoadResult, Problem, read_csv_records, read_records, write_jsonl
from mentor.data.schemas import (
    JSONL_SCHEMAS,
    ChatMessage,
    ChatRecord,
    ClassificationRecord,
    QARecord,
    detect_schema,
    get_schema,
)

SOURCES: tuple[str, ...] = ("csv", *JSONL_SCHEMAS)
"""What ``--from`` accepts: ``csv`` or a JSONL kind."""


def _chat(user: str, assistant: str, system: str | None, extra: dict[str, object]) -> ChatRecord:
    messages = [ChatMessage(role="system", content=system)] if system else []
    messages += [
        ChatMessage(role="user", content=user),
        ChatMessage(role="assistant", content=assistant),
    ]
    return ChatRecord.model_validate({**extra, "messages": messages})


def qa_to_chat(
    record: QARecord, *, system: str | None = None, instruction: str | None = None
) -> ChatRecord:
    """User asks the question (under a ``Context:`` header when there is one); assistant answers.

    ``instruction``, if given, opens the user turn. ``id``, ``doc_ids`` and any extra fields are
    kept on the chat record.
    """
    user = record.question
    if record.context:
        user = f"Context:\n{record.context}\n\nQuestion:\n{record.question}"
    if instruction:
        user = f"{instruction}\n\n{user}"
    extra = {k: v for k, v in (("id", record.id), ("doc_ids", record.doc_ids)) if v is not None}
    return _chat(user, record.answer, system, {**(record.model_extra or {}), **extra})


def classification_to_chat(
    record: ClassificationRecord, *, system: str | None = None, instruction: str | None = None
) -> ChatRecord:
    """User sends the text (after ``instruction`` if any); the assistant replies with the label."""
    user = f"{instruction}\n\n{record.text}" if instruction else record.text
    return _chat(user, record.label, system, dict(record.model_extra or {}))


@dataclass
class ConvertResult:
    """What a conversion did: records written, bad lines found, and whether the output exists."""

    source: LoadResult
    target: str
    written: int = 0
    wrote_file: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Distinct source lines that could not be converted."""
        return len({(p.path, p.line) for p in self.problems if p.severity == "error"})


def _converter(
    source: str, target: str, system: str | None, instruction: str | None
) -> Callable[[BaseModel], BaseModel]:
    if source == target:
        return lambda r: r
    if (source, target) == ("qa", "chat"):
        return lambda r: qa_to_chat(
            QARecord.model_validate(r), system=system, instruction=instruction
        )
    if (source, target) == ("classification", "chat"):
        return lambda r: classification_to_chat(
            ClassificationRecord.model_validate(r), system=system, instruction=instruction
        )
    raise ValueError(
        f"cannot convert {source} to {target}; supported: csv to any kind, "
        "qa to chat, classification to chat"
    )


def _read_csv(src: Path, target: str, mapping: Mapping[str, str]) -> LoadResult:
    """CSV rows are read as ``target`` unless their columns say qa/classification (for chat)."""
    with src.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
        columns = [c.strip() for c in next(csv.reader(fh), [])]
    detected = detect_schema(dict.fromkeys([*columns, *mapping]))
    row_kind = detected if target == "chat" and detected in ("qa", "classification") else target
    return read_csv_records(src, row_kind, mapping)


def convert_file(
    src: Path | str,
    dst: Path | str,
    to: str,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    system: str | None = None,
    instruction: str | None = None,
    skip_bad: bool = False,
) -> ConvertResult:
    """Convert ``src`` (JSONL of kind ``source``, or CSV) into a JSONL file of kind ``to``.

    ``source`` is ``"csv"``, a JSONL kind, or ``None`` to decide from the suffix and keys.
    ``mapping`` (our field -> CSV column) applies to CSV input. With bad lines in the source,
    nothing is written unless ``skip_bad`` is true; the result lists every problem either way.
    """
    src, dst = Path(src), Path(dst)
    get_schema(to)
    if to not in JSONL_SCHEMAS:
        raise ValueError(f"--to must be one of {', '.join(JSONL_SCHEMAS)} (qrels are TSV)")
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if mapping and not (source == "csv" or src.suffix.lower() == ".csv"):
        raise ValueError("--map applies to CSV input only")
    if (system or instruction) and to != "chat":
        raise ValueError("--system and --instruction apply to conversions to chat only")
    if source == "csv" or (source is None and src.suffix.lower() == ".csv"):
        loaded = _read_csv(src, to, mapping or {})
    else:
        loaded = read_records(src, source)
        if loaded.format in FORMATS and to == "qa":  # ShareGPT, Alpaca...: single exchanges
            loaded = read_records(src, "qa")
    result = ConvertResult(loaded, to, problems=list(loaded.problems))
    if loaded.schema is None:
        return result
    convert = _converter(loaded.schema, to, system, instruction)
    converted = [convert(r.data) for r in loaded.records]
    if result.bad and not skip_bad:
        return result
    result.written = write_jsonl(dst, converted)
    result.wrote_file = True
    return result
