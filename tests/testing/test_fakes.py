"""Tests for the protocol fakes: HashEmbedder, ScriptedGenerator, MemoryStore, KeywordReranker.

The store's whole contract is checked by tests/rag/test_store_conformance.py; here are the
fake's own promises: input checks, exact cosine for vectors of any length, ties in row order.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mentor.models.protocols import ChatMessage, Embedder, Generator, SamplingConfig, complete
from mentor.rag.records import Chunk
from mentor.rag.retrieve import Reranker
from mentor.rag.store import VectorStore
from mentor.testing import HashEmbedder, KeywordReranker, MemoryStore, ScriptedGenerator

ASK: list[ChatMessage] = [{"role": "user", "content": "What is the refund window?"}]
GREEDY = SamplingConfig()


# --- HashEmbedder -----------------------------------------------------------------------------


def test_hash_embedder_satisfies_the_protocol() -> None:
    embedder = HashEmbedder()
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim) == ("hash", 64)
    assert HashEmbedder(dim=16, name="h16").dim == 16


def test_hash_embedder_shape_dtype_and_unit_rows() -> None:
    vectors = HashEmbedder(dim=32).embed(["refund policy", "Coffee grinder", "", "!!!"] * 10)
    assert vectors.shape == (40, 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert HashEmbedder().embed([]).shape == (0, 64)


def test_hash_embedder_is_deterministic_across_instances_and_processes() -> None:
    texts = ["The warranty lasts 24 months.", "refunds take five days"]
    first = HashEmbedder().embed(texts)
    np.testing.assert_array_equal(first, HashEmbedder().embed(texts))
    np.testing.assert_array_equal(first, HashEmbedder().embed(texts, batch_size=1))
    # Pinned values: blake2b gives the same buckets in every process and on every platform,
    # so vectors indexed yesterday still match queries embedded today.
    pinned = HashEmbedder(dim=8).embed(["hello world"])[0]
    np.testing.assert_allclose(pinned, _PINNED_HELLO_WORLD, atol=1e-6)


def test_hash_embedder_empty_text_is_a_fixed_unit_vector() -> None:
    empty = HashEmbedder(dim=8).embed(["", "   ", "?!"])
    expected = np.eye(8, dtype=np.float32)[0]
    for row in empty:
        np.testing.assert_array_equal(row, expected)


def test_hash_embedder_is_case_insensitive_and_word_based() -> None:
    a, b = HashEmbedder().embed(["Refund Policy!", "refund, policy"])
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_hash_embedder_shared_words_mean_higher_cosine() -> None:
    query, near, partial, far = HashEmbedder(dim=256).embed(
        [
            "how long do refunds take",
            "refunds take five business days",
            "refunds are rare",
            "the coffee grinder weighs two kilograms",
        ]
    )
    assert query @ near > query @ partial > query @ far
    # Bigrams count too: the same words in the same order beat the same words shuffled.
    ordered, same, shuffled = HashEmbedder(dim=256).embed(
        ["reset the router", "please reset the router", "the router reset please"]
    )
    assert ordered @ same > ordered @ shuffled


def test_hash_embedder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(dim=0)
    with pytest.raises(ValueError, match="batch_size"):
        HashEmbedder().embed(["x"], batch_size=0)
    with pytest.raises(TypeError, match="sequence of texts"):
        HashEmbedder().embed("a bare string")


# --- ScriptedGenerator ------------------------------------------------------------------------


def test_scripted_generator_satisfies_the_protocol() -> None:
    generator = ScriptedGenerator(["hi"])
    assert isinstance(generator, Generator)
    assert generator.name == "scripted"


def test_scripted_generator_replays_the_queue_in_order() -> None:
    generator = ScriptedGenerator(["first reply", "second reply"], name="gen")
    assert generator.remaining == 2
    assert complete(generator, ASK, GREEDY) == "first reply"
    assert complete(generator, ASK, GREEDY) == "second reply"
    assert generator.remaining == 0
    generator.push("third")
    assert complete(generator, ASK, GREEDY) == "third"


def test_scripted_generator_empty_queue_raises_a_clear_error() -> None:
    generator = ScriptedGenerator(["only one"], name="judge")
    complete(generator, ASK, GREEDY)
    with pytest.raises(RuntimeError, match=r"'judge' ran out of scripted replies.*call 2"):
        generator.stream(ASK, GREEDY)
    assert len(generator.calls) == 1


def test_scripted_generator_single_string_is_one_reply() -> None:
    generator = ScriptedGenerator("just this")
    assert complete(generator, ASK, GREEDY) == "just this"
    assert generator.remaining == 0


def test_scripted_generator_function_mode() -> None:
    def answer(messages: object) -> str:
        assert isinstance(messages, list)
        return f"You said: {messages[-1]['content']}"

    generator = ScriptedGenerator(answer)
    assert complete(generator, ASK, GREEDY) == "You said: What is the refund window?"
    assert complete(generator, ASK, GREEDY) == "You said: What is the refund window?"
    assert generator.remaining == 0
    with pytest.raises(TypeError, match="function"):
        generator.push("queued")


def test_scripted_generator_streams_word_by_word() -> None:
    reply = "Refunds take  five\ndays. "
    assert list(ScriptedGenerator([reply]).stream(ASK, GREEDY)) == [
        "Refunds",
        " take",
        "  five",
        "\ndays.",
        " ",
    ]
    assert list(ScriptedGenerator([reply], chunk="char").stream(ASK, GREEDY)) == list(reply)
    assert list(ScriptedGenerator([reply], chunk="whole").stream(ASK, GREEDY)) == [reply]
    assert list(ScriptedGenerator([""]).stream(ASK, GREEDY)) == []
    with pytest.raises(ValueError, match="chunk"):
        ScriptedGenerator([reply], chunk="token")  # type: ignore[arg-type]


def test_scripted_generator_respects_max_new_tokens() -> None:
    reply = "one two three four five"
    generator = ScriptedGenerator([reply] * 4)
    assert complete(generator, ASK, SamplingConfig(max_new_tokens=3)) == "one two three"
    assert complete(generator, ASK, SamplingConfig(max_new_tokens=5)) == reply
    assert complete(generator, ASK, SamplingConfig(max_new_tokens=50)) == reply
    assert complete(generator, ASK, SamplingConfig(max_new_tokens=0)) == ""


def test_scripted_generator_cuts_before_the_first_stop_string() -> None:
    reply = "Answer: 30 days.\nQuestion: next?\nEND"
    generator = ScriptedGenerator([reply] * 4)
    assert complete(generator, ASK, SamplingConfig(stop=("\nQuestion",))) == "Answer: 30 days."
    assert complete(generator, ASK, SamplingConfig(stop=("END", "30"))) == "Answer: "
    assert complete(generator, ASK, SamplingConfig(stop=("absent",))) == reply
    # A stop string beyond the word budget is never reached.
    assert complete(generator, ASK, SamplingConfig(max_new_tokens=2, stop=("END",))) == "Answer: 30"


def test_scripted_generator_records_calls() -> None:
    generator = ScriptedGenerator(["a b c", "d"])
    config = SamplingConfig(max_new_tokens=2, temperature=0.7, seed=1)
    messages: list[ChatMessage] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    complete(generator, messages, config)
    messages[1]["content"] = "changed later"
    generator.stream(ASK, GREEDY)  # recorded even though never iterated
    first, second = generator.calls
    assert first.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    )
    assert first.config is config
    assert first.reply == "a b"
    assert second.messages == tuple(ASK)
    assert second.reply == "d"


# --- MemoryStore -----------------------------------------------------------------------------


def _chunks(*ids: str) -> list[Chunk]:
    return [Chunk(i, i.split("#")[0], f"/{i}", "T", f"text {i}", 0, 6) for i in ids]


def test_memory_store_satisfies_the_protocol_and_holds_what_it_was_given() -> None:
    chunks = _chunks("a#0", "a#1", "b#0")
    store = MemoryStore(chunks, np.eye(3, dtype=np.float32))
    assert isinstance(store, VectorStore)
    assert len(store) == 3 and store.chunks() == chunks and store.dim == 3
    assert [store.row_of(c.chunk_id) for c in chunks] == [0, 1, 2]
    assert repr(store) == "MemoryStore(3 chunks, dim=3)"


def test_memory_store_scores_are_exact_cosines_whatever_the_lengths() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0], [0.0, 0.0]])
    store = MemoryStore(_chunks("a#0", "b#0", "c#0", "zero#0"), vectors)
    found = store.search(np.array([6.0, 0.0]), 4)  # a query of any length, too
    assert [row for row, _ in found] == [2, 0, 1, 3]
    # cos 45 deg, 3/5, then cos 90 deg and a zero vector's 0 (no division by zero), in row order
    assert [s for _, s in found] == pytest.approx([np.sqrt(0.5), 0.6, 0.0, 0.0])


def test_memory_store_breaks_ties_by_row() -> None:
    store = MemoryStore(_chunks("a#0", "b#0", "c#0", "d#0"), [[0, 1], [1, 0], [0, 1], [1, 0]])
    assert [row for row, _ in store.search(np.array([1.0, 0.0]), 4)] == [1, 3, 0, 2]
    assert [row for row, _ in store.search(np.array([1.0, 0.0]), 1)] == [1]


def test_memory_store_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one row to each of 2 chunks"):
        MemoryStore(_chunks("a#0", "b#0"), np.eye(3))
    with pytest.raises(ValueError, match="one row to each"):
        MemoryStore(_chunks("a#0"), np.ones(3))
    with pytest.raises(ValueError, match="chunk ids repeat"):
        MemoryStore(_chunks("a#0", "a#0"), np.eye(2))
    store = MemoryStore(_chunks("a#0"), np.ones((1, 3)))
    with pytest.raises(ValueError, match="3-d"):
        store.search(np.ones(4), 1)
    with pytest.raises(KeyError):
        store.row_of("b#0")


# --- KeywordReranker ------------------------------------------------------------------------


def test_keyword_reranker_counts_distinct_shared_words() -> None:
    reranker = KeywordReranker()
    assert isinstance(reranker, Reranker) and reranker.name == "keyword"
    passages = ["Refunds take five days.", "refund REFUNDS take", "nothing here", ""]
    assert reranker.score("How long do refunds take?", passages) == [2.0, 2.0, 0.0, 0.0]
    assert reranker.score("anything", []) == []
    first, second = reranker.calls
    assert first.query == "How long do refunds take?"
    assert first.passages == tuple(passages) and first.scores == (2.0, 2.0, 0.0, 0.0)
    assert second.passages == () and second.scores == ()


def test_keyword_reranker_with_keywords_ignores_the_query() -> None:
    reranker = KeywordReranker(["AES-256", "Encrypted"], name="crypto")
    scores = reranker.score("boards", ["Data is encrypted with AES-256.", "Boards and guests."])
    assert scores == [3.0, 0.0]  # aes, 256, encrypted
    assert reranker.keywords == {"aes", "256", "encrypted"} and reranker.name == "crypto"
    assert repr(reranker) == "KeywordReranker(['256', 'aes', 'encrypted'], calls=1)"
    with pytest.raises(TypeError, match="wrap a single word"):
        KeywordReranker("AES")


# --- no torch --------------------------------------------------------------------------------


def test_the_fakes_run_without_torch() -> None:
    script = (
        "import sys, numpy as np\n"
        "from mentor.testing import MemoryStore, KeywordReranker, HashEmbedder\n"
        "from mentor.rag.records import Chunk\n"
        "store = MemoryStore([Chunk('a#0', 'a', '/a', '', 'x', 0, 1)], np.ones((1, 2)))\n"
        "store.search(np.ones(2), 1, {'source': '*a'})\n"
        "KeywordReranker().score('x', ['x'])\n"
        "HashEmbedder().embed(['x'])\n"
        "print(sorted(m for m in ('torch', 'lancedb', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# "world" lands in bucket 0 with sign -1; "hello" and "hello world" both land in bucket 7 with
# sign -1, so the raw vector is (-1, 0, ..., 0, -2) before normalising by sqrt(5).
_PINNED_HELLO_WORLD = np.array([-1, 0, 0, 0, 0, 0, 0, -2], dtype=np.float32) / np.sqrt(5)
