"""The one decode loop (HFEngine) against transformers' generate, and its pure parts."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch

from mentor.models.engine import (
    Completion,
    Detokenizer,
    HFEngine,
    Request,
    StopCutter,
    TextEngine,
    pick_token,
    token_bytes,
    top_logprobs,
)
from mentor.models.protocols import SamplingConfig
from mentor.testing.engines import ScriptedEngine
from mentor.testing.tiny_models import tiny_llama, tiny_qwen2

GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def test_greedy_stream_equals_generate() -> None:
    for build in (tiny_llama, tiny_qwen2):
        model, tokenizer = build()
        engine = HFEngine(model, tokenizer, name="tiny")
        prompt = engine.encode_chat([{"role": "user", "content": "hello there"}])
        result = Completion()
        raw = SamplingConfig(max_new_tokens=20, loop_ngram=0)  # transformers' decoding, no guard
        text = "".join(engine.stream(Request(prompt, raw), result))
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                             **GREEDY)  # fmt: skip
        expected = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        assert text == expected == result.text
        assert result.prompt_tokens == len(prompt)
        assert result.completion_tokens == out.shape[1] - len(prompt) - (
            1 if result.finish_reason == "stop" else 0
        )


def test_a_left_padded_batch_equals_generate_row_by_row() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    prompts = [engine.encode_text(t) for t in ("hi", "a much longer prompt than the first", "ok")]
    done = engine.generate([Request(p, SamplingConfig(max_new_tokens=9)) for p in prompts])
    for prompt, completion in zip(prompts, done, strict=True):
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=9,
                             **GREEDY)  # fmt: skip
        assert completion.text == tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)


def test_rows_keep_their_own_settings_in_one_batch() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    prompt = engine.encode_text("hello")
    short, fixed, sampled = engine.generate(
        [
            Request(prompt, SamplingConfig(max_new_tokens=3)),
            Request(prompt, SamplingConfig(max_new_tokens=12, ignore_eos=True)),
            Request(prompt, SamplingConfig(max_new_tokens=8, temperature=1.0, seed=5)),
        ]
    )
    assert short.completion_tokens <= 3
    assert fixed.completion_tokens == 12 and fixed.finish_reason == "length"
    again = engine.generate([Request(prompt, SamplingConfig(max_new_tokens=8, temperature=1.0,
                                                            seed=5))])[0]  # fmt: skip
    assert again.text == sampled.text  # a row's seed is its own, whatever shares its batch


def test_generate_keeps_the_order_and_checks_its_input() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    prompts = [engine.encode_text("x " * n) for n in (9, 1, 5)]
    sampling = SamplingConfig(max_new_tokens=5)
    together = engine.generate([Request(p, sampling) for p in prompts], batch_size=2)
    alone = [engine.generate([Request(p, sampling)])[0] for p in prompts]
    assert [c.text for c in together] == [c.text for c in alone]
    with pytest.raises(ValueError, match="batch_size"):
        engine.generate([Request(prompts[0])], batch_size=0)
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([Request([])])


def test_detokenizer_never_splits_a_character() -> None:
    _, tokenizer = tiny_llama()
    text = "café → naïve 東京 ok"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)


def test_stop_cutter() -> None:
    cutter = StopCutter(["END", "\n\n"])
    out = "".join(cutter.feed(p) for p in ["one tw", "o E", "NDthree"])
    assert out == "one two " and cutter.stopped
    plain = StopCutter([])
    assert plain.feed("abc") == "abc" and plain.flush() == ""
    held = StopCutter(["STOP"])
    assert held.feed("xyzST") == "xy"
    assert held.flush() == "zST"


@pytest.mark.parametrize(
    ("pieces", "stop", "expected"),
    [
        (["Hello wor", "ld. END and", " more"], ("END",), "Hello world. "),
        (["a", "b", "c"], (), "abc"),
        (["ab", "cS", "TOPd"], ("STOP",), "abc"),
        (["no stop here"], ("XYZ",), "no stop here"),
        (["x<|e", "nd|>y"], ("<|end|>", "y"), "x"),
    ],
)
def test_stop_strings_cut_across_piece_boundaries(
    pieces: list[str], stop: tuple[str, ...], expected: str
) -> None:
    cutter, out = StopCutter(stop), []
    for piece in pieces:
        out.append(cutter.feed(piece))
        if cutter.stopped:
            break
    else:
        out.append(cutter.flush())
    assert "".join(out) == expected


def test_pick_token_greedy_top_p_and_penalties() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert pick_token(logits, SamplingConfig(temperature=0), None, {}) == 1
    # A frequency penalty of 0.2 after one use moves the choice to the runner-up.
    penalised = SamplingConfig(temperature=0, frequency_penalty=0.2)
    assert pick_token(logits, penalised, None, {1: 1}) == 2
    assert (
        pick_token(logits, SamplingConfig(temperature=0, presence_penalty=0.05), None, {1: 3}) == 1
    )
    # top_p 0.6: token 1 holds 0.507 of the mass, tokens 1 and 2 together 0.965: both remain.
    generator = torch.Generator().manual_seed(0)
    nucleus = SamplingConfig(temperature=1.0, top_p=0.6)
    picks = {pick_token(logits, nucleus, generator, {}) for _ in range(200)}
    assert picks == {1, 2}
    # A tiny top_p keeps the top token only.
    tiny = SamplingConfig(temperature=1.0, top_p=1e-6)
    assert {pick_token(logits, tiny, generator, {}) for _ in range(50)} == {1}


def test_repetition_penalty_matches_transformers() -> None:
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([1.0, 2.5, -0.5, 2.4, 0.3])
    seen = [1, 2, 1]
    reference = RepetitionPenaltyLogitsProcessor(penalty=1.3)(
        torch.tensor([seen]), logits[None].clone()
    )[0]
    assert int(reference.argmax()) == 3  # 2.5 / 1.3 falls below 2.4
    assert pick_token(logits, SamplingConfig(repetition_penalty=1.3), None, {}, seen) == 3
    assert pick_token(logits, SamplingConfig(), None, {}, seen) == 1


def test_stop_strings_deadline_and_cancel() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer, name="tiny")
    prompt = engine.encode_text("hello")  # a tiny random model loops: the guard stays off here
    full = Completion()
    text = "".join(
        engine.stream(Request(prompt, SamplingConfig(max_new_tokens=30, loop_ngram=0)), full)
    )
    stop = text[5:8]
    cut = Completion()
    stopped = Request(prompt, SamplingConfig(max_new_tokens=30, stop=(stop,), loop_ngram=0))
    short = "".join(engine.stream(stopped, cut))
    assert short == text[: text.index(stop)] == cut.text and cut.finish_reason == "stop"
    batch = engine.generate([stopped])[0]
    assert batch.text == short
    late = Completion()
    list(engine.stream(Request(prompt, SamplingConfig(max_new_tokens=30, loop_ngram=0),
                               deadline=time.monotonic() - 1), late))  # fmt: skip
    assert late.finish_reason == "timeout" and late.completion_tokens == 1
    gone = Completion()
    list(engine.stream(Request(prompt, SamplingConfig(max_new_tokens=30, loop_ngram=0),
                               cancelled=lambda: True), gone))  # fmt: skip
    assert gone.finish_reason == "cancelled"


def test_engines_satisfy_the_protocol() -> None:
    model, tokenizer = tiny_llama()
    engines: list[TextEngine] = [
        HFEngine(model, tokenizer),
        ScriptedEngine(tokenizer, script=["one two three"], context_length=64),
    ]
    for engine in engines:
        prompt = engine.encode_chat([{"role": "user", "content": "hi"}])
        assert prompt and engine.context_length > 0 and isinstance(engine.supports_tools(), bool)
        (done,) = engine.generate([Request(prompt, SamplingConfig(max_new_tokens=2))])
        assert done.completion_tokens <= 2 and done.finish_reason in ("stop", "length")


class _PastKeyValuesModel(torch.nn.Module):
    """A model whose forward names the KV cache ``past_key_values``, as transformers 4.x does."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.generation_config = inner.generation_config
        self.device = inner.device

    def forward(  # type: ignore[no-untyped-def]
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
        use_cache=None, logits_to_keep=0,
    ):  # fmt: skip
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, cache=past_key_values, use_cache=use_cache,
                          logits_to_keep=logits_to_keep)  # fmt: skip


