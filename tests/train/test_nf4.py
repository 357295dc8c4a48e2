"""NF4: the code book is the paper's, quantization picks the nearest value per block, the round
trip stays within half a code gap, the layout is bitsandbytes' (checked against it when it is
installed), and the 4-bit layer's and LoRA-on-4-bit's gradients match a dense reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mentor.testing import tiny_llama
from mentor.train.lora import (
    LoRAConfig,
    LoRALinear,
    add_lora,
    mark_trainable,
    merge,
    parameter_report,
)
from mentor.train.nf4 import (
    NF4_VALUES,
    NF4Linear,
    dequantize_nf4,
    dynamic_map,
    nf4_bytes,
    quantize_linears,
    quantize_nf4,
)


def test_code_book_is_normal_quantiles_as_in_the_paper() -> None:
    """QLoRA appendix E: 8 positive and 7 negative quantiles of N(0,1) between offset 0.9677
    and 0.5, an exact zero, scaled by the largest."""
    norm = pytest.importorskip("scipy.stats").norm
    offset = 0.9677083
    positive = norm.ppf(torch.linspace(offset, 0.5, 9)[:-1].double().numpy()).tolist()
    negative = (-norm.ppf(torch.linspace(offset, 0.5, 8)[:-1].double().numpy())).tolist()
    values = torch.tensor(sorted([*positive, 0.0, *negative]), dtype=torch.float64)
    values /= values.abs().max()
    assert torch.allclose(values, torch.tensor(NF4_VALUES, dtype=torch.float64), atol=2e-7)
    assert len(NF4_VALUES) == 16 and NF4_VALUES[7] == 0.0


def test_quantize_reference_block() -> None:
    """Hand-worked: absmax 2.0, so 1.0 -> 0.5 (nearest 0.4407, code 12), -2.0 -> -1 (code 0),
    0.2 -> 0.1 (nearest 0.0796, code 8), 0 -> code 7; packed high nibble first."""
    w = torch.tensor([[1.0, -2.0, 0.2, 0.0]])
    q = quantize_nf4(w, block_size=4, double_quant=False)
    assert q.packed.view(-1).tolist() == [(12 << 4) | 0, (8 << 4) | 7]
    assert q.absmax.tolist() == [2.0]
    expected = torch.tensor([[NF4_VALUES[12], -1.0, NF4_VALUES[8], 0.0]]) * 2.0
    assert torch.equal(dequantize_nf4(q), expected)


@pytest.mark.parametrize("shape", [(96, 64), (7, 9), (1, 130)])
def test_round_trip_within_half_a_code_gap(shape: tuple[int, int]) -> None:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    q = quantize_nf4(w, block_size=64, double_quant=False)
    error = (dequantize_nf4(q) - w).abs().view(-1)
    half_gap = max(b - a for a, b in itertools.pairwise(NF4_VALUES)) / 2
    blocks = torch.nn.functional.pad(w.view(-1), (0, q.absmax.numel() * 64 - w.numel()))
    absmax = blocks.view(-1, 64).abs().amax(1).repeat_interleave(64)[: w.numel()]
    assert bool((error <= absmax * half_gap + 1e-6).all())
    # each block's largest weight is exact (it maps to +-1)
    assert torch.allclose(dequantize_nf4(q).abs().max(), w.abs().max())


def test_nf4_beats_uniform_int4_on_normal_weights() -> None:
    """The point of NF4: for normally distributed weights its error is below a uniform 4-bit
    grid's with the same blockwise absmax (QLoRA table 2's ordering)."""
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    nf4_mse = (dequantize_nf4(quantize_nf4(w, 64, double_quant=False)) - w).pow(2).mean()
    blocks = w.view(-1, 64)
    scale = blocks.abs().amax(1, keepdim=True) / 7
    int4 = (blocks / scale).round().clamp(-8, 7) * scale
    int4_mse = (int4.view_as(w) - w).pow(2).mean()
    assert nf4_mse < 0.8 * int4_mse


def test_double_quant_size_and_error() -> None:
    """4 + 8/64 + 32/(64*256) bits a weight, against 4 + 32/64 without; the decoded scales are
    within the dynamic map's resolution of the fp32 ones."""
    w = torch.randn(512, 512, generator=torch.Generator().manual_seed(2)) * 0.02
    plain, double = quantize_nf4(w, 64, double_quant=False), quantize_nf4(w, 64)
    nbytes = lambda q: sum(  # noqa: E731
        t.numel() * t.element_size()
        for t in (q.packed, q.absmax, q.scale_absmax, q.scale_offset)
        if t is not None
    )
    assert nbytes(plain) * 8 / w.numel() == pytest.approx(4.5)
    assert nbytes(double) * 8 / w.numel() == pytest.approx(4.127, abs=0.001)
    relative = ((double.scales() - plain.absmax) / plain.absmax).abs()
    assert float(relative.max()) < 0.02
    base_error = (dequantize_nf4(plain) - w).pow(2).mean()
    assert (dequantize_nf4(double) - w).pow(2).mean() < 1.05 * base_error


def test_dynamic_map_shape() -> None:
    book = dynamic_map()
    assert book.shape == (256,) and bool((book[1:] >= book[:-1]).all())
    assert book.max() == 1.0 and book.min() > -1.0 and bool((book == 0).any())


