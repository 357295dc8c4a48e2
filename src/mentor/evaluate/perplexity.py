"""Perplexity of a causal LM on a text, and the general-English sample that probes forgetting.

A fine-tune that raises perplexity on plain English prose (``general.txt``, about 3,000 words on
everyday topics) has forgotten some of what the base knew; the before/after report
(:mod:`mentor.evaluate.compare`) flags a rise past its threshold.

    ppl = perplexity(model, tokenizer, general_sample())
"""

from __future__ import annotations

import itertools
import math
from importlib.resources import files
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)

from mentor.models.engine import eval_mode

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def general_sample() -> str:
    """About 3,000 words of plain encyclopedic English on everyday topics: the forgetting probe."""
    return files("mentor.evaluate").joinpath("general.txt").read_text(encoding="utf-8")


def token_windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """``(start, end)`` of non-overlapping windows that tile ``range(n_tokens)``; the last may
    be shorter."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    return [(start, min(start + seq_len, n_tokens)) for start in range(0, n_tokens, seq_len)]


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    seq_len: int = 512,
    batch_size: int = 4,
) -> float:
    """exp(mean next-token NLL) of ``text`` over non-overlapping windows of ``seq_len`` tokens.

    The text is tokenised without special tokens and cut by :func:`token_windows`; each window is
    scored on its own, so its first token is context only and every other token is predicted
    once. Log-probabilities are taken in fp32 and summed in float64 whatever the model's dtype;
    the model runs on whatever device it is on. Windows of one token predict nothing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    windows = [w for w in token_windows(len(ids), seq_len) if w[1] - w[0] >= 2]
    if not windows:
        raise ValueError("perplexity needs a text of at least 2 tokens")
    all_ids = torch.tensor(ids, dtype=torch.long, device=model.device)
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode(), eval_mode(model):
        # Only the last window can be shorter, so a batch splits into at most two equal-length
        # groups and no padding is ever needed.
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            for _, group in itertools.groupby(batch, key=lambda w: w[1] - w[0]):
                inputs = torch.stack([all_ids[a:b] for a, b in group])  # (B, T)
                logits = model(input_ids=inputs).logits  # (B, T, V)
                for row, targets in zip(logits, inputs, strict=True):  # one row at a time: fp32
                    nll = F.cross_entropy(row[:-1].float(), targets[1:], reduction="sum")
                    total_nll += float(nll)
                    total_tokens += targets.numel() - 1
    return math.exp(total_nll / total_tokens)
