"""The `mentor data` commands via CliRunner: exit codes, file:line output, --json, help."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mentor.data.commands import app

from .conftest import Writer

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
GOOD = {"text": "a fine example", "label": "x"}


def _bad_file(write: Writer) -> Path:
    return write(
        "train.jsonl",
        [GOOD, "{oops", {"text": "no label"}, {"text": ["list"], "label": "x"}, GOOD],
    )


def test_check_prints_one_file_line_per_bad_line_and_exits_1(write: Writer) -> None:
    path = _bad_file(write)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{path}:")]
    assert lines == [
        f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:3: field 'label': missing",
        f"{path}:4: field 'text': expected a string, got array",
    ]
    assert "FAIL" in result.stdout.splitlines()[-1]
    assert "3 errors" in result.stdout


def test_check_reports_planted_duplicates_and_leakage_in_the_examples() -> None:
    train, test = EXAMPLES / "qa_train.jsonl", EXAMPLES / "qa_test.jsonl"
    result = runner.invoke(app, ["check", str(train), "--against", str(test)])
    assert result.exit_code == 0, result.output
    assert "Leakage" in result.stdout
    assert "2 leaked test examples" in result.stdout
    strict = runner.invoke(app, ["check", str(train), "--against", str(test), "--strict"])
    assert strict.exit_code == 1
    report = json.loads(
        runner.invoke(app, ["check", str(train), "--against", str(test), "--json"]).stdout
    )
    assert [(p["test_line"], p["train_line"], p["kind"]) for p in report["leakage"]] == [
        (2, 6, "exact"),
        (4, 1, "near"),
    ]


def test_check_json_lists_duplicates_and_problems(write: Writer) -> None:
    path = write("d.jsonl", [GOOD, {"text": "something else", "label": "y"}, GOOD, ""])
    result = runner.invoke(app, ["check", str(path), "--json"])
    assert result.exit_code == 0  # a blank line is only a warning
    data = json.loads(result.stdout)
    assert data["duplicates"] == [
        {"kind": "exact", "lines": [1, 3], "similarity": 1.0, "text": "a fine example"}
    ]
    assert data["problems"] == [
        {
            "path": str(path),
            "line": 4,
            "message": "blank line (ignored)",
            "severity": "warning",
            "unit": "line",
        }
    ]
    assert runner.invoke(app, ["check", str(path), "--strict"]).exit_code == 1


def _fake_models(monkeypatch: pytest.MonkeyPatch, load: Any) -> None:
    """Stand in for mentor.models (which imports torch) with a module holding ``load``."""
    fake = types.ModuleType("mentor.models")
    fake.load_tokenizer = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mentor.models", fake)


def test_check_with_a_tokenizer(write: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    class CharTokenizer:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
            return {"input_ids": list(text)}

    loaded: list[str] = []

    def load(name: str) -> CharTokenizer:
        loaded.append(name)
        return CharTokenizer()

    _fake_models(monkeypatch, load)
    path = write("t.jsonl", [GOOD])
    result = runner.invoke(app, ["check", str(path), "--tokenizer", "chars", "--json"])
    assert result.exit_code == 0, result.output
    assert loaded == ["chars"]
    data = json.loads(result.stdout)
    assert data["approximate_tokens"] is False
    assert data["lengths"]["train"]["max"] == len(GOOD["text"])
    table = runner.invoke(app, ["check", str(path), "--tokenizer", "chars"]).stdout
    assert "Lengths (tokens, chars)" in table

    long = {"question": "q" * 1100, "answer": "a" * 50}  # 1,150 chars: over the 1,024 default
    chat = write("long.jsonl", [{"question": "short?", "answer": "yes"}, long])
    said = runner.invoke(app, ["check", str(chat), "--tokenizer", "chars"])
    assert said.exit_code == 0, said.output  # a warning, not an error...
    assert "1 example longer than 1,024 tokens (longest 1,150, line 2)" in said.stdout
    assert "would cut 50 of their 50 answer tokens" in said.stdout
    assert said.stdout.strip().splitlines()[-1].startswith("WARN:")
    assert "1 over-long example" in said.stdout
    strict = runner.invoke(app, ["check", str(chat), "--tokenizer", "chars", "--strict"])
    assert strict.exit_code == 1  # ...unless --strict
    roomy = runner.invoke(app, ["check", str(chat), "--tokenizer", "chars", "--max-tokens", "1200"])
    assert roomy.exit_code == 0 and "over-long:" not in roomy.stdout
    assert "0 over-long examples" in roomy.stdout and roomy.stdout.startswith("Lengths")


def test_check_with_a_real_hugging_face_tokenizer(
    write: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    testing = pytest.importorskip("mentor.testing")
    tokenizer = testing.tiny_chat_tokenizer()
    _fake_models(monkeypatch, lambda name: tokenizer)
    text = "How do I reset my password?"
    expected = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    path = write("t.jsonl", [{"text": text, "label": "account"}])
    result = runner.invoke(app, ["check", str(path), "--tokenizer", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lengths"]["train"]["max"] == expected


def test_check_tokenizer_that_fails_to_load_is_a_usage_error(
    write: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(name: str) -> None:
        raise OSError(f"no such model: {name}")

    _fake_models(monkeypatch, refuse)
    result = runner.invoke(app, ["check", str(write("t.jsonl", [GOOD])), "--tokenizer", "nope"])
    assert result.exit_code == 2
    assert "cannot load tokenizer 'nope': no such model: nope" in result.stderr


def test_check_without_tokenizer_labels_lengths_approximate(write: Writer) -> None:
    result = runner.invoke(app, ["check", str(write("a.jsonl", [GOOD]))])
    assert "approximate tokens" in result.stdout


def test_check_usage_errors_exit_2(write: Writer, tmp_path: Path) -> None:
    assert runner.invoke(app, ["check", str(tmp_path / "missing.jsonl")]).exit_code == 2
    path = write("a.jsonl", [GOOD])
    assert runner.invoke(app, ["check", str(path), "--schema", "nope"]).exit_code == 2
    assert runner.invoke(app, ["check", str(path), "--near-threshold", "1.5"]).exit_code == 2


def test_split_writes_deterministic_stratified_parts(write: Writer, tmp_path: Path) -> None:
    rows = [{"text": f"example {i}", "label": "ab"[i % 2]} for i in range(40)]
    path = write("all.jsonl", rows)
    args = ["split", str(path), "--out", str(tmp_path / "s1"), "--stratify", "label", "--seed", "9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    files = {p.name: p.read_text() for p in (tmp_path / "s1").iterdir()}
    assert sorted(files) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    assert [text.count("\n") for text in (files["train.jsonl"], files["test.jsonl"])] == [32, 4]
    args[3] = str(tmp_path / "s2")
    runner.invoke(app, args)
    assert (tmp_path / "s2" / "test.jsonl").read_text() == files["test.jsonl"]
    two = runner.invoke(
        app, ["split", str(path), "--out", str(tmp_path / "s3"), "--ratios", "0.75,0.25"]
    )
    assert two.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "s3").iterdir()) == ["test.jsonl", "train.jsonl"]


def test_split_refuses_bad_input_and_bad_ratios(write: Writer, tmp_path: Path) -> None:
    path = _bad_file(write)
    result = runner.invoke(app, ["split", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"{path}:3: field 'label': missing" in result.stderr
    assert not (tmp_path / "o").exists()
    skipped = runner.invoke(app, ["split", str(path), "--out", str(tmp_path / "o"), "--skip-bad"])
    assert skipped.exit_code == 0
    assert "skipped 3 bad lines" in skipped.stderr
    good = write("g.jsonl", [GOOD])
    bad_ratio = runner.invoke(
        app, ["split", str(good), "--out", str(tmp_path), "--ratios", "0.5,0.6"]
    )
    assert bad_ratio.exit_code == 2
    assert "sum to 1" in bad_ratio.stderr


def test_convert_csv_with_map_and_bad_rows(write: Writer, tmp_path: Path) -> None:
    src = write("b.csv", "text,category\nlost card,card\n,refund\nwhere is it,transfer\n")
    dst = tmp_path / "out.jsonl"
    args = ["convert", str(src), str(dst), "--to", "classification", "--map", "label=category"]
    blocked = runner.invoke(app, args)
    assert blocked.exit_code == 1
    assert f"{src}:3: field 'text': must not be empty" in blocked.stderr
    assert "nothing written" in blocked.stderr
    assert not dst.exists()
    done = runner.invoke(app, [*args, "--skip-bad"])
    assert done.exit_code == 0
    assert "wrote 2 classification records" in done.stdout
    assert "skipped 1 bad lines" in done.stdout
    assert dst.read_text().count("\n") == 2


def test_convert_qa_to_chat_with_system_prompt(write: Writer, tmp_path: Path) -> None:
    src = write("qa.jsonl", [{"question": "Q?", "answer": "A."}])
    dst = tmp_path / "chat.jsonl"
    result = runner.invoke(app, ["convert", str(src), str(dst), "--to", "chat", "--system", "Hi"])
    assert result.exit_code == 0, result.output
    roles = [m["role"] for m in json.loads(dst.read_text())["messages"]]
    assert roles == ["system", "user", "assistant"]


def test_convert_bad_map_is_a_usage_error(write: Writer, tmp_path: Path) -> None:
    src = write("b.csv", "text,label\na,b\n")
    out = str(tmp_path / "o.jsonl")
    result = runner.invoke(app, ["convert", str(src), out, "--to", "classification", "--map", "x"])
    assert result.exit_code == 2


def test_schemas_prints_the_docs() -> None:
    result = runner.invoke(app, ["schemas"])
    assert result.exit_code == 0
    for name in ("chat", "qa", "classification", "corpus", "query", "qrels"):
        assert f"## `{name}`" in result.stdout


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)  # typer may vendor click: no isinstance(click.Group)
    commands: dict[str, Any] = group.commands  # type: ignore[attr-defined]
    return dict(commands)


def test_every_option_of_every_command_has_help() -> None:
    commands = _commands()
    assert set(commands) == {"check", "split", "convert", "schemas"}
    for name, command in commands.items():
        assert command.help, f"{name} has no help"
        for param in command.params:
            text = getattr(param, "help", None)
            assert text and text.strip(), f"{name}: {param.name} has no help text"


@pytest.mark.parametrize("command", ["check", "split", "convert", "schemas"])
def test_help_renders(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_check_csv_with_map(write: Writer) -> None:
    path = write("b.csv", "text,category\nlost card,card\nrefund please,refund\n")
    unmapped = runner.invoke(app, ["check", str(path)])
    assert unmapped.exit_code == 1
    assert f"{path}:1: no column for required field 'label'" in unmapped.stdout
    mapped = runner.invoke(app, ["check", str(path), "--map", "label=category", "--json"])
    assert mapped.exit_code == 0, mapped.output
    assert json.loads(mapped.stdout)["labels"]["counts"] == {"card": 1, "refund": 1}


def test_convert_refuses_chat_options_for_other_targets(write: Writer, tmp_path: Path) -> None:
    src = write("c.csv", "text,label\na,b\n")
    out = str(tmp_path / "o.jsonl")
    args = ["convert", str(src), out, "--to", "classification", "--system", "x"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "apply to conversions to chat only" in result.stderr
