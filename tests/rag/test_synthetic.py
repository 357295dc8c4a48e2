"""Synthetic questions: the cleaning rules, deterministic sampling, and resuming from the cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from mentor.models.protocols import ChatMessage, SamplingConfig, complete
from mentor.rag.records import Chunk
from mentor.rag.synthetic import (
    SAMPLING,
    as_queries,
    clean_question,
    sample_chunks,
    synthetic_questions,
)
from mentor.testing import ScriptedGenerator

PASSAGE = "The standing desk ships within 5 days. It weighs 30 kilograms and has a warranty."


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("How long does the desk take to ship?", "How long does the desk take to ship?"),
        ("  1. How heavy is the desk?\nAnswer: 30 kg", "How heavy is the desk?"),
        ('Question: "What warranty comes with it?"', "What warranty comes with it?"),
        ("Sure! Here is a question:\nWhat does the desk weigh?", "What does the desk weigh?"),
        ("**Q:** How fast is the desk shipped? In 5 days.", "How fast is the desk shipped?"),
        ("- Does the desk come with a warranty?", "Does the desk come with a warranty?"),
    ],
)
def test_clean_question_keeps_one_plain_question(reply: str, question: str) -> None:
    assert clean_question(reply, PASSAGE) == (question, "")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("  \n \n", "empty"),
        ("Question: ?", "empty"),
        ("The desk weighs 30 kilograms.", "no question mark"),
        ("How heavy?", "too short"),
        ("Why " + "really " * 45 + "?", "too long"),
        ("It weighs 30 kilograms and has a warranty?", "copied"),
        ("What is the question that this passage answers?", "generic"),
    ],
)
def test_clean_question_rejects_with_a_reason(reply: str, reason: str) -> None:
    assert clean_question(reply, PASSAGE) == (None, reason)


def _chunks(n: int) -> list[Chunk]:
    text = "Policy {i}: refunds are issued within {i} business days after the item is returned."
    chunks = [
        Chunk(f"doc{i}.md#0", f"doc{i}.md", f"/d/doc{i}.md", f"Doc {i}", text.format(i=i), 0, 80)
        for i in range(n)
    ]
    return [*chunks, Chunk("short.md#0", "short.md", "/d/short.md", "", "Too short.", 0, 10)]


def _ask_about(messages: Sequence[ChatMessage]) -> str:
    """Replies with a question naming the policy number found in the prompt's passage."""
    prompt = messages[-1]["content"]
    number = prompt.split("Policy ")[1].split(":")[0]
    if number == "3":
        return "I cannot write a question about this."
    return f"Question: How long do refunds take under policy {number}?"


def test_questions_name_their_chunk_and_count_drops() -> None:
    generator = ScriptedGenerator(_ask_about)
    result = synthetic_questions(_chunks(5), generator)
    assert [q.chunk_id for q in result.questions] == [
        "doc0.md#0",
        "doc1.md#0",
        "doc2.md#0",
        "doc4.md#0",
    ]
    assert result.questions[1].question == "How long do refunds take under policy 1?"
    assert result.questions[1].doc_id == "doc1.md"
    assert result.dropped == {"no question mark": 1}
    assert (result.generated, result.reused) == (5, 0)  # the short chunk is never asked about
    call = generator.calls[0]
    assert call.config == SAMPLING
    assert [m["role"] for m in call.messages] == ["system", "user", "assistant", "user"]
    assert "<passage>\nDoc 0\nPolicy 0:" in call.messages[-1]["content"]
    queries, positives = as_queries(result.questions)
    assert positives[next(iter(queries))] == {"doc0.md#0"}


def test_sampling_is_deterministic_and_skips_short_chunks() -> None:
    chunks = _chunks(50)
    first = sample_chunks(chunks, 10, seed=1)
    assert first == sample_chunks(chunks, 10, seed=1)
    assert first != sample_chunks(chunks, 10, seed=2)
    assert len(first) == 10 and all(c.chunk_id != "short.md#0" for c in first)
    assert [chunks.index(c) for c in first] == sorted(chunks.index(c) for c in first)


