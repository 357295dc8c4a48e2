"""The bakeoff's questions, read once from the config's qa JSONL files.

Every file goes through :func:`mentor.data.read_records`, so a bad line is reported with its file
and line number; a file with bad lines stops the bakeoff before anything is trained, because a
score on a silently shortened test set would mislead. ``data.prepare`` first turns a raw public
set (PubMedQA) into these files under the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mentor.bakeoff.config import BakeoffConfig
from mentor.data import QARecord, read_records


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    doc_ids: tuple[str, ...] = ()
    group: str | None = None


@dataclass
class BakeoffData:
    docs: Path | None
    train: list[Question]
    validation: list[Question]
    test: list[Question]
    updates: list[Question] = field(default_factory=list)
    updated_docs: Path | None = None

    def counts(self) -> dict[str, int]:
        docs = 0
        if self.docs is not None:
            docs = sum(1 for p in self.docs.rglob("*") if p.is_file() and p.name != "README.md")
        return {
            "documents": docs,
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "updates": len(self.updates),
        }


def read_questions(path: Path, group_by: str | None = None) -> list[Question]:
    """The qa records of ``path``; ``ValueError`` naming every bad line."""
    loaded = read_records(path, "qa")
    if loaded.errors:
        shown = "\n".join(str(p) for p in loaded.errors[:10])
        raise ValueError(f"{path}: {len(loaded.errors)} bad lines:\n{shown}")
    questions = []
    for record in loaded.records:
        data = record.data
        assert isinstance(data, QARecord)
        group = None
        if group_by is not None:
            value = (data.model_extra or {}).get(group_by)
            group = None if value is None else f"{group_by}={str(value).lower()}"
        questions.append(
            Question(
                id=str(data.id) if data.id is not None else f"{path.stem}:{record.line}",
                question=data.question,
                answer=data.answer,
                doc_ids=tuple(str(d) for d in data.doc_ids or ()),
                group=group,
            )
        )
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def spread(items: list[Question], limit: int | None) -> list[Question]:
    """At most ``limit`` items taken evenly across the list (so every part of it is in)."""
    if limit is None or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_data(config: BakeoffConfig, work: Path) -> BakeoffData:
    """Every question set the config names (after ``prepare``, which writes under ``work``)."""
    data = config.data
    docs, train, validation, test = data.docs, data.train, data.validation, data.test
    if data.prepare is not None:
        from mentor.bakeoff.datasets import prepare

        assert data.source is not None
        prepared = prepare(data.prepare, data.source, work / "data", data.split_seed)
        docs, train, validation, test = (
            prepared.docs,
            prepared.train,
            prepared.validation,
            prepared.test,
        )
    if docs is not None and not docs.is_dir():
        raise ValueError(f"data.docs: {docs} is not a folder")
    assert test is not None
    result = BakeoffData(
        docs=docs,
        train=read_questions(train) if train else [],
        validation=read_questions(validation) if validation else [],
        test=spread(read_questions(test, data.group_by), config.answer.test_limit),
    )
    if data.updates is not None:
        result.updates = spread(read_questions(data.updates.questions), config.answer.updates_limit)
        result.updated_docs = data.updates.docs
    return result