def test_layout_is_bitsandbytes() -> None:
    """Both ways: bitsandbytes dequantizes our tensors as we do, we dequantize its tensors as it
    does, and the codes agree (bitsandbytes' CPU search is not exactly nearest on near-ties:
    where they differ, ours is the nearer)."""
    bnb = pytest.importorskip("bitsandbytes.functional")
    from mentor.train.nf4 import NF4Weight, _bnb_dequantize

    assert torch.equal(dynamic_map(), bnb.create_dynamic_map())
    w = torch.randn(384, 192, generator=torch.Generator().manual_seed(3)) * 0.02
    for double in (False, True):
        ours = quantize_nf4(w, 64, double)
        assert torch.equal(_bnb_dequantize(ours, torch.float32), dequantize_nf4(ours))
        packed, state = bnb.quantize_4bit(
            w, blocksize=64, quant_type="nf4", compress_statistics=double
        )
        theirs = NF4Weight(
            packed,
            state.absmax,
            (384, 192),
            64,
            state.state2.absmax if double else None,
            state.offset if double else None,
        )
        assert torch.equal(dequantize_nf4(theirs), bnb.dequantize_4bit(packed, state))
        assert torch.equal(ours.packed, packed)
        same = ours.absmax == state.absmax
        assert float(same.float().mean()) > 0.99
        if double:
            book = dynamic_map()
            target = (ours.scales() * 0 + _true_scales(w) - ours.scale_offset)[~same]
            group = torch.arange(len(same))[~same] // 256
            value = target / ours.scale_absmax[group]
            mine = (book[ours.absmax[~same].long()] - value).abs()
            other = (book[state.absmax[~same].long()] - value).abs()
            assert bool((mine <= other).all())


def _true_scales(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(-1, 64).abs().amax(1)


def test_layer_forward_backward_match_dense_reference() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(128, 96)
    layer = NF4Linear.from_linear(dense, block_size=64)
    reference = dequantize_nf4(layer.quantized())
    x = torch.randn(3, 5, 128, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = layer(x)
    expected = F.linear(x_ref, reference, dense.bias)
    assert torch.allclose(out, expected, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)  # type: ignore[arg-type]
    assert not layer.bias.requires_grad  # type: ignore[union-attr]


def test_layer_keeps_no_dense_weight_for_backward() -> None:
    layer = NF4Linear.from_linear(nn.Linear(256, 512))
    saved: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.shape)
        return t

    x = torch.randn(4, 256, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    assert all(s.numel() < 512 * 256 for s in saved)


def test_model_to_dtype_keeps_fp32_statistics() -> None:
    layer = NF4Linear.from_linear(nn.Linear(64, 64))
    before = layer.dequantize(torch.float32)
    layer.to(torch.bfloat16)
    assert torch.equal(layer.dequantize(torch.float32), before)
    assert layer.bias is not None and layer.bias.dtype == torch.bfloat16


@pytest.mark.parametrize("autocast", [False, True])
def test_lora_on_nf4_matches_lora_on_the_dequantized_base(autocast: bool) -> None:
    """QLoRA's layer is LoRA on W' = dequant(quant(W)): same output and the same gradients for
    x, A and B as our LoRA over a dense nn.Linear holding W'."""
    torch.manual_seed(0)
    dense = nn.Linear(128, 64, bias=False)
    nf4 = NF4Linear.from_linear(dense)
    reference = nn.Linear(128, 64, bias=False)
    with torch.no_grad():
        reference.weight.copy_(nf4.dequantize(torch.float32))
    config = LoRAConfig(r=8, alpha=16, dropout=0.0)
    ours, theirs = LoRALinear(nf4), LoRALinear(reference)
    ours.add_adapter("default", config)
    theirs.add_adapter("default", config)
    with torch.no_grad():
        ours.b("default").weight.normal_()  # a non-zero B so the adapter's path counts
        theirs.a("default").weight.copy_(ours.a("default").weight)
        theirs.b("default").weight.copy_(ours.b("default").weight)
    ours.active_adapter = theirs.active_adapter = "default"
    x = torch.randn(2, 6, 128)
    results = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(xi)
        out.float().pow(2).sum().backward()
        results.append(
            (out, xi.grad, layer.a("default").weight.grad, layer.b("default").weight.grad)
        )
    tol = 2e-2 if autocast else 1e-4
    for mine, ref in zip(results[0], results[1], strict=True):
        assert mine is not None and ref is not None
        assert torch.allclose(mine.float(), ref.float(), rtol=tol, atol=tol)


def test_quantize_linears_on_a_model_keeps_the_head_and_is_close() -> None:
    model, _ = tiny_llama(tie_word_embeddings=False)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator())
    with torch.no_grad():
        dense_logits = model(input_ids=ids).logits
    paths = quantize_linears(model)
    assert len(paths) == 2 * 7 and "lm_head" not in paths
    assert type(model.lm_head) is nn.Linear
    assert nf4_bytes(model) > 0
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    # 4 bits a weight: about a 10% relative error per weight, and no more on the logits
    assert (logits - dense_logits).abs().mean() < 0.2 * dense_logits.abs().mean()
    add_lora(model, LoRAConfig(r=4))
    mark_trainable(model, "default")
    dense, _ = tiny_llama(tie_word_embeddings=False)
    assert parameter_report(model).base == sum(p.numel() for p in dense.parameters())
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    with pytest.raises(RuntimeError, match="merge the adapter onto the unquantized base"):
        merge(model, "default")
