"""What a recommendation costs: one-time, yearly, per query and break-even, as low-high ranges.

Every price and rate lives in :class:`CostModel` as a low-high :class:`Range` with its source;
``mentor advise --costs my-costs.yaml`` overrides any of them (``gpu_usd_per_hour: [2.0, 3.5]``).
The defaults are published ballpark figures (list prices of 2024-2025, public training reports);
they date quickly, so treat them as a starting point and put in your own.

:func:`estimate` is evaluated twice, once with every figure at its cheap end and once at its dear
end (capacities the other way round), so each total is consistent within its case. Break-even
compares against the baseline most teams start from: a hosted API model prompted with few-shot
examples, plus retrieval when there are documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mentor.advisor.plan import Recommendation
from mentor.advisor.situation import Situation
from mentor.utils.config import load_yaml_config

Case = Literal["low", "high"]
TRAINED = ("lora", "full_finetune", "provider_finetune", "distillation")
# Index updates a year for each freshness; realtime feeds are upserted in ~hourly batches.
UPDATES_PER_YEAR = {"static": 0, "monthly": 12, "weekly": 52, "daily": 365, "realtime": 8760}


class Range(BaseModel):
    """A low-high range; YAML may give ``[low, high]`` or a single number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0, description="The cheap end.")
    high: float = Field(ge=0, description="The dear end.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            return {"low": value, "high": value}
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"expected [low, high], got {len(value)} numbers")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self

    def at(self, case: Case) -> float:
        return self.low if case == "low" else self.high


def _r(low: float, high: float, help_text: str) -> Any:
    return Field(default_factory=lambda: Range(low=low, high=high), description=help_text)


class SetupDays(BaseModel):
    """Engineer-days to build, evaluate and ship each method: a planning assumption (from
    typical project plans, not a published price); edit it to your team."""

    model_config = ConfigDict(extra="forbid")

    prompting: Range = _r(1, 3, "Write prompts and a golden test set.")
    rag: Range = _r(3, 10, "Ingestion, chunking, index, retrieval evaluation.")
    lora: Range = _r(3, 10, "Data cleaning, training runs, before/after evaluation.")
    full_finetune: Range = _r(5, 20, "As LoRA, plus multi-GPU training and forgetting checks.")
    provider_finetune: Range = _r(2, 5, "Data in the provider's format, a job, evaluation.")
    distillation: Range = _r(5, 15, "Teacher outputs, student training, agreement checks.")
    quantization: Range = _r(1, 3, "Quantize, measure quality and memory on the target.")


