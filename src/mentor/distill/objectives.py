"""What the trainer minimises when a causal-LM student learns from a teacher's logits.

``LogitKDLoss`` runs the student backbone, keeps the hidden states of the target positions
(labels != -100 after the shift: the assistant's tokens of a chat) and returns the summed
``alpha CE + (1 - alpha) tau^2 D(teacher, student)`` over them, computed a chunk of positions at
a time (:func:`mentor.distill.losses.chunked_kd_loss`). The teacher is either

- online: a frozen model run on the same batch without gradients, its head applied per chunk
  too, so neither side's (N, V) logits exist whole; or
- offline: the batch carries the teacher's cached top-k at the targets
  (:mod:`mentor.distill.teacher_cache`) and no teacher is loaded at all.

Both must share the tokenizer (checked before training). Vocabularies padded to different sizes
(extra rows no token uses) are compared on the shared ids.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from mentor.distill.losses import Divergence, TopK, chunked_kd_loss, supervised
from mentor.train.objectives import backbone_and_head


class LogitKDLoss(nn.Module):
    """Summed logit-distillation loss of a Hugging Face causal LM student."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        alpha: float = 0.5,
        temperature: float = 2.0,
        kind: Divergence = "forward_kl",
        beta: float = 0.5,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        self.model = student  # the name the trainer's checkpoints use for the trained weights
        # Not a submodule: the teacher's weights stay out of checkpoints and the optimizer.
        self._teacher = [teacher] if teacher is not None else []
        self.alpha, self.temperature, self.kind, self.beta = alpha, temperature, kind, beta
        self.chunk_size = chunk_size

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        teacher_logprobs: torch.Tensor | None = None,
        teacher_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keep = supervised(labels)  # (B, T-1)
        targets = labels[:, 1:][keep]  # (N,)
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": attention_mask,
            "use_cache": False,  # with a cache transformers drops the packed-sequence mask
        }
        backbone, head = backbone_and_head(self.model)
        hidden = backbone(**inputs).last_hidden_state[:, :-1][keep]  # (N, H)
        vocab = head.out_features
        teacher: TopK | Any
        if teacher_logprobs is not None and teacher_ids is not None:
            teacher = TopK(teacher_logprobs, teacher_ids)
        elif self.teacher is not None:
            t_backbone, t_head = backbone_and_head(self.teacher)
            vocab = min(vocab, t_head.out_features)
            with torch.no_grad():  # under the trainer's bf16 autocast, the teacher runs bf16 too
                t_hidden = t_backbone(**inputs).last_hidden_state[:, :-1][keep]  # (N, H_t)

            def teacher(start: int, end: int) -> torch.Tensor:
                with torch.no_grad():
                    return cast(torch.Tensor, t_head(t_hidden[start:end]))[:, :vocab]

        else:
            raise ValueError("no teacher: give a teacher model or a batch with cached top-k")

        def student_head(h: torch.Tensor) -> torch.Tensor:
            return cast(torch.Tensor, head(h))[:, :vocab]

        return chunked_kd_loss(
            hidden,
            student_head,
            teacher,
            targets,
            chunk_size=self.chunk_size,
            alpha=self.alpha,
            temperature=self.temperature,
            kind=self.kind,
            beta=self.beta,
        )
