"""The facts the advisor decides from: a typed, validated :class:`Situation`.

A situation comes from command-line flags, a YAML file that mirrors the fields
(``mentor advise --config examples/advisor/internal-docs-chatbot.yaml``), or questions asked one
field at a time (``mentor advise --interactive``). Flags override what the file says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mentor.utils.config import load_yaml_config

Freshness = Literal["static", "monthly", "weekly", "daily", "realtime"]
Hardware = Literal["server_gpu", "cpu_server", "laptop", "edge", "mobile"]
Task = Literal["chat", "classification", "extraction"]
BudgetTier = Literal["low", "medium", "high"]

# Memory of the serving machine when the situation does not say (GB): a datacentre GPU card, a
# mid-size CPU server, a typical laptop, a single-board computer or embedded box, a phone.
DEFAULT_MEMORY_GB: dict[str, float] = {
    "server_gpu": 80.0,
    "cpu_server": 64.0,
    "laptop": 16.0,
    "edge": 4.0,
    "mobile": 6.0,
}

# A yearly budget in USD maps onto a tier: under 10k is low, under 100k medium, else high.
LOW_BUDGET_USD = 10_000.0
HIGH_BUDGET_USD = 100_000.0


class Situation(BaseModel):
    """What the advisor needs to know about the project."""

    model_config = ConfigDict(extra="forbid")

    task: Task = Field(
        default="chat",
        description="What the model does: chat (free-text answers), classification (a label "
        "per text) or extraction (structured fields from text).",
    )
    freshness: Freshness = Field(
        default="static",
        description="How often the knowledge the answers rely on changes: static, monthly, "
        "weekly, daily or realtime.",
    )
    citations_required: bool = Field(
        default=False, description="Answers must cite the source passage they come from."
    )
    documents: bool = Field(
        default=False,
        description="A document collection (or feed) exists that answers should draw on.",
    )
    document_count: int = Field(
        default=1000, ge=0, description="Documents in that collection (for indexing costs)."
    )
    secret_documents: bool = Field(
        default=False,
        description="Documents or training data that must not leave your own machines.",
    )
    labelled_examples: int = Field(
        default=0,
        ge=0,
        description="Labelled examples of the wanted behaviour (question/answer pairs, texts "
        "with their labels).",
    )
    unlabelled_text: bool = Field(
        default=False,
        description="Plenty of unlabelled in-domain text (prompts, tickets, notes) a teacher "
        "model could answer or label.",
    )
    teacher_available: bool = Field(
        default=True,
        description="A larger model that does the task well can act as teacher (open weights, "
        "or an API whose terms allow training on its outputs).",
    )
    new_capability: bool = Field(
        default=False,
        description="The model must learn a skill the base model lacks (a new format, "
        "language, tool use, reasoning pattern), not just new facts.",
    )
    hosted_model_only: bool = Field(
        default=False,
        description="The model must be a hosted API (no local weights): you can prompt it and "
        "use the provider's fine-tuning service, nothing more.",
    )
    hardware: Hardware = Field(
        default="server_gpu",
        description="Where the model runs when serving: server_gpu, cpu_server, laptop, edge "
        "or mobile.",
    )
    memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory available to the model on that hardware in GB (GPU memory on a GPU "
        "server); empty: a typical figure for the hardware.",
    )
    latency_budget_ms: int | None = Field(
        default=None, gt=0, description="Longest acceptable time to a full answer, in ms."
    )
    budget: BudgetTier | float = Field(
        default="medium",
        description="Money available: low, medium or high, or a yearly amount in USD (under "
        f"{LOW_BUDGET_USD:,.0f} is low, from {HIGH_BUDGET_USD:,.0f} high).",
    )
    queries_per_day: int = Field(default=1000, ge=0, description="Expected queries per day.")
    incumbent: str | None = Field(
        default=None,
        description="What you run today, if anything (e.g. 'a LoRA fine-tune', 'gpt-4o-mini "
        "with a prompt'): the advice then keeps it until a measured change beats it.",
    )
    tokens_per_query: int = Field(
        default=800,
        ge=1,
        description="Tokens per query, prompt and answer together, before any retrieved "
        "context or few-shot examples.",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in get_args(BudgetTier):
            return value.strip().lower()
        try:
            amount = float(str(value).replace(",", "").replace("_", "").lstrip("$"))
        except ValueError:
            raise ValueError(
                f"expected low, medium, high or a yearly amount in USD, got {value!r}"
            ) from None
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"a budget in USD must be a positive number, got {value!r}")
        return amount

    def memory(self) -> float:
        """Memory for the model in GB: the stated figure, else the hardware's typical one."""
        return self.memory_gb if self.memory_gb is not None else DEFAULT_MEMORY_GB[self.hardware]

    def budget_tier(self) -> BudgetTier:
        """The budget as a tier, whether it was given as one or as a yearly amount."""
        if isinstance(self.budget, str):
            return self.budget
        if self.budget < LOW_BUDGET_USD:
            return "low"
        return "medium" if self.budget < HIGH_BUDGET_USD else "high"


def load_situation(path: Path | None, overrides: dict[str, Any]) -> Situation:
    """The situation in the YAML at ``path`` (if any) with ``overrides`` applied (``None`` values
    are ignored). Raises ``ValueError`` naming the file and field on bad input."""
    return load_yaml_config(Situation, path, overrides, path_keys=())


def ask_situation(start: Situation) -> Situation:
    """Ask for every field on the terminal (typer prompts, on stderr so stdout stays clean for
    ``--json``), offering ``start``'s values as defaults; a rejected answer is asked again."""
    values = start.model_dump()
    for name, info in Situation.model_fields.items():
        question = f"{name} ({info.description})"
        while True:
            answer = _ask_one(question, info.annotation, values[name])
            try:
                values = Situation.model_validate({**values, name: answer}).model_dump()
                break
            except ValidationError as exc:
                typer.echo(f"  {exc.errors()[0]['msg']}", err=True)
    return Situation.model_validate(values)


def _ask_one(question: str, annotation: Any, default: Any) -> Any:
    """One prompt: yes/no for flags, text for the rest (choices are in the field's help).
    Answers stay text: the model converts them, and explains one it cannot."""
    if annotation is bool:
        return typer.confirm(question, default=bool(default), err=True)
    shown = "" if default is None else str(default)
    answer = str(typer.prompt(question, default=shown, show_default=bool(shown), err=True))
    return None if answer.strip() == "" and default is None else answer
