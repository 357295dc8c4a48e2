"""Int8 dynamic quantization of a linear layer: weights per output channel, activations per token.

    W (d_out, d_in) ──► q_w = round(W / s_w) in [-127, 127],  s_w = max|W[j, :]| / 127   once
    x (tokens, d_in) ──► q_x = round(x / s_x) in [-127, 127],  s_x = max|x[t, :]| / 127   per call
    y = (q_x q_wᵀ) · s_x · s_wᵀ + bias              int8 x int8 -> int32 (``torch._int_mm``)

Symmetric, with -128 left unused so that the grid is symmetric around an exact zero. One scale
per token rather than per tensor keeps one loud token (a BOS) from crushing the resolution of
every other row; loud input *channels* are tamed by SmoothQuant factors (:mod:`.smooth`), which
this layer divides the input by when it has them.

Why our own module rather than a library's (measured on this project's 2-core AVX-512 CPU, torch
2.13, torchao 0.18, SmolLM2's 576 -> 1536 projection, one thread, median CPU time):

=====================================================  ==========  ============  ===========
path                                                   1 token     128 tokens    rel. error
=====================================================  ==========  ============  ===========
fp32 ``nn.Linear``                                     0.076 ms    2.34 ms       0
this module (``torch._int_mm``)                        0.043 ms    0.68 ms       0.0086
``torch.ao.quantization.quantize_dynamic`` (fbgemm)    0.036 ms    0.58 ms       0.021
torchao ``Int8DynamicActivationInt8WeightConfig``      ~24 ms      ~136 ms       0.0086
=====================================================  ==========  ============  ===========

torchao's int8 tensor subclass has no fast CPU kernel here and cannot be written to safetensors;
``quantize_dynamic`` is a little faster but 2.5x less accurate (per-tensor, 7-bit activations)
and keeps its weights in opaque packed objects. Off the CPU, ``torch._int_mm`` has shape rules of
its own, so there the same integer product is computed in floating point (exact up to fp32's 24
bits of mantissa).

That is the CPU path, ``kernel == "dynamic"``. On CUDA, where batch-1 decoding is bound by
reading the weights, the layer runs weight-only instead (activations stay bf16, which is more
accurate): a Triton GEMV over the same int8 rows, or ``torch._weight_int8pack_mm``; see
:mod:`.kernels` and :meth:`Int8Linear.use_kernel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)
from torch import nn

from mentor.quantize.kernels import (
    CUDA_ONLY,
    GEMV_MAX_TOKENS,
    check_kernel,
    default_kernel,
    triton_available,
)

QMAX = 127


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row of a 2-D tensor.

    Returns ``q`` (rows, cols) int8 in [-127, 127] and ``scale`` (rows,) fp32 with
    ``x ≈ q * scale[:, None]``; a row of zeros gets scale 1 (any scale reproduces it exactly).
    """
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}")
    rows = x.float()
    amax = rows.abs().amax(dim=1)  # (rows,)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(rows / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 values of :func:`quantize_rows`'s output."""
    return q.float() * scale[:, None]


