from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mentor.models.engine import HFEngine
from mentor.models.generation import EngineGenerator
from mentor.models.hub import pull
from mentor.models.loading import (
    load_causal_lm,
    load_tokenizer,
    preferred_dtype,
    resolve_dtype,
    resolve_model_path,
)
from mentor.models.protocols import (
    BatchGenerator,
    Generator,
    SamplingConfig,
    complete,
    complete_all,
)
from mentor.models.registry import UnknownModelError
from mentor.testing import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("gen") / "tiny-llama")


def test_local_folders_load_directly(tiny_folder: Path) -> None:
    model = load_causal_lm(tiny_folder, dtype="float32", device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert load_tokenizer(tiny_folder).chat_template


def test_pulled_models_load_by_name(tiny_folder: Path) -> None:
    pull("tiny", source=tiny_folder)
    assert resolve_model_path("tiny").name.startswith("tiny-")
    assert load_causal_lm("tiny", device="cpu").config.model_type == "llama"


def test_unknown_and_unconverted_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="known models"):
        resolve_model_path("no-such-model")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(UnknownModelError, match="mentor models pull NAME --from"):
        resolve_model_path(tmp_path / "model.gguf")


def test_bf16_is_chosen_only_where_it_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentor.models import loading

    cpu = torch.device("cpu")
    monkeypatch.setattr(loading, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert preferred_dtype(cpu) == torch.bfloat16
    monkeypatch.setattr(loading, "cpu_bf16_flags", lambda: ())
    assert preferred_dtype(cpu) == torch.float32
    assert resolve_dtype("float16", cpu) == torch.float16


def test_engine_generator_streams_greedy_and_deterministic(tiny_folder: Path) -> None:
    engine = HFEngine(load_causal_lm(tiny_folder, device="cpu"), load_tokenizer(tiny_folder))
    generator = EngineGenerator(engine)
    assert isinstance(generator, Generator)
    messages = [{"role": "user", "content": "What is the refund policy?"}]
    config = SamplingConfig(max_new_tokens=12)
    pieces = list(generator.stream(messages, config))  # type: ignore[arg-type]
    again = complete(generator, messages, config)  # type: ignore[arg-type]
    assert "".join(pieces) == again
    ids = engine.tokenizer(again, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 12 + 2  # re-tokenising decoded text can differ by a token or two


def test_sampling_with_a_seed_repeats(tiny_folder: Path) -> None:
    generator = EngineGenerator(
        HFEngine(load_causal_lm(tiny_folder, device="cpu"), load_tokenizer(tiny_folder))
    )
    messages = [{"role": "user", "content": "Tell me about the warranty."}]
    config = SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    first = complete(generator, messages, config)  # type: ignore[arg-type]
    assert complete(generator, messages, config) == first  # type: ignore[arg-type]


def test_many_conversations_decode_as_one_batch_with_the_same_replies(tiny_folder: Path) -> None:
    engine = HFEngine(
        load_causal_lm(tiny_folder, dtype="float32", device="cpu"), load_tokenizer(tiny_folder)
    )
    generator = EngineGenerator(engine, batch_size=4)
    assert isinstance(generator, BatchGenerator)
    conversations = [
        [{"role": "user", "content": text}]
        for text in ("Refunds?", "What is the warranty on a desk motor?", "Hi", "Shipping times")
    ]
    config = SamplingConfig(max_new_tokens=10, loop_ngram=0)
    one_by_one = [complete(generator, c, config) for c in conversations]  # type: ignore[arg-type]
    calls: list[int] = []
    generate = engine.generate
    engine.generate = lambda requests, batch_size=8: (  # type: ignore[method-assign]
        calls.append(len(requests)) or generate(requests, batch_size=batch_size)
    )
    assert list(complete_all(generator, conversations, config)) == one_by_one  # type: ignore[arg-type]
    assert calls == [4]
