"""Data in: ShareGPT, Alpaca, TRL prompt/completion and text records, from JSONL, CSV, Parquet,
Arrow, folders and ``hf:`` ids (a local folder through the real ``datasets`` loader), read as
mentor's kinds with every bad record named as ``file:line`` or ``file:row N``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mentor.data.commands import app
from mentor.data.formats import FORMATS, detect_format, file_format
from mentor.data.io import parse_hub_id, read_records
from mentor.data.schemas import ChatRecord, TextRecord

runner = CliRunner()


def _sharegpt(i: int) -> dict[str, Any]:
    return {
        "id": f"s{i}",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": f"what is {i} plus {i}?"},
            {"from": "gpt", "value": f"{2 * i}"},
        ],
    }


ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "text": "..."}
PROMPT_COMPLETION = {"prompt": "SUBREDDIT: r/cats\nPOST: ...\nTL;DR:", "completion": " cats nap"}
CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "completion": [{"role": "assistant", "content": "hello"}],
}


def _messages(record: Any) -> list[tuple[str, str]]:
    assert isinstance(record, ChatRecord)
    return [(m.role, m.content) for m in record.messages]


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    ("row", "shape", "messages"),
    [
        (
            _sharegpt(2),
            "sharegpt",
            [("system", "Be brief."), ("user", "what is 2 plus 2?"), ("assistant", "4")],
        ),
        (ALPACA, "alpaca", [("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5")]),
        (
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            "alpaca",
            [("user", "Say hi."), ("assistant", "hi")],
        ),
        (
            PROMPT_COMPLETION,
            "prompt-completion",
            [("user", PROMPT_COMPLETION["prompt"]), ("assistant", " cats nap")],
        ),
        (CONVERSATIONAL, "prompt-completion", [("user", "hi"), ("assistant", "hello")]),
    ],
)
def test_each_shape_is_read_as_chat(
    tmp_path: Path, row: dict[str, Any], shape: str, messages: list[tuple[str, str]]
) -> None:
    for path in (_jsonl(tmp_path / "d.jsonl", [row]), _parquet(tmp_path / "d.parquet", [row])):
        loaded = read_records(path)
        assert (loaded.format, loaded.schema, loaded.ok) == (shape, "chat", True), loaded.problems
        assert _messages(loaded.records[0].data) == messages


def test_extra_fields_are_kept_and_alpaca_text_is_dropped(tmp_path: Path) -> None:
    sharegpt = read_records(_jsonl(tmp_path / "s.jsonl", [_sharegpt(1)])).records[0].data
    assert sharegpt.model_extra == {"id": "s1"}
    alpaca = read_records(_jsonl(tmp_path / "a.jsonl", [ALPACA])).records[0].data
    assert alpaca.model_extra == {}  # tatsu-lab/alpaca's `text` is the three fields rendered


def test_plain_text_is_its_own_kind(tmp_path: Path) -> None:
    loaded = read_records(_parquet(tmp_path / "t.parquet", [{"text": "Once upon a time."}]))
    assert (loaded.format, loaded.schema, loaded.format_note) == ("text", "text", "")
    assert isinstance(loaded.records[0].data, TextRecord)
    with_label = read_records(_jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": "b"}]))
    assert with_label.schema == "classification"
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("text,intent\nhi,greet\n", encoding="utf-8")
    assert read_records(csv_path).schema == "classification"  # a label under another name
    csv_path.write_text("text,source\nOnce upon a time.,web\n", encoding="utf-8")
    other = read_records(csv_path)
    assert (other.schema, other.ok) == ("text", True)
    assert "--map label=COLUMN" in other.format_note  # how to read it as classification


def test_an_ambiguous_record_says_what_was_chosen_and_why() -> None:
    found = file_format([ALPACA])  # instruction/output and a text field
    assert found.name == "alpaca"
    assert "records also fitting text: 1; read as alpaca, which comes first" in found.note
    mixed = file_format([_sharegpt(1), _sharegpt(2), ALPACA])
    assert mixed.name == "sharegpt"
    assert "records differ (sharegpt 2, alpaca 1); read all as sharegpt" in mixed.note
    both = file_format([{"messages": [], "conversations": []}])
    assert both.name == "chat" and "also fitting sharegpt" in both.note


def test_detect_format_per_object() -> None:
    assert detect_format(_sharegpt(0)) == "sharegpt"
    assert detect_format({"messages": []}) == "chat"
    assert detect_format({"question": "q", "answer": "a"}) == "qa"
    assert detect_format({"chosen": "a", "rejected": "b"}) == "preference"
    assert detect_format({"foo": 1}) is None
    assert set(FORMATS) == {"sharegpt", "alpaca", "prompt-completion"}


def test_bad_rows_of_a_parquet_file_are_named_by_row(tmp_path: Path) -> None:
    bad_speaker = {
        "id": "b",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "bing", "value": "x"}],
    }
    no_answer = {"id": "c", "conversations": [{"from": "human", "value": "hi"}]}
    path = _parquet(tmp_path / "sg.parquet", [_sharegpt(1), bad_speaker, no_answer])
    loaded = read_records(path)
    assert [str(p) for p in loaded.problems] == [
        f"{path}:row 2: sharegpt: field 'conversations.1.from': unknown speaker 'bing' "
        "(known: human, user, gpt, chatgpt, assistant, system, tool)",
        f"{path}:row 3: read as chat: field 'messages': needs at least one assistant message",
    ]
    assert len(loaded.records) == 1 and loaded.records[0].line == 1


def test_content_parts_are_joined_and_other_parts_refused(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    image = [{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]
    rows = [
        {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "ok"}]},
        {"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": "ok"}]},
    ]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    loaded = read_records(path)
    assert _messages(loaded.records[0].data)[0] == ("user", "first\nsecond")
    assert [str(p) for p in loaded.problems] == [
        f"{path}:2: field 'messages.0.content': part 0: only text parts are read, got type "
        "'image_url'"
    ]


def test_preference_pairs_are_refused_with_a_reason(tmp_path: Path) -> None:
    loaded = read_records(_jsonl(tmp_path / "p.jsonl", [{"chosen": "a", "rejected": "b"}]))
    assert not loaded.ok and loaded.schema is None
    assert "preference data (DPO), which mentor does not train on" in str(loaded.problems[0])


def test_arrow_files_stream_and_file_format(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([ALPACA, {**ALPACA, "output": ""}])
    stream, file = tmp_path / "s.arrow", tmp_path / "f.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pa.OSFile(str(file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    for path in (stream, file):
        loaded = read_records(path)
        assert (loaded.format, len(loaded.records)) == ("alpaca", 1)
        assert [str(p) for p in loaded.problems] == [
            f"{path}:row 2: read as chat: field 'messages.1.content': must not be empty"
        ]


def test_an_unreadable_table_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    loaded = read_records(path)
    assert not loaded.ok and str(loaded.problems[0]).startswith(f"{path}: cannot read as parquet:")


def test_a_folder_of_shards_is_one_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _parquet(folder / "train-00000-of-00002.parquet", [_sharegpt(i) for i in range(3)])
    _parquet(folder / "train-00001-of-00002.parquet", [_sharegpt(i) for i in range(3, 5)])
    loaded = read_records(folder)
    assert (loaded.format, len(loaded.records), loaded.unit) == ("sharegpt", 5, "row")
    (folder / "notes.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="several types"):
        read_records(folder)


def test_datasets_save_to_disk_and_the_hf_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [_sharegpt(i) for i in range(4)]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    assert len(read_records(tmp_path / "saved").records) == 4
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert len(read_records(tmp_path / "dd").records) == 4  # the train split
    # hf:ID goes through datasets.load_dataset, which resolves an id to a local folder first
    # when one has that name: the same call a user with a network makes, here without one.
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    ds.to_parquet(str(local / "train.parquet"))
    ds.select([1]).to_parquet(str(local / "test.parquet"))
    monkeypatch.chdir(tmp_path)
    train = read_records("hf:org/name")
    assert (train.format, len(train.records), train.unit) == ("sharegpt", 4, "row")
    assert str(train.path) == "hf:org/name"
    assert len(read_records("hf:org/name:test").records) == 1


def test_hub_ids_parse_and_fail_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_hub_id("hf:tatsu-lab/alpaca") == ("tatsu-lab/alpaca", "train")
    assert parse_hub_id("hf:trl-lib/tldr:validation") == ("trl-lib/tldr", "validation")
    assert parse_hub_id("hf:roneneldan/TinyStories:train[:1000]") == (
        "roneneldan/TinyStories",
        "train[:1000]",
    )
    for bad in ("hf:", "hf:a b/c", "hf:org/name:"):
        with pytest.raises(ValueError, match="hf:"):
            parse_hub_id(bad)
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot load Hugging Face dataset 'no-such-org/no-such"):
        read_records("hf:no-such-org/no-such-set")


def test_alpaca_csv_is_read_as_chat(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('instruction,input,output\nAdd.,"1, 2",3\nSay hi.,,\n', encoding="utf-8")
    loaded = read_records(path)
    assert (loaded.format, len(loaded.records)) == ("alpaca", 1)
    assert _messages(loaded.records[0].data) == [("user", "Add.\n\n1, 2"), ("assistant", "3")]
    assert [str(p) for p in loaded.problems] == [
        f"{path}:3: read as chat: field 'messages.1.content': must not be empty"
    ]


def test_check_names_the_format_and_the_bad_rows(tmp_path: Path) -> None:
    bad = {"id": "x", "conversations": [{"from": "human", "value": "hi"}]}
    path = _parquet(tmp_path / "sg.parquet", [_sharegpt(1), bad])
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "format: sharegpt (read as chat)"
    assert (
        lines[1]
        == f"{path}:row 2: read as chat: field 'messages': needs at least one assistant message"
    )
    assert "(sharegpt, read as chat)" in lines[-1]
    as_json = json.loads(runner.invoke(app, ["check", str(path), "--json"]).stdout)
    assert (as_json["format"], as_json["schema"]) == ("sharegpt", "chat")
    assert as_json["problems"][0]["unit"] == "row"
    missing = runner.invoke(app, ["check", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


@pytest.mark.parametrize(
    ("rows", "suffix"),
    [
        ([_sharegpt(i) for i in range(3)], "parquet"),
        ([ALPACA] * 2, "parquet"),
        ([PROMPT_COMPLETION, CONVERSATIONAL], "jsonl"),  # mixed types: not one Parquet schema
    ],
)
def test_convert_round_trips_through_mentor_chat(
    tmp_path: Path, rows: list[dict[str, Any]], suffix: str
) -> None:
    write = _parquet if suffix == "parquet" else _jsonl
    src = write(tmp_path / f"in.{suffix}", rows)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["convert", str(src), str(out), "--to", "chat"])
    assert result.exit_code == 0, result.output
    assert "(from " in result.stdout
    first = read_records(src)
    again = read_records(out)
    assert (again.format, again.schema, again.ok) == ("chat", "chat", True)
    assert [_messages(r.data) for r in again.records] == [_messages(r.data) for r in first.records]
    # and mentor chat written back as Parquet reads the same
    back = _parquet(
        tmp_path / "back.parquet", [json.loads(x) for x in out.read_text().splitlines()]
    )
    assert [_messages(r.data) for r in read_records(back).records] == [
        _messages(r.data) for r in first.records
    ]


def test_single_exchanges_convert_to_qa_for_the_bakeoff(tmp_path: Path) -> None:
    from mentor.bakeoff.data import read_questions

    rows = [{**ALPACA, "id": "n1"}, {**ALPACA, "output": "6", "id": "n2"}]
    path = _parquet(tmp_path / "a.parquet", rows)
    questions = read_questions(path)
    assert [(q.question, q.answer) for q in questions] == [
        ("Add the numbers.\n\n2 and 3", "5"),
        ("Add the numbers.\n\n2 and 3", "6"),
    ]
    assert questions[1].id == "n2"
    out = tmp_path / "qa.jsonl"
    done = runner.invoke(app, ["convert", str(path), str(out), "--to", "qa"])
    assert done.exit_code == 0, done.output
    assert read_records(out).schema == "qa"
    with_system = read_records(_jsonl(tmp_path / "s.jsonl", [_sharegpt(1)]), "qa")
    assert [str(p) for p in with_system.problems] == [
        f"{tmp_path / 's.jsonl'}:1: sharegpt: a qa record is one user turn and one assistant "
        "turn, got system > user > assistant"
    ]


def test_a_json_array_file_is_read_by_entry(tmp_path: Path) -> None:
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps([ALPACA, 7, {**ALPACA, "output": ""}]), encoding="utf-8")
    loaded = read_records(path)
    assert (loaded.format, len(loaded.records)) == ("alpaca", 1)
    assert [str(p) for p in loaded.problems] == [
        f"{path}:row 2: expected a JSON object, got integer",
        f"{path}:row 3: read as chat: field 'messages.1.content': must not be empty",
    ]
    lines = tmp_path / "lines.json"  # a .json file of JSON Lines is still read line by line
    lines.write_text(json.dumps(ALPACA) + "\n", encoding="utf-8")
    assert read_records(lines).unit == "line"