def test_the_cache_reaches_a_model_that_calls_it_past_key_values() -> None:
    model, tokenizer = tiny_llama()
    prompts = [[5, 6, 7, 8], [9, 10]]
    sampling = SamplingConfig(max_new_tokens=8, ignore_eos=True)
    expected = HFEngine(model, tokenizer).generate([Request(p, sampling) for p in prompts])
    old = HFEngine(_PastKeyValuesModel(model), tokenizer)  # type: ignore[arg-type]
    got = old.generate([Request(p, sampling) for p in prompts])
    assert [c.text for c in got] == [c.text for c in expected]


@pytest.mark.parametrize(
    ("temperature", "top_p"), [(1e-300, 1.0), (5e-324, 1.0), (1.0, 1e-50), (1e-300, 1e-50)]
)
def test_pick_token_holds_at_extreme_temperature_and_top_p(
    temperature: float, top_p: float
) -> None:
    # The probe's values: float32 made inf/NaN of 1e-300 and a zero of 1e-50 (top token dropped).
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, float("-inf")])
    generator = torch.Generator().manual_seed(0)
    config = SamplingConfig(temperature=temperature, top_p=top_p)
    assert {pick_token(logits, config, generator, {}) for _ in range(20)} == {1}
    half = logits.half()  # a float16 model's logits too
    assert pick_token(half, config, generator, {}) == 1


