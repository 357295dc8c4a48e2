"""Sequence distillation's prompts from Parquet, folders and other tools' shapes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mentor.distill.sequence import _prompts_sha256, load_prompts


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_prompts_from_sharegpt_and_alpaca_tables(tmp_path: Path) -> None:
    sharegpt = _write(
        tmp_path / "s.parquet",
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}],
    )
    (prompt,) = load_prompts(sharegpt)
    assert (prompt.messages, prompt.reference, prompt.line) == (
        [{"role": "user", "content": "hi"}],
        "hello",
        1,
    )
    folder = tmp_path / "alpaca"
    folder.mkdir()
    _write(folder / "0.parquet", [{"instruction": "Add.", "input": "1 2", "output": "3"}])
    (prompt,) = load_prompts(folder)
    assert prompt.messages == [{"role": "user", "content": "Add.\n\n1 2"}]
    assert prompt.reference == "3"
    assert _prompts_sha256(folder, [prompt]) == _prompts_sha256(folder, load_prompts(folder))


def test_a_bad_row_is_named(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Add.", "input": "", "output": "3"},
        {"instruction": "Add.", "input": "", "output": ""},
    ]
    path = _write(tmp_path / "a.parquet", rows)
    with pytest.raises(ValueError, match=r"a\.parquet:row 2: read as chat: field 'messages\.1"):
        load_prompts(path)