class CostModel(BaseModel):
    """Prices and rates behind the estimate; each is a low-high range with its source."""

    model_config = ConfigDict(extra="forbid")

    api_usd_per_1k_tokens: Range = _r(
        0.0003,
        0.01,
        "Hosted chat model, input and output blended 3:1: GPT-4o-mini ($0.15/$0.60 per M) to "
        "GPT-4o ($2.50/$10 per M); provider price pages 2024-2025.",
    )
    api_finetuned_usd_per_1k_tokens: Range = _r(
        0.0006,
        0.0075,
        "A provider-fine-tuned model, blended: GPT-4o-mini tuned ($0.30/$1.20 per M) to GPT-4o "
        "tuned ($3.75/$15 per M); OpenAI pricing 2024-2025.",
    )
    api_training_usd_per_1k_tokens: Range = _r(
        0.003,
        0.025,
        "Provider fine-tuning, per training token: GPT-4o-mini $3/M to GPT-4o $25/M; OpenAI "
        "pricing 2024-2025.",
    )
    epochs: Range = _r(2, 4, "Passes over the data per run (providers default to about 3).")
    tuning_runs: Range = _r(2, 5, "Training runs before one ships (data and settings fixes).")
    gpu_usd_per_hour: Range = _r(
        1.5,
        6.0,
        "One on-demand A100 80GB or H100: ~$1.5-3/h at GPU clouds (Lambda, RunPod), ~$4-7/h "
        "at hyperscalers after their 2025 cuts; public list prices 2024-2025.",
    )
    lora_gpu_hours_per_1k_examples: Range = _r(
        0.05,
        0.3,
        "One LoRA run on a 7-8B model, ~500-token examples, 3 epochs, at 2-5k tokens/s on one "
        "A100/H100 (PEFT and Unsloth benchmark reports).",
    )
    full_gpu_hours_per_1k_examples: Range = _r(
        0.5,
        2.0,
        "One full fine-tuning run of a 7-8B model: 4-8 GPUs for weights, gradients and Adam "
        "states (~16 bytes a parameter), about 5-8x LoRA's GPU-hours.",
    )
    distill_examples: Range = _r(
        5_000,
        50_000,
        "Prompts the teacher answers for the student; published recipes use 10^4-10^5 "
        "(Alpaca 52k, MiniLLM, Orca).",
    )
    teacher_tokens_per_example: Range = _r(
        300, 1000, "Tokens per teacher answer, prompt included, for distillation data."
    )
    teacher_gpu_hours_per_1k_examples: Range = _r(
        0.05,
        0.5,
        "A local 70B-class teacher on 1-2 H100s with batched serving (vLLM, ~1-3k tokens/s), "
        "used when the data must stay local.",
    )
    student_gpu_hours_per_1k_examples: Range = _r(
        0.02, 0.2, "One training run of a 0.5-3B student, all weights, 2-3 epochs, one GPU."
    )
    quantize_gpu_hours: Range = _r(
        0.1, 1.0, "Calibrating and evaluating an int8/int4 model (GPTQ/AWQ take ~0.2-1 h on 7B)."
    )
    embed_usd_per_1k_documents: Range = _r(
        0.04,
        0.3,
        "Embedding 1k documents of ~2k tokens: text-embedding-3-small ($0.02/M) to -large "
        "($0.13/M); a self-hosted MiniLM costs less.",
    )
    changed_share_per_update: Range = _r(
        0.02, 0.10, "Share of the documents re-embedded at each index update."
    )
    vector_db_usd_per_month: Range = _r(
        0,
        250,
        "An embedded store (LanceDB, as mentor uses) costs nothing extra; managed services "
        "(Pinecone, Weaviate, Qdrant Cloud) start near $25-70/month, hundreds at millions of "
        "vectors; list prices 2024-2025.",
    )
    rag_context_tokens: Range = _r(
        1000, 3000, "Retrieved passages added to each prompt: top-5 chunks of 200-600 tokens."
    )
    few_shot_tokens: Range = _r(
        300, 1500, "Examples placed in each prompt of a model that is not fine-tuned."
    )
    gpu_server_usd_per_month: Range = _r(
        500,
        2000,
        "One inference GPU around the clock: L4/A10G at ~$0.7-1.2/h to A100 at ~$2.5/h; cloud "
        "list prices 2024-2025.",
    )
    cpu_server_usd_per_month: Range = _r(
        50, 300, "An 8-32 vCPU cloud VM around the clock; list prices 2024-2025."
    )
    gpu_queries_per_hour: Range = _r(
        3_000,
        20_000,
        "Answers an hour from one GPU with continuous batching (vLLM, 7-8B: 1-5k tokens/s "
        "aggregate, ~300-token answers).",
    )
    cpu_queries_per_hour: Range = _r(
        300, 2_000, "Answers an hour from a CPU server running a 1-3B int8 model."
    )
    classifier_queries_per_hour: Range = _r(
        50_000, 500_000, "Texts an hour a MiniLM-size classifier labels on a CPU server."
    )
    peak_factor: Range = _r(2, 3, "Peak hourly load over the daily average (servers size to it).")
    retrains_per_year: Range = _r(
        1, 4, "Re-training a tuned or distilled model as queries and data drift."
    )
    engineer_usd_per_day: Range = _r(
        400, 1000, "Loaded cost of an engineer-day: a planning assumption, edit to your team."
    )
    setup_days: SetupDays = Field(
        default_factory=SetupDays, description="Engineer-days to set up each method."
    )


def load_cost_model(path: Path | None) -> CostModel:
    """The defaults, with what the YAML at ``path`` overrides; errors name the file and field."""
    return load_yaml_config(CostModel, path, {}, path_keys=())


@dataclass(frozen=True)
class Money:
    """A low-high amount in USD."""

    low: float
    high: float


@dataclass(frozen=True)
class CostLine:
    """One item of the estimate."""

    item: str
    kind: str  # one-time or yearly
    low: float
    high: float
    basis: str  # the formula, in CostModel and Situation field names


@dataclass(frozen=True)
class CostEstimate:
    """The estimate for a recommendation, beside the hosted-prompting baseline."""

    one_time: Money
    yearly: Money
    per_query: Money | None  # None without queries
    baseline: str
    baseline_one_time: Money
    baseline_yearly: Money
    # Months until the extra one-time cost is repaid by lower running costs, with cheap and with
    # dear prices; None: never (not cheaper to run, or the recommendation is the baseline).
    break_even_months: tuple[float | None, float | None]
    lines: tuple[CostLine, ...]
    notes: tuple[str, ...]


_Item = tuple[str, str, float, str]  # item, kind, amount in one case, basis


