"""The loop guard: the pure detector on hand-made sequences, then the engine stopping a tiny
model that loops, streamed and batched alike."""

from __future__ import annotations

import random

import pytest

from mentor.models.engine import Completion, HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.models.repetition import LoopGuard, find_loop
from mentor.testing.tiny_models import tiny_qwen2


def reference(tokens: list[int], ngram: int) -> tuple[int, int] | None:
    """Brute force: the first length t whose last ``ngram`` tokens occurred earlier."""
    for t in range(ngram + 1, len(tokens) + 1):
        tail = tokens[t - ngram : t]
        if any(tokens[s : s + ngram] == tail for s in range(t - ngram)):
            return t, t - ngram
    return None


def test_a_repeated_sentence_is_cut_back_to_one_copy() -> None:
    sentence = [10, 11, 12, 13, 14, 15]
    assert find_loop([1, 2, *sentence, *sentence, *sentence], ngram=4) == (12, 8)
    # kept: the prefix and one copy of the sentence
    assert find_loop([*sentence, *sentence], ngram=6) == (12, 6)


def test_no_loop_without_an_exact_copy_of_ngram_tokens() -> None:
    assert find_loop(list(range(50)), ngram=2) is None
    # the same phrase with one token changed each time is not a loop at this length
    assert find_loop([1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3, 7], ngram=4) is None
    assert find_loop([1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3, 7], ngram=3) == (7, 4)


def test_a_run_of_one_token_loops_at_ngram_plus_one() -> None:
    assert find_loop([7] * 20, ngram=5) == (6, 1)


def test_held_counts_the_copy_in_progress() -> None:
    guard = LoopGuard(ngram=4)
    held = []
    for token in [5, 6, 7, 8, 5, 6, 9]:
        guard.add(token)
        held.append(guard.held)
    assert held == [0, 0, 0, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="loop_ngram"):
        LoopGuard(ngram=1)


def test_matches_the_brute_force_reference_on_random_sequences() -> None:
    rng = random.Random(0)
    for _ in range(300):
        tokens = [rng.randrange(4) for _ in range(rng.randrange(1, 40))]
        ngram = rng.randrange(2, 7)
        assert find_loop(tokens, ngram) == reference(tokens, ngram)


PROMPT = [{"role": "user", "content": "hello there"}]  # tiny_qwen2 loops on it (period 10)


def test_the_engine_stops_a_looping_model_at_the_same_token_streamed_and_batched() -> None:
    model, tokenizer = tiny_qwen2()
    engine = HFEngine(model, tokenizer)
    prompt = engine.encode_chat(PROMPT)
    free = SamplingConfig(max_new_tokens=60, loop_ngram=0, logprobs=0)
    (unguarded,) = engine.generate([Request(prompt, free)])
    ids = [entry.chosen.token_id for entry in unguarded.logprobs]
    assert unguarded.finish_reason == "length"
    seen = find_loop(ids, 8)
    assert seen is not None
    read, keep = seen

    guarded = SamplingConfig(max_new_tokens=60, loop_ngram=8)
    streamed = Completion()
    text = "".join(engine.stream(Request(prompt, guarded), streamed))
    (batched,) = engine.generate([Request(prompt, guarded)])
    expected = tokenizer.decode(ids[:keep], skip_special_tokens=True)
    for done in (streamed, batched):
        assert done.finish_reason == "stop"
        assert done.completion_tokens == read
        assert done.loop_dropped == read - keep == 8
        assert done.text == expected
    assert text == expected  # the stream never showed the dropped copy


def test_the_guard_is_off_for_full_length_replies() -> None:
    model, tokenizer = tiny_qwen2()
    engine = HFEngine(model, tokenizer)
    prompt = engine.encode_chat(PROMPT)
    (done,) = engine.generate(
        [Request(prompt, SamplingConfig(max_new_tokens=60, loop_ngram=8, ignore_eos=True))]
    )
    assert done.finish_reason == "length" and done.loop_dropped == 0
