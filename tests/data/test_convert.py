"""Conversions: CSV to JSONL, qa/classification to chat; bad lines reported, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentor.data.convert import classification_to_chat, convert_file, qa_to_chat
from mentor.data.io import read_records
from mentor.data.schemas import ChatRecord, ClassificationRecord, QARecord

from .conftest import Writer


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_qa_to_chat_puts_context_under_a_header_and_keeps_ids() -> None:
    record = QARecord(question="When?", answer="Now.", context="It is now.", id="q1")
    chat = qa_to_chat(record, system="Be brief.")
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief."),
        ("user", "Context:\nIt is now.\n\nQuestion:\nWhen?"),
        ("assistant", "Now."),
    ]
    assert chat.model_dump()["id"] == "q1"
    plain = qa_to_chat(QARecord(question="Q?", answer="A."))
    assert [m.role for m in plain.messages] == ["user", "assistant"]
    assert plain.messages[0].content == "Q?"


def test_qa_to_chat_with_instruction() -> None:
    chat = qa_to_chat(QARecord(question="Q?", answer="A."), instruction="Answer briefly.")
    assert chat.messages[0].content == "Answer briefly.\n\nQ?"


def test_classification_to_chat_with_instruction() -> None:
    chat = classification_to_chat(
        ClassificationRecord(text="card lost", label="cards"), instruction="Label it."
    )
    assert [(m.role, m.content) for m in chat.messages] == [
        ("user", "Label it.\n\ncard lost"),
        ("assistant", "cards"),
    ]


def test_csv_to_classification_with_map(write: Writer, tmp_path: Path) -> None:
    src = write("banking.csv", "text,category\nI lost my card,card_lost\nrefund?,refund\n")
    dst = tmp_path / "out.jsonl"
    result = convert_file(src, dst, "classification", mapping={"label": "category"})
    assert (result.written, result.bad, result.wrote_file) == (2, 0, True)
    assert _rows(dst) == [
        {"text": "I lost my card", "label": "card_lost"},
        {"text": "refund?", "label": "refund"},
    ]
    assert read_records(dst).ok


def test_csv_straight_to_chat_goes_through_classification(write: Writer, tmp_path: Path) -> None:
    src = write("b.csv", "text,category\nI lost my card,card_lost\n")
    dst = tmp_path / "chat.jsonl"
    convert_file(src, dst, "chat", mapping={"label": "category"}, system="Classify.")
    chat = ChatRecord.model_validate(_rows(dst)[0])
    assert [m.content for m in chat.messages] == ["Classify.", "I lost my card", "card_lost"]


def test_bad_lines_block_the_write_unless_skip_bad(write: Writer, tmp_path: Path) -> None:
    src = write(
        "qa.jsonl",
        [
            {"question": "Q1?", "answer": "A1"},
            {"question": "Q2?"},
            "not json",
            {"question": "Q3?", "answer": "A3"},
        ],
    )
    dst = tmp_path / "chat.jsonl"
    blocked = convert_file(src, dst, "chat")
    assert blocked.bad == 2
    assert [p.line for p in blocked.problems] == [2, 3]
    assert not blocked.wrote_file
    assert not dst.exists()
    skipped = convert_file(src, dst, "chat", skip_bad=True)
    assert (skipped.written, skipped.bad, skipped.wrote_file) == (2, 2, True)
    assert len(_rows(dst)) == 2


def test_csv_bad_rows_are_counted(write: Writer, tmp_path: Path) -> None:
    src = write("c.csv", "text,label\nfine,a\n,b\nalso fine,c\n")
    result = convert_file(src, tmp_path / "o.jsonl", "classification", skip_bad=True)
    assert result.bad == 1
    assert str(result.problems[0]).endswith("c.csv:3: field 'text': must not be empty")
    assert result.written == 2


def test_unsupported_conversions_and_options_are_refused(write: Writer, tmp_path: Path) -> None:
    src = write("c.jsonl", [{"text": "t", "label": "l"}])
    with pytest.raises(ValueError, match="cannot convert classification to qa"):
        convert_file(src, tmp_path / "o.jsonl", "qa")
    with pytest.raises(ValueError, match="--map applies to CSV input only"):
        convert_file(src, tmp_path / "o.jsonl", "chat", mapping={"text": "x"})
    with pytest.raises(ValueError, match="qrels are TSV"):
        convert_file(src, tmp_path / "o.jsonl", "qrels")
