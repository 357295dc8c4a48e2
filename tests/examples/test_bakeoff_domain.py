"""The bakeoff example domain (examples/bakeoff/tidepool) is complete, consistent and leak-free."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from mentor.data import check_dataset, read_records
from mentor.data.schemas import QARecord

ROOT = Path(__file__).resolve().parents[2] / "examples" / "bakeoff" / "tidepool"
DOCS = ROOT / "docs"
UPDATES = ROOT / "updates"
SPLITS = {"train": 240, "validation": 40, "test": 60}


def _docs(folder: Path) -> dict[str, str]:
    """Documents by doc id; a folder's README.md describes it and is not a document."""
    paths = sorted(p for p in folder.glob("*.md") if p.name != "README.md")
    return {p.stem: p.read_text(encoding="utf-8") for p in paths}


def _qa(path: Path) -> list[QARecord]:
    result = read_records(path, "qa")
    assert not result.problems, [p.to_dict() for p in result.problems]
    return [cast(QARecord, r.data) for r in result.records]


def _split(name: str) -> list[QARecord]:
    return _qa(ROOT / "questions" / f"{name}.jsonl")


def test_doc_count_and_titles() -> None:
    docs = _docs(DOCS)
    assert 45 <= len(docs) <= 55
    for doc_id, text in docs.items():
        assert text.startswith("# "), doc_id
        assert "\n## " in text, f"{doc_id} has no sections"


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_split_sizes_and_gold_answers_in_cited_docs(name: str) -> None:
    docs = {k: v.casefold() for k, v in _docs(DOCS).items()}
    records = _split(name)
    assert len(records) == SPLITS[name]
    for r in records:
        assert r.doc_ids, r.id
        assert all(d in docs for d in r.doc_ids), (r.id, r.doc_ids)
        assert any(r.answer.casefold() in docs[d] for d in r.doc_ids), (r.id, r.answer)


def test_seen_marker_matches_training_facts() -> None:
    trained = {(r.answer, tuple(r.doc_ids or ())) for r in _split("train")}
    for name in ("validation", "test"):
        records = _split(name)
        marks = [getattr(r, "seen_in_training", None) for r in records]
        assert all(isinstance(m, bool) for m in marks), name
        unseen = marks.count(False)
        assert 0.25 <= unseen / len(records) <= 0.35, (name, unseen)
        for r, seen in zip(records, marks, strict=True):
            assert ((r.answer, tuple(r.doc_ids or ())) in trained) == seen, (name, r.id)


@pytest.mark.parametrize("against", ["validation", "test"])
def test_no_leakage_from_train(against: str) -> None:
    questions = ROOT / "questions"
    report = check_dataset(questions / "train.jsonl", against=questions / f"{against}.jsonl")
    assert not report.has_errors
    assert not report.leakage, [p.to_dict() for p in report.leakage]
    assert not report.duplicates and not report.against_duplicates


def test_validation_does_not_leak_into_test() -> None:
    questions = ROOT / "questions"
    report = check_dataset(questions / "validation.jsonl", against=questions / "test.jsonl")
    assert not report.leakage, [p.to_dict() for p in report.leakage]


def test_updates_replace_base_docs_with_new_facts() -> None:
    base, updated = _docs(DOCS), _docs(UPDATES)
    assert 5 <= len(updated) <= 8
    assert set(updated) <= set(base), set(updated) - set(base)
    assert all(updated[d] != base[d] for d in updated)
    records = _qa(UPDATES / "questions.jsonl")
    assert 18 <= len(records) <= 25
    cited = set()
    for r in records:
        assert r.doc_ids and all(d in updated for d in r.doc_ids), (r.id, r.doc_ids)
        answer = r.answer.casefold()
        assert any(answer in updated[d].casefold() for d in r.doc_ids), (r.id, r.answer)
        assert not any(answer in base[d].casefold() for d in r.doc_ids), (r.id, r.answer)
        cited.update(r.doc_ids)
    assert cited == set(updated), set(updated) - cited
    readme = (UPDATES / "README.md").read_text(encoding="utf-8")
    assert all(f"{d}.md" in readme for d in updated)
