"""``method: qlora``: what the fine-tuning recipe does differently for a 4-bit base.

    load the base in the training dtype on the CPU -> fingerprint it -> quantize its linear
    layers to NF4 onto the device, one at a time -> (the LoRA recipe: score, add LoRA, train,
    save) -> compare the 4-bit-trained model with the adapter on the unquantized base

The adapter is trained against W' = dequant(NF4(W)) but served on W, so the report states the
gap between the two on held-out tokens (Dettmers et al. 2023 found the adapter makes up the
4-bit loss; this measures it for the run at hand). The saved adapter carries the fingerprint of
the unquantized base, so ``load_adapter`` and ``mentor adapters merge`` accept that base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from rich.console import Console

from mentor.finetune.config import FinetuneConfig
from mentor.train.lora import base_fingerprint
from mentor.train.nf4 import nf4_bytes, quantize_linears
from mentor.train.trainer import TrainSettings


@dataclass(frozen=True)
class LogitGap:
    """The 4-bit-trained model against its adapter on the unquantized base, token by token."""

    tokens: int
    mean_abs: float
    """Mean |logit difference| over every token and vocabulary entry."""
    max_abs: float
    kl: float
    """Mean KL(p_base+adapter || p_4bit) per token, in nats."""
    top1_agreement: float
    """Share of tokens where both models' most likely next token is the same."""
    device: str

    def to_markdown(self) -> str:
        return (
            f"- 4-bit-trained model against the adapter on the unquantized base ({self.tokens} "
            f"held-out tokens, {self.device}): mean |logit diff| {self.mean_abs:.4f}, max "
            f"{self.max_abs:.3f}, KL {self.kl:.5f} nats/token, same top-1 token "
            f"{self.top1_agreement:.1%}"
        )


def load_quantized_base(
    config: FinetuneConfig, dtype: torch.dtype, device: torch.device, console: Console
) -> tuple[Any, str]:
    """The base with its linear layers in NF4 on ``device`` (the rest in ``dtype``), and the
    fingerprint of its unquantized weights. Loaded on the CPU first so the device never holds
    the dense model."""
    from mentor.models.loading import load_causal_lm

    with console.status(f"loading {config.model}"):
        model: Any = load_causal_lm(config.model, dtype=dtype, device="cpu")
    fingerprint = base_fingerprint(model)
    with console.status(f"quantizing {config.model} to NF4 on {device}"):
        q = config.qlora
        layers = quantize_linears(
            model, block_size=q.block_size, double_quant=q.double_quant, device=device
        )
        model.to(device)
    console.print(
        f"qlora: {len(layers)} linear layers in NF4 ({nf4_bytes(model) / 2**20:,.0f} MB, block "
        f"{config.qlora.block_size}, double quant {config.qlora.double_quant})"
    )
    return model, fingerprint


def train_settings(config: FinetuneConfig, device: torch.device, console: Console) -> TrainSettings:
    """``config.train``, with paged 8-bit AdamW on CUDA when bitsandbytes is there and the run
    did not name an optimizer (elsewhere torch's AdamW: the adapter's states are small)."""
    settings = config.train
    if "optimizer" in settings.model_fields_set or device.type != "cuda":
        return settings
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return settings
    console.print("qlora: paged 8-bit AdamW (bitsandbytes)")
    return settings.model_copy(update={"optimizer": "paged_adamw_8bit"})


def held_out_rows(rows: Sequence[Sequence[int]], tokens: int, width: int) -> list[list[int]]:
    """Up to ``tokens`` token ids from ``rows``, cut into rows of at most ``width``."""
    flat = [t for row in rows for t in row][:tokens]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


@torch.no_grad()
def _logits(model: Any, rows: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    model.eval()
    out = []
    for row in rows:
        ids = torch.tensor([row], device=device)
        out.append(model(input_ids=ids).logits[0].float().cpu())  # (T, vocab)
    return out


def gap_device(config: FinetuneConfig, device: torch.device, dense_bytes: int) -> torch.device:
    """Where the unquantized base is loaded for the comparison: the device when it has room for
    it (with a margin), else the CPU (slower, but a 7B base in bf16 fits there)."""
    if device.type == "cuda" and torch.cuda.mem_get_info(device)[0] > 1.3 * dense_bytes:
        return device
    return torch.device("cpu")


def logit_gap(
    model: Any,
    config: FinetuneConfig,
    adapter: Path,
    rows: list[list[int]],
    dtype: torch.dtype,
    device: torch.device,
) -> LogitGap:
    """Logits of ``model`` (4-bit base + trained adapter, on ``device``) against the unquantized
    base with ``adapter`` loaded by our loader, on the token ``rows``."""
    from mentor.models.loading import load_causal_lm
    from mentor.train.adapters import load_adapter

    quantized = _logits(model, rows, device)
    dense_params = sum(p.numel() for p in model.parameters())
    dense_params += sum(m.in_features * m.out_features for m in _nf4_layers(model))
    where = gap_device(config, device, dense_params * torch.finfo(dtype).bits // 8)
    reference = load_causal_lm(config.model, dtype=dtype, device=str(where))
    load_adapter(reference, adapter)  # refuses a base whose fingerprint differs
    dense = _logits(reference, rows, where)
    del reference
    return compare_logits(quantized, dense, str(where))


def compare_logits(
    quantized: list[torch.Tensor], dense: list[torch.Tensor], device: str
) -> LogitGap:
    """The gap between two models' logits over the same rows (each (T, vocab))."""
    q, d = torch.cat(quantized), torch.cat(dense)
    diff = (q - d).abs()
    kl = F.kl_div(F.log_softmax(q, -1), F.log_softmax(d, -1), log_target=True, reduction="sum")
    tokens = q.shape[0]
    return LogitGap(
        tokens=tokens,
        mean_abs=float(diff.mean()),
        max_abs=float(diff.max()),
        kl=float(kl) / max(tokens, 1),
        top1_agreement=float((q.argmax(-1) == d.argmax(-1)).float().mean()),
        device=device,
    )


def _nf4_layers(model: Any) -> list[Any]:
    from mentor.train.nf4 import NF4Linear

    return [m for m in model.modules() if isinstance(m, NF4Linear)]
