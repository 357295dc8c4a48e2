"""Int4 weight-only quantization, group-wise and asymmetric; activations stay in floating point.

Each row of ``W`` (d_out, d_in) is cut into groups of ``G`` consecutive inputs; each group gets
its own scale and offset, chosen from its minimum and maximum::

    scale = (max - min) / 15        offset = min
    q     = round((w - offset) / scale) in [0, 15]          w ≈ q · scale + offset

Two codes share a byte, the even column in the low nibble: ``byte = q[:, 2i] | q[:, 2i+1] << 4``.
A weight then costs half a byte plus 8 bytes of fp32 (scale, offset) per group: 0.5625 bytes at
``G = 128`` against 4 for fp32.

That canonical layout is what is saved. For speed on a CPU the layer is repacked once
(:meth:`Int4Linear.pack_for_cpu`) into the blocked layout of ``aten._weight_int4pack_mm_for_cpu``,
which depends on the CPU's vector width and so is never written to disk. The kernel's convention
is ``w = (q - 8) · scale + zero``, so ``zero = offset + 8 · scale``; it wants bf16 activations
(fp32 ones take a path 60x slower), group sizes 32, 64, 128 or 256 and ``d_out`` a multiple of
16. Anything else runs by dequantizing the weight on each call: correct, but slow.

Measured on this project's 2-core AVX-512 CPU (torch 2.13, torchao 0.18), SmolLM2's 576 -> 1536
projection at ``G = 64``, one thread: the kernel takes 0.052 ms for one token and 2.6 ms for 128
(fp32 ``nn.Linear``: 0.076 and 2.3 ms), dequantizing on the fly 3.2 and 5.4 ms. torchao 0.18's
``Int4WeightOnlyConfig`` has no CPU format left (``opaque`` is gone, ``plain`` needs the ``mslk``
package, ``tile_packed_to_4d`` needs CUDA) and ``IntxWeightOnlyConfig`` keeps one int8 per weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)
from torch import nn

QMAX = 15
KERNEL_GROUP_SIZES = (32, 64, 128, 256)
"""Group sizes ``aten._weight_int4pack_mm_for_cpu`` accepts."""


@dataclass(frozen=True)
class Int4Weight:
    """A weight matrix in the canonical int4 layout."""

    packed: torch.Tensor
    """(d_out, d_in / 2) uint8, two codes per byte, the even column in the low nibble."""
    scales: torch.Tensor
    """(d_out, d_in / G) fp32."""
    offsets: torch.Tensor
    """(d_out, d_in / G) fp32: the value of code 0."""
    group_size: int


def check_group_size(in_features: int, group_size: int) -> None:
    if group_size < 2 or group_size % 2:
        raise ValueError(f"the group size must be an even number >= 2, got {group_size}")
    if in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of group size {group_size}")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(rows, cols) codes in [0, 15] -> (rows, cols / 2) uint8, even column in the low nibble."""
    if q.shape[-1] % 2:
        raise ValueError(f"an even number of columns is needed, got {q.shape[-1]}")
    codes = q.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: (rows, cols / 2) uint8 -> (rows, cols) uint8 codes."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).view(packed.shape[0], -1)  # interleave


