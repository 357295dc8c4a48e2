"""Triton GEMV kernels for quantized layers at decode time (a few tokens, memory bound).

Imported only where triton is (``kernels.triton_available``): CUDA builds of torch ship it.
Both read the canonical layouts that are saved, so nothing is repacked:

- ``mentor::int8_gemv``: ``y[m] = (x[m] / smooth) · q_wᵀ · scale``, int8 rows (N, K), one fp32
  scale per row, the SmoothQuant division folded into the load of ``x``;
- ``mentor::int4_gemv``: ``y[m] = x[m] · (q · scale + offset)ᵀ``, two codes a byte with the even
  column in the low nibble (N, K/2), fp32 scales and offsets per group (N, K/G).

One program computes ``block_n_`` outputs of one row of ``x``, walking K in ``block_k_`` chunks
and summing a (block_n_, block_k_) tile of products that is reduced once at the end. They are
registered with ``torch.library.triton_op``, so ``torch.compile(fullgraph=True)`` traces them
and a CUDA graph captures them (the engine's :class:`~mentor.models.static_decode.StaticDecoder`).
With ``TRITON_INTERPRET=1`` they run on CPU tensors (how the tests check them without a GPU).
"""

import torch
import triton  # type: ignore[import-not-found, unused-ignore]
import triton.language as tl  # type: ignore[import-not-found, unused-ignore]
from torch.library import triton_op, wrap_triton


def _block_n(out_features: int) -> int:
    """Outputs per program: enough programs to cover an H100/H200's 132 SMs twice at batch 1."""
    return 8 if out_features <= 4096 else 16


def _block_k(in_features: int) -> int:
    return min(512, int(triton.next_power_of_2(in_features)))


@triton.jit  # type: ignore[untyped-decorator, unused-ignore]
def _int8_rows_kernel(  # type: ignore[no-untyped-def]
    x_ptr,
    w_ptr,
    scale_ptr,
    smooth_ptr,
    out_ptr,
    n,
    k,
    has_smooth: tl.constexpr,
    block_n_: tl.constexpr,
    block_k_: tl.constexpr,
):
    row = tl.program_id(1)
    cols = tl.program_id(0) * block_n_ + tl.arange(0, block_n_)
    col_ok = cols < n
    acc = tl.zeros((block_n_, block_k_), dtype=tl.float32)
    for start in range(0, k, block_k_):
        ks = start + tl.arange(0, block_k_)
        k_ok = ks < k
        x = tl.load(x_ptr + row * k + ks, mask=k_ok, other=0.0).to(tl.float32)
        if has_smooth:
            x = x / tl.load(smooth_ptr + ks, mask=k_ok, other=1.0).to(tl.float32)
        w = tl.load(
            w_ptr + cols[:, None] * k + ks[None, :],
            mask=col_ok[:, None] & k_ok[None, :],
            other=0,
        )
        acc += w.to(tl.float32) * x[None, :]
    total = tl.sum(acc, axis=1)
    scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n + cols, (total * scale).to(out_ptr.dtype.element_ty), mask=col_ok)


@triton.jit  # type: ignore[untyped-decorator, unused-ignore]
def _int4_groups_kernel(  # type: ignore[no-untyped-def]
    x_ptr,
    w_ptr,
    scales_ptr,
    offsets_ptr,
    out_ptr,
    n,
    k,
    group_: tl.constexpr,
    block_n_: tl.constexpr,
    block_b_: tl.constexpr,
):
    row = tl.program_id(1)
    cols = tl.program_id(0) * block_n_ + tl.arange(0, block_n_)
    col_ok = cols < n
    half = k // 2
    groups = k // group_
    acc = tl.zeros((block_n_, block_b_), dtype=tl.float32)
    for start in range(0, half, block_b_):
        bs = start + tl.arange(0, block_b_)  # byte columns: inputs 2b (low) and 2b + 1 (high)
        b_ok = bs < half
        mask = col_ok[:, None] & b_ok[None, :]
        byte = tl.load(w_ptr + cols[:, None] * half + bs[None, :], mask=mask, other=0)
        g = (2 * bs) // group_
        scale = tl.load(scales_ptr + cols[:, None] * groups + g[None, :], mask=mask, other=0.0)
        offset = tl.load(offsets_ptr + cols[:, None] * groups + g[None, :], mask=mask, other=0.0)
        x_even = tl.load(x_ptr + row * k + 2 * bs, mask=b_ok, other=0.0).to(tl.float32)
        x_odd = tl.load(x_ptr + row * k + 2 * bs + 1, mask=b_ok, other=0.0).to(tl.float32)
        low = (byte & 0xF).to(tl.float32)
        high = (byte >> 4).to(tl.float32)
        codes = low * x_even[None, :] + high * x_odd[None, :]
        acc += scale.to(tl.float32) * codes + offset.to(tl.float32) * (x_even + x_odd)[None, :]
    total = tl.sum(acc, axis=1)
    tl.store(out_ptr + row * n + cols, total.to(out_ptr.dtype.element_ty), mask=col_ok)


@triton_op("mentor::int8_gemv", mutates_args=())
def int8_gemv(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, smooth: torch.Tensor | None
) -> torch.Tensor:
    """``x`` (M, K) float, ``qweight`` (N, K) int8, ``scale`` (N,), ``smooth`` (K,) or None ->
    (M, N) in ``x``'s dtype."""
    rows, k = x.shape
    n = qweight.shape[0]
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    block_n = _block_n(n)
    grid = (triton.cdiv(n, block_n), rows)
    wrap_triton(_int8_rows_kernel)[grid](
        x.contiguous(),
        qweight,
        scale,
        scale if smooth is None else smooth,
        out,
        n,
        k,
        has_smooth=smooth is not None,
        block_n_=block_n,
        block_k_=_block_k(k),
    )
    return out


@triton_op("mentor::int4_gemv", mutates_args=())
def int4_gemv(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    offsets: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """``x`` (M, K) float, ``qweight`` (N, K/2) uint8, ``scales`` and ``offsets`` (N, K/G) ->
    (M, N) in ``x``'s dtype."""
    rows, k = x.shape
    n = qweight.shape[0]
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    block_n = _block_n(n)
    grid = (triton.cdiv(n, block_n), rows)
    wrap_triton(_int4_groups_kernel)[grid](
        x.contiguous(),
        qweight,
        scales,
        offsets,
        out,
        n,
        k,
        group_=group_size,
        block_n_=block_n,
        block_b_=_block_k(k // 2),
    )
    return out
