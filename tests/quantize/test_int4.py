"""Int4 group-wise math against a numpy reference, its error bound, and the layer's two paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mentor.quantize.int4 import (
    Int4Linear,
    dequantize_int4,
    kernel_available,
    pack_int4,
    quantize_int4,
    unpack_int4,
)


def np_quantize_int4(w: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reference: min-max per group, 16 levels, even column in the low nibble."""
    rows, cols = w.shape
    groups = w.reshape(rows, cols // g, g).astype(np.float32)
    low, high = groups.min(-1), groups.max(-1)
    scale = np.where(high > low, (high - low) / np.float32(15), np.float32(1)).astype(np.float32)
    q = np.clip(np.round((groups - low[..., None]) / scale[..., None]), 0, 15)
    q = q.astype(np.uint8).reshape(rows, cols)
    return q[:, 0::2] | (q[:, 1::2] << 4), scale, low


def test_pack_puts_the_even_column_in_the_low_nibble_and_unpack_inverts_it() -> None:
    q = torch.tensor([[1, 2, 15, 0], [7, 8, 0, 15]])
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[1 | 2 << 4, 15], [7 | 8 << 4, 15 << 4]]
    codes = torch.randint(0, 16, (5, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(unpack_int4(pack_int4(codes)), codes.to(torch.uint8))
    with pytest.raises(ValueError, match="even number of columns"):
        pack_int4(torch.zeros(2, 3))


@pytest.mark.parametrize(("rows", "cols", "group"), [(4, 16, 8), (6, 64, 32), (3, 128, 128)])
def test_quantize_matches_the_numpy_reference(rows: int, cols: int, group: int) -> None:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows))
    got = quantize_int4(w, group)
    packed, scale, low = np_quantize_int4(w.numpy(), group)
    assert np.array_equal(got.packed.numpy(), packed)
    np.testing.assert_allclose(got.scales.numpy(), scale, rtol=1e-6)
    np.testing.assert_array_equal(got.offsets.numpy(), low)
    assert got.packed.shape == (rows, cols // 2) and got.scales.shape == (rows, cols // group)


def test_round_trip_error_is_at_most_half_a_step_per_group() -> None:
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    q = quantize_int4(w, 64)
    back = dequantize_int4(q.packed, q.scales, q.offsets, 64)
    error = (back - w).abs().view(32, 4, 64)
    bound = q.scales[..., None] / 2 * (1 + 1e-5) + 1e-7
    assert bool((error <= bound).all())
    # the extremes of each group are on the grid: min exactly, max to float rounding
    groups = w.view(32, 4, 64)
    assert torch.equal(back.view(32, 4, 64).amin(-1), groups.amin(-1))
    torch.testing.assert_close(back.view(32, 4, 64).amax(-1), groups.amax(-1))
    # 16 levels: the error is ~range/60 on average, far above fp32 rounding
    assert 0.01 < float((back - w).norm() / w.norm()) < 0.15


def test_constant_and_zero_groups_come_back_exactly() -> None:
    w = torch.zeros(2, 16)
    w[1, 8:] = 0.25
    q = quantize_int4(w, 8)
    assert torch.equal(dequantize_int4(q.packed, q.scales, q.offsets, 8), w)


def test_bad_group_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of group size 32"):
        quantize_int4(torch.zeros(2, 48), 32)
    with pytest.raises(ValueError, match="even number"):
        quantize_int4(torch.zeros(2, 48), 3)


def _linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(d_in, d_out, bias=bias)


def test_layer_equals_its_dequantized_weight_and_tracks_the_original() -> None:
    linear = _linear(128, 48)
    layer = Int4Linear.from_linear(linear, 32)
    x = torch.randn(3, 5, 128, generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.linear(x, layer.dequantized_weight(), linear.bias)
    torch.testing.assert_close(layer(x), expected)
    with torch.no_grad():
        ref = linear(x)
    assert float((layer(x) - ref).norm() / ref.norm()) < 0.15
    assert set(layer.state_dict()) == {"qweight", "scales", "offsets", "bias"}


@pytest.mark.skipif(not kernel_available(48, 32, torch.device("cpu")), reason="no CPU int4 kernel")
def test_cpu_kernel_agrees_with_the_dequantized_path_and_cannot_be_saved() -> None:
    layer = Int4Linear.from_linear(_linear(128, 48), 32)
    x = torch.randn(7, 128, generator=torch.Generator().manual_seed(3))
    slow = layer(x)
    assert layer.pack_for_device() == "cpu"
    assert layer.packed_for_cpu and layer.qweight.numel() == 0
    fast = layer(x)
    # the kernel runs in bf16 (activations, scales, zeros): ~3 significant digits
    assert float((fast - slow).norm() / slow.norm()) < 1e-2
    assert fast.dtype == x.dtype
    with pytest.raises(RuntimeError, match="save the quantized model before packing"):
        layer.state_dict()


def test_shapes_the_kernel_cannot_run_keep_the_dequantized_path() -> None:
    layer = Int4Linear.from_linear(_linear(64, 8), 16)  # d_out % 16 and group 16: no kernel
    assert layer.pack_for_device() == "dequant"
    x = torch.randn(2, 64)
    torch.testing.assert_close(
        layer(x), torch.nn.functional.linear(x, layer.dequantized_weight(), layer.bias)
    )
