"""LoRA: low-rank adapters on a frozen model, our own implementation.

    x ──► W (frozen, d_out x d_in) ────────────────► (+) ──► h
    │                                                  ▲
    └─► dropout ─► A (r x d_in) ─► B (d_out x r) ─► · alpha/r

``h = W x + (alpha / r) · B A x`` (Hu et al., 2021). A starts random and B at zero, so the wrapped
model equals the base at step 0. Each wrapped ``nn.Linear`` can carry several named adapters;
which one runs is chosen per call (:func:`use_adapter`), or per row of a batch
(:func:`use_row_adapters`, the S-LoRA/Punica idea: one base forward for every row, each row's own
low-rank update added on top), the basis of serving many adapters on one base. Merging folds
``(alpha/r)·B A`` into ``W`` for adapter-free inference; unmerging restores the original weights
bit for bit (they are kept aside while merged).

Module and parameter names follow PEFT's in-memory layout (``q_proj.base_layer``,
``q_proj.lora_A.<adapter>``), which keeps the file format in :mod:`mentor.train.adapters` a
plain renaming.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mentor.train.nf4 import NF4Linear

# Attention and MLP projections per architecture (``config.model_type``).
_DECODER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_FP32_ROWS = 16
"""Up to this many rows (tokens) a CPU computes an adapter's update in fp32 (see forward)."""
_STACK_RANKS = 256
"""Up to this total rank the adapters of a mixed batch run stacked (see :class:`RowAdapters`)."""
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
    "gemma": _DECODER,
    "gemma2": _DECODER,
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "bert": ("query", "key", "value", "dense"),
    "mpnet": ("q", "k", "v", "o", "dense"),
}


