"""Sequence distillation from a hosted teacher: a scripted OpenAI-compatible server on localhost
writes the answers. A second generation run sends no request, an interrupted one resumes to the
same file without paying twice, and ``mentor distill --teacher-url`` runs end to end with the
report marking what a hosted teacher cannot give (logits, size) as not available."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mentor.cli import app
from mentor.distill.sequence import GenerationSettings, HostedTeacher, generate_dataset
from mentor.models.remote import EndpointSettings, RemoteGenerator, open_remote
from mentor.testing import save_model_folder, tiny_qwen2
from mentor.testing.fake_openai import FakeOpenAI

QUIET = Console(quiet=True)
runner = CliRunner()
COLOURS = ["red", "green", "blue", "amber"]


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def url(fake: FakeOpenAI) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


def _prompts(path: Path, n: int) -> Path:
    lines = [{"question": f"what colour is box {i}?", "answer": COLOURS[i % 4]} for i in range(n)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _teacher(url: str, cache: Path, **changes: Any) -> RemoteGenerator:
    settings = {"base_url": url, "model": "fake-teacher", "api_key_env": "", "cache": cache}
    return open_remote(EndpointSettings(**(settings | changes)))


def _generate(teacher: RemoteGenerator, prompts: Path, out: Path) -> Any:
    return generate_dataset(
        HostedTeacher(teacher),
        prompts,
        out,
        GenerationSettings(max_new_tokens=16, block=4),
        teacher_name=teacher.settings.label,
        teacher_fingerprint=f"endpoint:{teacher.settings.label}",
        console=QUIET,
    )


def test_a_second_generation_run_sends_no_request(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    prompts = _prompts(tmp_path / "prompts.jsonl", 10)
    stats = _generate(_teacher(url, tmp_path / "c.sqlite"), prompts, tmp_path / "a.jsonl")
    assert stats.generated == 10 and fake.count == 10
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert records[3]["messages"][-1]["content"].startswith("You asked:")
    assert records[3]["reference"] == "amber"
    provenance = json.loads((tmp_path / "a.provenance.json").read_text())
    assert provenance["teacher"] == f"fake-teacher @ {url}"

    again = _teacher(url, tmp_path / "c.sqlite")
    _generate(again, prompts, tmp_path / "b.jsonl")  # a new dataset file, the same requests
    assert fake.count == 10 and again.tally.cached == 10 and again.tally.requested == 0
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()


def test_an_interrupted_generation_resumes_without_paying_twice(
    fake: FakeOpenAI, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = _prompts(tmp_path / "prompts.jsonl", 10)
    whole = tmp_path / "whole.jsonl"
    _generate(_teacher(url, tmp_path / "whole.sqlite"), prompts, whole)
    assert fake.count == 10

    real = RemoteGenerator.answer
    answered = {"n": 0}

    def dying(self: RemoteGenerator, *args: Any, **kwargs: Any) -> Any:
        if answered["n"] == 6:  # killed in the second block, two answers into it
            raise KeyboardInterrupt
        answered["n"] += 1
        return real(self, *args, **kwargs)

    out = tmp_path / "cut.jsonl"
    monkeypatch.setattr(RemoteGenerator, "answer", dying)
    with pytest.raises(KeyboardInterrupt):
        _generate(_teacher(url, tmp_path / "cut.sqlite", concurrency=1), prompts, out)
    assert len(out.read_text().splitlines()) == 4  # the first block reached the file
    assert fake.count == 10 + 6  # the next two answers are in the response cache only
    monkeypatch.setattr(RemoteGenerator, "answer", real)
    resumed = _teacher(url, tmp_path / "cut.sqlite")
    stats = _generate(resumed, prompts, out)
    assert stats.reused == 4 and stats.generated == 6
    assert resumed.tally.cached == 2 and resumed.tally.requested == 4
    assert fake.count == 10 + 10  # each prompt paid for once
    assert out.read_text() == whole.read_text()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hosted")
    save_model_folder(
        *tiny_qwen2(seed=2, num_layers=1, hidden_size=32, intermediate_size=64), root / "student"
    )
    _prompts(root / "train.jsonl", 12)
    _prompts(root / "test.jsonl", 3)
    return root


def _args(ws: Path, url: str, out: Path, *extra: str) -> list[str]:
    return [
        "distill", "--teacher", "fake-teacher", "--teacher-url", url, "--teacher-key-env", "",
        "--student", str(ws / "student"), "--data", str(ws / "train.jsonl"),
        "--eval", str(ws / "test.jsonl"), "--out", str(out), "--batch-size", "4",
        "--epochs", "1", "--max-length", "64", "--precision", "fp32", "--device", "cpu",
        "--max-new-tokens", "8", "--similarity-embedder", "", *extra,
    ]  # fmt: skip


def test_distill_cli_with_a_hosted_teacher(
    fake: FakeOpenAI, url: str, workspace: Path, tmp_path: Path
) -> None:
    first = runner.invoke(app, _args(workspace, url, tmp_path / "a"))
    assert first.exit_code == 0, first.output
    out = tmp_path / "a"
    assert len((out / "teacher_answers.jsonl").read_text().splitlines()) == 12
    assert fake.count == 12 + 3  # the training prompts and the held-out questions
    assert {c.body["max_tokens"] for c in fake.calls} == {8, 128}  # generation, eval
    data = json.loads((out / "report.json").read_text())
    pair = data["teacher_student"]
    assert pair["teacher"]["name"] == f"fake-teacher @ {url}"
    assert pair["teacher"]["params"] is None and pair["param_ratio"] is None
    assert pair["size_ratio"] is None and pair["agreement"] is None
    assert pair["teacher"]["seconds_per_answer"] > 0 and pair["teacher"]["tokens_per_s"] > 0
    assert data["config"]["method"] == "sequence"  # the default with a hosted teacher
    assert data["config"]["teacher_endpoint"]["api_key_env"] == ""
    assert "15 requested" in data["teacher_endpoint_usage"]
    report = (out / "report.md").read_text()
    assert "| parameters | not available |" in report
    assert "not available (a hosted teacher gives no logits)" in report
    assert (out / "student" / "model.safetensors").exists()

    second = runner.invoke(app, _args(workspace, url, tmp_path / "b"))
    assert second.exit_code == 0, second.output
    assert fake.count == 15  # every answer came from the response cache
    usage = json.loads((tmp_path / "b" / "report.json").read_text())["teacher_endpoint_usage"]
    assert usage.startswith("15 answers from cache, 0 requested, 0 tokens paid")


def test_distill_cli_refuses_logits_and_a_missing_key(
    fake: FakeOpenAI, url: str, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logits = runner.invoke(app, _args(workspace, url, tmp_path / "x", "--method", "logits"))
    assert logits.exit_code == 1
    assert "no logits over the API" in logits.output and "--method sequence" in logits.output
    monkeypatch.delenv("MENTOR_TEST_TEACHER_KEY", raising=False)
    args = _args(workspace, url, tmp_path / "y")
    args[args.index("--teacher-key-env") + 1] = "MENTOR_TEST_TEACHER_KEY"
    missing = runner.invoke(app, args)
    assert missing.exit_code == 1 and "MENTOR_TEST_TEACHER_KEY is not set" in missing.output
    assert fake.count == 0
