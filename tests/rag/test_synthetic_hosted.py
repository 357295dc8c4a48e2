"""Synthetic questions written by a hosted model: a scripted OpenAI-compatible server on localhost
answers through the real ``openai`` client, a rerun sends no request, and
``mentor rag train-reranker --model-url`` runs end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.models.protocols import ChatMessage
from mentor.models.remote import EndpointSettings, open_remote
from mentor.rag.records import Chunk
from mentor.rag.synthetic import synthetic_questions
from mentor.testing import tiny_sentence_transformer_folder
from mentor.testing.fake_openai import FakeOpenAI

runner = CliRunner()

TOPICS = {
    "billing.md": "Invoices are emailed on the first day of each month to the account owner, "
    "and every invoice lists the seats, the plan and the taxes that apply to the account.",
    "refunds.md": "Refunds are issued within fourteen days of a cancellation request, and the "
    "money goes back to the card that paid for the plan in the first place.",
    "export.md": "Boards export to CSV from the board menu; comments and attachments are not "
    "part of the export, and large boards arrive by email as a zipped file.",
    "security.md": "All customer data is encrypted at rest with AES-256, and an admin can "
    "require two-factor authentication for every member of the workspace.",
}


def ask_about_the_passage(messages: Sequence[ChatMessage]) -> str:
    """A question naming three words near the end of the passage in the last message."""
    passage = messages[-1]["content"].split("<passage>\n")[-1].split("\n</passage>")[0]
    words = re.findall(r"[A-Za-z0-9-]+", passage)[-12:-9]
    return f"Question: What does the guide say about {' '.join(words).lower()} for customers?"


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI(ask_about_the_passage, model="writer")


@pytest.fixture
def url(fake: FakeOpenAI) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


def _chunks() -> list[Chunk]:
    return [
        Chunk(f"{name}#0", name, f"/d/{name}", name.removesuffix(".md"), text, 0, len(text))
        for name, text in TOPICS.items()
    ]


def test_questions_from_a_hosted_writer_are_paid_for_once(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    settings = EndpointSettings(
        base_url=url, model="writer", api_key_env="", cache=tmp_path / "responses.sqlite"
    )
    writer = open_remote(settings)
    first = synthetic_questions(_chunks(), writer, cache=tmp_path / "q1.jsonl")
    assert len(first.questions) == 4 and first.dropped == {} and fake.count == 4
    assert first.questions[0].question.startswith("What does the guide say about")
    assert fake.calls[0].body["max_tokens"] == 48 and fake.calls[0].body["temperature"] == 0.0
    # A fresh question cache (another run folder): the response cache still has every answer.
    again = open_remote(settings)
    second = synthetic_questions(_chunks(), again, cache=tmp_path / "q2.jsonl")
    assert [q.question for q in second.questions] == [q.question for q in first.questions]
    assert fake.count == 4 and again.tally.cached == 4


def test_train_reranker_with_a_hosted_writer(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TOPICS.items():
        (docs / name).write_text(f"# {name.removesuffix('.md').title()}\n\n{text}\n")
    encoder = tiny_sentence_transformer_folder(tmp_path / "tiny-st")
    idx = str(tmp_path / "idx")
    built = runner.invoke(app, ["rag", "index", str(docs), "--index", idx, "--embedder",
                                str(encoder), "--device", "cpu", "--no-tune"])  # fmt: skip
    assert built.exit_code == 0, built.output
    args = ["rag", "train-reranker", "--index", idx, "--model", "writer", "--model-url", url,
            "--model-key-env", "", "--synthetic", "4", "--base", str(encoder), "--negatives",
            "2", "--epochs", "1", "--batch-size", "2", "--validation-share", "0",
            "--device", "cpu"]  # fmt: skip
    trained = runner.invoke(app, [*args, "--out", str(tmp_path / "rr")])
    assert trained.exit_code == 0, trained.output
    assert "4 synthetic questions kept" in trained.output and fake.count == 4
    assert "0 answers from cache, 4 requested" in trained.output
    assert (tmp_path / "rr" / "model.safetensors").exists()
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "rr2")])
    assert again.exit_code == 0, again.output
    assert fake.count == 4 and "4 answers from cache, 0 requested" in again.output


def test_train_reranker_names_a_missing_key(url: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(TOPICS["billing.md"])
    encoder = tiny_sentence_transformer_folder(tmp_path / "tiny-st")
    idx = str(tmp_path / "idx")
    assert runner.invoke(app, ["rag", "index", str(docs), "--index", idx, "--embedder",
                               str(encoder), "--no-tune"]).exit_code == 0  # fmt: skip
    result = runner.invoke(app, ["rag", "train-reranker", "--index", idx, "--out",
                                 str(tmp_path / "rr"), "--model", "writer", "--model-url", url,
                                 "--model-key-env", "MENTOR_TEST_NO_SUCH_KEY"])  # fmt: skip
    assert result.exit_code == 1 and "MENTOR_TEST_NO_SUCH_KEY is not set" in result.output
