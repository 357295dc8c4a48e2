"""Dataset preparation: PubMedQA's docs and seeded stratified split, its checks, and the example."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mentor.bakeoff import datasets
from mentor.bakeoff.config import load_bakeoff_config
from mentor.bakeoff.datasets import (
    PUBMEDQA_LABELS,
    SPLITS,
    PreparedData,
    prepare,
    prepare_pubmedqa,
    references,
    stratified_split,
)
from mentor.rag.loaders import iter_documents
from mentor.rag.records import Document

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "pubmedqa" / "pqal_train.json"
EXAMPLE = REPO / "examples" / "bakeoff" / "pubmedqa.yaml"
SHARES = (0.6, 0.1, 0.3)


def raw_item(n: int, answer: str) -> dict[str, Any]:
    return {
        "QUESTION": f"Does treatment {n} reduce symptom {n}?",
        "CONTEXTS": [f"Background of study {n}.", f"Results of study {n}: p = 0.0{n % 10}."],
        "LABELS": ["BACKGROUND", "RESULTS"],
        "MESHES": ["Humans"],
        "YEAR": "2001",
        "reasoning_required_pred": answer,
        "reasoning_free_pred": answer,
        "final_decision": answer,
        "LONG_ANSWER": f"CONCLUSION-{n}: the answer is {answer}.",
    }


def raw_items(counts: dict[str, int] | None = None) -> dict[str, Any]:
    """30 items by default: 15 yes, 10 no, 5 maybe, keyed by made-up PubMed ids."""
    counts = counts or {"yes": 15, "no": 10, "maybe": 5}
    answers = [a for a, k in counts.items() for _ in range(k)]
    return {str(1000 + 7 * i): raw_item(i, a) for i, a in enumerate(answers)}


def write_raw(path: Path, items: object) -> Path:
    path.write_text(json.dumps(items))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def split_ids(prepared: PreparedData) -> dict[str, list[str]]:
    return {s: [r["id"] for r in read_jsonl(getattr(prepared, s))] for s in SPLITS}


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "pqal_train.json", raw_items())


def test_writes_docs_and_qa_records(source: Path, tmp_path: Path) -> None:
    prepared = prepare_pubmedqa(source, tmp_path / "out")
    assert prepared.counts == {"docs": 30, "train": 18, "validation": 3, "test": 9, "skipped": 0}
    assert prepared.skipped == ()
    record = read_jsonl(prepared.test)[0]
    assert set(record) == {"id", "question", "answer", "doc_ids"}
    assert record["doc_ids"] == [record["id"]]
    assert record["answer"] in PUBMEDQA_LABELS
    doc = (prepared.docs / f"{record['id']}.md").read_text()
    assert doc.startswith(f"# PubMed {record['id']}\n\n**BACKGROUND** Background of study")
    assert "**RESULTS** Results of study" in doc
    assert sorted(p.stem for p in prepared.docs.iterdir()) == sorted(raw_items())


def test_docs_leave_out_the_conclusion_and_the_answer(source: Path, tmp_path: Path) -> None:
    prepared = prepare_pubmedqa(source, tmp_path / "out")
    for path in prepared.docs.iterdir():
        text = path.read_text()
        assert "CONCLUSION" not in text and "the answer is" not in text


def test_docs_are_read_by_the_rag_loader(source: Path, tmp_path: Path) -> None:
    prepared = prepare_pubmedqa(source, tmp_path / "out")
    docs = list(iter_documents([prepared.docs]))
    assert len(docs) == 30 and all(isinstance(d, Document) for d in docs)
    for doc in docs:
        assert isinstance(doc, Document)
        assert doc.title == f"PubMed {Path(doc.doc_id).stem}"


def test_split_is_stratified_and_disjoint(source: Path, tmp_path: Path) -> None:
    prepared = prepare_pubmedqa(source, tmp_path / "out", seed=3)
    ids = split_ids(prepared)
    every = [i for s in SPLITS for i in ids[s]]
    assert sorted(every) == sorted(raw_items()) and len(set(every)) == len(every)
    answer = {k: v["final_decision"] for k, v in raw_items().items()}
    sizes = Counter(answer.values())
    for share, split in zip(SHARES, SPLITS, strict=True):
        by_label = Counter(answer[i] for i in ids[split])
        for label in PUBMEDQA_LABELS:
            assert abs(by_label[label] - share * sizes[label]) < 2, (split, label)


@pytest.mark.parametrize("seed", range(20))
def test_stratified_split_bounds(seed: int) -> None:
    sizes = {"a": 7 + seed, "b": 3 * seed % 11, "c": 1 + seed % 4}
    ids = {label: [f"{label}{i}" for i in range(n)] for label, n in sizes.items()}
    shares = (0.5, 0.2, 0.3)
    out = stratified_split(ids, shares, seed)
    total = sum(sizes.values())
    for share, split in zip(shares, SPLITS, strict=True):
        assert abs(len(out[split]) - share * total) < 1
        for members in ids.values():
            count = len(set(out[split]) & set(members))
            assert abs(count - share * len(members)) < 2


def test_same_seed_same_bytes_other_seed_other_split(source: Path, tmp_path: Path) -> None:
    one = prepare_pubmedqa(source, tmp_path / "one", seed=1)
    two = prepare_pubmedqa(source, tmp_path / "two", seed=1)
    other = prepare_pubmedqa(source, tmp_path / "other", seed=2)
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")
    assert split_ids(one) == split_ids(two)
    assert split_ids(one)["test"] != split_ids(other)["test"]
    assert other.counts == one.counts


def test_prepared_folder_is_reused(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = prepare_pubmedqa(source, out, seed=5)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def no_reading(path: Path) -> None:
        raise AssertionError("read the source again")

    monkeypatch.setattr(datasets, "read_pubmedqa", no_reading)
    again = prepare(kind="pubmedqa", source=source, out=out, seed=5)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_other_seed_changed_source_or_damaged_files_are_rewritten(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = split_ids(prepare_pubmedqa(source, out, seed=0))
    reference = snapshot(out)

    assert split_ids(prepare_pubmedqa(source, out, seed=9))["test"] != first["test"]
    assert json.loads((out / "prepared.json").read_text())["seed"] == 9
    prepare_pubmedqa(source, out, seed=0)
    assert snapshot(out) == reference

    (out / "test.jsonl").write_text("")
    prepare_pubmedqa(source, out, seed=0)
    assert snapshot(out) == reference

    next(out.joinpath("docs").iterdir()).unlink()
    prepare_pubmedqa(source, out, seed=0)
    assert snapshot(out) == reference

    fewer = raw_items({"yes": 12, "no": 10, "maybe": 5})
    write_raw(source, fewer)
    assert prepare_pubmedqa(source, out, seed=0).counts["docs"] == 27
    assert len(list((out / "docs").iterdir())) == 27


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"QUESTION": ""}, "QUESTION"),
        ({"CONTEXTS": "one string"}, "CONTEXTS"),
        ({"CONTEXTS": []}, "CONTEXTS"),
        ({"LABELS": ["BACKGROUND"]}, "LABELS"),
        ({"final_decision": "perhaps"}, "final_decision"),
        ({"final_decision": None}, "final_decision"),
    ],
)
def test_a_bad_item_is_reported_and_skipped(
    tmp_path: Path, change: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    items = raw_items()
    bad = next(iter(items))
    items[bad] = {**items[bad], **change}
    source = write_raw(tmp_path / "raw.json", items)
    prepared = prepare_pubmedqa(source, tmp_path / "out")
    assert prepared.counts["docs"] == 29 and prepared.counts["skipped"] == 1
    (problem,) = prepared.skipped
    assert str(source) in problem and f"PubMed {bad}" in problem and field in problem
    assert problem in caplog.text
    assert bad not in {i for ids in split_ids(prepared).values() for i in ids}
    assert prepare_pubmedqa(source, tmp_path / "out").skipped == prepared.skipped  # reused


def test_non_digit_ids_and_non_objects_are_skipped(tmp_path: Path) -> None:
    items: dict[str, Any] = {**raw_items(), "../escape": raw_item(1, "yes"), "42": ["no"]}
    prepared = prepare_pubmedqa(write_raw(tmp_path / "raw.json", items), tmp_path / "out")
    assert prepared.counts["skipped"] == 2
    assert any("PubMed ../escape: id" in p for p in prepared.skipped)
    assert not (tmp_path / "escape.md").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ("{}", "no usable PubMedQA item"),
        ('{"1": {"QUESTION": "q"}}', "no usable PubMedQA item"),
    ],
)
def test_unusable_files_raise_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "raw.json"
    source.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        prepare_pubmedqa(source, tmp_path / "out")
    assert str(source) in str(info.value)
    assert not (tmp_path / "out" / "prepared.json").exists()


def test_missing_file_and_bad_shares(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        prepare_pubmedqa(tmp_path / "absent.json", tmp_path / "out")
    for shares in [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (0.7, 0.3, 0.0), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="shares"):
            prepare_pubmedqa(source, tmp_path / "out", shares=shares)


def test_too_few_items_for_a_test_split(tmp_path: Path) -> None:
    source = write_raw(tmp_path / "raw.json", raw_items({"yes": 1}))
    with pytest.raises(ValueError, match="no test questions"):
        prepare_pubmedqa(source, tmp_path / "out")


def test_registry_and_references(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known: pubmedqa"):
        prepare("squad", source, tmp_path / "out", 0)
    with pytest.raises(ValueError, match="known: pubmedqa"):
        references("squad")
    assert references(None) == []
    figures = {r.name: r.value for r in references("pubmedqa")}
    assert sorted(figures.values()) == [0.552, 0.681, 0.780]
    assert all(r.metric == "accuracy" and "Jin et al." in r.source for r in references("pubmedqa"))


@pytest.mark.parametrize("profile", [None, "quick", "full"])
def test_example_config_loads(profile: str | None) -> None:
    config = load_bakeoff_config(EXAMPLE, profile=profile)
    assert config.data.prepare == "pubmedqa"
    assert config.data.labels == ["yes", "no", "maybe"]
    assert config.primary == "macro_f1"
    assert config.data.source is not None
    assert config.data.source.resolve() == REAL.resolve()
    names = [arm.name for arm in config.arms]
    assert names[0] == "closed-book" and "rag" in names
    if profile == "quick":
        assert names == ["closed-book", "rag", "lora", "lora+rag"]
        assert config.answer.test_limit is not None and config.training["lora"].epochs == 2
    else:
        assert len(names) == 6 and set(config.trained()) == {"lora", "distilled"}
    assert config.models.teacher == ("qwen2.5-coder-0.5b-instruct" if profile == "full" else None)


@pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} is not here")
def test_real_pqal_file(tmp_path: Path) -> None:
    prepared = prepare_pubmedqa(REAL, tmp_path / "out")
    assert prepared.counts == {
        "docs": 500,
        "train": 300,
        "validation": 50,
        "test": 150,
        "skipped": 0,
    }
    ids = split_ids(prepared)
    assert sum(len(v) for v in ids.values()) == len(set().union(*map(set, ids.values()))) == 500
    raw = json.loads(REAL.read_text())
    sizes = Counter(item["final_decision"] for item in raw.values())
    for share, split in zip(SHARES, SPLITS, strict=True):
        by_label = Counter(raw[i]["final_decision"] for i in ids[split])
        for label in PUBMEDQA_LABELS:
            assert abs(by_label[label] - share * sizes[label]) < 2, (split, label)
    for pmid, item in raw.items():
        doc = (prepared.docs / f"{pmid}.md").read_text()
        assert item["LONG_ANSWER"].strip() not in doc
