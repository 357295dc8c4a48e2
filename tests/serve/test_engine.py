"""The server's engine: a text engine plus adapters; a quantized folder serves without them."""

from __future__ import annotations

import torch

from mentor.models.engine import Completion
from mentor.models.protocols import SamplingConfig
from mentor.testing.tiny_models import tiny_llama


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
    result = Completion()
    sampling = SamplingConfig(max_new_tokens=6)
    text = "".join(engine.stream(prompt, sampling, adapter=None, result=result))
    assert result.completion_tokens >= 1 and isinstance(text, str)
    with pytest.raises(ValueError, match="merge the adapter when quantizing"):
        engine.add_adapter("a", make_adapter(tmp_path / "a", 1))
