"""4-bit NormalFloat (NF4) weights for QLoRA: a frozen ``nn.Linear`` held in half a byte a weight.

    W (d_out x d_in, bf16) ─► blocks of 64 ─► absmax per block ─► W/absmax ─► nearest of 16 NF4
    values ─► two 4-bit codes a byte          (absmax: fp32, or 8-bit with one fp32 per 256)

NF4 (Dettmers et al. 2023, "QLoRA", section 3 and appendix E) places its 16 values at quantiles
of N(0, 1) scaled to [-1, 1], with an exact zero: each code is equally likely for normally
distributed weights, the information-theoretic optimum for them. Double quantization stores the
per-block absmax (4 bytes a 64 weights = 0.5 bit a weight) as 8-bit codes of the signed dynamic
map, blockwise over 256 scales with one fp32 scale each plus the mean as offset: 0.127 bit a
weight.

The layout is bitsandbytes' (``quantize_4bit(..., quant_type="nf4")``): the first of each pair
of weights in the high nibble, the same code books, the same statistics. So one layer type,
:class:`NF4Linear`, serves two backends that read the same tensors: ``bitsandbytes`` (its CUDA
kernels, used on CUDA when it is installed) and ``torch`` (the pure functions below, on any
device; what CPUs and CI run). The tests check the two against each other bit for bit.

Quantizing is always done by the pure functions here (a one-off ``bucketize``; fast on a GPU too).
Dequantizing runs twice per layer per step (forward, and backward for the input gradient), so it
is what the backend choice is for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

Backend = Literal["torch", "bitsandbytes"]

NF4_VALUES: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
"""The 16 NF4 values, sorted (QLoRA appendix E; code ``i`` stands for ``NF4_VALUES[i]``)."""

SCALE_BLOCK = 256
"""Scales quantized together under one fp32 scale when double-quantizing (the paper's 256)."""


def dynamic_map() -> torch.Tensor:
    """The signed 8-bit dynamic map (Dettmers 2016) that double quantization codes scales with.

    For exponent ``e`` in 0..6 it holds ``2^e`` fractions (midpoints of an even grid on
    [0.1, 1]) times ``10^(e-6)``, with both signs; then 0 and 1: 256 sorted values in [-1, 1],
    dense near zero. Built exactly as bitsandbytes builds its ``create_dynamic_map()``."""
    values: list[float] = [0.0, 1.0]
    for e in range(7):
        grid = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)
        means = (grid[:-1] + grid[1:]) / 2.0
        values += ((10 ** (e - 6)) * means).tolist()
        values += (-(10 ** (e - 6)) * means).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


@cache
def _table(kind: str, device: torch.device) -> torch.Tensor:
    """A code book on ``device`` (fp32), made once per device: ``nf4``, ``dynamic``, or
    ``nf4-pairs`` (256, 2), the two NF4 values each packed byte stands for, so that unpacking is
    one gather (shifts and masks on uint8 are slow on CPUs)."""
    if kind == "nf4-pairs":
        nf4, byte = torch.tensor(NF4_VALUES), torch.arange(256)
        return torch.stack((nf4[byte >> 4], nf4[byte & 15]), dim=1).to(device)
    values = torch.tensor(NF4_VALUES) if kind == "nf4" else dynamic_map()
    return values.to(device)