def quantize_int4(weight: torch.Tensor, group_size: int) -> Int4Weight:
    """Group-wise asymmetric int4 codes of ``weight`` (d_out, d_in); see the module docstring.

    A constant group gets scale 1 and offset its value, so it comes back exactly.
    """
    rows, cols = weight.shape
    check_group_size(cols, group_size)
    groups = weight.detach().float().reshape(rows, cols // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (d_out, d_in / G)
    spread = high - low
    scales = torch.where(spread > 0, spread / QMAX, torch.ones_like(spread))
    q = torch.round((groups - low[..., None]) / scales[..., None]).clamp_(0, QMAX)
    return Int4Weight(pack_int4(q.reshape(rows, cols)), scales, low, group_size)


def dequantize_int4(
    packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group_size: int
) -> torch.Tensor:
    """The fp32 matrix (d_out, d_in) that the codes, scales and offsets stand for."""
    codes = unpack_int4(packed).float()
    rows, cols = codes.shape
    groups = codes.view(rows, cols // group_size, group_size)
    return (groups * scales[..., None] + offsets[..., None]).view(rows, cols)


def kernel_available(out_features: int, group_size: int, device: torch.device) -> bool:
    """Whether ``aten._weight_int4pack_mm_for_cpu`` can run a layer of this shape here."""
    return (
        device.type == "cpu"
        and group_size in KERNEL_GROUP_SIZES
        and out_features % 16 == 0
        and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    )


class Int4Linear(nn.Module):
    """An ``nn.Linear`` stored as group-wise int4 codes (canonical layout, see the module doc).

    State: ``qweight`` (d_out, d_in / 2) uint8, ``scales`` and ``offsets`` (d_out, d_in / G)
    fp32, and ``bias`` (d_out,) fp32 when the layer had one.

    :meth:`pack_for_cpu` swaps the canonical tensors for the CPU kernel's (the same size); a
    packed layer runs ~60x faster on a CPU but can no longer be saved, so save first.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        group_size: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        check_group_size(in_features, group_size)
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        n_groups = in_features // group_size
        self.qweight: torch.Tensor
        self.scales: torch.Tensor
        self.offsets: torch.Tensor
        self.register_buffer(
            "qweight",
            torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device),
        )
        self.register_buffer("scales", torch.ones(out_features, n_groups, device=device))
        self.register_buffer("offsets", torch.zeros(out_features, n_groups, device=device))
        self.bias: torch.Tensor | None
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        # the CPU kernel's copy, once packed; never saved (its layout depends on the CPU)
        self.kernel_weight: torch.Tensor | None
        self.kernel_scales_zeros: torch.Tensor | None
        self.register_buffer("kernel_weight", None, persistent=False)
        self.register_buffer("kernel_scales_zeros", None, persistent=False)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, group_size: int) -> Int4Linear:
        weight = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            group_size,
            weight.device,
        )
        quantized = quantize_int4(weight, group_size)
        layer.qweight.copy_(quantized.packed)
        layer.scales.copy_(quantized.scales)
        layer.offsets.copy_(quantized.offsets)
        if layer.bias is not None and linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    @property
    def packed_for_cpu(self) -> bool:
        return self.kernel_weight is not None

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight this layer stands for (d_out, d_in)."""
        if self.packed_for_cpu:
            raise RuntimeError("this layer is packed for the CPU kernel; its codes are gone")
        return dequantize_int4(self.qweight, self.scales, self.offsets, self.group_size)

    @torch.no_grad()
    def pack_for_cpu(self) -> bool:
        """Repack for ``aten._weight_int4pack_mm_for_cpu`` where it runs; ``True`` if packed.

        The canonical tensors are freed (their state-dict entries become empty), so memory holds
        one copy of the weights."""
        if self.packed_for_cpu:
            return True
        if not kernel_available(self.out_features, self.group_size, self.qweight.device):
            return False
        codes = unpack_int4(self.qweight).to(torch.int32)  # (d_out, d_in)
        weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        zeros = self.offsets + 8 * self.scales  # the kernel's w = (q - 8) * scale + zero
        scales_zeros = torch.stack((self.scales, zeros), dim=-1)  # (d_out, groups, 2)
        self.kernel_scales_zeros = scales_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)
        self.kernel_weight = weight
        empty = {"qweight": torch.uint8, "scales": torch.float32, "offsets": torch.float32}
        for name, dtype in empty.items():
            setattr(self, name, torch.empty(0, dtype=dtype, device=self.qweight.device))
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # (tokens, d_in)
        if self.kernel_weight is not None and self.kernel_scales_zeros is not None:
            out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat.to(torch.bfloat16),
                self.kernel_weight,
                self.group_size,
                self.kernel_scales_zeros,
            )
            if self.bias is not None:
                out = out.float().add_(self.bias)
        else:
            out = F.linear(flat.float(), self.dequantized_weight(), self.bias)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:  # type: ignore[type-arg]
        if self.packed_for_cpu:
            raise RuntimeError(
                f"{prefix.rstrip('.')}: packed for the CPU kernel, whose layout is not saved; "
                "save the quantized model before packing it"
            )
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        kernel = ", cpu kernel" if self.packed_for_cpu else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int4, group_size={self.group_size}{kernel}"
        )
