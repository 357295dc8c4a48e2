"""Fast decoding of one sequence: a preallocated KV cache and, on CUDA, one CUDA graph per step.

At batch 1 a small model's decode step is a few hundred tiny kernels; launching them from Python
takes longer than running them, so the GPU idles. :class:`StaticDecoder` keeps the KV cache in
transformers' ``StaticCache`` (tensors of the full ``max_len``, written in place, so every step
has the same shapes and addresses) and compiles the one-token step with
``torch.compile(mode="reduce-overhead")``: the step is captured once as a CUDA graph and replayed,
one launch per token. The token and its position go in through fixed input buffers.

    prefill(prompt) ─► StaticCache[0:T] ─► logits (V,)
    step(token) ─► copy into the input buffers ─► replay the graph ─► StaticCache[T] ─► logits (V,)

On a CPU there are no launches to save, and attending over all ``max_len`` slots of a static
cache costs more than a growing ``DynamicCache``; so by default the CPU path keeps the dynamic
cache and runs eagerly (the same API, the same tokens).

How the engine uses it, for a batch-1 request on CUDA::

    if supported(model):
        decoder = StaticDecoder(model, max_len=engine.context_length)  # once: compiles lazily
    ...
    decoder.reset()                           # before each new sequence
    logits = decoder.prefill(request.prompt)  # (V,) float32: the first new token's logits
    while not done:
        token = pick(logits)
        logits = decoder.step(token)          # (V,) float32, a copy the caller may keep

All calls run under ``torch.no_grad()``; the model must be in eval mode. The first ``step`` on
CUDA compiles (tens of seconds) and the second captures the graph; construct one decoder per
model and reuse it across requests (``reset`` keeps the cache's buffers, so the graph stays
valid). ``max_len`` bounds prompt + reply; more raises ``ValueError``. The model must stay
unchanged (same weights, same active adapter, no per-row adapters) between compile and use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _cache_arg(model: torch.nn.Module) -> str | None:
    """The forward's KV cache keyword: ``cache`` in transformers 5, ``past_key_values`` before."""
    accepted = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in accepted:
            return name
    return None


def supported(model: torch.nn.Module) -> bool:
    """Whether ``model`` decodes with a static cache and compiles with one: a decoder-only
    transformers model whose class says its forward compiles as one graph
    (``_can_compile_fullgraph``: Llama, Qwen2, Mistral, Gemma ...) and whose config a
    ``StaticCache`` can be laid out for."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if not getattr(type(model), "_can_compile_fullgraph", False) or _cache_arg(model) is None:
        return False
    from transformers import StaticCache

    try:
        StaticCache(config=config, max_cache_len=1)
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError):
        return False
    return True


class StaticDecoder:
    """Prefill and decode one sequence (batch 1) of ``model``, up to ``max_len`` tokens in all.

    ``static`` (default: on CUDA) keeps the KV cache in a ``StaticCache``, otherwise in a
    ``DynamicCache``; ``compile`` (default: on CUDA) runs the decode step through
    ``torch.compile(mode="reduce-overhead")``, which needs the static cache.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_len: int,
        device: torch.device | str | None = None,
        *,
        static: bool | None = None,
        compile: bool | None = None,
    ) -> None:
        if not supported(model):
            raise ValueError(
                f"{type(model).__name__} does not support a static KV cache with a compiled "
                "forward; decode it with HFEngine instead"
            )
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2 tokens, got {max_len}")
        self.model = model
        self.max_len = max_len
        self.device = torch.device(device) if device is not None else model.device
        if self.device != model.device:
            raise ValueError(f"device {self.device} differs from the model's ({model.device})")
        on_cuda = self.device.type == "cuda"
        self.static = on_cuda if static is None else static
        self.compiled = on_cuda if compile is None else compile
        if self.compiled and not self.static:
            raise ValueError("compile=True needs static=True (a growing cache recompiles)")
        self._cache_key = _cache_arg(model) or "cache"
        self.length = 0
        """Tokens in the cache."""
        self._token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._position = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._cache: Any = self._new_cache()
        self._step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._forward_one
        if self.compiled:
            self._step = torch.compile(self._forward_one, mode="reduce-overhead", fullgraph=True)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache, StaticCache

        if self.static:
            return StaticCache(config=self.model.config, max_cache_len=self.max_len)
        return DynamicCache()

    def _forward_one(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) after ``token`` (1, 1) at ``position`` (1, 1); the compiled step."""
        kwargs = {self._cache_key: self._cache}
        out = self.model(input_ids=token, position_ids=position, use_cache=True, **kwargs)
        return out.logits[:, -1]  # type: ignore[no-any-return]

    def _check_eval(self) -> None:
        if self.model.training:
            raise RuntimeError("StaticDecoder needs the model in eval mode (dropout is on)")

    def reset(self) -> None:
        """Forget the sequence. The static cache is zeroed in place (its addresses, which the
        captured graph reads, stay); a dynamic one is replaced."""
        if self.static:
            self._cache.reset()
        else:
            self._cache = self._new_cache()
        self.length = 0

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Run ``ids`` after what is cached (after :meth:`reset`: a new prompt) and return the
        next token's logits (V,), float32. Runs eagerly: prompt lengths vary."""
        self._check_eval()
        if not ids:
            raise ValueError("prefill needs at least one token")
        if self.length + len(ids) > self.max_len:
            raise ValueError(
                f"a prompt of {len(ids)} tokens (after {self.length} cached) does not fit "
                f"max_len={self.max_len}"
            )
        start = self.length
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(ids), device=self.device)[None]
        kwargs = {self._cache_key: self._cache}
        out = self.model(
            input_ids=input_ids, position_ids=positions, use_cache=True, logits_to_keep=1, **kwargs
        )
        self.length += len(ids)
        logits: torch.Tensor = out.logits[0, -1]
        return logits.to(torch.float32, copy=True)

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """Append ``token`` and return the next token's logits (V,), float32 (a copy: a CUDA
        graph's output buffer is overwritten by the next replay)."""
        self._check_eval()
        if self.length == 0:
            raise RuntimeError("prefill a prompt before the first step")
        if self.length >= self.max_len:
            raise ValueError(f"the sequence has reached max_len={self.max_len} tokens")
        self._token.fill_(token)
        self._position.fill_(self.length)
        logits = self._step(self._token, self._position)
        self.length += 1
        return logits[0].to(torch.float32, copy=True)
