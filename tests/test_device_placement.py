"""Device placement of every report and evaluation path, checked on the CPU.

Each path runs with its models on :func:`mentor.testing.devices.fake_cuda`, a CPU that fails
where a GPU fails (a batch, index or mask left on the CPU next to a model on the GPU), and must
give the numbers it gives on the CPU. Before this file, ``mentor distill --device cuda`` trained
for an hour on an H200 and then crashed in ``token_agreement_cached``; here it fails in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from mentor.distill.report import timed_answers, token_agreement, token_agreement_cached
from mentor.distill.teacher_cache import build_cache
from mentor.models import static_decode
from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.testing import (
    fake_cuda,
    on_fake_cuda,
    save_model_folder,
    save_tiny_llama,
    tiny_bert,
    tiny_llama,
    tiny_qwen2,
    tiny_sentence_transformer_folder,
)
from mentor.train.data import IGNORE, Example, PackedRow, unpacked


def _examples() -> list[Example]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in (6, 9, 7):
        ids = torch.randint(5, 200, (n,), generator=gen).tolist()
        out.append(Example(ids, [IGNORE, IGNORE, *ids[2:]]))
    return out


@pytest.mark.parametrize("teacher_on", ["cuda", "cpu"])
def test_token_agreement_on_the_gpu(teacher_on: str) -> None:
    """Teacher and student on the GPU, or the teacher on another device than the student."""
    teacher, _ = tiny_qwen2(seed=1)
    student, _ = tiny_qwen2(seed=2, num_layers=1)
    expected = token_agreement(teacher, student, _examples())
    with fake_cuda() as cuda:
        got = token_agreement(teacher.to(teacher_on), student.to(cuda), _examples())
    assert got.top1 == expected.top1 and got.tokens == expected.tokens
    assert got.kl == pytest.approx(expected.kl, rel=1e-5)


def test_cached_token_agreement_on_the_gpu(tmp_path: Path) -> None:
    """The H200 crash: the cache's ids (cpu) gathered from the student's log-probs (cuda)."""
    teacher, _ = tiny_qwen2(seed=1)
    student, _ = tiny_qwen2(seed=2, num_layers=1)
    examples = _examples()
    quiet = Console(quiet=True)
    cache, _ = build_cache(
        tmp_path / "cpu", teacher, examples, k=8, teacher_fingerprint="t", tokenizer_hash="v",
        console=quiet,
    )  # fmt: skip
    expected = token_agreement_cached(cache, student, examples)
    with fake_cuda() as cuda:
        teacher.to(cuda)
        on_gpu, _ = build_cache(
            tmp_path / "gpu", teacher, examples, k=8, teacher_fingerprint="t",
            tokenizer_hash="v", device=cuda, console=quiet,
        )  # fmt: skip
        got = token_agreement_cached(on_gpu, student.to(cuda), examples)
    assert got.top1 == expected.top1 and got.tokens == expected.tokens
    assert got.kl == pytest.approx(expected.kl, rel=1e-5)


@pytest.fixture
def gpu_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine and the reranker ask torch.cuda (absent from a CPU-only build)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 << 30, 16 << 30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def test_perplexity_on_the_gpu() -> None:
    from mentor.evaluate.perplexity import perplexity

    model, tokenizer = tiny_llama()
    text = "the kettle sings while the box stays red and the lamp is on " * 6
    expected = perplexity(model, tokenizer, text, seq_len=16, batch_size=3)
    with fake_cuda() as cuda:
        got = perplexity(model.to(cuda), tokenizer, text, seq_len=16, batch_size=3)
    assert got == pytest.approx(expected, rel=1e-5)


def _answers(engine: HFEngine, prompts: list[list[int]]) -> list[str]:
    penalised = SamplingConfig(
        max_new_tokens=5, presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.3
    )
    plain = SamplingConfig(max_new_tokens=7)
    sampled = SamplingConfig(max_new_tokens=6, temperature=0.9, top_p=0.8, seed=11)
    kinds = [plain, penalised, sampled]
    requests = [Request(p, kinds[i % 3]) for i, p in enumerate(prompts)]
    return [c.text for c in engine.generate(requests, batch_size=2)]


@pytest.mark.usefixtures("gpu_queries")
def test_the_engine_decodes_a_batch_on_the_gpu() -> None:
    """Continuous batching (left padding, rows joining and leaving), the penalties' index
    tensors and seeded sampling (a generator on the GPU); the lone-request static decoder's
    CUDA graphs are left to the GPU check."""
    model, tokenizer = tiny_llama()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14], [15, 16, 17, 18]]
    expected = _answers(HFEngine(model, tokenizer, single_stream=False), prompts)
    with fake_cuda() as cuda:
        engine = HFEngine(model.to(cuda), tokenizer, single_stream=False)
        got = _answers(engine, prompts)
    assert got == expected


def test_timed_answers_and_generate_answers_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 << 30, 16 << 30))
    monkeypatch.setattr(static_decode, "supported", lambda model: False)
    model, tokenizer = tiny_llama()
    prompts = [[{"role": "user", "content": "the box"}], [{"role": "user", "content": "red"}]]
    expected = timed_answers(model, tokenizer, prompts, max_new_tokens=4)
    with fake_cuda() as cuda:
        got = timed_answers(model.to(cuda), tokenizer, prompts, max_new_tokens=4)
    assert got.answers == expected.answers and got.tokens == expected.tokens


@pytest.mark.usefixtures("gpu_queries")
def test_a_classifier_predicts_on_the_gpu(tmp_path: Path) -> None:
    from mentor.train.classifier import LabelSet, build_classifier

    encoder, tokenizer = tiny_bert()
    folder = save_model_folder(encoder, tokenizer, tmp_path / "encoder")
    model, tokenizer = build_classifier(folder, LabelSet(("a", "b", "c")), method="lora")
    texts = ["the box is red", "a kettle", "the lamp is on and the box is red"]
    expected = model.predict_logits(texts, tokenizer, batch_size=2)
    with fake_cuda() as cuda:
        got = model.to(cuda).predict_logits(texts, tokenizer, batch_size=2)
        assert not on_fake_cuda(got)  # promised on the CPU
    torch.testing.assert_close(got, expected)


@pytest.mark.usefixtures("gpu_queries")
def test_the_classifier_distillation_loss_on_the_gpu(tmp_path: Path) -> None:
    """The soft-label batch (teacher logits kept on the CPU) as the trainer moves it."""
    from mentor.distill.classify import ClassifierKDLoss, SoftRow, collate
    from mentor.train.classifier import LabelSet, build_classifier
    from mentor.train.trainer import _tensors

    encoder, tokenizer = tiny_bert()
    folder = save_model_folder(encoder, tokenizer, tmp_path / "encoder")
    model, _ = build_classifier(folder, LabelSet(("a", "b")), method="full")
    loss = ClassifierKDLoss(model.eval())
    rows = [
        SoftRow([2, 5, 6], 1, torch.tensor([0.1, 2.0])),
        SoftRow([2, 7], IGNORE, torch.zeros(2)),
    ]
    batch = collate(rows, pad_id=0)
    with torch.no_grad():
        expected = float(loss(**_tensors(batch, torch.device("cpu"))))
    with fake_cuda() as cuda:
        got = float(loss.to(cuda)(**_tensors(batch, cuda)))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.usefixtures("gpu_queries")
def test_the_reranker_scores_on_the_gpu(tmp_path: Path) -> None:
    from mentor.rag.reranker import CrossEncoderReranker, TrainingPair, mean_reciprocal_rank

    model, tokenizer = tiny_bert(num_labels=1)
    folder = save_model_folder(model, tokenizer, tmp_path / "ce")
    reranker = CrossEncoderReranker(folder, batch_size=2)
    passages = ["the box is red", "a kettle sings", "the lamp"]
    pairs = [TrainingPair("red box", "the box is red", ["a kettle sings", "the lamp"])]
    expected = reranker.score("red box", passages)
    expected_mrr = mean_reciprocal_rank(reranker.model, reranker.tokenizer, pairs, 64)
    with fake_cuda() as cuda:
        reranker.model.to(cuda)
        got = reranker.score("red box", passages)
        got_mrr = mean_reciprocal_rank(reranker.model, reranker.tokenizer, pairs, 64)
    # bf16 autocast on a GPU, fp32 (or the CPU's bf16) here: equal to bf16's precision
    assert got == pytest.approx(expected, abs=0.03) and got_mrr == expected_mrr


@pytest.mark.usefixtures("gpu_queries")
def test_the_embedder_embeds_on_the_gpu(tmp_path: Path) -> None:
    from mentor.models.embedding import SentenceEmbedder

    folder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    embedder = SentenceEmbedder(folder, name="tiny")
    texts = ["the box is red", "a kettle sings"]
    expected = embedder.embed(texts)
    with fake_cuda() as cuda:
        embedder.model.to(cuda)
        got = embedder.embed(texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("stack", [True, False], ids=["stacked", "grouped"])
def test_rows_with_different_adapters_on_the_gpu(
    stack: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the server runs for a batch of requests naming different adapters: per-row index
    and scaling masks built for the model's device."""
    from mentor.train import lora

    if not stack:
        monkeypatch.setattr(lora, "_STACK_RANKS", 0)
    model, _ = tiny_llama(seed=0)
    lora.add_lora(model, lora.LoRAConfig(r=4, alpha=8, dropout=0.0), "a")
    lora.add_lora(model, lora.LoRAConfig(r=2, alpha=2, dropout=0.0, targets=("q_proj",)), "b")
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            for b in layer.lora_B.values():
                b.weight.normal_(std=0.05, generator=torch.Generator().manual_seed(1))
    lora.set_adapter(model, None)
    model.eval()
    names = ["a", None, "b", "a"]
    ids = torch.randint(5, 200, (4, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), lora.use_row_adapters(model, names):
        expected = model(input_ids=ids).logits
    with fake_cuda() as cuda, lora.use_row_adapters(model.to(cuda), names):
        got = model(input_ids=ids.to(cuda)).logits.cpu()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_an_adapter_saves_from_and_loads_onto_a_gpu_model(tmp_path: Path) -> None:
    from mentor.train.adapters import load_adapter, save_adapter
    from mentor.train.lora import LoRAConfig, add_lora, base_fingerprint

    model, _ = tiny_llama(seed=0)
    fingerprint = base_fingerprint(model)
    config = LoRAConfig(r=4, alpha=8, dropout=0.0)
    add_lora(model, config)
    ids = torch.tensor([[5, 6, 7, 8]])
    with fake_cuda() as cuda:
        model.to(cuda)
        assert base_fingerprint(model) == fingerprint
        save_adapter(model, tmp_path / "adapter", config=config, base_model="tiny")
        fresh, _ = tiny_llama(seed=0)
        load_adapter(fresh.to(cuda), tmp_path / "adapter")  # read from disk onto the cpu
        got = fresh(input_ids=ids.to(cuda)).logits.cpu()
        expected = model(input_ids=ids.to(cuda)).logits.cpu()
    torch.testing.assert_close(got, expected)


def test_the_static_decoder_on_the_gpu() -> None:
    """A lone request's decoder with its static cache (uncompiled: CUDA graphs need a GPU)."""
    model, _ = tiny_llama()
    prompt = [5, 6, 7, 8]

    def decode() -> list[int]:
        decoder = static_decode.StaticDecoder(model, 32, static=True, compile=False)
        tokens = [int(decoder.prefill(prompt).argmax())]
        for _ in range(4):
            tokens.append(int(decoder.step(tokens[-1]).argmax()))
        return tokens

    expected = decode()
    with fake_cuda() as cuda:
        model.to(cuda)
        assert decode() == expected


def _rows() -> list[PackedRow]:
    return unpacked(_examples())


@pytest.mark.parametrize("teacher_side", ["cached", "online", "none"])
def test_training_losses_on_the_gpu(teacher_side: str, tmp_path: Path) -> None:
    """The training objectives' forward on a batch as the trainer moves it (autograd is the
    GPU check's part): fine-tuning's loss, and distillation's with a cached or live teacher."""
    from mentor.distill.data import collate_with_teacher
    from mentor.distill.objectives import LogitKDLoss
    from mentor.train.data import collate
    from mentor.train.objectives import CausalLMLoss
    from mentor.train.trainer import _tensors

    teacher, _ = tiny_qwen2(seed=1)
    student, _ = tiny_qwen2(seed=2, num_layers=1)
    rows = _rows()
    batch: Any
    if teacher_side == "cached":
        cache, _ = build_cache(
            tmp_path, teacher, _examples(), k=8, teacher_fingerprint="t", tokenizer_hash="v",
            console=Console(quiet=True),
        )  # fmt: skip
        batch, loss = collate_with_teacher(rows, 0, cache), LogitKDLoss(student)
    elif teacher_side == "online":
        batch, loss = collate(rows, 0), LogitKDLoss(student, teacher)
    else:
        batch, loss = collate(rows, 0), CausalLMLoss(student)
    with torch.no_grad():
        expected = float(loss(**_tensors(batch, torch.device("cpu"))))
    with fake_cuda() as cuda:
        teacher.to(cuda)
        got = float(loss.to(cuda)(**_tensors(batch, cuda)))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.usefixtures("gpu_queries")
def test_the_finetune_scores_on_the_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``mentor finetune`` reports before and after training: held-out answers from the
    engine and general-text perplexity."""
    from mentor.evaluate.answers import EvalItem
    from mentor.finetune.config import FinetuneConfig
    from mentor.finetune.recipe import score

    monkeypatch.setattr(static_decode, "supported", lambda model: False)  # CUDA graphs: GPU only
    model, tokenizer = tiny_llama()
    items = [
        EvalItem([{"role": "user", "content": f"what colour is box {i}?"}], "red", i + 1)
        for i in range(3)
    ]
    config = FinetuneConfig(
        model="tiny", data=tmp_path / "train.jsonl", eval_max_new_tokens=4, device="cuda"
    )
    quiet = Console(quiet=True)
    expected = score(model, tokenizer, items, config, quiet, "base", source="tiny")
    with fake_cuda() as cuda:
        got = score(model.to(cuda), tokenizer, items, config, quiet, "base", source="tiny")
    assert got.answers == expected.answers
    assert got.general_perplexity == pytest.approx(expected.general_perplexity, rel=1e-4)


def test_a_quantized_bakeoff_arm_runs_on_the_bakeoff_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ran on the CPU in a GPU bakeoff: slower than the other arms for the device, not for
    the quantization."""
    import mentor.quantize.io as quantize_io
    import mentor.quantize.recipe as quantize_recipe
    from mentor.bakeoff import arms
    from mentor.models import loading

    seen: dict[str, str] = {}

    def build(settings: Any, console: Any) -> None:
        seen["built"] = settings.device
        (tmp_path / quantize_io.WEIGHTS_FILE).write_bytes(b"")

    def load(folder: Path, *, device: str = "cpu", pack: bool = True) -> str:
        seen["loaded"] = device
        return "model"

    monkeypatch.setattr(quantize_recipe, "quantize_to_folder", build)
    monkeypatch.setattr(quantize_io, "load_quantized", load)
    monkeypatch.setattr(loading, "load_tokenizer", lambda folder: "tokenizer")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    arms._quantized("int8", "base", None, "base", tmp_path, "auto", Console(quiet=True))
    assert seen == {"built": "cuda", "loaded": "cuda"}


@pytest.mark.usefixtures("gpu_queries")
def test_models_load_onto_the_gpu_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5 swaps in Hugging Face Hub kernels when a CUDA model changes mode, which
    offline (the GPU check's machine reaches nothing) is a download error: mentor's loaders
    keep PyTorch's own layers, on every device."""
    from mentor.models.loading import load_causal_lm, load_embedder
    from mentor.rag.reranker import CrossEncoderReranker
    from mentor.train.classifier import LabelSet, build_classifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    llm = save_tiny_llama(tmp_path / "llm")
    encoder = save_model_folder(*tiny_bert(), tmp_path / "encoder")
    cross = save_model_folder(*tiny_bert(num_labels=1), tmp_path / "cross")
    embedder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    with fake_cuda():
        model = load_causal_lm(llm, device="cuda")
        assert model.device.type == "cuda" and not model.training
        model.train()  # what the trainer does: a second mode change
        classifier, _ = build_classifier(encoder, LabelSet(("a", "b")), method="lora")
        classifier.to("cuda").eval()
        CrossEncoderReranker(cross, device="cuda").model.train().eval()
        load_embedder(embedder, device="cuda").model.train().eval()
