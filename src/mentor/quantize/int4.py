"""Int4 weight-only quantization, group-wise and asymmetric; activations stay in floating point.

Each row of ``W`` (d_out, d_in) is cut into groups of ``G`` consecutive inputs; each group gets
its own scale and offset, chosen from its minimum and maximum::

    scale = (max - min) / 15        offset = min
    q     = round((w - offset) / scale) in [0, 15]          w ≈ q · scale + offset

Two codes share a byte, the even column in the low nibble: ``byte = q[:, 2i] | q[:, 2i+1] << 4``.
A weight then costs half a byte plus 8 bytes of fp32 (scale, offset) per group: 0.5625 bytes at
``G = 128`` against 4 for fp32.

That canonical layout is what is saved. For speed on a CPU the layer is repacked once
(:meth:`Int4Linear.pack_for_device`) into the blocked layout of
``aten._weight_int4pack_mm_for_cpu``, which depends on the CPU's vector width and so is never
written to disk. The kernel's convention is ``w = (q - 8) · scale + zero``, so
``zero = offset + 8 · scale``; it wants bf16 activations (fp32 ones take a path 60x slower),
group sizes 32, 64, 128 or 256 and ``d_out`` a multiple of 16. Anything else runs by
dequantizing the weight on each call: correct, but slow.

Measured on this project's 2-core AVX-512 CPU (torch 2.13, torchao 0.18), SmolLM2's 576 -> 1536
projection at ``G = 64``, one thread: the kernel takes 0.052 ms for one token and 2.6 ms for 128
(fp32 ``nn.Linear``: 0.076 and 2.3 ms), dequantizing on the fly 3.2 and 5.4 ms. torchao 0.18's
``Int4WeightOnlyConfig`` has no CPU format left (``opaque`` is gone, ``plain`` needs the ``mslk``
package, ``tile_packed_to_4d`` needs CUDA) and ``IntxWeightOnlyConfig`` keeps one int8 per weight.

On CUDA the layer runs ``aten._weight_int4pack_mm`` (tinygemm) or a Triton GEMV instead; which
kernel runs where, and why, is in :mod:`.kernels`; :meth:`Int4Linear.pack_for_device` builds the
chosen kernel's layout from the canonical one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)
from torch import nn

from mentor.quantize.kernels import (
    CUDA_ONLY,
    GEMV_MAX_TOKENS,
    check_kernel,
    cuda_capable,
    default_kernel,
    inner_k_tiles,
    tinygemm_fits,
    tinygemm_layout,
    triton_available,
)

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


PACKED_KERNELS = frozenset({"cpu", "tinygemm"})
"""Kernels that replace the canonical tensors with a layout of their own (not saved)."""


def choose_int4_kernel(
    in_features: int,
    out_features: int,
    group_size: int,
    device: torch.device,
    requested: str | None = None,
    *,
    triton: bool | None = None,
    tensor_cores: bool | None = None,
) -> str:
    """The kernel (:data:`.kernels.INT4_KERNELS`) a layer of this shape runs on ``device``.

    ``requested`` is checked and refused with a clear error where it cannot run; otherwise the
    device's default (:func:`.kernels.default_kernel`) falls back, for a shape or a GPU it does
    not take, to the Triton GEMV, else to dequantizing. ``triton`` and ``tensor_cores`` (sm80+)
    default to looking; tests pass them."""
    if requested is not None:
        check_kernel("int4", requested)
    has_triton = triton_available() if triton is None else triton
    fits = {
        "cpu": kernel_available(out_features, group_size, device),
        "tinygemm": device.type == "cuda"
        and tinygemm_fits(in_features, out_features, group_size)
        and (cuda_capable(device) if tensor_cores is None else tensor_cores),
        "triton": device.type == "cuda" and has_triton,
        "dequant": True,
    }
    if requested is not None:
        if not fits[requested]:
            where = "CUDA with triton" if requested == "triton" else f"this layer on {device}"
            if requested in CUDA_ONLY and device.type != "cuda":
                where = f"{device} (it is a CUDA kernel)"
            raise ValueError(
                f"int4 kernel {requested!r} cannot run {where}: "
                f"{in_features} -> {out_features}, group size {group_size}"
            )
        return requested
    choice = default_kernel("int4", device, triton=has_triton)
    for candidate in (choice, "triton", "dequant"):
        if fits[candidate]:
            return candidate
    return "dequant"


class Int4Linear(nn.Module):
    """An ``nn.Linear`` stored as group-wise int4 codes (canonical layout, see the module doc).

    State: ``qweight`` (d_out, d_in / 2) uint8, ``scales`` and ``offsets`` (d_out, d_in / G)
    fp32, and ``bias`` (d_out,) fp32 when the layer had one.

    :meth:`pack_for_device` picks the kernel for the layer's device (``kernel``; until then
    ``dequant``, correct but slow). The CPU kernel and tinygemm swap the canonical tensors for
    a layout of their own (the same size): such a layer runs 60x faster on a CPU, and on a GPU
    reads half the bytes of bf16, but can no longer be saved nor moved to another device, so
    save first.
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
        self.kernel = "dequant"
        """Which kernel the forward runs (:data:`.kernels.INT4_KERNELS`)."""
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
        # a packed kernel's copy; never saved (its layout depends on the device)
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
    def packed(self) -> bool:
        """Whether the canonical tensors were swapped for a kernel's own layout."""
        return self.kernel in PACKED_KERNELS

    @property
    def packed_for_cpu(self) -> bool:
        return self.kernel == "cpu"

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight this layer stands for (d_out, d_in)."""
        if self.packed:
            raise RuntimeError(
                f"this layer is packed for the {self.kernel} kernel; its codes are gone"
            )
        return dequantize_int4(self.qweight, self.scales, self.offsets, self.group_size)

    @torch.no_grad()
    def pack_for_device(self, kernel: str | None = None) -> str:
        """Set up ``kernel`` (default: :func:`choose_int4_kernel`'s pick for the layer's device)
        and return its name. A packing kernel frees the canonical tensors (their state-dict
        entries become empty), so memory holds one copy of the weights."""
        if self.packed:
            if kernel not in (None, self.kernel):
                raise RuntimeError(
                    f"this layer is packed for the {self.kernel} kernel; load the folder again "
                    f"to run {kernel}"
                )
            return self.kernel
        device = self.qweight.device
        choice = choose_int4_kernel(
            self.in_features, self.out_features, self.group_size, device, kernel
        )
        if choice == "cpu":
            codes = unpack_int4(self.qweight).to(torch.int32)  # (d_out, d_in)
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            zeros = self.offsets + 8 * self.scales  # the kernel's w = (q - 8) * scale + zero
            scales_zeros = torch.stack((self.scales, zeros), dim=-1)  # (d_out, groups, 2)
            self.kernel_scales_zeros = scales_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)
            self.kernel_weight = weight
        elif choice == "tinygemm":
            codes, self.kernel_scales_zeros = tinygemm_layout(
                self.qweight, self.scales, self.offsets
            )
            tiles = inner_k_tiles(self.in_features)
            self.kernel_weight = torch.ops.aten._convert_weight_to_int4pack(
                codes.contiguous(), tiles
            )
        elif choice == "triton":
            import mentor.quantize.triton_gemv  # noqa: F401  (registers torch.ops.mentor.int4_gemv)
        if choice in PACKED_KERNELS:
            empty = {"qweight": torch.uint8, "scales": torch.float32, "offsets": torch.float32}
            for name, dtype in empty.items():
                setattr(self, name, torch.empty(0, dtype=dtype, device=device))
        self.kernel = choice
        return choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # (tokens, d_in)
        kernel = self.kernel
        if kernel in PACKED_KERNELS:
            assert self.kernel_weight is not None and self.kernel_scales_zeros is not None
            if self.kernel_weight.device.type != x.device.type:
                raise RuntimeError(
                    f"this int4 layer is packed for the {kernel} kernel on "
                    f"{self.kernel_weight.device}, the input is on {x.device}: load the folder "
                    "with load_quantized(..., device=...) on the device it runs on"
                )
        if kernel == "cpu":
            out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat.to(torch.bfloat16),
                self.kernel_weight,
                self.group_size,
                self.kernel_scales_zeros,
            )
            if self.bias is not None:
                out = out.float().add_(self.bias)
        elif kernel == "tinygemm":
            out = torch.ops.aten._weight_int4pack_mm(
                flat.to(torch.bfloat16).contiguous(),
                self.kernel_weight,
                self.group_size,
                self.kernel_scales_zeros,
            )
            if self.bias is not None:
                out = out + self.bias.to(out.dtype)
        elif kernel == "triton" and flat.shape[0] <= GEMV_MAX_TOKENS:
            out = torch.ops.mentor.int4_gemv(
                flat, self.qweight, self.scales, self.offsets, self.group_size
            )
            if self.bias is not None:
                out = out + self.bias.to(out.dtype)
        elif kernel == "triton":  # a prompt: one dense matmul beats a GEMV per row
            weight = self.dequantized_weight().to(flat.dtype)
            bias = None if self.bias is None else self.bias.to(flat.dtype)
            out = F.linear(flat, weight, bias)
        else:
            out = F.linear(flat.float(), self.dequantized_weight(), self.bias)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:  # type: ignore[type-arg]
        if self.packed:
            raise RuntimeError(
                f"{prefix.rstrip('.')}: packed for the {self.kernel} kernel, whose layout is not "
                "saved; save the quantized model before packing it"
            )
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int4, group_size={self.group_size}, kernel={self.kernel}"
        )
