"""The decode loop against transformers' generate, and its pure parts."""

from __future__ import annotations

import time

import torch

from mentor.models.generation import StopCutter
from mentor.serve.engine import Decoding, Detokenizer, Engine, Generated, pick_token
from mentor.testing.tiny_models import tiny_llama, tiny_qwen2


def test_greedy_stream_equals_generate() -> None:
    for build in (tiny_llama, tiny_qwen2):
        model, tokenizer = build()
        engine = Engine(model, tokenizer, "tiny")
        prompt = engine.encode_chat([{"role": "user", "content": "hello there"}])
        result = Generated(prompt_tokens=len(prompt))
        text = "".join(engine.stream(prompt, Decoding(max_tokens=20), adapter=None, result=result))
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                             do_sample=False, temperature=None, top_p=None, top_k=None)  # fmt: skip
        expected = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        assert text == expected
        assert result.completion_tokens == out.shape[1] - len(prompt) - (
            1 if result.finish_reason == "stop" else 0
        )


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


def test_pick_token_greedy_top_p_and_penalties() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert pick_token(logits, Decoding(temperature=0), None, {}) == 1
    # A frequency penalty of 0.2 after one use moves the choice to the runner-up.
    assert pick_token(logits, Decoding(temperature=0, frequency_penalty=0.2), None, {1: 1}) == 2
    assert pick_token(logits, Decoding(temperature=0, presence_penalty=0.05), None, {1: 3}) == 1
    # top_p 0.6: token 1 holds 0.507 of the mass, tokens 1 and 2 together 0.965: both remain.
    generator = torch.Generator().manual_seed(0)
    picks = {
        pick_token(logits, Decoding(temperature=1.0, top_p=0.6), generator, {}) for _ in range(200)
    }
    assert picks == {1, 2}
    # A tiny top_p keeps the top token only.
    picks = {
        pick_token(logits, Decoding(temperature=1.0, top_p=1e-6), generator, {}) for _ in range(50)
    }
    assert picks == {1}


def test_stop_strings_deadline_and_cancel() -> None:
    model, tokenizer = tiny_llama()
    engine = Engine(model, tokenizer, "tiny")
    prompt = engine.encode_text("hello")
    full = Generated(len(prompt))
    text = "".join(engine.stream(prompt, Decoding(max_tokens=30), adapter=None, result=full))
    stop = text[5:8]
    cut = Generated(len(prompt))
    decoding = Decoding(max_tokens=30, stop=(stop,))
    short = "".join(engine.stream(prompt, decoding, adapter=None, result=cut))
    assert short == text[: text.index(stop)] and cut.finish_reason == "stop"
    late = Generated(len(prompt))
    list(engine.stream(prompt, Decoding(max_tokens=30), adapter=None, result=late,
                       deadline=time.monotonic() - 1))  # fmt: skip
    assert late.finish_reason == "timeout" and late.completion_tokens == 1
    gone = Generated(len(prompt))
    list(engine.stream(prompt, Decoding(max_tokens=30), adapter=None, result=gone,
                       cancelled=lambda: True))  # fmt: skip
    assert gone.finish_reason == "cancelled"


def test_a_quantized_folder_serves_and_refuses_adapters(tmp_path) -> None:
    import pytest
    from tests.serve.conftest import make_adapter

    from mentor.quantize.convert import quantize_model
    from mentor.quantize.io import new_manifest, save_quantized
    from mentor.serve.engine import load_engine

    model, tokenizer = tiny_llama()
    plans = quantize_model(model, "int8", 32)
    manifest = new_manifest(
        method="int8", group_size=None, layers=plans, base_model="tiny",
        base_fingerprint="f" * 64, adapter=None, dtype=torch.float32,
    )  # fmt: skip
    save_quantized(model, tokenizer, tmp_path / "q", manifest)
    engine = load_engine(str(tmp_path / "q"), device="cpu")
    assert engine.quantized and engine.name == "q"
    prompt = engine.encode_chat([{"role": "user", "content": "hello"}])
    result = Generated(len(prompt))
    text = "".join(engine.stream(prompt, Decoding(max_tokens=6), adapter=None, result=result))
    assert result.completion_tokens >= 1 and isinstance(text, str)
    with pytest.raises(ValueError, match="merge the adapter when quantizing"):
        engine.add_adapter("a", make_adapter(tmp_path / "a", 1))
