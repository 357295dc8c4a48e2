"""The run configuration of ``mentor distill``: typed, validated, with help on every field.

A YAML file mirrors it (``mentor distill --config distill.yaml``); command-line flags override
what the file says. ``examples/distill/*.yaml`` are runnable configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mentor.distill.losses import Divergence
from mentor.distill.sequence import GenerationSettings
from mentor.models.backends import EngineSettings
from mentor.models.remote import EndpointSettings
from mentor.train.lora import LoRASettings
from mentor.train.trainer import TrainSettings
from mentor.utils.config import load_yaml_config
from mentor.utils.tracking import ReportTo


class KDSettings(BaseModel):
    """How the student learns from the teacher's logits (``method: logits``)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Weight of cross-entropy on the data's own tokens; 1 - alpha weighs the "
        "divergence from the teacher.",
    )
    temperature: float = Field(
        default=2.0, gt=0, description="Softens both distributions; the divergence is x tau^2."
    )
    divergence: Divergence = Field(
        default="forward_kl",
        description="forward_kl KL(teacher||student), reverse_kl KL(student||teacher), or jsd.",
    )
    beta: float = Field(default=0.5, gt=0, lt=1, description="Weight of the JSD mixture.")
    top_k: int = Field(
        default=32,
        ge=0,
        description="Offline teacher: its top-k log-probs per target token, computed once and "
        "cached on disk; 0 runs the teacher online at every step instead.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where the teacher cache lives; default: one folder per teacher, data and k "
        "under $MENTOR_HOME/distill-cache, shared by every run and student.",
    )
    chunk_size: int = Field(
        default=1024, ge=1, description="Positions per chunk of logits in the loss."
    )


class DistillConfig(BaseModel):
    """One distillation run."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(
        description="The model to learn from (registry name, folder, hf:ID); with "
        "teacher_endpoint, the model name the endpoint serves."
    )
    teacher_endpoint: EndpointSettings | None = Field(
        default=None,
        description="A hosted teacher: an OpenAI-compatible endpoint (base_url, api_key_env, "
        "requests_per_minute, ...; model defaults to teacher). Sequence distillation only.",
    )
    student: str = Field(
        default="smollm2-135m-instruct",
        description="The model that learns; with keep_every, ignored (built from the teacher).",
    )
    keep_every: int | None = Field(
        default=None,
        ge=1,
        description="Build the student from every k-th layer of the teacher (DistilBERT-style "
        "initialisation) instead of loading --student.",
    )
    student_config: dict[str, int | float | str] | None = Field(
        default=None,
        description="Build a randomly initialised student of the teacher's architecture with "
        "these config changes (for example num_hidden_layers: 4, hidden_size: 512) instead of "
        "loading --student.",
    )
    data: Path = Field(
        description="Training data: chat or qa JSONL (logits); prompts for sequence."
    )
    method: Literal["logits", "sequence"] = Field(
        default="logits",
        description="logits: match the teacher's token distributions (same tokenizer); "
        "sequence: fine-tune on the teacher's generated answers (any tokenizers). Default: "
        "logits, or sequence with a teacher_endpoint.",
    )
    student_method: Literal["full", "lora"] = Field(
        default="full", description="Train every student weight, or a LoRA adapter on it."
    )
    val: Path | None = Field(default=None, description="Validation data (else held out).")
    unlabelled: Path | None = Field(
        default=None,
        description="Classifier distillation: extra texts without labels (.txt one per line, or "
        "CSV/JSONL with a text field); the student learns the teacher's soft labels on them.",
    )
    val_share: float = Field(default=0.1, ge=0, lt=1, description="Share held out for validation.")
    eval: Path | None = Field(
        default=None,
        description="Held-out test set (qa or chat JSONL): teacher and student are scored on it "
        "for the teacher-student report.",
    )
    eval_limit: int | None = Field(default=None, ge=1, description="Score at most this many.")
    eval_max_new_tokens: int = Field(default=128, ge=1, description="Longest scored answer.")
    similarity_embedder: str | None = Field(
        default="minilm-l6",
        description="Sentence embedder for the answer-similarity column of the report; "
        "empty to skip it.",
    )
    out: Path = Field(default=Path("runs/distill"), description="Folder of the run.")
    report_to: ReportTo = Field(
        default_factory=list,
        description="Trackers that get the run's config, per-step metrics, report and "
        "student: trackio, wandb, mlflow, tensorboard (each needs its extra, e.g. "
        "mentor[mlflow]).",
    )
    max_length: int = Field(default=1024, ge=8, description="Longest example, in tokens.")
    overlong: Literal["error", "truncate", "drop"] = Field(
        default="error",
        description="An example longer than max_length: error (the default) stops before "
        "training and names each one; truncate keeps its first max_length tokens; drop leaves it "
        "out (both say how many).",
    )
    packing: bool = Field(default=True, description="Pack short examples into full rows.")
    device: str = Field(default="auto", description="auto, cpu, cuda or mps.")
    kd: KDSettings = Field(default_factory=KDSettings, description="Logit distillation.")
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings,
        description="How the teacher writes answers (sequence).",
    )
    lora: LoRASettings = Field(default_factory=LoRASettings, description="Student adapter shape.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Training loop.")
    engine: EngineSettings = Field(
        default_factory=EngineSettings,
        description="What writes a local teacher's answers (sequence): builtin or vllm. The "
        "teacher-student report times both on the builtin engine, so its speed-up compares "
        "models, not engines.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hosted_defaults(cls, data: Any) -> Any:
        # A hosted teacher serves the model named by `teacher`, and can only write answers.
        endpoint = data.get("teacher_endpoint") if isinstance(data, dict) else None
        if isinstance(endpoint, dict):
            data = {**data, "teacher_endpoint": {"model": data.get("teacher"), **endpoint}}
            data.setdefault("method", "sequence")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        built = self.keep_every is not None or self.student_config is not None
        if self.teacher_endpoint is not None and built:
            raise ValueError(
                "a student built from the teacher needs the teacher's weights, and a hosted "
                "teacher's are not here; name a --student"
            )
        if self.teacher_endpoint is not None and self.method == "logits":
            raise ValueError(
                "a hosted teacher (teacher_endpoint, --teacher-url) gives no logits over the "
                "API; use --method sequence: the student learns from its generated answers"
            )
        if built and self.method == "sequence":
            raise ValueError("a student built from the teacher shares its tokenizer; use logits")
        if self.keep_every is not None and self.student_config is not None:
            raise ValueError("give keep_every or student_config, not both")
        if built and self.student_method == "lora":
            raise ValueError(
                "a student built from the teacher has no saved base for an adapter to sit on; "
                "train it in full (student_method: full)"
            )
        return self


def load_config(path: Path | None, overrides: dict[str, Any]) -> DistillConfig:
    """The YAML at ``path`` (if any) with ``overrides`` applied (dotted keys reach sections)."""
    return load_yaml_config(DistillConfig, path, overrides)
