"""mentor's quantized weights in ggml's block layouts, without quantizing them a second time.

ggml stores a quantized row as blocks of 32 weights, each block a small header and the codes:

- ``Q4_1``: ``d`` and ``m`` (fp16), then 16 bytes; byte ``j`` holds code ``j`` in its low nibble
  and code ``j + 16`` in its high one; ``w = q · d + m``. That is mentor's int4 rule
  (``w = q · scale + offset``, :mod:`.int4`) with the nibbles in another order, so a group of
  ``G`` (a multiple of 32) becomes ``G / 32`` blocks sharing its scale and offset: the codes
  carry over exactly and only the scale and offset round to fp16.
- ``Q8_0``: ``d`` (fp16), then 32 signed codes; ``w = q · d``. mentor's int8 keeps one scale per
  row (:mod:`.int8`), which every block of the row repeats.

Layouts as in ggml's ``ggml-common.h`` (``block_q4_1``, ``block_q8_0``); the ``gguf`` package's
``gguf.quants`` reads them back, which is how the tests check these functions.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 32
"""Weights per ggml block for Q4_0, Q4_1 and Q8_0."""


def _blocks_per_group(cols: int, groups: int) -> int:
    group_size = cols // groups
    if group_size % BLOCK:
        raise ValueError(
            f"a group of {group_size} weights is not a whole number of ggml blocks of {BLOCK}"
        )
    return group_size // BLOCK


def int4_to_q4_1(codes: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> np.ndarray:
    """Q4_1 bytes (rows, cols / 32 · 20) of mentor int4 ``codes`` (rows, cols) in [0, 15] with
    ``scales`` and ``offsets`` (rows, cols / G): the same codes, the header of each group repeated
    over its blocks."""
    rows, cols = codes.shape
    per_group = _blocks_per_group(cols, scales.shape[1])
    blocks = codes.to(torch.uint8).reshape(rows, cols // BLOCK, BLOCK).numpy()
    nibbles = blocks[..., : BLOCK // 2] | (blocks[..., BLOCK // 2 :] << 4)  # (rows, nb, 16)
    d = np.repeat(scales.float().numpy(), per_group, axis=1).astype(np.float16)
    m = np.repeat(offsets.float().numpy(), per_group, axis=1).astype(np.float16)
    header = np.stack((d, m), axis=-1).view(np.uint8).reshape(rows, -1, 4)
    return np.concatenate((header, nibbles), axis=-1).reshape(rows, -1)


def int8_to_q8_0(codes: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """Q8_0 bytes (rows, cols / 32 · 34) of mentor int8 ``codes`` (rows, cols) in [-127, 127]
    with one ``scale`` (rows,) per row."""
    rows, cols = codes.shape
    if cols % BLOCK:
        raise ValueError(f"{cols} columns are not a whole number of ggml blocks of {BLOCK}")
    blocks = codes.to(torch.int8).reshape(rows, cols // BLOCK, BLOCK).numpy().view(np.uint8)
    d = np.repeat(scale.float().numpy()[:, None], cols // BLOCK, axis=1).astype(np.float16)
    header = d.view(np.uint8).reshape(rows, -1, 2)
    return np.concatenate((header, blocks), axis=-1).reshape(rows, -1)


def permute_rope_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder the output rows of a Llama q/k projection from Hugging Face's rotate-half rope
    layout to the interleaved pairs llama.cpp's ``llama`` architecture rotates.

    Hugging Face keeps each head's first and second halves apart (it converted Meta's checkpoint
    that way); llama.cpp rotates neighbours, so its converter undoes the split, and
    transformers' GGUF reader redoes it. Works on any tensor whose first axis is the output rows
    (weights, biases, codes, per-row scales, a LoRA ``B``)."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of rotary pairs")
    rest = weight.shape[1:]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *rest)
        .swapaxes(1, 2)
        .reshape(rows, *rest)
        .contiguous()
    )
