"""Continuous batching in HFEngine: requests join and leave a running batch without changing
anyone's tokens, and the KV budget bounds what runs at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import torch

from mentor.models.engine import Completion, HFEngine, Request
from mentor.models.kv import Batch, bytes_per_token, extend, join, keep
from mentor.models.protocols import SamplingConfig
from mentor.testing.tiny_models import tiny_llama, tiny_qwen2

FIXED = SamplingConfig(max_new_tokens=12, ignore_eos=True)
TEXTS = ("hi", "a much longer prompt than the first one here", "ok then", "x y z w v u")


def _alone(engine: HFEngine, requests: Sequence[Request]) -> list[Completion]:
    return [engine.generate([r], batch_size=1)[0] for r in requests]


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2])
def test_a_mixed_batch_gives_every_request_its_one_at_a_time_tokens(build) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = build()
    engine = HFEngine(model, tokenizer)
    prompts = [engine.encode_text(t) for t in TEXTS]
    alone_text = _alone(engine, [Request(prompts[1], SamplingConfig(max_new_tokens=30))])[0].text
    stop = alone_text[4:7]
    requests = [
        Request(prompts[0], FIXED),
        Request(prompts[1], SamplingConfig(max_new_tokens=30, stop=(stop,))),
        Request(prompts[2], SamplingConfig(max_new_tokens=3)),
        Request(prompts[3], SamplingConfig(max_new_tokens=20, temperature=0.8, seed=7)),
    ]
    expected = _alone(engine, requests)
    got = engine.generate(requests, batch_size=4)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in expected]
    assert got[1].finish_reason == "stop" and got[2].finish_reason == "length"
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]


def test_a_batch_smaller_than_the_requests_refills_as_rows_finish() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    requests = [
        Request(engine.encode_text(t * (i + 1)), SamplingConfig(max_new_tokens=2 + 3 * i))
        for i, t in enumerate(TEXTS * 2)
    ]
    expected = _alone(engine, requests)
    before = engine.steps
    got = engine.generate(requests, batch_size=3)
    assert [c.text for c in got] == [c.text for c in expected]
    one_by_one = sum(c.completion_tokens for c in expected)
    assert engine.steps - before < one_by_one  # rows shared passes


def test_joining_mid_flight_and_cancelling_leave_the_others_unchanged() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    forty = SamplingConfig(max_new_tokens=40, ignore_eos=True)
    long = Request(engine.encode_text("the first request"), forty)
    late = Request(engine.encode_text("a late one"), FIXED)
    expected_long, expected_late = _alone(engine, [long, late])

    stop = threading.Event()
    doomed = Request(engine.encode_text("to be cancelled"),
                     SamplingConfig(max_new_tokens=40, loop_ngram=0),
                     cancelled=stop.is_set)  # fmt: skip
    results = {name: Completion() for name in ("long", "late", "doomed")}
    pieces: list[str] = []

    def run(name: str, request: Request) -> None:
        for piece in engine.stream(request, results[name]):
            if name == "long":
                pieces.append(piece)

    threads = [threading.Thread(target=run, args=("long", long))]
    threads[0].start()
    while len(pieces) < 5:  # the long one is mid-flight
        time.sleep(0.001)
    for name, request in (("late", late), ("doomed", doomed)):
        threads.append(threading.Thread(target=run, args=(name, request)))
        threads[-1].start()
    time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert results["long"].text == expected_long.text
    assert results["late"].text == expected_late.text
    assert results["doomed"].finish_reason == "cancelled"


def test_a_reader_that_leaves_cancels_its_row() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    result = Completion()
    stream = engine.stream(Request(engine.encode_text("hello"), SamplingConfig(
        max_new_tokens=200, ignore_eos=True)), result)  # fmt: skip
    next(stream)
    stream.close()
    deadline = time.monotonic() + 30
    while result.finish_reason is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert result.finish_reason == "cancelled" and result.completion_tokens < 200


def test_the_kv_budget_bounds_what_runs_at_once() -> None:
    model, tokenizer = tiny_llama()
    prompt = [5, 6, 7, 8]
    reserved = len(prompt) + FIXED.max_new_tokens
    engine = HFEngine(model, tokenizer, kv_budget_tokens=2 * reserved)
    widest = 0
    forward = model.forward

    def watch(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal widest
        cache = kwargs.get("cache")
        rows = kwargs["input_ids"].shape[0]
        if cache is not None and cache.get_seq_length() > 0:
            widest = max(widest, rows)
        return forward(*args, **kwargs)

    model.forward = watch  # type: ignore[method-assign]
    done = engine.generate([Request(prompt, FIXED) for _ in range(6)], batch_size=6)
    assert widest == 2 and all(c.completion_tokens == 12 for c in done)
    with pytest.raises(ValueError, match="max_running"):
        HFEngine(model, tokenizer, max_running=0)


def test_rows_run_with_their_own_adapter() -> None:
    model, tokenizer = tiny_llama()
    calls: list[list[str | None]] = []

    @contextmanager
    def row_adapters(names: Sequence[str | None]) -> Iterator[None]:
        calls.append(list(names))
        yield

    engine = HFEngine(model, tokenizer, row_adapters=row_adapters)
    requests = [Request([5, 6, 7], FIXED, adapter=a) for a in ("a", None, "b")]
    engine.generate(requests, batch_size=3)
    assert calls[0] == ["a", None, "b"]
    engine.generate([Request([5, 6], SamplingConfig(max_new_tokens=2))])
    assert calls[-1] == [None]  # the base, whatever adapter the model has active
    with pytest.raises(ValueError, match="no adapters"):
        HFEngine(model, tokenizer).generate([Request([5], FIXED, adapter="a")])


def test_a_failed_pass_fails_its_rows_and_the_engine_goes_on() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    forward = model.forward
    model.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        engine.generate([Request([5, 6, 7], FIXED)])
    model.forward = forward  # type: ignore[method-assign]
    assert engine.generate([Request([5, 6, 7], FIXED)])[0].completion_tokens == 12


def test_call_runs_between_passes_on_the_decode_thread() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    assert engine.call(lambda: threading.current_thread().name) == "mentor-decode"
    with pytest.raises(KeyError):
        engine.call(lambda: {}["missing"])


# ---- the batch's cache, on its own -------------------------------------------------------------


def _batch(lengths: Sequence[int], width: int, fill: float) -> Batch:
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(
        torch.full((len(lengths), 2, width, 3), fill),
        torch.full((len(lengths), 2, width, 3), -fill),
        0,
    )
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    return Batch(cache, mask, torch.tensor(lengths))


def test_join_pads_the_narrower_batch_on_the_left() -> None:
    joined = join(_batch([2, 3], 3, 1.0), _batch([5], 5, 2.0))
    assert joined.mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    keys = joined.cache.layers[0].keys
    assert keys.shape == (3, 2, 5, 3)
    assert keys[0, 0, :, 0].tolist() == [0, 0, 1, 1, 1] and keys[2, 0, :, 0].tolist() == [2] * 5
    assert joined.positions.tolist() == [2, 3, 5]


def test_keep_drops_rows_and_the_columns_only_they_used() -> None:
    joined = join(_batch([2, 3], 3, 1.0), _batch([5], 5, 2.0))
    kept = keep(joined, [1, 0])
    assert kept.mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert kept.cache.layers[0].keys.shape == (2, 2, 3, 3) and kept.positions.tolist() == [3, 2]
    mask, positions = extend(kept)
    assert mask.shape == (2, 4) and positions.tolist() == [[3], [2]]
    assert kept.positions.tolist() == [4, 3]


def test_bytes_per_token_of_smollm2_135m() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         hidden_size=576)  # fmt: skip
    assert bytes_per_token(config, torch.float32) == 30 * 2 * 3 * 64 * 4
    assert bytes_per_token(config, torch.bfloat16) == 30 * 2 * 3 * 64 * 2


def test_a_model_mid_training_decodes_in_eval_mode_and_gets_its_mode_back() -> None:
    model, tokenizer = tiny_llama()
    model.train()
    modes: list[bool] = []
    forward = model.forward

    def watch(*args, **kwargs):  # type: ignore[no-untyped-def]
        modes.append(model.training)
        return forward(*args, **kwargs)

    engine = HFEngine(model, tokenizer)  # before the patch: it reads forward's signature
    model.forward = watch  # type: ignore[method-assign]
    engine.generate([Request([5, 6], FIXED)])
    assert model.training  # restored before generate returned, not by the idle thread later
    assert modes and not any(modes)


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2])
def test_a_lone_request_decodes_single_stream_until_another_joins(build) -> None:  # type: ignore[no-untyped-def]
    # On CUDA a lone request runs through the StaticDecoder (a static cache, one captured graph
    # per token); here the same path runs eagerly, and a second request moves it into a batch.
    model, tokenizer = build()
    plain = HFEngine(model, tokenizer, single_stream=False)
    fast = HFEngine(model, tokenizer, single_stream=True)
    long = SamplingConfig(max_new_tokens=300, ignore_eos=True)
    first = Request(plain.encode_text("the first request"), long)
    second = Request(plain.encode_text("a second, later one"), FIXED)
    expected = _alone(plain, [first, second])
    assert fast.generate([first])[0].text == expected[0].text and fast._decoders

    results = [Completion(), Completion()]
    pieces: list[str] = []

    def run_first() -> None:
        pieces.extend(fast.stream(first, results[0]))

    thread = threading.Thread(target=run_first)
    thread.start()
    while results[0].completion_tokens < 5:
        time.sleep(0.001)
    left = []
    leave = fast._leave_single_stream
    fast._leave_single_stream = lambda: left.append(1) or leave()  # type: ignore[method-assign]
    late = list(fast.stream(second, results[1]))
    thread.join(timeout=60)
    assert late and [r.text for r in results] == [c.text for c in expected]
    assert left == [1] and results[0].completion_tokens == 300  # it joined mid-flight
    assert fast._solo is None


def test_long_prompts_are_prefilled_alone_and_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentor.models import engine as engine_module

    monkeypatch.setattr(engine_module, "PREFILL_TOKENS", 64)  # several admission rounds
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer)
    lengths = (3, 150, 7, 200, 40)  # two over SHARED_PREFILL_TOKENS
    requests = [
        Request([5 + (i * 7 + j) % 50 for j in range(n)], FIXED) for i, n in enumerate(lengths)
    ]
    expected = _alone(engine, requests)
    widths: list[int] = []
    forward = model.forward

    def watch(*args, **kwargs):  # type: ignore[no-untyped-def]
        cache = kwargs.get("cache")
        if cache is not None and cache.get_seq_length() == 0:
            widths.append(kwargs["input_ids"].shape[0])  # rows in a prefill pass
        return forward(*args, **kwargs)

    model.forward = watch  # type: ignore[method-assign]
    got = engine.generate(requests, batch_size=5)
    assert [c.text for c in got] == [c.text for c in expected]
    assert len(widths) >= 3 and max(widths) <= 3  # short ones together, long ones alone


def test_a_sliding_window_model_batches_correctly_past_its_window() -> None:
    # The cache is a plain DynamicCache: the model masks the window by column, and a row's
    # left padding shifts its columns uniformly, so joins keep each row's window.
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tokenizer = tiny_qwen2()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         use_sliding_window=True, sliding_window=8, max_window_layers=0,
                         layer_types=["sliding_attention", "sliding_attention"])  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    for p in model.parameters():
        p.data.mul_(4)  # sharper logits: greedy tokens depend on what the window holds
    engine = HFEngine(model, tokenizer)
    requests = [
        Request([5 + (i * 3 + j) % 40 for j in range(10 + 6 * i)],
                SamplingConfig(max_new_tokens=12 + 5 * i, ignore_eos=True))
        for i in range(4)
    ]  # fmt: skip
    expected = _alone(engine, requests)
    got = engine.generate(requests, batch_size=3)
    assert [c.text for c in got] == [c.text for c in expected]