def int8_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    smooth: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x Wᵀ + bias`` with ``W ≈ qweight * scale[:, None]`` and ``x`` quantized per token.

    With ``smooth`` (d_in,), ``x`` is divided by it first: the weights were multiplied by it
    (:mod:`mentor.quantize.smooth`). ``x`` (..., d_in) of any float dtype; the result has its
    dtype and shape (..., d_out).
    """
    flat = x.reshape(-1, x.shape[-1])  # (tokens, d_in)
    if smooth is not None:
        flat = flat.float() / smooth
    qx, sx = quantize_rows(flat)
    if flat.device.type == "cpu":
        acc = torch._int_mm(qx, qweight.t()).float()  # (tokens, d_out), exact int32 sums
    else:
        acc = qx.float() @ qweight.float().t()
    out = acc.mul_(sx[:, None]).mul_(scale[None, :])
    if bias is not None:
        out.add_(bias.float())
    return out.to(x.dtype).view(*x.shape[:-1], qweight.shape[0])


def choose_int8_kernel(
    device: torch.device, requested: str | None = None, *, triton: bool | None = None
) -> str:
    """The kernel (:data:`.kernels.INT8_KERNELS`) an int8 layer runs on ``device``: ``requested``
    if it can run there (else a clear error), otherwise the device's default. ``triton``
    defaults to looking whether it imports; tests pass it."""
    has_triton = triton_available() if triton is None else triton
    if requested is None:
        return default_kernel("int8", device, triton=has_triton)
    check_kernel("int8", requested)
    if requested in CUDA_ONLY and device.type != "cuda":
        raise ValueError(f"int8 kernel {requested!r} runs on CUDA only, not on {device}")
    if requested == "triton" and not has_triton:
        raise ValueError("int8 kernel 'triton' needs the triton package (CUDA builds of torch)")
    return requested


def weight_only_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    smooth: torch.Tensor | None,
    kernel: str,
) -> torch.Tensor:
    """``(x / smooth) Wᵀ + bias`` with ``W = qweight * scale[:, None]`` and ``x`` (tokens, d_in)
    left in floating point; returns (tokens, d_out) in ``x``'s dtype.

    ``triton`` up to :data:`.kernels.GEMV_MAX_TOKENS` tokens: one GEMV kernel; ``aten``:
    ``torch._weight_int8pack_mm`` (fp32 inside); otherwise the integer weight is widened to
    ``x``'s dtype for a dense matmul and the row scale applied to its output."""
    if kernel == "triton" and x.shape[0] <= GEMV_MAX_TOKENS:
        out: torch.Tensor = torch.ops.mentor.int8_gemv(x, qweight, scale, smooth)
    elif kernel == "aten":
        xs = x.float() if smooth is None else x.float() / smooth.float()
        out = torch._weight_int8pack_mm(xs.contiguous(), qweight, scale.float())
    else:
        xs = x if smooth is None else (x.float() / smooth.float()).to(x.dtype)
        out = F.linear(xs, qweight.to(x.dtype)) * scale.to(x.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype)


class Int8Linear(nn.Module):
    """An ``nn.Linear`` stored as int8 weights with one fp32 scale per output channel.

    State: ``qweight`` (d_out, d_in) int8 and ``scale`` (d_out,) fp32; ``bias`` (d_out,) fp32
    when the layer had one; ``smooth`` (d_in,) fp32 when SmoothQuant factors were folded into
    the weights (the input is divided by them on each call).

    ``kernel`` (:data:`.kernels.INT8_KERNELS`) is ``dynamic`` until :meth:`use_kernel` picks
    the device's; every kernel reads the same tensors, so the layer saves and moves as it is.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        smoothed: bool = False,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kernel = "dynamic"
        """Which kernel the forward runs (:data:`.kernels.INT8_KERNELS`)."""
        self.qweight: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.ones(out_features, device=device))
        self.bias: torch.Tensor | None
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.smooth: torch.Tensor | None
        self.register_buffer("smooth", torch.ones(in_features, device=device) if smoothed else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None = None) -> Int8Linear:
        """Quantize ``linear``; ``smooth`` (d_in,) is multiplied into the weight columns first."""
        weight = linear.weight.detach().float()
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            smooth is not None,
            weight.device,
        )
        if layer.smooth is not None and smooth is not None:
            layer.smooth.copy_(smooth)
            weight = weight * layer.smooth[None, :]
        q, scale = quantize_rows(weight)
        layer.qweight.copy_(q)
        layer.scale.copy_(scale)
        if layer.bias is not None and linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight this layer stands for (d_out, d_in), smoothing undone."""
        weight = dequantize_rows(self.qweight, self.scale)
        return weight if self.smooth is None else weight / self.smooth[None, :]

    def use_kernel(self, kernel: str | None = None) -> str:
        """Run ``kernel`` from now on (default: the pick for the layer's device, see
        :func:`choose_int8_kernel`); returns its name."""
        choice = choose_int8_kernel(self.qweight.device, kernel)
        if choice == "triton":
            import mentor.quantize.triton_gemv  # noqa: F401  (registers torch.ops.mentor.int8_gemv)
        self.kernel = choice
        return choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dynamic":
            return int8_linear(x, self.qweight, self.scale, self.bias, self.smooth)
        flat = x.reshape(-1, self.in_features)  # (tokens, d_in)
        out = weight_only_linear(
            flat, self.qweight, self.scale, self.bias, self.smooth, self.kernel
        )
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        smoothed = ", smoothed" if self.smooth is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int8{smoothed}, kernel={self.kernel}"
        )
