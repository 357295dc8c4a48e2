"""StaticDecoder: the same logits and greedy tokens as a plain DynamicCache loop and as HFEngine,
on the static (CUDA) and dynamic (CPU) paths; reset and reuse; clear errors at max_len; which
models are supported; and (slow) the compiled step on a CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from mentor.models.engine import Completion, HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.models.static_decode import StaticDecoder, supported
from mentor.testing import tiny_bert, tiny_llama, tiny_qwen2

PROMPTS = [[5, 9, 22, 31, 7, 8], [100, 200, 300], [42]]
NEW = 10


def _lively(factory, seed: int = 0):  # type: ignore[no-untyped-def]
    """A tiny model with its matrices scaled up: random tiny models at their default init repeat
    one token; larger weights make greedy decoding wander, so a wrong cache shows."""
    model, tok = factory(seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return model, tok


@pytest.fixture(params=["llama", "qwen2"])
def pair(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return _lively(tiny_llama if request.param == "llama" else tiny_qwen2)


def _dynamic(model: nn.Module, prompt: list[int], new: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding with a DynamicCache and no position ids: the reference."""
    tokens, logits = [], []
    with torch.no_grad():
        cache = DynamicCache()
        out = model(input_ids=torch.tensor([prompt]), cache=cache, use_cache=True)
        for _ in range(new):
            logits.append(out.logits[0, -1])
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True)
    return tokens, logits


def _greedy(
    decoder: StaticDecoder, prompt: list[int], new: int
) -> tuple[list[int], list[torch.Tensor]]:
    decoder.reset()
    logits = [decoder.prefill(prompt)]
    tokens = [int(logits[-1].argmax())]
    while len(tokens) < new:
        logits.append(decoder.step(tokens[-1]))
        tokens.append(int(logits[-1].argmax()))
    return tokens, logits


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_greedy_tokens_and_logits_match_a_dynamic_cache_loop(pair, static: bool) -> None:  # type: ignore[no-untyped-def]
    model, _ = pair
    decoder = StaticDecoder(model, max_len=32, static=static)
    assert decoder.static is static and not decoder.compiled
    wandered = False
    for prompt in PROMPTS:
        expected_tokens, expected_logits = _dynamic(model, prompt, NEW)
        tokens, logits = _greedy(decoder, prompt, NEW)
        assert tokens == expected_tokens
        for got, want in zip(logits, expected_logits, strict=True):
            torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)
        wandered |= len(set(tokens)) > 1
    assert wandered, "every prompt repeats one token: the comparison would prove little"


def test_text_matches_hf_engine_on_one_request(pair) -> None:  # type: ignore[no-untyped-def]
    model, tok = pair
    engine = HFEngine(model, tok, name="tiny")
    decoder = StaticDecoder(model, max_len=64, static=True)
    for prompt in PROMPTS:
        result = Completion()
        sampling = SamplingConfig(max_new_tokens=NEW, ignore_eos=True)
        "".join(engine.stream(Request(prompt, sampling), result))
        tokens, _ = _greedy(decoder, prompt, NEW)
        assert result.completion_tokens == NEW
        assert result.text == tok.decode(tokens, skip_special_tokens=True)


def test_reset_and_reuse_equal_a_fresh_decoder() -> None:
    model, _ = _lively(tiny_llama)
    used = StaticDecoder(model, max_len=24, static=True)
    _greedy(used, PROMPTS[0], NEW)
    _greedy(used, PROMPTS[1], 4)
    assert used.length == len(PROMPTS[1]) + 3
    fresh = StaticDecoder(model, max_len=24, static=True)
    assert _greedy(used, PROMPTS[0], NEW)[0] == _greedy(fresh, PROMPTS[0], NEW)[0]


def test_prefill_after_cached_tokens_continues_the_sequence() -> None:
    model, _ = _lively(tiny_qwen2)
    decoder = StaticDecoder(model, max_len=32, static=True)
    prompt = PROMPTS[0]
    decoder.prefill(prompt[:2])
    got = decoder.prefill(prompt[2:])
    torch.testing.assert_close(got, _dynamic(model, prompt, 1)[1][0], atol=1e-4, rtol=1e-4)


def test_max_len_is_enforced_with_clear_errors() -> None:
    model, _ = tiny_llama(seed=0)
    decoder = StaticDecoder(model, max_len=8, static=True)
    with pytest.raises(ValueError, match=r"a prompt of 9 tokens .* does not fit max_len=8"):
        decoder.prefill(list(range(5, 14)))
    with pytest.raises(RuntimeError, match="prefill a prompt before the first step"):
        decoder.step(5)
    with pytest.raises(ValueError, match="at least one token"):
        decoder.prefill([])
    decoder.prefill(list(range(5, 12)))  # 7 tokens
    decoder.step(5)  # the 8th
    with pytest.raises(ValueError, match="reached max_len=8"):
        decoder.step(5)
    decoder.reset()
    assert decoder.length == 0
    decoder.prefill(list(range(5, 13)))  # a full-length prompt fits again after reset


def test_bad_settings_and_unsupported_models_are_refused() -> None:
    llama, _ = tiny_llama(seed=0)
    bert, _ = tiny_bert(seed=0)
    assert supported(llama) and supported(tiny_qwen2(seed=0)[0])
    assert not supported(bert) and not supported(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="BertModel does not support a static KV cache"):
        StaticDecoder(bert, max_len=8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compile=True needs static=True"):
        StaticDecoder(llama, max_len=8, static=False, compile=True)
    with pytest.raises(ValueError, match="max_len must be at least 2"):
        StaticDecoder(llama, max_len=1)
    decoder = StaticDecoder(llama, max_len=8)
    llama.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        decoder.prefill([5])


@pytest.mark.slow
def test_compiled_step_matches_eager_on_cpu() -> None:
    """The compiled (reduce-overhead) static step, the CUDA path, traced and run by inductor on
    a CPU: the same tokens and logits as the eager loop (about 30 s of compiling)."""
    model, _ = _lively(tiny_llama)
    decoder = StaticDecoder(model, max_len=32, static=True, compile=True)
    for prompt in PROMPTS[:2]:
        expected_tokens, expected_logits = _dynamic(model, prompt, NEW)
        tokens, logits = _greedy(decoder, prompt, NEW)
        assert tokens == expected_tokens
        torch.testing.assert_close(logits[-1], expected_logits[-1], atol=1e-4, rtol=1e-4)
