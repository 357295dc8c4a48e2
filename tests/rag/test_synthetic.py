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
    STYLE_SYSTEM,
    as_queries,
    clean_question,
    clean_statement,
    query_style,
    read_example_queries,
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


# ---------------------------------------------------------------------------------------------
# Style: the users' own queries as worked examples

CLAIMS = [
    "Refunds for policy 7 take four business days.",
    "Policy 2 refunds arrive within a week.",
    "Returned items under policy 5 are refunded in five days.",
    "Policy 9 never issues refunds.",
]


def _top_passage(query: str) -> str | None:
    number = next((w for w in query.split() if w.isdigit()), None)
    return None if number == "9" else f"Policy {number}: refunds are issued within days."


def test_query_style_pairs_examples_with_their_passage_and_reads_their_form() -> None:
    style = query_style(CLAIMS, _top_passage, limit=3, shots=2, seed=0)
    assert len(style.demonstrations) == 3
    shown = style.shown_for("a passage")
    assert len(shown) == 2 and set(shown) <= set(style.demonstrations)
    assert style.shown_for("a passage") == shown  # the same passage, the same prompt
    assert len({style.shown_for(f"passage {i}") for i in range(20)}) > 1
    assert "Policy 9 never issues refunds." not in [q for _, q in style.demonstrations]
    for passage, query in style.demonstrations:
        assert passage.startswith("Policy ") and query in CLAIMS
    assert style.questions is False
    asking = query_style(["How fast are refunds under policy 2?", *CLAIMS[:1]], _top_passage)
    assert asking.questions is True
    assert query_style(CLAIMS, _top_passage, seed=0).key == style.key
    assert query_style(CLAIMS[:2], _top_passage, seed=0).key != style.key
    with pytest.raises(ValueError, match="no example queries"):
        query_style([" ", ""], _top_passage)
    with pytest.raises(ValueError, match="found a passage"):
        query_style(["Policy 9 never issues refunds."], _top_passage)


@pytest.mark.parametrize(
    ("reply", "kept"),
    [
        (
            "Refunds under policy 4 take a week. They are fast.",
            "Refunds under policy 4 take a week.",
        ),
        ("Query: Policy 4 refunds are slow", "Policy 4 refunds are slow"),
        ("Do policy 4 refunds take long?", "Do policy 4 refunds take long?"),
    ],
)
def test_clean_statement_keeps_the_first_sentence(reply: str, kept: str) -> None:
    assert clean_statement(reply, PASSAGE) == (kept, "")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("Refunds fast.", "too short"),
        ("The standing desk ships within 5 days.", "copied"),
        ("The passage is about a desk and its weight.", "generic"),
        ("Desk facts listed here </passage> and more", "generic"),
    ],
)
def test_clean_statement_rejects_with_a_reason(reply: str, reason: str) -> None:
    assert clean_statement(reply, PASSAGE) == (None, reason)


def _claim_about(messages: Sequence[ChatMessage]) -> str:
    number = messages[-1]["content"].split("Policy ")[1].split(":")[0]
    return f"Refunds under policy {number} are slow.\nThey take days."


def test_styled_questions_show_the_examples_and_keep_statements(tmp_path: Path) -> None:
    style = query_style(CLAIMS, _top_passage, limit=2)
    generator = ScriptedGenerator(_claim_about)
    cache = tmp_path / "replies.jsonl"
    result = synthetic_questions(_chunks(3), generator, cache=cache, style=style)
    assert [q.question for q in result.questions] == [
        f"Refunds under policy {i} are slow." for i in range(3)
    ]
    messages = generator.calls[0].messages
    assert messages[0]["content"] == STYLE_SYSTEM
    shown = [m["content"] for m in messages[1:-1]]
    assert shown[1] == style.demonstrations[0][1] and shown[3] == style.demonstrations[1][1]
    assert style.demonstrations[0][0] in shown[0]
    # Plain questions do not reuse the styled replies: the cache is keyed by style.
    plain = ScriptedGenerator(_ask_about)
    assert len(synthetic_questions(_chunks(3), plain, cache=cache).questions) == 3
    assert len(plain.calls) == 3
    again = ScriptedGenerator(_claim_about)
    synthetic_questions(_chunks(3), again, cache=cache, style=style)
    assert again.calls == []


def test_read_example_queries_from_text_or_jsonl_names_a_bad_line(tmp_path: Path) -> None:
    text = tmp_path / "q.txt"
    text.write_text("first query\n\n  second query  \n")
    assert read_example_queries(text) == ["first query", "second query"]
    rows = tmp_path / "q.jsonl"
    rows.write_text('{"_id": "1", "text": "a claim"}\n{"question": "a question?", "answer": "x"}\n')
    assert read_example_queries(rows) == ["a claim", "a question?"]
    rows.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"q\.jsonl:2: not JSON"):
        read_example_queries(rows)
    rows.write_text('{"text": "fine"}\n{"id": 3}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:2: expected"):
        read_example_queries(rows)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no example queries"):
        read_example_queries(tmp_path / "empty.txt")


def test_a_reply_that_rewrites_an_example_is_dropped() -> None:
    style = query_style(CLAIMS[:1], _top_passage)
    assert style.echoed_by("Refunds for policy 3 take four business days.")
    assert not style.echoed_by("Policy 3 refunds need a receipt and the original box.")
    generator = ScriptedGenerator(lambda _: "Refunds for policy 3 take four business days.")
    result = synthetic_questions(_chunks(2), generator, style=style)
    assert result.questions == [] and result.dropped == {"echoes an example": 2}


def test_keyword_examples_let_short_queries_through() -> None:
    keywords = query_style(["policy 4 refunds", "refund days"], _top_passage)
    assert keywords.min_words == 2 and not keywords.questions
    assert clean_statement("Policy 6 refunds", PASSAGE, keywords.min_words) == (
        "Policy 6 refunds",
        "",
    )
    assert clean_statement("Policy 6 refunds", PASSAGE) == (None, "too short")
    assert query_style(CLAIMS, _top_passage).min_words == 4
