"""Splits: deterministic from the seed, ratios kept, labels stratified, duplicates kept together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from mentor.data.io import Record
from mentor.data.schemas import ClassificationRecord
from mentor.data.split import allocate, split_records, validate_ratios


def _records(labels: dict[str, int]) -> list[Record]:
    out: list[Record] = []
    for label, count in labels.items():
        for i in range(count):
            text = f"example number {i} of class {label}"
            out.append(Record(len(out) + 1, ClassificationRecord(text=text, label=label)))
    return out


def _lines(parts: dict[str, list[Record]]) -> dict[str, list[int]]:
    return {name: [r.line for r in records] for name, records in parts.items()}


def test_same_seed_same_split_other_seed_other_split() -> None:
    records = _records({"a": 60, "b": 40})
    first = _lines(split_records(records, seed=3))
    assert first == _lines(split_records(records, seed=3))
    assert first != _lines(split_records(records, seed=4))
    every = sorted(line for lines in first.values() for line in lines)
    assert every == list(range(1, 101))  # a partition: nothing lost or repeated


def test_split_does_not_depend_on_hash_randomisation() -> None:
    script = (
        "import json\n"
        "from mentor.data.io import Record\n"
        "from mentor.data.schemas import ClassificationRecord as C\n"
        "from mentor.data.split import split_records\n"
        "rs = [Record(i, C(text=f't {i % 37} x {i}', label=str(i % 3))) for i in range(1, 61)]\n"
        "parts = split_records(rs, seed=1, stratify_by='label')\n"
        "print(json.dumps({k: [r.line for r in v] for k, v in parts.items()}))\n"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    assert set(json.loads(outputs.pop())) == {"train", "validation", "test"}


def test_ratios_are_respected() -> None:
    parts = split_records(_records({"x": 200}), ratios=(0.7, 0.2, 0.1))
    assert {k: len(v) for k, v in parts.items()} == {"train": 140, "validation": 40, "test": 20}
    two = split_records(_records({"x": 9}), ratios=(0.5, 0.5))
    assert list(two) == ["train", "test"]
    assert sorted(len(v) for v in two.values()) == [4, 5]


def test_stratification_keeps_each_label_share_within_one_item_per_part() -> None:
    labels = {"big": 157, "mid": 61, "small": 23}
    ratios = (0.8, 0.1, 0.1)
    parts = split_records(_records(labels), ratios=ratios, seed=11, stratify_by="label")
    for (_name, records), ratio in zip(parts.items(), ratios, strict=True):
        counts = Counter(r.data.model_dump()["label"] for r in records)
        for label, total in labels.items():
            assert abs(counts[label] - total * ratio) <= 1, (label, counts[label], total * ratio)


def test_every_part_gets_a_label_that_has_enough_items() -> None:
    parts = split_records(_records({"common": 50, "rare": 3}), seed=0, stratify_by="label")
    for records in parts.values():
        assert any(r.data.model_dump()["label"] == "rare" for r in records)


def test_group_duplicates_keeps_copies_in_one_part() -> None:
    records = _records({"a": 40})
    copies = [
        Record(100 + i, ClassificationRecord(text="Example number 5 of class A!", label="a"))
        for i in range(5)
    ]
    parts = split_records(records + copies, seed=2)
    holders = [name for name, rs in parts.items() if any(r.line in (6, 100, 104) for r in rs)]
    assert len(holders) == 1  # line 6 and every copy of it landed in the same part
    loose = split_records(records + copies, seed=2, group_duplicates=False)
    assert sum(len(v) for v in loose.values()) == 45


def test_stratify_by_missing_field_names_the_line() -> None:
    with pytest.raises(ValueError, match="line 1: no field 'topic'"):
        split_records(_records({"a": 5}), stratify_by="topic")


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.5, 0.6), "sum to 1"),
        ((1.0,), "2 or 3"),
        ((0.5, 0.5, 0.0), "positive"),
        ((0.25,) * 4, "2 or 3"),
    ],
)
def test_bad_ratios_are_refused(ratios: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_ratios(ratios)


def test_allocate_largest_remainder() -> None:
    assert allocate(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert allocate(7, (0.8, 0.1, 0.1)) == [5, 1, 1]  # every part gets one
    assert allocate(2, (0.8, 0.1, 0.1)) == [2, 0, 0]  # too few to give each part one
    assert sum(allocate(1001, (0.7, 0.2, 0.1))) == 1001


def test_parts_keep_file_order() -> None:
    parts = split_records(_records({"a": 30}), seed=5)
    for records in parts.values():
        lines = [r.line for r in records]
        assert lines == sorted(lines)