@dataclass(frozen=True)
class LoRAConfig:
    """Shape of one adapter."""

    r: int = field(default=16, metadata={"help": "Rank of the update B·A."})
    alpha: float = field(default=32.0, metadata={"help": "Scale: the update is (alpha/r)·B·A."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter's input."})
    targets: tuple[str, ...] | str | None = field(
        default=None,
        metadata={
            "help": "Linear layers to adapt: names matched as suffixes of the module path "
            "(a tuple) or one regular expression matched against the full path (a string); "
            "None takes the architecture's attention and MLP projections."
        },
    )
    use_rslora: bool = field(
        default=False, metadata={"help": "Scale by alpha/sqrt(r) (rank-stabilised LoRA)."}
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def draw_seed() -> int:
    """A seed for one layer's dropout mask, from the default CPU generator.

    Drawn on the host, so a CUDA step never waits for the device; and that generator is in
    every checkpoint (:mod:`mentor.train.checkpoint`) and restored by activation
    recomputation (``torch.utils.checkpoint``), so resumed and recomputed steps draw the same
    masks."""
    return int(torch.randint(0, 2**62, ()).item())


def dropout_mask(
    shape: torch.Size, p: float, device: torch.device, seed: int
) -> tuple[torch.Tensor, float]:
    """A keep-mask with ``P(keep) = 1 - p`` and the scale that keeps the mean, a pure function of
    ``seed``: the backward pass draws it again instead of keeping it (see :class:`_AdaptedLinear`).

    On a CPU, ``bernoulli_`` draws one float per element and took most of a LoRA step's dropout
    time; there one 64-bit draw gives four 16-bit uniforms compared against a threshold (to
    1/65536; about 5x faster). Elsewhere ``bernoulli_`` on a bool tensor is one kernel.
    """
    generator = torch.Generator(device).manual_seed(seed)
    if device.type != "cpu":
        return bernoulli_mask(shape, p, generator)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=generator)
    kept = round((1.0 - p) * 65536)
    mask = words.view(torch.int16)[:count].view(shape) < kept - 32768
    return mask, 65536 / kept


def bernoulli_mask(
    shape: torch.Size, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """The keep-mask of a GPU (one ``bernoulli_`` kernel into a bool tensor) and its scale."""
    mask = torch.empty(shape, dtype=torch.bool, device=generator.device)
    return mask.bernoulli_(1.0 - p, generator=generator), 1.0 / (1.0 - p)


class _AdaptedLinear(torch.autograd.Function):
    """``x Wᵀ + bias + s · (dropout(x) Aᵀ) Bᵀ`` as one autograd node, for training.

    Composed from modules (as PEFT does), the adapter keeps a dropped copy of ``x`` (or its
    mask) per wrapped layer, allocates three full-size temporaries in forward and one more where
    autograd sums the two input gradients. Here the update is added in place onto the base
    output, the input gradient is one ``addmm`` onto the adapter's, and what is kept is ``x``
    itself (alive anyway: the sibling projections share it), the rank-r ``x Aᵀ`` and the seed
    of the dropout mask: backward draws the mask again (one cheap kernel) rather than keeping a
    byte per input element per layer, which was a tenth of a LoRA step's peak memory at 1,024
    tokens (SmolLM2-135M). The math runs in ``dtype`` (the autocast dtype under autocast, as
    the base layer would); ``A`` and ``B`` are cast to it once and the casts kept for backward;
    gradients come back in each input's dtype.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor | NF4Linear,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scaling: float,
        p: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            w = _dense(weight, dtype)
            out = flat @ w.t() if bias is None else torch.addmm(bias.to(dtype), flat, w.t())
            dropped, seed = flat, None
            if p > 0:
                seed = draw_seed()
                mask, scale = dropout_mask(flat.shape, p, flat.device, seed)
                dropped = torch.ops.aten.native_dropout_backward(flat, mask, scale)
                del mask
            a_c, b_c = a.to(dtype), b.to(dtype)
            xa = dropped @ a_c.t()  # (tokens, r)
            del dropped
            out.addmm_(xa, b_c.t(), alpha=scaling)
        dense = weight if isinstance(weight, torch.Tensor) else None
        ctx.save_for_backward(x, dense, a_c, b_c, xa)  # type: ignore[arg-type]
        ctx.quantized = None if dense is not None else weight  # type: ignore[attr-defined]
        ctx.scaling, ctx.p, ctx.seed = scaling, p, seed  # type: ignore[attr-defined]
        ctx.a_dtype, ctx.b_dtype = a.dtype, b.dtype  # type: ignore[attr-defined]
        ctx.bias_dtype = None if bias is None else bias.dtype  # type: ignore[attr-defined]
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight, a_c, b_c, xa = ctx.saved_tensors  # type: ignore[attr-defined]
        weight = weight if ctx.quantized is None else ctx.quantized  # type: ignore[attr-defined]
        scaling: float = ctx.scaling  # type: ignore[attr-defined]
        seed: int | None = ctx.seed  # type: ignore[attr-defined]
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]  # type: ignore[attr-defined]
        dtype = grad.dtype
        g = grad.reshape(-1, grad.shape[-1])  # (tokens, d_out)
        flat = x.reshape(-1, x.shape[-1]).to(dtype) if need_a or need_w else None
        mask, scale = None, 1.0
        if seed is not None and (need_a or need_x):
            shape = torch.Size([g.shape[0], x.shape[-1]])
            mask, scale = dropout_mask(shape, ctx.p, g.device, seed)  # type: ignore[attr-defined]
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if need_b:
            grad_b = (g.t() @ xa.to(dtype)).mul_(scaling).to(ctx.b_dtype)  # type: ignore[attr-defined]
        if need_x or need_a:
            g_xa = (g @ b_c.to(dtype)).mul_(scaling)  # (tokens, r)
            if need_a:
                assert flat is not None
                dropped = flat
                if mask is not None:
                    dropped = torch.ops.aten.native_dropout_backward(flat, mask, scale)
                grad_a = (g_xa.t() @ dropped).to(ctx.a_dtype)  # type: ignore[attr-defined]
                del dropped
            if need_x:
                through_adapter = g_xa @ a_c.to(dtype)
                if mask is not None:
                    through_adapter = torch.ops.aten.native_dropout_backward(
                        through_adapter, mask, scale
                    )
                grad_x = through_adapter.addmm_(g, _dense(weight, dtype)).view(x.shape).to(x.dtype)
        if need_w:
            assert flat is not None
            grad_w = (g.t() @ flat).to(weight.dtype)
        if need_bias:
            grad_bias = g.sum(0).to(ctx.bias_dtype)  # type: ignore[attr-defined]
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None, None


def _dense(weight: torch.Tensor | NF4Linear, dtype: torch.dtype) -> torch.Tensor:
    """The base weight in ``dtype``; a 4-bit base (QLoRA) is dequantized afresh on each use, so
    no dense copy of it is kept between forward and backward."""
    return weight.to(dtype) if isinstance(weight, torch.Tensor) else weight.dequantize(dtype)


class RowAdapters:
    """Which adapter each row of a batch runs with: built once per :func:`use_row_adapters` call
    and shared by every wrapped layer, so the index and mask tensors are made (and moved to the
    device) once per call, not once per layer, and each layer prepares its update once per call
    (the adapters' weights are taken as fixed while the call lasts).

    A layer adds the rows' updates one of two ways, by the total rank R of the adapters in play:

    - stacked (R <= ``_STACK_RANKS``): every adapter's A concatenated (R, d_in) runs on every row,
      a per-row mask (rows, R) keeps each row's own block times its scaling, and the concatenated
      B's (d_out, R) add the result onto the base output: three kernels whatever the number of
      adapters, at R/r times one adapter's (small) FLOPs;
    - grouped: per adapter, gather its rows, two thin matmuls, ``index_add_`` back: one adapter's
      FLOPs in all, four kernels per adapter.
    """

    def __init__(self, names: Sequence[str | None]) -> None:
        self.names = tuple(names)
        self.rows = len(self.names)
        self.used = tuple(dict.fromkeys(n for n in self.names if n is not None))
        self._index: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}
        self.updates: dict[tuple[nn.Module, torch.dtype], Any] = {}
        """Each layer's prepared update under this plan (see ``LoRALinear._forward_rows``)."""

    def index(self, name: str, device: torch.device) -> torch.Tensor:
        """The rows that run adapter ``name`` (int64 on ``device``)."""
        key = (name, device)
        if key not in self._index:
            rows = [i for i, n in enumerate(self.names) if n == name]
            self._index[key] = torch.tensor(rows, dtype=torch.long).to(device)
        return self._index[key]

    def mask(
        self, layout: tuple[tuple[str, int, float], ...], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """(rows, R): row i holds its adapter's scaling over that adapter's block of the stacked
        ranks (``layout`` lists (name, r, scaling) in stacking order), zeros elsewhere."""
        key = (layout, device, dtype)
        if key not in self._masks:
            blocks: dict[str, tuple[int, int, float]] = {}
            offset = 0
            for name, r, scaling in layout:
                blocks[name] = (offset, offset + r, scaling)
                offset += r
            mask = torch.zeros(self.rows, offset)
            for i, row in enumerate(self.names):
                if row in blocks:
                    start, end, scaling = blocks[row]
                    mask[i, start:end] = scaling
            self._masks[key] = mask.to(device, dtype)
        return self._masks[key]


def _version(tensor: torch.Tensor) -> int | None:
    """The in-place version counter; None for inference tensors, which keep none."""
    return None if tensor.is_inference() else tensor._version


class LoRALinear(nn.Module):
    """An ``nn.Linear`` with any number of named low-rank adapters beside it."""

    def __init__(self, base_layer: nn.Linear | NF4Linear) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.merged_adapter: str | None = None
        self.row_adapters: RowAdapters | None = None
        """Set by :func:`use_row_adapters`: each row's adapter, in place of ``active_adapter``."""
        self._original_weight: torch.Tensor | None = None
        self._stacked: tuple[tuple[Any, ...], torch.Tensor, torch.Tensor] | None = None

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def add_adapter(self, name: str, config: LoRAConfig) -> None:
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists")
        weight = self.base_layer.weight
        a = nn.Linear(self.in_features, config.r, bias=False, device=weight.device)
        b = nn.Linear(config.r, self.out_features, bias=False, device=weight.device)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))  # nn.Linear's own default init
        nn.init.zeros_(b.weight)  # B = 0: the adapted model starts equal to the base
        self.lora_A[name], self.lora_B[name] = a, b
        self.lora_dropout[name] = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.scaling[name] = config.scaling
        self._stacked = None
        self.train(self.base_layer.training)  # new parts follow the model's mode (eval stays eval)

    def delete_adapter(self, name: str) -> None:
        if self.merged_adapter == name:
            self.unmerge()
        for table in (self.lora_A, self.lora_B, self.lora_dropout):
            del table[name]
        del self.scaling[name]
        self._stacked = None
        if self.active_adapter == name:
            self.active_adapter = None

    def a(self, name: str) -> nn.Linear:
        return cast(nn.Linear, self.lora_A[name])

    def b(self, name: str) -> nn.Linear:
        return cast(nn.Linear, self.lora_B[name])

    def delta_weight(self, name: str) -> torch.Tensor:
        """``(alpha/r)·B A`` (d_out, d_in), computed in fp32."""
        a = self.a(name).weight.float()  # (r, d_in)
        b = self.b(name).weight.float()  # (d_out, r)
        return (b @ a) * self.scaling[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_adapters is not None:
            return self._forward_rows(x, self.row_adapters)
        name = self.active_adapter
        if name is None or name == self.merged_adapter or name not in self.lora_A:
            return cast(torch.Tensor, self.base_layer(x))
        base = self.base_layer
        a, b = self.a(name).weight, self.b(name).weight
        dropout = self.lora_dropout[name]
        p = dropout.p if isinstance(dropout, nn.Dropout) and self.training else 0.0
        scaling = self.scaling[name]
        training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, a, b, base.weight))
        if training and (type(base) is nn.Linear or isinstance(base, NF4Linear)):
            device = x.device.type
            autocast = torch.is_autocast_enabled(device)
            # a 4-bit base is passed as the layer: _AdaptedLinear dequantizes it (see _dense)
            weight = base if isinstance(base, NF4Linear) else base.weight
            dtype = torch.get_autocast_dtype(device) if autocast else None
            dtype = dtype or (x.dtype if isinstance(base, NF4Linear) else base.weight.dtype)
            apply = cast(Callable[..., torch.Tensor], _AdaptedLinear.apply)
            return apply(x, weight, base.bias, a, b, scaling, p, dtype)
        out: torch.Tensor = base(x)
        if training:  # a Linear subclass: compose from modules so its own forward runs
            update: torch.Tensor = self.b(name)(self.a(name)(dropout(x.to(a.dtype)))) * scaling
            return out + update.to(out.dtype)
        with torch.no_grad():  # inference: the update is added in place
            rows = out.numel() // out.shape[-1]
            if out.device.type == "cpu" and out.dtype != torch.float32 and rows <= _FP32_ROWS:
                # Decoding a few tokens on a CPU: the two thin bf16 matmuls cost ~3x their fp32
                # versions (49 against 16 us for SmolLM2's 576 -> 1536 at r=16), so the update
                # is computed in fp32 and added once.
                xa = F.linear(x.float(), a.float())
                out.add_(F.linear(xa, b.float()), alpha=scaling)
                return out
            xa = F.linear(x.to(out.dtype), a.to(out.dtype))
            flat = out.view(-1, out.shape[-1])
            flat.addmm_(xa.reshape(-1, xa.shape[-1]), b.to(out.dtype).t(), alpha=scaling)
        return out

    def _forward_rows(self, x: torch.Tensor, plan: RowAdapters) -> torch.Tensor:
        """Base output for every row of x (rows, ..., d_in), plus each row's own adapter update.

        What the update needs (stacked weights, mask, row indices) is prepared on this layer's
        first call under ``plan`` and kept in it: a decode step's later calls pay for the matmuls
        and little Python."""
        if x.shape[0] != plan.rows:
            raise ValueError(
                f"use_row_adapters was given {plan.rows} adapter names, but the batch has "
                f"{x.shape[0]} rows (dim 0)"
            )
        if torch.is_grad_enabled():
            self._refuse_grad(x, plan)
        out: torch.Tensor = self.base_layer(x)
        dtype = out.dtype
        if (
            dtype != torch.float32
            and out.device.type == "cpu"
            and out.numel() <= _FP32_ROWS * out.shape[-1]
        ):
            dtype = torch.float32  # thin bf16 matmuls are slow on a CPU (see forward)
        key = (self, dtype)
        if key not in plan.updates:
            plan.updates[key] = self._row_update(plan, dtype, out.device)
        add = plan.updates[key]
        return out if add is None else add(x, out)

    def _refuse_grad(self, x: torch.Tensor, plan: RowAdapters) -> None:
        weights = [self.base_layer.weight]
        for name in plan.used:
            if name in self.lora_A:
                weights += [self.a(name).weight, self.b(name).weight]
        if any(t.requires_grad for t in (x, *weights)):
            raise RuntimeError(
                "use_row_adapters is for inference: run it under torch.no_grad() or "
                "torch.inference_mode() (gradients are enabled and parameters require them)"
            )

    def _row_update(
        self, plan: RowAdapters, dtype: torch.dtype, device: torch.device
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """``add(x, out)``: adds each row's update onto ``out`` in place (None: no row's adapter
        adapts this layer), stacked or grouped (see :class:`RowAdapters`)."""
        layout = tuple(n for n in plan.used if n in self.lora_A)
        if not layout:
            return None
        if sum(self.a(n).weight.shape[0] for n in layout) > _STACK_RANKS:
            groups = [
                (plan.index(n, device), self.a(n).weight, self.b(n).weight, self.scaling[n])
                for n in layout
            ]

            def grouped(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
                for rows, a, b, scaling in groups:
                    xa = F.linear(x.index_select(0, rows).to(dtype), a.to(dtype))
                    update = F.linear(xa, b.to(dtype)).to(out.dtype)
                    out.index_add_(0, rows, update, alpha=scaling)
                return out

            return grouped
        a_cat, b_cat = self._stack(layout, dtype, device)  # (R, d_in), (d_out, R)
        ranks = tuple((n, self.a(n).weight.shape[0], self.scaling[n]) for n in layout)
        mask = plan.mask(ranks, device, dtype)  # (rows, R)
        mask_3d = mask[:, None, :]  # (rows, 1, R) for x (rows, T, d_in)

        def stacked(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            xa = F.linear(x.to(dtype), a_cat)  # (rows, ..., R)
            xa.mul_(mask_3d if x.dim() == 3 else mask.view(len(mask), *[1] * (x.dim() - 2), -1))
            if dtype == out.dtype:
                flat = out.view(-1, out.shape[-1])
                flat.addmm_(xa.reshape(-1, xa.shape[-1]), b_cat.t())
            else:
                out.add_(F.linear(xa, b_cat))
            return out

        return stacked

    def _stack(
        self, layout: tuple[str, ...], dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The A's (R, d_in) and B's (d_out, R) of ``layout`` concatenated, kept until the set,
        dtype or any of their values change (in-place updates bump a tensor's version)."""
        pairs = [(self.a(n).weight, self.b(n).weight) for n in layout]
        versions = [(_version(a), _version(b)) for a, b in pairs]
        key = (layout, dtype, device, tuple(versions))
        if self._stacked is None or self._stacked[0] != key:
            a_cat = torch.cat([a.detach() for a, _ in pairs]).to(device, dtype)
            b_cat = torch.cat([b.detach() for _, b in pairs], dim=1).to(device, dtype)
            if any(v is None for pair in versions for v in pair):
                return a_cat, b_cat  # no version counter to tell a change: never reuse
            self._stacked = (key, a_cat, b_cat)
        return self._stacked[1], self._stacked[2]

    @torch.no_grad()
    def merge(self, name: str, keep_original: bool = True) -> None:
        if self.merged_adapter == name:
            return
        if self.merged_adapter is not None:
            raise RuntimeError(f"adapter {self.merged_adapter!r} is merged; unmerge it first")
        if name not in self.lora_A:
            return  # this layer is not adapted by ``name``
        if isinstance(self.base_layer, NF4Linear):
            raise RuntimeError(
                "the base layer is held in 4-bit NF4 (QLoRA): merge the adapter onto the "
                "unquantized base (load it again in bf16/fp32, then load_adapter and merge)"
            )
        weight = self.base_layer.weight
        self._original_weight = weight.detach().clone() if keep_original else None
        weight.copy_((weight.float() + self.delta_weight(name)).to(weight.dtype))
        self.merged_adapter = name

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged_adapter is None:
            return
        if self._original_weight is None:
            raise RuntimeError("merged without keeping the original weights; cannot unmerge")
        self.base_layer.weight.copy_(self._original_weight)
        self._original_weight = None
        self.merged_adapter = None

    def original_weight(self) -> torch.Tensor:
        """The base weight as it was before any merge."""
        if self.merged_adapter is None:
            return self.base_layer.weight
        if self._original_weight is None:
            raise RuntimeError("merged without keeping the original weights")
        return self._original_weight


# ---- whole-model operations -------------------------------------------------------------------


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every wrapped layer by module path."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_names(model: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for layer in lora_layers(model).values():
        names.update(dict.fromkeys(layer.lora_A.keys()))
    return list(names)


def default_targets(model: nn.Module) -> tuple[str, ...]:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    raise ValueError(
        f"no default LoRA targets for model type {model_type!r}; name the layers "
        f"(known types: {', '.join(sorted(DEFAULT_TARGETS))})"
    )


def matches(path: str, targets: tuple[str, ...] | str) -> bool:
    """PEFT's rule: a string is a regex over the whole path, a tuple lists path suffixes."""
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def add_lora(model: nn.Module, config: LoRAConfig, name: str = "default") -> list[str]:
    """Add adapter ``name`` to every targeted ``nn.Linear`` (wrapping it on first use), make it
    the active adapter and return the adapted module paths."""
    if not name or "." in name:
        raise ValueError(f"adapter name must be non-empty and without dots, got {name!r}")
    if name in adapter_names(model):
        raise ValueError(f"adapter {name!r} already exists on this model")
    targets = config.targets if config.targets is not None else default_targets(model)
    adapted: list[str] = []
    for path, module in list(model.named_modules()):
        if isinstance(module, LoRALinear) and matches(path, targets):
            module.add_adapter(name, config)
            adapted.append(path)
        elif (
            (type(module) is nn.Linear or isinstance(module, NF4Linear))
            and matches(path, targets)
            and not path.endswith(".base_layer")  # already wrapped
            and ".lora_" not in path  # an adapter's own A or B
        ):
            wrapper = LoRALinear(module)
            wrapper.add_adapter(name, config)
            parent_path, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_path), child, wrapper)
            adapted.append(path)
    if not adapted:
        raise ValueError(f"no nn.Linear layer matches the LoRA targets {targets!r}")
    set_adapter(model, name)
    return adapted


def set_adapter(model: nn.Module, name: str | None) -> None:
    """Run adapter ``name`` on every wrapped layer from now on (``None``: the bare base)."""
    if name is not None and name not in adapter_names(model):
        raise KeyError(f"no adapter {name!r}; this model has {adapter_names(model) or 'none'}")
    for layer in lora_layers(model).values():
        layer.active_adapter = name


def active_adapter(model: nn.Module) -> str | None:
    for layer in lora_layers(model).values():
        return layer.active_adapter
    return None


@contextmanager
def use_adapter(model: nn.Module, name: str | None) -> Iterator[None]:
    """Run one call with adapter ``name`` (``None``: the base), then restore the previous one."""
    previous = active_adapter(model)
    set_adapter(model, name)
    try:
        yield
    finally:
        set_adapter(model, previous)


@contextmanager
def use_row_adapters(model: nn.Module, names: Sequence[str | None]) -> Iterator[None]:
    """Run forward passes whose row i (dim 0 of the batch) uses adapter ``names[i]`` (``None``:
    the base alone), for inference only::

        with torch.inference_mode(), use_row_adapters(model, ["support", None, "legal"]):
            logits = model(input_ids=ids).logits  # ids: (3, T)

    Every row shares the base forward; each layer then adds each row's low-rank update (see
    :class:`RowAdapters`). When every row names the same adapter this is :func:`use_adapter`.
    A layer that an adapter does not adapt adds nothing for its rows. Mixing is refused while an
    adapter is merged into the base weights (its rows would get it twice, the others wrongly)."""
    names = list(names)
    if not names:
        raise ValueError("use_row_adapters needs one adapter name (or None) per row, got none")
    known = adapter_names(model)
    for i, name in enumerate(names):
        if name is not None and name not in known:
            raise KeyError(f"row {i}: no adapter {name!r}; this model has {known or 'none'}")
    layers = list(lora_layers(model).values())
    previous = [layer.row_adapters for layer in layers]
    if len(set(names)) == 1:
        plan = None
    else:
        merged = sorted({m.merged_adapter for m in layers if m.merged_adapter is not None})
        if merged:
            raise RuntimeError(
                f"adapter {merged[0]!r} is merged into the base weights; unmerge it before "
                "running rows with different adapters"
            )
        plan = RowAdapters(names)
    for layer in layers:
        layer.row_adapters = plan
    try:
        if plan is None:
            with use_adapter(model, names[0]):
                yield
        else:
            yield
    finally:
        for layer, before in zip(layers, previous, strict=True):
            layer.row_adapters = before


def delete_adapter(model: nn.Module, name: str) -> None:
    if name not in adapter_names(model):
        raise KeyError(f"no adapter {name!r}")
    for layer in lora_layers(model).values():
        if name in layer.lora_A:
            layer.delete_adapter(name)


def mark_trainable(model: nn.Module, name: str) -> None:
    """Freeze everything but adapter ``name``'s A and B matrices."""
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in lora_layers(model).values():
        if name in layer.lora_A:
            layer.a(name).weight.requires_grad_(True)
            layer.b(name).weight.requires_grad_(True)


def merge(model: nn.Module, name: str, keep_original: bool = True) -> None:
    """Fold adapter ``name`` into the base weights (it stays active, now at no extra cost)."""
    if name not in adapter_names(model):
        raise KeyError(f"no adapter {name!r}")
    for layer in lora_layers(model).values():
        layer.merge(name, keep_original=keep_original)
    set_adapter(model, name)


def unmerge(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def unwrap(model: nn.Module) -> nn.Module:
    """Replace every wrapper by its (possibly merged) base ``nn.Linear``; adapters are dropped."""
    for path, layer in lora_layers(model).items():
        parent_path, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, layer.base_layer)
    return model


def adapter_state(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name``'s tensors keyed by ``<module path>.lora_A.weight`` / ``.lora_B.weight``."""
    state: dict[str, torch.Tensor] = {}
    for path, layer in lora_layers(model).items():
        if name in layer.lora_A:
            state[f"{path}.lora_A.weight"] = layer.a(name).weight
            state[f"{path}.lora_B.weight"] = layer.b(name).weight
    return state


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's tensors under their original names, as before any merge."""
    wrapped = lora_layers(model)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        module_path, _, leaf = key.rpartition(".")
        if module_path.endswith(".base_layer"):
            owner = module_path.removesuffix(".base_layer")
            if leaf == "weight" and owner in wrapped:
                tensor = wrapped[owner].original_weight()
            key = f"{owner}.{leaf}"
        state[key] = tensor
    return state


def base_fingerprint(model: nn.Module) -> str:
    """sha256 over the base weights (names, shapes and bf16 values, in name order).

    bf16 makes the fingerprint the same whether the base was loaded in fp32 or bf16; adapters and
    merges do not change it."""
    digest = hashlib.sha256()
    for key, tensor in sorted(base_state(model).items()):
        if not tensor.is_floating_point():
            continue
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        values = tensor.detach().to("cpu", torch.bfloat16).contiguous()
        digest.update(values.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ParameterReport:
    trainable: int
    base: int

    @property
    def share(self) -> float:
        return self.trainable / self.base if self.base else 0.0

    def __str__(self) -> str:
        return f"{_human(self.trainable)} of {_human(self.base)}, {self.share:.2%} trainable"


def parameter_report(model: nn.Module) -> ParameterReport:
    """Trainable parameters against the base's size (adapters not counted in the base)."""
    trainable = base = 0
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        if param.requires_grad:
            trainable += param.numel()
        if ".lora_A." not in name and ".lora_B." not in name:
            base += param.numel()
    # a 4-bit base's weights are buffers, not parameters: counted as the weights they stand for
    base += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, NF4Linear))
    return ParameterReport(trainable, base)


def _human(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


class LoRASettings(BaseModel):
    """The adapter's shape (``method: lora``)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, description="Rank of the update B·A.")
    alpha: float = Field(default=32.0, gt=0, description="The update is scaled by alpha/r.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: list[str] | str | None = Field(
        default=None,
        description="Layers to adapt: a list of layer names (suffixes of module paths) or one "
        "regular expression; empty takes the architecture's attention and MLP projections.",
    )
    use_rslora: bool = Field(default=False, description="Scale by alpha/sqrt(r) instead.")

    def to_config(self) -> LoRAConfig:
        targets = tuple(self.targets) if isinstance(self.targets, list) else self.targets
        return LoRAConfig(self.r, self.alpha, self.dropout, targets, self.use_rslora)
