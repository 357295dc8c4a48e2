"""What the trainer minimises: modules whose forward returns the loss *summed* over targets.

``CausalLMLoss`` is next-token cross-entropy on the labelled positions only. It runs the
backbone, keeps the hidden states of positions that have a target and applies the output head to
those alone: with loss on the assistant's tokens only, most positions have none, and the
(positions x vocabulary) logits are the largest tensor of a small model's step (8 x 1024 x 49,152
floats is 1.6 GB for SmolLM2).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mentor.train.data import IGNORE

# Backbones whose logits are exactly ``lm_head(hidden)`` (no soft-capping or scaling).
_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"}


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """A Hugging Face causal LM's backbone (hidden states out) and its output head."""
    backbone = cast(nn.Module, model.base_model)
    head = cast(nn.Linear, model.get_output_embeddings())  # type: ignore[operator]
    return backbone, head


class CausalLMLoss(nn.Module):
    """Summed next-token loss of a Hugging Face causal LM on ``labels != -100``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        self.head_only_on_targets = model_type in _PLAIN_HEAD

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        keep = targets != IGNORE
        # use_cache=False: with a cache transformers skips the block-diagonal mask that keeps
        # packed examples from attending to each other.
        inputs = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": attention_mask,
            "use_cache": False,
        }
        if self.head_only_on_targets:
            backbone, head = backbone_and_head(self.model)
            hidden = backbone(**inputs).last_hidden_state  # (B, T, H)
            picked = hidden[:, :-1][keep]  # (N, H)
            logits = head(picked)  # (N, V)
        else:
            logits = self.model(**inputs).logits[:, :-1][keep]
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
