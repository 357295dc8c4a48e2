"""The running batch's KV cache: rows join, rows leave, the padding stays small.

Continuous batching (Yu et al., 2022, "Orca") advances every running request one token per
forward pass and lets requests join and leave between passes. Here the batch is one Hugging Face
``DynamicCache`` whose rows are left padded to a common length, with an attention mask that hides
the padding and position ids per row:

    running (B, L)       joining (b, l)            after the join (B + b, max(L, l))
    . . a a a a          . b b b                   . . a a a a
    . a a a a a    +     b b b b           ─►      . a a a a a
                                                   . . . b b b
                                                   . . b b b b

A row that finishes is dropped by index; columns that only padding uses are then cut from the
left, so a batch that ran long does not keep paying for a prompt that has left. Every function
here is pure over tensors and is tested on its own (``tests/models/test_kv.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass
class Batch:
    """The state of the running rows between two forward passes."""

    cache: Any
    """A ``transformers.DynamicCache`` with one entry per row, left padded to ``mask``'s width."""
    mask: torch.Tensor
    """(B, L) long: 1 where a row has a real token in the cache, 0 for its left padding."""
    positions: torch.Tensor
    """(B,) long: the position id of each row's next token."""

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


def joinable(cache: Any) -> bool:
    """Whether rows of ``cache`` can be padded, concatenated and dropped: every layer holds
    plain key and value tensors (B, H, T, D). Sliding-window and other special layers keep more
    state than that, and a batch of such a model runs start to finish instead."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None for layer in layers
    )


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pad)


def join(running: Batch, joining: Batch) -> Batch:
    """``joining``'s rows appended after ``running``'s, both left padded to the wider one.

    The result reuses ``running.cache`` (its layers now hold the joined tensors)."""
    width = max(running.width, joining.width)
    for mine, theirs in zip(running.cache.layers, joining.cache.layers, strict=True):
        mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
        mine.values = torch.cat(
            [_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)]
        )
    mask = torch.cat([_pad_left(running.mask, width, 1), _pad_left(joining.mask, width, 1)])
    positions = torch.cat([running.positions, joining.positions])
    return Batch(running.cache, mask, positions)


def keep(batch: Batch, rows: list[int]) -> Batch:
    """Only ``rows`` (in that order), then the columns no remaining row uses cut from the left."""
    index = torch.tensor(rows, dtype=torch.long, device=batch.mask.device)
    mask = batch.mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    for layer in batch.cache.layers:
        layer.keys = layer.keys.index_select(0, index)[..., start:, :]
        layer.values = layer.values.index_select(0, index)[..., start:, :]
    return Batch(batch.cache, mask[:, start:], batch.positions.index_select(0, index))


def extend(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask (B, L + 1) and position ids (B, 1) for one more token per row; the batch's own
    mask and positions move on by one."""
    batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.rows, 1))], dim=1)
    positions = batch.positions[:, None]
    batch.positions = batch.positions + 1
    return batch.mask, positions


def bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """KV-cache bytes one token of one sequence takes: layers x (K and V) x kv heads x head dim."""
    text = getattr(config, "text_config", None) or config
    layers = int(text.num_hidden_layers)
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    return layers * 2 * heads * head_dim * torch.empty((), dtype=dtype).element_size()
