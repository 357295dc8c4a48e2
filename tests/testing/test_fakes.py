"""Tests for the protocol fakes: HashEmbedder and ScriptedGenerator."""

from __future__ import annotations

import numpy as np
import pytest

from mentor.models.protocols import ChatMessage, Embedder, Generator, SamplingConfig, complete
from mentor.testing import HashEmbedder, ScriptedGenerator

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


# "world" lands in bucket 0 with sign -1; "hello" and "hello world" both land in bucket 7 with
# sign -1, so the raw vector is (-1, 0, ..., 0, -2) before normalising by sqrt(5).
_PINNED_HELLO_WORLD = np.array([-1, 0, 0, 0, 0, 0, 0, -2], dtype=np.float32) / np.sqrt(5)
