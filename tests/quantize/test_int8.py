"""Int8 dynamic quantization against a numpy reference and its error bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mentor.quantize.int8 import Int8Linear, dequantize_rows, int8_linear, quantize_rows


def np_quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    amax = np.abs(x).max(axis=1).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.round(x / scale[:, None]), -127, 127).astype(np.int8), scale


def test_rows_match_the_numpy_reference_and_stay_within_half_a_step() -> None:
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(0)) * 3
    x[4] = 0.0
    q, scale = quantize_rows(x)
    ref_q, ref_scale = np_quantize_rows(x.numpy())
    assert np.array_equal(q.numpy(), ref_q)
    np.testing.assert_allclose(scale.numpy(), ref_scale, rtol=1e-7)
    assert scale[4] == 1.0 and not q[4].any()  # a zero row: any scale, codes all zero
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127  # -128 is never used
    error = (dequantize_rows(q, scale) - x).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-6)).all())
    with pytest.raises(ValueError, match="2-D"):
        quantize_rows(torch.zeros(2, 3, 4))


def test_matmul_equals_the_integer_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 24, generator=gen)
    w = torch.randn(10, 24, generator=gen)
    bias = torch.randn(10, generator=gen)
    qw, sw = quantize_rows(w)
    got = int8_linear(x, qw, sw, bias)
    qx, sx = np_quantize_rows(x.reshape(6, 24).numpy())
    acc = qx.astype(np.int64) @ qw.numpy().astype(np.int64).T  # exact integer sums
    expected = acc * sx[:, None] * sw.numpy()[None, :] + bias.numpy()
    assert got.shape == (2, 3, 10)
    np.testing.assert_allclose(got.reshape(6, 10).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_tracks_the_original_linear(dtype: torch.dtype) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        linear = nn.Linear(96, 32)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = linear(x)
    out = layer(x.to(dtype))
    assert out.dtype == dtype
    # two 8-bit roundings (weights and activations): about 1% relative error
    assert float((out.float() - ref).norm() / ref.norm()) < 0.02
    assert layer.qweight.dtype == torch.int8 and layer.scale.shape == (32,)
    assert set(layer.state_dict()) == {"qweight", "scale", "bias"}