def test_top_logprobs_against_numbers_worked_by_hand() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    norm = math.log(sum(math.exp(x) for x in (2.0, 1.0, 0.0, -1.0)))
    chosen, top = top_logprobs(logits, 2, 2)
    assert chosen == pytest.approx(0.0 - norm)
    assert [i for i, _ in top] == [0, 1]
    assert [lp for _, lp in top] == pytest.approx([2.0 - norm, 1.0 - norm])
    assert top_logprobs(logits, 3, 0)[1] == []
    assert len(top_logprobs(logits, 3, 10)[1]) == 4  # never more than the vocabulary


@pytest.mark.parametrize("batched", [False, True])
def test_logprobs_are_the_raw_model_s_whatever_the_sampling(batched: bool) -> None:
    """Sampled hot with penalties, the reported log-probabilities are still log-softmax of the
    model's own logits, teacher-forced (what OpenAI and vLLM's default raw_logprobs report)."""
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer, name="tiny")
    prompt = tokenizer("The refund window")["input_ids"]
    hot = SamplingConfig(
        max_new_tokens=10,
        temperature=1.7,
        presence_penalty=0.5,
        frequency_penalty=1.5,
        repetition_penalty=1.3,
        seed=3,
        logprobs=4,
    )
    others = [Request(prompt[:2], SamplingConfig(max_new_tokens=4))] if batched else []
    result = engine.generate([Request(prompt, hot), *others], batch_size=2)[0]
    assert len(result.logprobs) == result.completion_tokens == 10
    ids = [t.chosen.token_id for t in result.logprobs]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
    reference = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)  # (10, V)
    for i, token in enumerate(result.logprobs):
        assert token.chosen.logprob == pytest.approx(float(reference[i, ids[i]]), abs=1e-4)
        best = reference[i].topk(4)
        assert [a.token_id for a in token.top] == best.indices.tolist()
        assert [a.logprob for a in token.top] == pytest.approx(best.values.tolist(), abs=1e-4)
        assert token.chosen.text == tokenizer.decode([ids[i]])
    plain = engine.generate([Request(prompt, SamplingConfig(max_new_tokens=3))])[0]
    assert plain.logprobs == []  # nothing recorded unless asked


