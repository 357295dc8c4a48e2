"""Which kernel runs a quantized layer on which device, and the layout maths of the CUDA ones.

The canonical layouts (:mod:`.int4`, :mod:`.int8`) are what is saved; each device gets its
kernel when a model is loaded (:func:`mentor.quantize.io.load_quantized` calls
:func:`mentor.quantize.convert.pack_for_device`). The choice, by method and device:

========  ==========================================  ==========================================
method    CPU (measured there, unchanged)             CUDA (batch-1 decode is memory bound)
========  ==========================================  ==========================================
int4      ``cpu``: ``aten._weight_int4pack_mm_for_cpu``  ``tinygemm``: ``aten._weight_int4pack_mm``
int8      ``dynamic``: int8 x int8 ``torch._int_mm``  ``triton``: weight-only GEMV (``.triton``)
========  ==========================================  ==========================================

Why these on CUDA: at batch 1 a decode step reads every weight once and does little arithmetic,
so what pays is reading fewer bytes in one kernel per layer, with no per-call conversion (the old
CUDA paths dequantized or converted the whole weight on every call: 2x slower than fp32).

- int4, ``tinygemm``: the tensor-core kernel in core PyTorch (from gpt-fast) that torchao's
  ``Int4WeightOnlyConfig`` runs on CUDA; bf16 activations, one launch, any token count; it has a
  meta kernel, so ``torch.compile(fullgraph=True)`` and CUDA graphs take it as it is. Its
  convention is the CPU kernel's, ``w = (q - 8) · scale + zero``; its input is (N, K/2) uint8 with
  the *even* column in the *high* nibble (torch >= 2.5; the canonical layout has it in the low
  one) and ``scales_and_zeros`` (K/G, N, 2) bf16. See :func:`tinygemm_layout`.
- int8, ``triton``: a GEMV over the canonical int8 rows that divides by the SmoothQuant factors
  and applies the row scale in the same pass (one launch per layer, like a bf16 ``nn.Linear``);
  above :data:`GEMV_MAX_TOKENS` tokens (prefill) the weight is dequantized to bf16 for cuBLAS.
  Activations stay in floating point on CUDA (weight-only), which is more accurate than the CPU's
  dynamic int8 activations. ``aten`` (``torch._weight_int8pack_mm``, CUDA since torch 2.10) is the
  fallback without triton: it casts activations to fp32 and back around its kernel (three
  launches). ``dequant`` (bf16 weight rebuilt each call) is there to be measured against.

``bench/quantize_bench.py``'s :func:`gpu_rows` times every candidate side by side on a GPU.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

INT4_KERNELS: dict[str, str] = {
    "cpu": "aten._weight_int4pack_mm_for_cpu on the CPU's blocked layout (bf16 activations)",
    "tinygemm": "aten._weight_int4pack_mm on CUDA, tensor-core tiles (bf16 activations)",
    "triton": "mentor's Triton GEMV over the canonical layout (CUDA; dequantizes above 16 tokens)",
    "dequant": "the fp32 weight rebuilt on every call (any device; slow)",
}
INT8_KERNELS: dict[str, str] = {
    "dynamic": "int8 activations per token x int8 weights (torch._int_mm on CPU, emulated off it)",
    "triton": "mentor's Triton weight-only GEMV (CUDA; dequantizes above 16 tokens)",
    "aten": "torch._weight_int8pack_mm, weight-only (CUDA since torch 2.10; fp32 inside)",
    "dequant": "weight-only, the weight rebuilt in the activations' dtype on every call",
}
KERNELS: dict[str, dict[str, str]] = {"int4": INT4_KERNELS, "int8": INT8_KERNELS}
"""Every kernel a quantized layer can run, by method."""

CUDA_ONLY = frozenset({"tinygemm", "triton", "aten"})
GEMV_MAX_TOKENS = 16
"""Above this many tokens in one call the Triton paths dequantize and use a dense matmul."""

TINYGEMM_GROUP_SIZES = (32, 64, 128, 256)
_KTILE = 16  # inputs per k-tile of tinygemm


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` would work (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def check_kernel(method: str, kernel: str) -> None:
    if kernel not in KERNELS[method]:
        raise ValueError(
            f"unknown {method} kernel {kernel!r}; choose one of: {', '.join(KERNELS[method])}"
        )


def default_kernel(method: str, device: torch.device, *, triton: bool | None = None) -> str:
    """The kernel a ``method`` layer runs on ``device`` (before its shape is checked).

    ``triton`` says whether triton imports (default: look)."""
    if device.type == "cuda":
        if method == "int4":
            return "tinygemm"
        has_triton = triton_available() if triton is None else triton
        return "triton" if has_triton else "aten"
    if method == "int4":
        return "cpu" if device.type == "cpu" else "dequant"
    return "dynamic"


def inner_k_tiles(in_features: int) -> int | None:
    """tinygemm's ``innerKTiles`` for ``in_features`` inputs: the largest of 8, 4, 2 whose tile
    (16 inputs each) divides it (8 is torchao's default); None when none does."""
    for tiles in (8, 4, 2):
        if in_features % (tiles * _KTILE) == 0:
            return tiles
    return None


def tinygemm_fits(in_features: int, out_features: int, group_size: int) -> bool:
    """Whether ``aten._weight_int4pack_mm`` takes a layer of this shape (N in tiles of 8)."""
    return (
        group_size in TINYGEMM_GROUP_SIZES
        and out_features % 8 == 0
        and inner_k_tiles(in_features) is not None
    )


def cuda_capable(device: torch.device) -> bool:
    """tinygemm needs tensor cores with bf16 (sm80, Ampere, or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def swap_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(rows, cols / 2) uint8 with the even column in the low nibble -> in the high one."""
    return (packed << 4) | (packed >> 4)


def tinygemm_layout(
    packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical int4 tensors in the form ``aten._convert_weight_to_int4pack`` (CUDA) and
    ``aten._weight_int4pack_mm`` take: (N, K/2) uint8 codes, even column in the high nibble, and
    ``scales_and_zeros`` (K/G, N, 2) bf16 with ``zero = offset + 8 · scale``.

    Pure tensor maths, on whatever device the inputs are (tested on CPU against
    :func:`tinygemm_reference`)."""
    zeros = offsets.float() + 8 * scales.float()  # w = q·s + o = (q - 8)·s + (o + 8·s)
    scales_zeros = torch.stack((scales.float(), zeros), dim=-1)  # (N, K/G, 2)
    return swap_nibbles(packed), scales_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)


def tinygemm_reference(
    x: torch.Tensor, codes_high_first: torch.Tensor, scales_zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """What ``aten._weight_int4pack_mm`` computes, in plain PyTorch (fp32): ``x`` (M, K) times
    the weight that (N, K/2) uint8 codes (even column high) and (K/G, N, 2) scales and zeros
    stand for. The independent check of :func:`tinygemm_layout`."""
    high, low = codes_high_first >> 4, codes_high_first & 0x0F
    codes = torch.stack((high, low), dim=-1).view(codes_high_first.shape[0], -1).float()
    rows, cols = codes.shape
    scale = scales_zeros[..., 0].float().t()[..., None]  # (N, K/G, 1)
    zero = scales_zeros[..., 1].float().t()[..., None]
    weight = ((codes.view(rows, cols // group_size, group_size) - 8) * scale + zero).view(rows, -1)
    return x.float() @ weight.t()