def test_later_questions_about_a_chunk_see_the_earlier_ones() -> None:
    replies = iter(["What is the refund time for policy 1?", "Which items can be returned?"])
    generator = ScriptedGenerator(lambda _: next(replies))
    result = synthetic_questions(_chunks(2)[1:2], generator, per_chunk=2)
    assert len(result.questions) == 2
    assert "- What is the refund time for policy 1?" in generator.calls[1].messages[-1]["content"]


def test_duplicates_are_dropped() -> None:
    generator = ScriptedGenerator(lambda _: "How long do refunds usually take?")
    result = synthetic_questions(_chunks(3), generator)
    assert len(result.questions) == 1
    assert result.dropped == {"duplicate": 2}


def test_resume_asks_only_for_missing_chunks(tmp_path: Path) -> None:
    cache = tmp_path / "questions.jsonl"
    chunks = _chunks(6)
    # The first run dies after three replies, as if interrupted.
    dying = ScriptedGenerator(["What is refund policy zero about?"] * 3)
    with pytest.raises(RuntimeError, match="ran out"):
        synthetic_questions(chunks, dying, cache=cache)
    assert len(cache.read_text().splitlines()) == 3
    # A crash mid-write leaves a partial last line; it is dropped, not misread.
    with cache.open("a") as fh:
        fh.write('{"chunk_id": "doc3.md#0", "n": 0, "sha"')

    generator = ScriptedGenerator(_ask_about)
    result = synthetic_questions(chunks, generator, cache=cache)
    asked = [c.messages[-1]["content"].split("Policy ")[1][0] for c in generator.calls]
    assert asked == ["3", "4", "5"]
    assert (result.generated, result.reused) == (3, 3)
    # The first three chunks' cached replies were the same text: one question kept, two dups.
    assert [q.chunk_id for q in result.questions] == ["doc0.md#0", "doc4.md#0", "doc5.md#0"]
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["chunk_id"] for r in rows] == [f"doc{i}.md#0" for i in range(6)]

    again = ScriptedGenerator([])
    assert synthetic_questions(chunks, again, cache=cache).questions == result.questions
    assert again.calls == []


def test_an_edited_chunk_is_asked_again(tmp_path: Path) -> None:
    cache = tmp_path / "q.jsonl"
    chunks = _chunks(1)
    synthetic_questions(chunks, ScriptedGenerator(_ask_about), cache=cache)
    edited = [Chunk(**{**chunks[0].__dict__, "text": chunks[0].text + " Shipping is free."})]
    generator = ScriptedGenerator(_ask_about)
    synthetic_questions(edited, generator, cache=cache)
    assert len(generator.calls) == 1


class _Batched(ScriptedGenerator):
    """A ScriptedGenerator that also answers a batch at once, recording each batch's size."""

    def __init__(self) -> None:
        super().__init__(_ask_about)
        self.batches: list[int] = []

    def complete_many(
        self, conversations: Sequence[Sequence[ChatMessage]], config: SamplingConfig
    ) -> list[str]:
        self.batches.append(len(conversations))
        return [complete(self, c, config) for c in conversations]


def test_a_batching_generator_is_asked_a_group_at_a_time(tmp_path: Path) -> None:
    chunks = _chunks(20)
    one_by_one = synthetic_questions(chunks, ScriptedGenerator(_ask_about))
    batched = _Batched()
    cache = tmp_path / "q.jsonl"
    result = synthetic_questions(chunks, batched, cache=cache, group=8)
    assert batched.batches == [8, 8, 4]  # the short chunk is never asked about
    assert result.questions == one_by_one.questions
    assert len(cache.read_text().splitlines()) == 20
    # Cached chunks are left out of the next batch: only the new ones are asked.
    again = _Batched()
    synthetic_questions(_chunks(23), again, cache=cache, group=8)
    assert again.batches == [3]


def test_rounds_keep_each_chunks_questions_together() -> None:
    batched = _Batched()
    result = synthetic_questions(_chunks(3), batched, per_chunk=2, group=8)
    # Round one asks about all three chunks, round two again (listing round one's questions).
    assert batched.batches == [3, 3]
    assert [q.chunk_id for q in result.questions] == ["doc0.md#0", "doc1.md#0", "doc2.md#0"]
    assert "- How long do refunds take under policy 2?" in batched.calls[-1].messages[-1]["content"]