def _training(s: Situation, methods: tuple[str, ...], m: CostModel, case: Case) -> list[_Item]:
    """Compute for training, one case: what the trained methods cost to build once."""
    gpu = m.gpu_usd_per_hour.at(case)
    runs = m.tuning_runs.at(case)
    per_1k = s.labelled_examples / 1000
    items: list[_Item] = []
    if "lora" in methods:
        hours = per_1k * m.lora_gpu_hours_per_1k_examples.at(case) * runs
        basis = "labelled_examples/1k × lora_gpu_hours_per_1k_examples × tuning_runs × gpu"
        items.append(("LoRA training", "one-time", hours * gpu, basis))
    if "full_finetune" in methods:
        hours = per_1k * m.full_gpu_hours_per_1k_examples.at(case) * runs
        basis = "labelled_examples/1k × full_gpu_hours_per_1k_examples × tuning_runs × gpu"
        items.append(("full fine-tuning", "one-time", hours * gpu, basis))
    if "provider_finetune" in methods:
        tokens = s.labelled_examples * s.tokens_per_query * m.epochs.at(case) * runs
        price = m.api_training_usd_per_1k_tokens.at(case)
        basis = "labelled_examples × tokens_per_query × epochs × tuning_runs × training price"
        items.append(("provider fine-tuning", "one-time", tokens / 1000 * price, basis))
    if "distillation" in methods:
        examples = m.distill_examples.at(case)
        if s.secret_documents:  # the teacher runs on your own GPUs
            hours = examples / 1000 * m.teacher_gpu_hours_per_1k_examples.at(case)
            basis = "distill_examples/1k × teacher_gpu_hours_per_1k_examples × gpu (local)"
            items.append(("teacher outputs", "one-time", hours * gpu, basis))
        else:
            tokens = examples * m.teacher_tokens_per_example.at(case)
            basis = "distill_examples × teacher_tokens_per_example × api price"
            cost = tokens / 1000 * m.api_usd_per_1k_tokens.at(case)
            items.append(("teacher outputs", "one-time", cost, basis))
        hours = examples / 1000 * m.student_gpu_hours_per_1k_examples.at(case) * runs
        basis = "distill_examples/1k × student_gpu_hours_per_1k_examples × tuning_runs × gpu"
        items.append(("student training", "one-time", hours * gpu, basis))
    return items


def _knowledge(s: Situation, m: CostModel, case: Case) -> list[_Item]:
    """Indexing once, then the store and the re-embedding of changed documents each year."""
    embed = s.document_count / 1000 * m.embed_usd_per_1k_documents.at(case)
    updates = UPDATES_PER_YEAR[s.freshness] * m.changed_share_per_update.at(case)
    return [
        ("index the documents", "one-time", embed, "document_count/1k × embed price"),
        (
            "vector store",
            "yearly",
            12 * m.vector_db_usd_per_month.at(case),
            "12 × vector_db_usd_per_month",
        ),
        (
            "re-index changes",
            "yearly",
            embed * updates,
            "index cost × updates a year (freshness) × changed_share_per_update",
        ),
    ]


def _serving(
    s: Situation, methods: tuple[str, ...], hosting: str, m: CostModel, case: Case
) -> _Item:
    """A year of answering queries where the recommendation says it runs."""
    # More answers an hour means fewer servers: the cheap case takes the high capacity.
    capacity_case: Case = "high" if case == "low" else "low"
    if hosting == "on-device":
        return ("serving", "yearly", 0.0, "runs on the user's device")
    if hosting == "hosted-api":
        tokens = float(s.tokens_per_query)
        tokens += m.rag_context_tokens.at(case) if "rag" in methods else 0
        tokens += m.few_shot_tokens.at(case) if "prompting" in methods else 0
        tuned = "provider_finetune" in methods
        price = (m.api_finetuned_usd_per_1k_tokens if tuned else m.api_usd_per_1k_tokens).at(case)
        basis = "queries_per_day × 365 × tokens (+ context, + few-shot) × api price"
        return ("API tokens", "yearly", s.queries_per_day * 365 * tokens / 1000 * price, basis)
    if s.task == "classification":
        capacity, monthly = m.classifier_queries_per_hour, m.cpu_server_usd_per_month
    elif s.hardware == "server_gpu":
        capacity, monthly = m.gpu_queries_per_hour, m.gpu_server_usd_per_month
    else:
        capacity, monthly = m.cpu_queries_per_hour, m.cpu_server_usd_per_month
    peak = s.queries_per_day / 24 * m.peak_factor.at(case)
    servers = max(1, math.ceil(peak / capacity.at(capacity_case)))
    basis = "servers for the peak hour (queries_per_day/24 × peak_factor / capacity) × 12 months"
    return ("servers", "yearly", servers * 12 * monthly.at(case), basis)


