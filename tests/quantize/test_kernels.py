"""The per-device kernel choice, the CUDA layouts' maths (checked on CPU against plain-PyTorch
references of each op's convention) and the Triton GEMVs under triton's CPU interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mentor.quantize.int4 import (
    Int4Linear,
    choose_int4_kernel,
    dequantize_int4,
    quantize_int4,
)
from mentor.quantize.int8 import (
    Int8Linear,
    choose_int8_kernel,
    int8_linear,
    quantize_rows,
    weight_only_linear,
)
from mentor.quantize.kernels import (
    default_kernel,
    inner_k_tiles,
    swap_nibbles,
    tinygemm_fits,
    tinygemm_layout,
    tinygemm_reference,
    triton_available,
)

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize(
    ("device", "triton", "int4", "int8"),
    [
        (CPU, True, "cpu", "dynamic"),
        (CUDA, True, "tinygemm", "triton"),
        (CUDA, False, "tinygemm", "aten"),
        (MPS, True, "dequant", "dynamic"),
    ],
)
def test_each_device_gets_its_default_kernel(
    device: torch.device, triton: bool, int4: str, int8: str
) -> None:
    assert default_kernel("int4", device, triton=triton) == int4
    assert default_kernel("int8", device, triton=triton) == int8
    assert choose_int8_kernel(device, triton=triton) == int8


def test_int4_choice_falls_back_by_shape_and_gpu() -> None:
    ok = {"triton": True, "tensor_cores": True}
    assert choose_int4_kernel(576, 1536, 64, CUDA, **ok) == "tinygemm"
    # N not in tiles of 8, or a group size tinygemm has no kernel for: the Triton GEMV
    assert choose_int4_kernel(576, 1532, 64, CUDA, **ok) == "triton"
    assert choose_int4_kernel(576, 1536, 16, CUDA, **ok) == "triton"
    assert choose_int4_kernel(576, 1536, 64, CUDA, triton=True, tensor_cores=False) == "triton"
    assert choose_int4_kernel(576, 1532, 64, CUDA, triton=False, tensor_cores=True) == "dequant"
    # the CPU never takes a CUDA kernel, whatever is installed
    assert choose_int4_kernel(576, 1536, 64, CPU, **ok) == "cpu"
    assert choose_int4_kernel(64, 8, 16, CPU, **ok) == "dequant"  # no CPU kernel for this shape


def test_a_kernel_that_cannot_run_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'tinygemm' cannot run cpu"):
        choose_int4_kernel(576, 1536, 64, CPU, "tinygemm", triton=True)
    with pytest.raises(ValueError, match="'tinygemm' cannot run this layer"):
        choose_int4_kernel(576, 1532, 64, CUDA, "tinygemm", triton=True, tensor_cores=True)
    with pytest.raises(ValueError, match="unknown int4 kernel 'marlin'"):
        choose_int4_kernel(576, 1536, 64, CUDA, "marlin")
    with pytest.raises(ValueError, match="runs on CUDA only"):
        choose_int8_kernel(CPU, "triton", triton=True)
    with pytest.raises(ValueError, match="needs the triton package"):
        choose_int8_kernel(CUDA, "triton", triton=False)
    with pytest.raises(ValueError, match="unknown int8 kernel"):
        choose_int8_kernel(CUDA, "int_mm")
    assert choose_int8_kernel(CUDA, "dequant", triton=False) == "dequant"


@pytest.mark.parametrize(
    ("k", "tiles"), [(2048, 8), (1536, 8), (576, 4), (8192, 8), (96, 2), (40, None)]
)
def test_inner_k_tiles_is_the_largest_that_divides(k: int, tiles: int | None) -> None:
    assert inner_k_tiles(k) == tiles


def test_tinygemm_shape_rules() -> None:
    assert tinygemm_fits(576, 576, 64) and tinygemm_fits(2048, 8192, 128)
    assert not tinygemm_fits(576, 572, 64)  # N in tiles of 8
    assert not tinygemm_fits(40, 64, 40)  # K in tiles of 32 at least; group size 32..256


def test_swap_nibbles_moves_the_even_column_to_the_high_nibble() -> None:
    packed = torch.tensor([[0x21, 0xF0]], dtype=torch.uint8)  # codes 1, 2, 0, 15
    assert swap_nibbles(packed).tolist() == [[0x12, 0x0F]]
    assert torch.equal(swap_nibbles(swap_nibbles(packed)), packed)


def test_tinygemm_layout_by_hand() -> None:
    # one row of 32 inputs, one group: codes 0..15 twice, scale 0.5, offset -1 (exact in bf16)
    codes = torch.arange(32) % 16
    packed = (codes[0::2] | (codes[1::2] << 4)).to(torch.uint8)[None]  # canonical
    scales, offsets = torch.tensor([[0.5]]), torch.tensor([[-1.0]])
    hi_first, scales_zeros = tinygemm_layout(packed, scales, offsets)
    assert hi_first[0, 0].item() == (0 << 4) | 1 and hi_first[0, 1].item() == (2 << 4) | 3
    assert scales_zeros.shape == (1, 1, 2) and scales_zeros.dtype == torch.bfloat16
    assert scales_zeros[0, 0].tolist() == [0.5, 3.0]  # zero = offset + 8 * scale
    x = torch.zeros(1, 32)
    x[0, 5] = 1.0  # picks w[5] = 5 * 0.5 - 1
    assert tinygemm_reference(x, hi_first, scales_zeros, 32).item() == 1.5


@pytest.mark.parametrize(("rows", "cols", "group"), [(16, 128, 32), (24, 576, 64), (8, 512, 256)])
def test_tinygemm_layout_stands_for_the_canonical_weight(rows: int, cols: int, group: int) -> None:
    gen = torch.Generator().manual_seed(rows + cols)
    q = quantize_int4(torch.randn(rows, cols, generator=gen) * 0.05, group)
    x = torch.randn(3, cols, generator=gen)
    hi_first, scales_zeros = tinygemm_layout(q.packed, q.scales, q.offsets)
    assert hi_first.shape == (rows, cols // 2) and scales_zeros.shape == (cols // group, rows, 2)
    want = x @ dequantize_int4(q.packed, q.scales, q.offsets, group).t()
    got = tinygemm_reference(x, hi_first, scales_zeros, group)
    # scales and zeros are bf16 in the kernel's format (8 bits of mantissa)
    assert float((got - want).norm() / want.norm()) < 1e-2
    # with the bf16-rounded scales and zeros the canonical maths gives the same numbers
    bf16 = scales_zeros.float()
    scales = bf16[..., 0].t()
    offsets = bf16[..., 1].t() - 8 * scales
    exact = x @ dequantize_int4(q.packed, scales, offsets, group).t()
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["aten", "dequant"])
@pytest.mark.parametrize("smoothed", [False, True])
def test_weight_only_int8_paths_match_the_dequantized_weight(kernel: str, smoothed: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    q, scale = quantize_rows(torch.randn(48, 64, generator=gen))
    smooth = torch.rand(64, generator=gen) + 0.5 if smoothed else None
    bias = torch.randn(48, generator=gen)
    x = torch.randn(5, 64, generator=gen)
    xs = x if smooth is None else x / smooth
    want = xs @ (q.float() * scale[:, None]).t() + bias
    got = weight_only_linear(x, q, scale, bias, smooth, kernel)
    assert got.dtype == x.dtype
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_int8_layer_keeps_the_dynamic_cpu_path() -> None:
    linear = torch.nn.Linear(64, 32)
    layer = Int8Linear.from_linear(linear, torch.rand(64) + 0.5)
    assert layer.use_kernel() == "dynamic"
    x = torch.randn(3, 64)
    want = int8_linear(x, layer.qweight, layer.scale, layer.bias, layer.smooth)
    assert torch.equal(layer(x), want)


def test_a_packed_int4_layer_moved_to_another_device_says_so() -> None:
    layer = Int4Linear.from_linear(torch.nn.Linear(128, 48), 32)
    if layer.pack_for_device() != "cpu":
        pytest.skip("no CPU int4 kernel here")
    with pytest.raises(RuntimeError, match="load the folder again"):
        layer.pack_for_device("dequant")
    layer.to("meta")
    with pytest.raises(RuntimeError, match=r"packed for the cpu kernel on meta.*load_quantized"):
        layer(torch.randn(2, 128))


TRITON_CHECK = """
import torch
from mentor.quantize.int4 import Int4Linear, dequantize_int4
from mentor.quantize.int8 import Int8Linear
import mentor.quantize.triton_gemv  # registers the ops

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
for n, k, g, tokens in [(48, 64, 32, 1), (40, 576, 64, 3), (24, 1100, 20, 2), (16, 64, 32, 20)]:
    linear = torch.nn.Linear(k, n)
    x = torch.randn(tokens, k, generator=gen)
    smooth = torch.rand(k, generator=gen) + 0.5
    for layer in (Int8Linear.from_linear(linear, smooth), Int4Linear.from_linear(linear, g)):
        want = torch.nn.functional.linear(x, layer.dequantized_weight(), layer.bias)
        layer.kernel = "triton"  # what pack_for_device picks on CUDA; here the interpreter runs it
        got = layer(x)
        err = float((got - want).norm() / want.norm())
        assert err < 1e-5, (type(layer).__name__, n, k, tokens, err)
        got16 = layer(x.bfloat16())
        assert got16.dtype == torch.bfloat16
        assert float((got16.float() - want).norm() / want.norm()) < 2e-2
print("ok")
"""


@pytest.mark.skipif(not triton_available(), reason="triton is not installed (CUDA builds ship it)")
def test_triton_gemvs_match_the_dequantized_weight_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when the kernels are defined
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRITON_CHECK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