def test_token_bytes_are_the_token_s_own() -> None:
    """Each byte-level token's bytes: what it decodes to where that is whole characters, and
    the pieces of a character (which decode alone to U+FFFD) join into the character."""
    _, tokenizer = tiny_llama()
    special = set(tokenizer.all_special_ids)
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if i not in special and "\ufffd" not in text:
            assert token_bytes(tokenizer, i) == text.encode(), i
    pieces = tokenizer("é€", add_special_tokens=False)["input_ids"]
    assert b"".join(token_bytes(tokenizer, i) or b"" for i in pieces) == "é€".encode()


def test_pick_token_adds_the_logit_bias_first() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    greedy = SamplingConfig(temperature=0)
    assert pick_token(logits, replace(greedy, logit_bias=((3, 4.1),)), None, {}) == 3
    assert pick_token(logits, replace(greedy, logit_bias=((3, 3.9),)), None, {}) == 1
    assert pick_token(logits, replace(greedy, logit_bias=((1, -100.0),)), None, {}) == 2
    # added before the penalties: a biased token still pays its frequency penalty
    both = replace(greedy, logit_bias=((2, 0.05),), frequency_penalty=0.1)
    assert pick_token(logits, both, None, {2: 1}) == 1
    hot = SamplingConfig(temperature=1.0, logit_bias=((0, 100.0),))
    generator = torch.Generator().manual_seed(0)
    assert {pick_token(logits, hot, generator, {}) for _ in range(50)} == {0}
    assert torch.equal(logits, torch.tensor([0.0, 3.0, 2.9, -1.0]))  # the caller's row stays


@pytest.mark.parametrize("path", ["batched", "streamed", "single-stream"])
def test_logit_bias_forces_and_bans_on_every_decoding_path(path: str) -> None:
    """+100 forces a token under greedy, -100 bans the greedy one; logprobs stay the model's."""
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer, single_stream=path == "single-stream")
    prompt = tokenizer("The refund window")["input_ids"]

    def run(sampling: SamplingConfig) -> Completion:
        if path == "batched":  # beside another row, so the pass really is a batch of two
            other = Request(prompt[:2], SamplingConfig(max_new_tokens=6))
            return engine.generate([Request(prompt, sampling), other], batch_size=2)[0]
        result = Completion()
        "".join(engine.stream(Request(prompt, sampling), result))
        return result

    free = run(SamplingConfig(max_new_tokens=6, logprobs=1, ignore_eos=True))
    greedy = [t.chosen.token_id for t in free.logprobs]
    forced_id = next(i for i in range(5, 100) if i not in greedy)
    forced = run(SamplingConfig(max_new_tokens=6, logprobs=1, ignore_eos=True,
                                logit_bias=((forced_id, 100.0),)))  # fmt: skip
    assert [t.chosen.token_id for t in forced.logprobs] == [forced_id] * 6
    assert forced.logprobs[0].top[0].token_id == greedy[0]  # raw: before the bias
    assert forced.logprobs[0].chosen.logprob < forced.logprobs[0].top[0].logprob
    banned = run(SamplingConfig(max_new_tokens=6, logprobs=1, ignore_eos=True,
                                logit_bias=((greedy[0], -100.0),)))  # fmt: skip
    assert greedy[0] not in [t.chosen.token_id for t in banned.logprobs]
    assert banned.logprobs[0].top[0].token_id == greedy[0]


def test_logit_bias_outside_the_vocabulary_is_refused() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    for token in (-1, engine.vocab_size):
        with pytest.raises(ValueError, match=f"logit_bias: token id {token} is outside"):
            engine.generate([Request([1, 2], SamplingConfig(logit_bias=((token, 1.0),)))])