def _setup(methods: tuple[str, ...], m: CostModel, case: Case) -> list[_Item]:
    rate = m.engineer_usd_per_day.at(case)
    items: list[_Item] = []
    for name in methods:
        days: Range = getattr(m.setup_days, name)
        basis = f"setup_days.{name} × engineer_usd_per_day"
        items.append((f"setup: {name}", "one-time", days.at(case) * rate, basis))
    return items


def _items(
    s: Situation, methods: tuple[str, ...], hosting: str, m: CostModel, case: Case
) -> list[_Item]:
    """Every line for one case: setup, training, retraining, knowledge, serving."""
    items = _setup(methods, m, case)
    training = _training(s, methods, m, case)
    items += training
    if training:
        compute = sum(amount for _, _, amount, _ in training)
        basis = "retrains_per_year × the training compute above"
        items.append(("retraining", "yearly", m.retrains_per_year.at(case) * compute, basis))
    if "rag" in methods:
        items += _knowledge(s, m, case)
    items.append(_serving(s, methods, hosting, m, case))
    return items


def _totals(items: list[_Item]) -> tuple[float, float]:
    once = sum(amount for _, kind, amount, _ in items if kind == "one-time")
    return once, sum(amount for _, kind, amount, _ in items if kind == "yearly")


def _break_even(once: float, yearly: float, base_once: float, base_yearly: float) -> float | None:
    saving = (base_yearly - yearly) / 12
    if saving <= 0:
        return None
    return max(0.0, once - base_once) / saving


def baseline_methods(s: Situation, rec: Recommendation) -> tuple[str, ...]:
    """The hosted baseline: prompting, with retrieval when there are documents to search."""
    return ("prompting", "rag") if s.documents or "rag" in rec.methods else ("prompting",)


def estimate(s: Situation, rec: Recommendation, model: CostModel) -> CostEstimate:
    """The cost of ``rec`` for ``s`` under ``model``, and when it repays its one-time cost."""
    base = baseline_methods(s, rec)
    is_baseline = rec.hosting == "hosted-api" and set(rec.methods) <= set(base)
    cases: dict[Case, tuple[list[_Item], list[_Item]]] = {}
    for case in ("low", "high"):
        ours = _items(s, rec.methods, rec.hosting, model, case)
        cases[case] = (ours, _items(s, base, "hosted-api", model, case))
    lows, highs = cases["low"][0], cases["high"][0]
    lines = tuple(
        CostLine(item, kind, low, high, basis)
        for (item, kind, low, basis), (_, _, high, _) in zip(lows, highs, strict=True)
    )
    totals = {case: _totals(items) for case, (items, _) in cases.items()}
    base_totals = {case: _totals(items) for case, (_, items) in cases.items()}
    even: dict[Case, float | None] = {
        case: None if is_baseline else _break_even(*totals[case], *base_totals[case])
        for case in ("low", "high")
    }
    queries = s.queries_per_day * 365
    per_query = Money(totals["low"][1] / queries, totals["high"][1] / queries) if queries else None
    one_time = Money(totals["low"][0], totals["high"][0])
    yearly = Money(totals["low"][1], totals["high"][1])
    return CostEstimate(
        one_time=one_time,
        yearly=yearly,
        per_query=per_query,
        baseline="hosted API with few-shot prompts" + (" and retrieval" if "rag" in base else ""),
        baseline_one_time=Money(base_totals["low"][0], base_totals["high"][0]),
        baseline_yearly=Money(base_totals["low"][1], base_totals["high"][1]),
        break_even_months=(even["low"], even["high"]),
        lines=lines,
        notes=_notes(s, one_time, yearly, is_baseline, (even["low"], even["high"])),
    )


def _notes(
    s: Situation,
    one_time: Money,
    yearly: Money,
    is_baseline: bool,
    even: tuple[float | None, float | None],
) -> tuple[str, ...]:
    notes = []
    if is_baseline:
        notes.append("The recommendation is a hosted setup like the baseline: nothing to repay.")
    elif s.secret_documents:
        notes.append("The hosted baseline is shown for scale only: secret data rules it out.")
    elif even == (None, None):
        notes.append(
            f"At {s.queries_per_day:,} queries a day the hosted baseline is cheaper to run with "
            "cheap and with dear prices: the recommendation pays for quality or control, not "
            "savings."
        )
    if not isinstance(s.budget, str):
        if one_time.low + yearly.low > s.budget:
            notes.append(f"Even the low first-year estimate exceeds the ${s.budget:,.0f} budget.")
        elif one_time.high + yearly.high > s.budget:
            notes.append(f"The high first-year estimate exceeds the ${s.budget:,.0f} budget.")
    return tuple(notes)
