"""The run configuration of ``mentor finetune``: typed, validated, with help on every field.

A YAML file mirrors it (``mentor finetune --config run.yaml``); command-line flags override what
the file says. ``examples/finetune/*.yaml`` are runnable configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mentor.models.backends import EngineSettings
from mentor.train.lora import LoRASettings
from mentor.train.trainer import TrainSettings
from mentor.utils.config import load_yaml_config
from mentor.utils.tracking import ReportTo

OVERLONG_HELP = (
    "An example longer than max_length: error (the default) stops before any model is loaded and "
    "names each one with the answer tokens a cut would lose; truncate keeps its first max_length "
    "tokens (the end of the answer is not learnt) and says how many were cut; drop leaves it out "
    "and says how many."
)


class QLoRASettings(BaseModel):
    """How ``method: qlora`` holds the frozen base: every linear layer but the output head in NF4
    (the only 4-bit type offered: QLoRA's paper found it better than FP4 for normal weights);
    embeddings, norms and the head stay in the training dtype."""

    model_config = ConfigDict(extra="forbid")

    block_size: Literal[64, 128, 256] = Field(
        default=64, description="Weights sharing one absmax scale (the paper's 64)."
    )
    double_quant: bool = Field(
        default=True,
        description="Store the scales in 8 bits (0.127 instead of 0.5 bit a weight), as the paper.",
    )
    gap_tokens: int = Field(
        default=512,
        ge=0,
        description="Held-out tokens on which the 4-bit-trained model is compared with the "
        "adapter on the unquantized base (logit gap in the report); 0 skips the comparison.",
    )


class FinetuneConfig(BaseModel):
    """One fine-tuning run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default="smollm2-135m-instruct",
        description="Registry name, pulled name, model folder, or hf:ORG/NAME.",
    )
    data: Path = Field(description="Training data: chat or qa JSONL (or classification).")
    method: Literal["lora", "full", "qlora"] = Field(
        default="lora",
        description="lora trains an adapter; full trains every weight; qlora trains the same "
        "adapter over a base held in 4-bit NF4 (about a quarter of the memory), saved in PEFT's "
        "format for the unquantized base.",
    )
    task: Literal["auto", "sft", "classify"] = Field(
        default="auto",
        description="sft: chat/qa supervised fine-tuning of a causal LM; classify: an encoder "
        "plus a head on labelled text; auto decides from the data file's records.",
    )
    val: Path | None = Field(
        default=None,
        description="Validation data; without it a share of the training data is held out.",
    )
    val_share: float = Field(
        default=0.1, ge=0, lt=1, description="Share of the training data held out for validation."
    )
    eval: Path | None = Field(
        default=None,
        description="Held-out test set: the base and the tuned model are scored on it.",
    )
    eval_limit: int | None = Field(
        default=None, ge=1, description="Score at most this many test examples."
    )
    eval_max_new_tokens: int = Field(
        default=128, ge=1, description="Longest answer generated when scoring the test set."
    )
    out: Path = Field(default=Path("runs/finetune"), description="Folder of the run.")
    report_to: ReportTo = Field(
        default_factory=list,
        description="Trackers that get the run's config, per-step metrics, report and "
        "adapter or model: trackio, wandb, mlflow, tensorboard (each needs its extra, e.g. "
        "mentor[mlflow]).",
    )
    max_length: int = Field(default=1024, ge=8, description="Longest example, in tokens.")
    overlong: Literal["error", "truncate", "drop"] = Field(
        default="error", description=OVERLONG_HELP
    )
    packing: bool = Field(
        default=True,
        description="Pack short examples into full rows of max_length tokens (no padding).",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or mps.")
    lora: LoRASettings = Field(default_factory=LoRASettings, description="Adapter shape.")
    qlora: QLoRASettings = Field(
        default_factory=lambda: QLoRASettings(), description="The 4-bit base (method: qlora)."
    )
    train: TrainSettings = Field(default_factory=TrainSettings, description="Training loop.")
    engine: EngineSettings = Field(
        default_factory=EngineSettings,
        description="What answers the held-out set before and after training: builtin or vllm.",
    )

    @model_validator(mode="after")
    def _qlora_task(self) -> FinetuneConfig:
        if self.method == "qlora" and self.task == "classify":
            raise ValueError(
                "method: qlora trains causal LMs (task sft); a classifier's encoder is small "
                "enough to train with lora or full"
            )
        return self

    @field_validator("model")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model")
        return value


def load_config(path: Path | None, overrides: dict[str, Any]) -> FinetuneConfig:
    """The YAML at ``path`` (if any) with ``overrides`` applied (dotted keys reach sections)."""
    return load_yaml_config(FinetuneConfig, path, overrides)
