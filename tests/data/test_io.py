"""Readers report every bad line as file:line, never drop a line silently; writers are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentor.data.io import Problem, read_csv_records, read_qrels, read_records, write_jsonl
from mentor.data.schemas import ClassificationRecord, CorpusRecord

from .conftest import Writer

GOOD = [{"text": f"good example {i}", "label": "a"} for i in range(4)]


def test_three_bad_lines_give_three_file_line_errors_and_all_good_lines_load(
    write: Writer,
) -> None:
    path = write(
        "train.jsonl",
        [
            GOOD[0],
            '{"text": "broken", "label": ',  # line 2: bad JSON
            GOOD[1],
            {"text": "no label here"},  # line 4: missing field
            GOOD[2],
            {"text": 42, "label": "a"},  # line 6: wrong type
            GOOD[3],
        ],
    )
    result = read_records(path)
    assert result.schema == "classification"
    assert [str(p) for p in result.problems] == [
        f"{path}:2: invalid JSON: Expecting value (column 29)",
        f"{path}:4: field 'label': missing",
        f"{path}:6: field 'text': expected a string, got integer",
    ]
    assert [r.line for r in result.records] == [1, 3, 5, 7]
    assert all(isinstance(r.data, ClassificationRecord) for r in result.records)
    assert result.bad_lines == 3
    assert not result.ok


def test_a_duplicate_key_is_an_error_naming_it_not_last_value_wins(write: Writer) -> None:
    chat = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]'
    path = write(
        "dup.jsonl",
        [
            chat + "}",
            chat + ', "messages": []}',  # line 2: the second value would silently win
            '{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}',  # nested
        ],
    )
    result = read_records(path, "chat")
    assert [str(p) for p in result.problems] == [
        f"{path}:2: duplicate key 'messages'",
        f"{path}:3: duplicate key 'role'",
    ]
    assert [r.line for r in result.records] == [1]


def test_blank_lines_are_counted_and_warned_about(write: Writer) -> None:
    path = write("blank.jsonl", [GOOD[0], "", "   ", GOOD[1]])
    result = read_records(path)
    assert result.blank_lines == 2
    assert [(p.line, p.severity) for p in result.problems] == [(2, "warning"), (3, "warning")]
    assert str(result.problems[0]) == f"{path}:2: warning: blank line (ignored)"
    assert result.ok  # warnings are not errors
    assert len(result.records) == 2


def test_non_object_lines_and_bad_utf8_are_reported_with_their_line(write: Writer) -> None:
    good = json.dumps(GOOD[0]).encode()
    path = write("mixed.jsonl", b"\n".join([good, b"[1, 2]", b'"text"', b'{"text": "\xff"}', good]))
    result = read_records(path, "classification")
    assert [(p.line, p.message) for p in result.problems] == [
        (2, "expected a JSON object, got array"),
        (3, "expected a JSON object, got string"),
        (4, "not valid UTF-8: byte 0xff at column 11"),
    ]
    assert [r.line for r in result.records] == [1, 5]


def test_bom_crlf_and_missing_final_newline_are_fine(write: Writer) -> None:
    text = "\ufeff" + json.dumps(GOOD[0]) + "\r\n" + json.dumps(GOOD[1])
    result = read_records(write("win.jsonl", text))
    assert result.problems == []
    assert len(result.records) == 2
    assert result.lines == 2


def test_undetectable_schema_is_one_file_level_error(write: Writer) -> None:
    result = read_records(write("odd.jsonl", [{"foo": 1}, {"bar": 2}]))
    assert result.schema is None
    assert len(result.errors) == 1
    assert result.errors[0].line == 0
    assert "2 lines not validated" in str(result.errors[0])


def test_unknown_schema_name_raises(write: Writer) -> None:
    with pytest.raises(ValueError, match="unknown schema 'nope'"):
        read_records(write("x.jsonl", [GOOD[0]]), "nope")


def test_problem_str_without_line() -> None:
    assert str(Problem(Path("a.jsonl"), 0, "oops")) == "a.jsonl: oops"


def test_qrels_with_header_and_bad_rows(write: Writer) -> None:
    path = write(
        "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\nq2\td3\thigh\nq3\td4\t0\n"
    )
    result = read_qrels(path)
    assert [(p.line, p.message) for p in result.problems] == [
        (3, "expected 3 tab-separated columns (query-id, corpus-id, score), got 2"),
        (4, "field 'score': expected an integer, got 'high'"),
    ]
    assert [(r.line, r.data.model_dump()) for r in result.records] == [
        (2, {"query_id": "q1", "doc_id": "d1", "score": 1}),
        (5, {"query_id": "q3", "doc_id": "d4", "score": 0}),
    ]
    assert read_records(path).schema == "qrels"  # .tsv is read as qrels


def test_qrels_without_header(write: Writer) -> None:
    result = read_qrels(write("q.tsv", "q1\td1\t2\n"))
    assert result.problems == []
    assert len(result.records) == 1


def test_csv_with_mapping_reports_bad_rows_by_csv_line(write: Writer) -> None:
    path = write(
        "banking.csv",
        "text,category,source\n"
        "I lost my card,card_lost,app\n"
        ",empty_text,app\n"  # line 3: empty text
        "too,many,cells,here\n"  # line 4: wrong cell count
        '"a text\nover two lines",transfer,web\n'  # lines 5-6: one row
        "\n"  # line 7: blank
        "where is my refund,refund,app\n",
    )
    result = read_csv_records(path, "classification", {"label": "category"})
    assert [(p.line, p.severity, p.message) for p in result.problems] == [
        (3, "error", "field 'text': must not be empty"),
        (4, "error", "expected 3 columns, got 4"),
        (7, "warning", "blank row (ignored)"),
    ]
    assert [(r.line, r.data.model_dump()) for r in result.records] == [
        (2, {"text": "I lost my card", "label": "card_lost", "source": "app"}),
        (5, {"text": "a text\nover two lines", "label": "transfer", "source": "web"}),
        (8, {"text": "where is my refund", "label": "refund", "source": "app"}),
    ]


def test_csv_auto_maps_same_named_columns_and_parses_lists(write: Writer) -> None:
    path = write("qa.csv", 'question,answer,doc_ids\nWhat?,That.,"d1, d2"\nWhy?,Because.,["d3"]\n')
    result = read_csv_records(path)
    assert result.schema == "qa"
    assert result.problems == []
    assert [r.data.model_dump()["doc_ids"] for r in result.records] == [["d1", "d2"], ["d3"]]


def test_csv_mapping_to_a_missing_column_is_a_header_error(write: Writer) -> None:
    path = write("c.csv", "text,category\nhello,greeting\n")
    result = read_csv_records(path, "classification", {"label": "intent"})
    assert [str(p) for p in result.problems] == [
        f"{path}:1: column 'intent' (for field 'label') is not in the header "
        "(columns: text, category)"
    ]
    assert result.records == []


def test_write_jsonl_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out" / "docs.jsonl"
    docs = [CorpusRecord.model_validate({"_id": "d1", "title": "T", "text": "body", "k": 1})]
    assert write_jsonl(target, docs) == 1
    assert json.loads(target.read_text()) == {"_id": "d1", "title": "T", "text": "body", "k": 1}
    write_jsonl(target, [{"_id": "d2", "text": "other"}])
    assert target.read_text().count("\n") == 1
    assert [p.name for p in target.parent.iterdir()] == ["docs.jsonl"]  # no temp file left
    assert read_records(target).records[0].data.model_dump(by_alias=True)["_id"] == "d2"


def test_empty_file_is_an_error(write: Writer) -> None:
    for name, content in (
        ("e.jsonl", ""),
        ("b.jsonl", "\n\n"),
        ("q.tsv", "query-id\tcorpus-id\tscore\n"),
    ):
        result = read_records(write(name, content))
        assert [p.message for p in result.errors] == ["no records: the file is empty or blank"]


def test_csv_without_a_column_for_a_required_field(write: Writer) -> None:
    path = write("c.csv", "text,category\nhello,greeting\n")
    result = read_records(path)  # .csv goes to read_csv_records; text -> classification
    assert result.schema == "classification"
    assert [str(p) for p in result.problems] == [
        f"{path}:1: no column for required field 'label' (columns: text, category); "
        "map one with --map label=COLUMN"
    ]
    assert read_records(path, mapping={"label": "category"}).records[0].line == 2


def test_mapping_for_a_jsonl_file_is_refused(write: Writer) -> None:
    with pytest.raises(ValueError, match="CSV files only"):
        read_records(write("a.jsonl", [GOOD[0]]), mapping={"label": "x"})
