"""Sequence-level distillation data: the teacher's answers as chat JSONL with provenance,
resumable to the same file an uninterrupted run writes, refusing a changed setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import mentor.distill.sequence as sequence
from mentor.distill.sequence import GenerationSettings, LocalTeacher, generate_dataset, load_prompts
from mentor.models.engine import HFEngine
from mentor.testing import tiny_llama
from mentor.train.data import load_sft_examples

QUIET = Console(quiet=True)


def _prompts(path: Path, n: int = 7) -> Path:
    lines = []
    for i in range(n):
        if i % 3 == 0:
            lines.append({"question": f"what is item {i}?", "answer": f"item {i} is a thing"})
        elif i % 3 == 1:
            lines.append({"messages": [{"role": "user", "content": f"say {i} words"}]})
        else:
            lines.append(
                {
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": f"count to {i}"},
                        {"role": "assistant", "content": "1 2"},
                    ]
                }
            )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


SAMPLED = GenerationSettings(max_new_tokens=6, temperature=0.9, seed=3, batch_size=2, block=3)


def _generate(tmp_path: Path, out: Path, settings: GenerationSettings = SAMPLED, **kw):  # type: ignore[no-untyped-def]
    model, tok = tiny_llama(seed=0)
    return generate_dataset(
        LocalTeacher(HFEngine(model, tok), batch_size=settings.batch_size),
        _prompts(tmp_path / "prompts.jsonl"),
        out,
        settings,
        teacher_name="tiny",
        teacher_fingerprint=kw.get("fingerprint", "abc"),
        console=QUIET,
    )


def test_load_prompts_reads_chat_and_qa(tmp_path: Path) -> None:
    prompts = load_prompts(_prompts(tmp_path / "p.jsonl"))
    assert [p.reference for p in prompts[:3]] == ["item 0 is a thing", None, "1 2"]
    assert prompts[2].messages[-1] == {"role": "user", "content": "count to 2"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "system", "content": "x"}]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_prompts(bad)
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"prompt": "a", "prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"twice\.jsonl:1: duplicate key 'prompt'"):
        load_prompts(twice)


def test_answers_become_a_training_set_with_provenance(tmp_path: Path) -> None:
    out = tmp_path / "teacher.jsonl"
    stats = _generate(tmp_path, out)
    assert stats.prompts == 7 and stats.generated == 7 and stats.reused == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7 and records[0]["reference"] == "item 0 is a thing"
    assert records[1]["messages"][-1]["role"] == "assistant"
    provenance = json.loads(out.with_suffix(".provenance.json").read_text())
    assert provenance["teacher_fingerprint"] == "abc" and provenance["settings"]["seed"] == 3
    assert provenance["count"] == 7
    _, tok = tiny_llama()
    assert load_sft_examples(out, tok, 256)  # mentor finetune reads it as is


def test_an_interrupted_run_resumes_to_the_same_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    whole = tmp_path / "whole.jsonl"
    _generate(tmp_path, whole)
    calls = {"n": 0}
    real = sequence.generate_answers

    def dying(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # killed while the second block is generated
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(sequence, "generate_answers", dying)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path, out)
    assert len(out.read_text().splitlines()) == 3
    with out.open("a") as fh:
        fh.write('{"messages": [{"role": "us')  # a torn line from a kill mid-write
    monkeypatch.setattr(sequence, "generate_answers", real)
    stats = _generate(tmp_path, out)
    assert stats.reused == 3 and stats.generated == 4
    assert out.read_text() == whole.read_text()


def test_a_changed_setup_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _generate(tmp_path, out)
    with pytest.raises(ValueError, match="another teacher_fingerprint"):
        _generate(tmp_path, out, fingerprint="other")
    with pytest.raises(ValueError, match="another settings"):
        _generate(tmp_path, out, GenerationSettings(max_new_tokens=6, temperature=0.5))


def _answers_file(path: Path, answers: list[str]) -> Path:
    lines = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}
        for i, a in enumerate(answers)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_empty_teacher_answers_are_left_out_of_training_and_named(tmp_path: Path) -> None:
    path = _answers_file(tmp_path / "teacher_answers.jsonl", ["yes", "  \n", "no", ""])
    kept, empty = sequence.answered(path)
    assert empty == [2, 4]  # 1-based lines of the generated file
    assert kept != path and path.read_text().count("\n") == 4  # one line per prompt stays
    assert [
        r["messages"][-1]["content"] for r in map(json.loads, kept.read_text().splitlines())
    ] == [
        "yes",
        "no",
    ]
    full = _answers_file(tmp_path / "all.jsonl", ["a", "b"])
    assert sequence.answered(full) == (full, [])


def test_a_teacher_that_answers_nothing_is_a_clear_error(tmp_path: Path) -> None:
    path = _answers_file(tmp_path / "teacher_answers.jsonl", ["", " "])
    with pytest.raises(ValueError, match="every one of the 2 prompts is empty"):
        sequence.answered(path)
