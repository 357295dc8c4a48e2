"""``mentor finetune --data`` from another tool's format: a ShareGPT Parquet file, a folder of
TinyStories-like text shards, and a bad row named before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import save_tiny_llama, tiny_chat_tokenizer
from mentor.train.adapters import read_info
from mentor.train.data import IGNORE, load_sft_data

runner = CliRunner()
COLOURS = ["red", "green", "blue", "amber"]


def _sharegpt(i: int) -> dict[str, object]:
    return {
        "id": f"c{i}",
        "conversations": [
            {"from": "human", "value": f"what colour is box {i}?"},
            {"from": "gpt", "value": f"box {i} is {COLOURS[i % 4]}"},
        ],
    }


def _args(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--model", str(base), "--data", str(data), "--out", str(out),
        "--batch-size", "2", "--lr", "5e-3", "--max-length", "64", "--precision", "fp32",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "tiny"
    save_tiny_llama(folder, seed=0)
    return folder


@pytest.mark.e2e
def test_finetune_on_a_sharegpt_parquet_file(
    base: Path, tmp_path: Path, device_args: list[str]
) -> None:
    data = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist([_sharegpt(i) for i in range(20)]), data)
    out = tmp_path / "run"
    result = runner.invoke(app, _args(base, data, out, "--max-steps", "3", *device_args))
    assert result.exit_code == 0, result.output
    assert read_info(out / "adapter").base_model == str(base)
    examples = json.loads((out / "report.json").read_text())["examples"]
    assert examples["train"] + examples["validation"] == 20  # every row became an example


def test_a_bad_parquet_row_stops_finetune_before_training(base: Path, tmp_path: Path) -> None:
    rows = [_sharegpt(0), {"id": "x", "conversations": [{"from": "human", "value": "hi"}]}]
    data = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    result = runner.invoke(app, _args(base, data, tmp_path / "run"))
    assert result.exit_code == 1
    assert f"{data}:row 2: read as chat:" in result.output and "assistant" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()
    missing = runner.invoke(app, _args(base, tmp_path / "nope.parquet", tmp_path / "run2"))
    assert missing.exit_code == 1 and "no such file or folder" in missing.output


def test_text_records_are_trained_on_whole(tmp_path: Path) -> None:
    folder = tmp_path / "stories"
    folder.mkdir()
    for k in range(2):
        shard = [{"text": f"Once upon a time box {k}{i} was {COLOURS[i]}."} for i in range(2)]
        pq.write_table(pa.Table.from_pylist(shard), folder / f"train-{k:05d}.parquet")
    tokenizer = tiny_chat_tokenizer()
    data = load_sft_data(folder, tokenizer, max_length=64)
    assert len(data.examples) == 4
    first = data.examples[0]
    assert first.labels == first.input_ids and IGNORE not in first.labels
    assert first.input_ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(first.input_ids, skip_special_tokens=True)
    assert text.replace(" ", "") == "Onceuponatimebox00wasred."