def _blockwise_codes(
    flat: torch.Tensor, block: int, book: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each value of ``flat`` (n,) as the index of the nearest entry of the sorted ``book`` after
    dividing by its block's absmax; returns (codes uint8 (n,), absmax fp32 (ceil(n/block),))."""
    n = flat.numel()
    blocks = math.ceil(n / block)
    padded = F.pad(flat.float(), (0, blocks * block - n)).view(blocks, block)
    absmax = padded.abs().amax(dim=1)
    scaled = (padded * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp_(-1, 1)
    midpoints = (book[:-1] + book[1:]) / 2  # nearest entry = bucket between midpoints
    codes = torch.bucketize(scaled.view(-1)[:n], midpoints, out_int32=True).to(torch.uint8)
    return codes, absmax


@dataclass(frozen=True)
class NF4Weight:
    """A weight in NF4: the packed codes and the per-block scales (plain or double-quantized)."""

    packed: torch.Tensor
    """uint8 (ceil(n/2), 1): codes of weights 2i (high nibble) and 2i+1 (low), row-major."""
    absmax: torch.Tensor
    """fp32 (blocks,) per-block absmax, or uint8 (blocks,) dynamic-map codes if double-quantized."""
    shape: tuple[int, int]
    block_size: int
    scale_absmax: torch.Tensor | None = None
    """Double quantization: fp32 (ceil(blocks/256),), the absmax of each 256 centred scales."""
    scale_offset: torch.Tensor | None = None
    """Double quantization: fp32 (), the mean of the scales, taken off before coding them."""

    @property
    def double_quant(self) -> bool:
        return self.scale_absmax is not None

    def scales(self) -> torch.Tensor:
        """The per-block absmax in fp32 (decoded when double-quantized)."""
        if self.scale_absmax is None or self.scale_offset is None:
            return self.absmax
        book = _table("dynamic", self.absmax.device)
        blocks, groups = self.absmax.numel(), self.scale_absmax.numel()
        values = F.pad(book[self.absmax.long()], (0, groups * SCALE_BLOCK - blocks))
        values = values.view(groups, SCALE_BLOCK) * self.scale_absmax[:, None]
        return values.view(-1)[:blocks] + self.scale_offset


def quantize_nf4(
    weight: torch.Tensor, block_size: int = 64, double_quant: bool = True
) -> NF4Weight:
    """``weight`` (d_out, d_in) in NF4 with one absmax per ``block_size`` consecutive weights
    (row-major), computed on the weight's own device."""
    if weight.dim() != 2:
        raise ValueError(f"NF4 quantizes 2-d weights, got shape {tuple(weight.shape)}")
    if block_size < 2 or block_size % 2:
        raise ValueError(f"NF4 block size must be even and >= 2, got {block_size}")
    codes, absmax = _blockwise_codes(weight.reshape(-1), block_size, _table("nf4", weight.device))
    codes = F.pad(codes, (0, codes.numel() % 2), value=NF4_VALUES.index(0.0))
    packed = ((codes[0::2] << 4) | codes[1::2]).unsqueeze(1)
    shape = (weight.shape[0], weight.shape[1])
    if not double_quant:
        return NF4Weight(packed, absmax, shape, block_size)
    offset = absmax.mean()
    scale_codes, scale_absmax = _blockwise_codes(
        absmax - offset, SCALE_BLOCK, _table("dynamic", weight.device)
    )
    return NF4Weight(packed, scale_codes, shape, block_size, scale_absmax, offset)


def dequantize_nf4(q: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (d_out, d_in) weight ``q`` stands for, in ``dtype`` (computed in fp32, cast once)."""
    n = q.shape[0] * q.shape[1]
    pairs = _table("nf4-pairs", q.packed.device)
    values = pairs.index_select(0, q.packed.view(-1).long()).view(-1)  # (2 * ceil(n/2),)
    blocks = q.absmax.numel()
    if values.numel() != blocks * q.block_size:  # a last block that is not full
        values = F.pad(values, (0, blocks * q.block_size - values.numel()))
    weight = values.view(blocks, q.block_size).mul_(q.scales()[:, None])
    return weight.view(-1)[:n].view(q.shape).to(dtype)


def default_backend(device: torch.device) -> Backend:
    """bitsandbytes' kernels on CUDA when it is installed; the pure-PyTorch code elsewhere.

    bitsandbytes also runs on CPUs now, but its CPU dequantization is the same PyTorch code as
    ours, and it reaches for a kernel hub on first use: nothing to gain offline."""
    if device.type != "cuda":
        return "torch"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "torch"
    return "bitsandbytes"


def _bnb_dequantize(q: NF4Weight, dtype: torch.dtype) -> torch.Tensor:
    """:func:`dequantize_nf4` by bitsandbytes' kernel, from the same tensors."""
    from bitsandbytes.functional import QuantState, dequantize_4bit

    device = q.packed.device
    nested = None
    if q.scale_absmax is not None:
        nested = QuantState(
            absmax=q.scale_absmax,
            code=_table("dynamic", device),
            blocksize=SCALE_BLOCK,
            dtype=torch.float32,
        )
    state = QuantState(
        absmax=q.absmax,
        shape=torch.Size(q.shape),
        code=_table("nf4", device),
        blocksize=q.block_size,
        quant_type="nf4",
        dtype=dtype,
        offset=q.scale_offset,
        state2=nested,
    )
    dense: torch.Tensor = dequantize_4bit(q.packed, state)
    return dense


class _NF4Matmul(torch.autograd.Function):
    """``x Wᵀ + bias`` with W dequantized for the product and again for the input gradient, so
    no dense copy of W is kept between forward and backward (autograd through ``F.linear`` would
    save the dequantized W, a bf16 copy of every layer: the memory QLoRA exists to avoid)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        layer: NF4Linear,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            bias = None if layer.bias is None else layer.bias.to(dtype)
            out = F.linear(x.to(dtype), layer.dequantize(dtype), bias)
        ctx.layer, ctx.x_dtype = layer, x.dtype  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None]:
        layer: NF4Linear = ctx.layer  # type: ignore[attr-defined]
        grad_x = grad @ layer.dequantize(grad.dtype)  # (..., d_out) @ (d_out, d_in)
        return grad_x.to(ctx.x_dtype), None, None  # type: ignore[attr-defined]


class NF4Linear(nn.Module):
    """A frozen ``nn.Linear`` whose weight is stored in NF4 (bias, if any, stays as it was).

    Buffers follow bitsandbytes' names and meaning: ``weight`` holds the packed 4-bit codes (as
    bitsandbytes' ``Linear4bit.weight`` does), ``absmax`` the scales. The fp32 statistics are
    stored as their int32 bit patterns, so that ``model.to(torch.bfloat16)``, which casts every
    floating buffer, cannot round them."""

    def __init__(self, q: NF4Weight, bias: torch.Tensor | None, backend: Backend) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.block_size = q.block_size
        self.backend: Backend = backend
        self.weight: torch.Tensor
        self.register_buffer("weight", q.packed)
        self.register_buffer("absmax", _bits(q.absmax))
        self.register_buffer("scale_absmax", _bits(q.scale_absmax))
        self.register_buffer("scale_offset", _bits(q.scale_offset))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    @torch.no_grad()
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        block_size: int = 64,
        double_quant: bool = True,
        device: torch.device | str | None = None,
        backend: Backend | None = None,
    ) -> NF4Linear:
        """``linear`` quantized on ``device`` (default: its own); the dense weight is not kept."""
        target = torch.device(device) if device is not None else linear.weight.device
        q = quantize_nf4(linear.weight.to(target), block_size, double_quant)
        bias = None if linear.bias is None else linear.bias.to(target)
        return cls(q, bias, backend or default_backend(target))

    def quantized(self) -> NF4Weight:
        """The weight as :class:`NF4Weight` (views of this layer's buffers)."""
        buffers = cast(dict[str, torch.Tensor | None], dict(self.named_buffers()))
        return NF4Weight(
            packed=self.weight,
            absmax=_float(buffers["absmax"]),  # type: ignore[arg-type]
            shape=(self.out_features, self.in_features),
            block_size=self.block_size,
            scale_absmax=_float(buffers.get("scale_absmax")),
            scale_offset=_float(buffers.get("scale_offset")),
        )

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The dense (d_out, d_in) weight in ``dtype``, made afresh on each call."""
        q = self.quantized()
        if self.backend == "bitsandbytes":
            return _bnb_dequantize(q, dtype)
        return dequantize_nf4(q, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        if torch.is_grad_enabled() and x.requires_grad:
            apply = cast(Any, _NF4Matmul.apply)
            return cast(torch.Tensor, apply(x, self, dtype))
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), self.dequantize(dtype), bias)

    def extra_repr(self) -> str:
        double = self.scale_absmax is not None
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nf4, "
            f"block={self.block_size}, double_quant={double}, backend={self.backend}"
        )


def _bits(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.view(torch.int32) if t is not None and t.dtype == torch.float32 else t


def _float(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.view(torch.float32) if t is not None and t.dtype == torch.int32 else t


@torch.no_grad()
def quantize_linears(
    model: nn.Module,
    *,
    block_size: int = 64,
    double_quant: bool = True,
    device: torch.device | str | None = None,
    backend: Backend | None = None,
) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` but the output head by an :class:`NF4Linear` on
    ``device``, one layer at a time (a bf16 model on the CPU becomes a 4-bit one on the GPU
    without ever being whole there); return the quantized module paths.

    The head stays dense, as in the QLoRA paper: it is tied to the embeddings in many models and
    its error lands straight on the logits."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    done: list[str] = []
    for path, module in list(model.named_modules()):
        if type(module) is not nn.Linear or module is head:
            continue
        layer = NF4Linear.from_linear(
            module, block_size=block_size, double_quant=double_quant, device=device, backend=backend
        )
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
        done.append(path)
    if not done:
        raise ValueError("the model has no nn.Linear layer to quantize")
    return done


def nf4_bytes(model: nn.Module) -> int:
    """Bytes held by the NF4 layers' buffers (codes and scales)."""
    return sum(
        b.numel() * b.element_size()
        for m in model.modules()
        if isinstance(m, NF4Linear)
        for b in m.buffers()
    )
