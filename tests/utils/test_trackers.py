"""The W&B backend in offline mode, read back from the run's own ``.wandb`` log (a LevelDB-style
record log of W&B's protobuf records): config, metrics on the ``step`` axis, artifacts, the exit
code; trackio's local store read back with its own storage class. TensorBoard and MLflow are
read back after a whole finetune run in tests/finetune/test_tracking.py."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mentor.utils.trackers import TrackioTracker, WandbTracker

BLOCK, HEADER = 32768, 7  # W&B's log: 7-byte file header, 32 KiB blocks of records


def _records(raw: bytes) -> Iterator[bytes]:
    """The payloads of a W&B ``.wandb`` file: per record crc32 (4), length (2), type (1: whole,
    2/3/4: first, middle, last piece of one cut at a block's end)."""
    assert raw[:4] == b":W&B"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(raw):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # a block's tail too short for a header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        pending += raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            yield pending
            pending = b""


def _flushed(log: Path, seconds: float = 30.0) -> list[Any]:
    """The log's records once W&B's writer (a separate process) has written the exit record: on
    a busy machine ``finish`` in offline mode can return before the file is flushed."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + seconds
    while True:
        records = []
        for payload in _records(log.read_bytes()):
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{log}: no exit record after {seconds} s")
        time.sleep(0.2)


def _key(item: object) -> str:
    return item.key or "/".join(item.nested_key)  # type: ignore[attr-defined]


def test_wandb_offline_run_holds_config_steps_artifacts_and_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="pip install 'mentor[wandb]' to test it")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    report = tmp_path / "report.json"
    report.write_text("{}")
    tracker = WandbTracker(tmp_path, "finetune-run-1")
    tracker.start({"model": "tiny", "train": {"lr": 0.1}})
    for step, loss in [(1, 2.0), (2, 1.5), (1, 9.0)]:  # a second curve may restart at step 1
        tracker.log({"loss": loss}, step)
    tracker.artifact(report, "report")
    tracker.finish("failed")

    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history, config, artifacts, exits = [], {}, [], []
    for record in _flushed(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {_key(i): json.loads(i.value_json) for i in record.history.item}
            history.append((items["step"], items["loss"]))
        elif kind == "run":
            config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "artifact":
            artifacts.append((record.artifact.name, record.artifact.type))
        elif kind == "exit":
            exits.append(record.exit.exit_code)
    assert history == [(1, 2.0), (2, 1.5), (1, 9.0)]
    assert config["model"] == "tiny" and config["train"] == {"lr": 0.1}
    assert artifacts == [("finetune-run-1-report.json", "report")]
    assert exits == [1]


def test_trackio_local_run_holds_config_steps_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trackio reads ``TRACKIO_DIR`` when imported, so the test runs where it is set first."""
    if "trackio" in sys.modules or importlib.util.find_spec("trackio") is None:
        pytest.skip("pip install 'mentor[trackio]' (trackio 0.43 pins pillow<13) to test it")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "store"))
    from trackio.sqlite_storage import SQLiteStorage

    report = tmp_path / "report.json"
    report.write_text("{}")
    tracker = TrackioTracker(tmp_path, "distill-run-1")
    tracker.start({"model": "tiny", "train": {"lr": 0.1}})
    for step, loss in [(1, 2.0), (2, 1.5)]:
        tracker.log({"loss": loss}, step)
    tracker.artifact(report, "report")
    tracker.finish("finished")

    logs = SQLiteStorage.get_logs("mentor", "distill-run-1")
    assert [(row["step"], row["loss"]) for row in logs] == [(1, 2.0), (2, 1.5)]
    config = SQLiteStorage.get_run_config("mentor", "distill-run-1")
    assert config is not None and config["train"] == {"lr": 0.1}
    stored = [(a["name"], a["type"]) for a in SQLiteStorage.get_artifacts("mentor")]
    assert stored == [("distill-run-1-report.json", "report")]
