"""The decision rules, table-driven: every branch of RULES is reached by some row and checked."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from mentor.advisor.plan import recommend
from mentor.advisor.rules import (
    FULL_MIN_EXAMPLES,
    LORA_MIN_EXAMPLES,
    METHODS,
    RULES,
    max_params_b,
    reference_latency_ms,
)
from mentor.advisor.situation import Situation

EDGE = {"hardware": "edge", "memory_gb": 2.0}
HOSTED = {"hosted_model_only": True}
DOCS = {"documents": True}

# (name, situation, methods, reasons' rule ids in order, fallback rule)
ROWS: list[tuple[str, dict[str, Any], tuple[str, ...], list[str], str]] = [
    (
        "nothing known: prompt first",
        {},
        ("prompting",),
        ["knowledge.none", "behaviour.few-shot", "deploy.server", "data.open"],
        "fallback.collect",
    ),
    (
        "unlabelled text and a teacher: synthetic data is plan B",
        {"unlabelled_text": True},
        ("prompting",),
        ["knowledge.none", "behaviour.few-shot", "deploy.server", "data.open"],
        "fallback.synthetic",
    ),
    (
        "stable documents",
        DOCS,
        ("rag",),
        ["knowledge.documents", "behaviour.base-ok", "deploy.server", "data.open"],
        "fallback.rag-tune",
    ),
    (
        "weekly knowledge",
        {**DOCS, "freshness": "weekly"},
        ("rag",),
        ["knowledge.fresh", "behaviour.base-ok", "deploy.server", "data.open"],
        "fallback.rag-tune",
    ),
    (
        "citations on static documents",
        {**DOCS, "citations_required": True},
        ("rag",),
        ["knowledge.cited", "behaviour.base-ok", "deploy.server", "data.open"],
        "fallback.rag-tune",
    ),
    (
        "enough labels for LoRA",
        {"labelled_examples": 500},
        ("lora",),
        ["knowledge.none", "behaviour.lora", "deploy.server", "data.open"],
        "fallback.base-model",
    ),
    (
        "fresh knowledge and behaviour: LoRA + RAG",
        {**DOCS, "freshness": "daily", "labelled_examples": 800},
        ("lora", "rag"),
        ["knowledge.fresh", "behaviour.lora", "deploy.server", "data.open"],
        "fallback.base-model",
    ),
    (
        "thousands of labels and a high budget: full fine-tuning",
        {"labelled_examples": 20_000, "budget": "high"},
        ("full_finetune",),
        ["knowledge.none", "behaviour.full", "deploy.server", "data.open"],
        "fallback.lora",
    ),
    (
        "a new skill with examples",
        {"new_capability": True, "labelled_examples": 300, **DOCS},
        ("lora", "rag"),
        ["knowledge.documents", "behaviour.capability-tune", "deploy.server", "data.open"],
        "fallback.base-model",
    ),
    (
        "a new skill, few examples, a teacher",
        {"new_capability": True, "labelled_examples": 20},
        ("distillation",),
        ["knowledge.none", "behaviour.capability-distill", "deploy.server", "data.open"],
        "fallback.bigger-model",
    ),
    (
        "a new skill with nothing to learn it from",
        {"new_capability": True, "teacher_available": False},
        ("prompting",),
        ["knowledge.none", "behaviour.capability-unmet", "deploy.server", "data.open"],
        "fallback.collect",
    ),
    (
        "2 GB edge device: distilled int4 student",
        {**EDGE, "unlabelled_text": True},
        ("distillation", "quantization"),
        ["knowledge.none", "behaviour.teacher-instead", "deploy.device", "data.open"],
        "fallback.bigger-model",
    ),
    (
        "edge device with fresh documents: distilled + local index",
        {**EDGE, **DOCS, "freshness": "weekly"},
        ("distillation", "quantization", "rag"),
        [
            "knowledge.fresh",
            "behaviour.base-ok",
            "deploy.device",
            "deploy.local-index",
            "data.open",
        ],
        "fallback.bigger-model",
    ),
    (
        "edge device, no teacher, no documents: quantize and prompt",
        {**EDGE, "teacher_available": False},
        ("prompting", "quantization"),
        ["knowledge.none", "behaviour.few-shot", "deploy.quantize-only", "data.open"],
        "fallback.collect",
    ),
    (
        "edge device, no teacher, documents: quantize an off-the-shelf model",
        {**EDGE, **DOCS, "teacher_available": False},
        ("quantization", "rag"),
        [
            "knowledge.documents",
            "behaviour.base-ok",
            "deploy.quantize-only",
            "deploy.local-index",
            "data.open",
        ],
        "fallback.distil-later",
    ),
    (
        "tight latency on a GPU server",
        {"latency_budget_ms": 300, "labelled_examples": 200},
        ("lora", "distillation", "quantization"),
        ["knowledge.none", "behaviour.lora", "deploy.latency", "data.open"],
        "fallback.base-model",
    ),
    (
        "low budget, high volume",
        {"budget": 2000, "queries_per_day": 100_000},
        ("distillation", "quantization"),
        ["knowledge.none", "behaviour.teacher-instead", "deploy.volume", "data.open"],
        "fallback.bigger-model",
    ),
    (
        "classification with labels: LoRA on a small classifier",
        {"task": "classification", "labelled_examples": 500, "hardware": "edge"},
        ("lora",),
        ["knowledge.none", "behaviour.lora", "deploy.classifier", "data.open"],
        "fallback.base-model",
    ),
    (
        "classification with few labels: the teacher labels unlabelled text",
        {"task": "classification", "labelled_examples": 30, "unlabelled_text": True},
        ("distillation",),
        ["knowledge.none", "behaviour.teacher-instead", "deploy.classifier-distill", "data.open"],
        "fallback.bigger-model",
    ),
    (
        "secret documents on a laptop",
        {**DOCS, "secret_documents": True, "hardware": "laptop"},
        ("distillation", "quantization", "rag"),
        [
            "knowledge.documents",
            "behaviour.base-ok",
            "deploy.device",
            "deploy.local-index",
            "data.local",
        ],
        "fallback.bigger-model",
    ),
    (
        "hosted model with examples and documents",
        {**HOSTED, **DOCS, "labelled_examples": 300},
        ("provider_finetune", "rag"),
        ["knowledge.documents", "behaviour.provider-finetune", "deploy.hosted", "data.provider"],
        "fallback.prompting",
    ),
    (
        "hosted model with documents, few examples",
        {**HOSTED, **DOCS, "labelled_examples": 10},
        ("rag",),
        ["knowledge.documents", "behaviour.base-ok", "deploy.hosted", "data.provider"],
        "fallback.rag-provider",
    ),
    (
        "hosted model, few examples, no documents",
        {**HOSTED, "labelled_examples": 10, "unlabelled_text": True},
        ("prompting",),
        ["knowledge.none", "behaviour.hosted-prompting", "deploy.hosted", "data.provider"],
        "fallback.collect",
    ),
    (
        "hosted model but secret documents: kept local",
        {**HOSTED, **DOCS, "secret_documents": True},
        ("rag",),
        ["knowledge.documents", "behaviour.base-ok", "deploy.server", "data.local"],
        "fallback.rag-tune",
    ),
    (
        "something runs today: the same methods, kept until a measurement beats it",
        {**HOSTED, **DOCS, "secret_documents": True, "incumbent": "a LoRA fine-tune"},
        ("rag",),
        [
            "knowledge.documents",
            "behaviour.base-ok",
            "deploy.server",
            "data.local",
            "change.incumbent",
        ],
        "fallback.rag-tune",
    ),
]


@pytest.mark.parametrize(
    ("situation", "methods", "rules", "fallback"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_branch(
    situation: dict[str, Any], methods: tuple[str, ...], rules: list[str], fallback: str
) -> None:
    rec = recommend(Situation(**situation))
    assert rec.methods == methods
    assert [reason.rule for reason in rec.reasons] == rules
    assert rec.fallback.rule == fallback
    assert rec.summary.split(" + ")[-1].endswith(methods[-1])


def test_every_rule_is_reached_by_a_row() -> None:
    fired: set[str] = set()
    for _, situation, *_ in ROWS:
        rec = recommend(Situation(**situation))
        fired |= {reason.rule for reason in rec.reasons} | {rec.fallback.rule}
    assert fired == set(RULES)


def test_any_situation_gets_known_methods_rules_and_a_plan() -> None:
    """A grid over the deciding fields: never empty, never an unknown id, never contradictory."""
    flags = ("documents", "secret_documents", "unlabelled_text", "teacher_available",
             "new_capability", "hosted_model_only")  # fmt: skip
    grid = itertools.product(
        [False, True],
        [False, True],
        [False, True],
        [False, True],
        [False, True],
        [False, True],
        ["static", "realtime"],
        [0, 60, 500, 6000],
        ["server_gpu", "laptop", "edge"],
        ["chat", "classification"],
    )
    for *switches, freshness, labels, hardware, task in grid:
        s = Situation(
            **dict(zip(flags, switches, strict=True)),
            freshness=freshness,
            labelled_examples=labels,
            hardware=hardware,
            task=task,
            budget="high",
        )
        rec = recommend(s)
        assert rec.methods and set(rec.methods) <= set(METHODS)
        assert {reason.rule for reason in rec.reasons} <= set(RULES)
        assert rec.fallback.rule in RULES and rec.fallback.method in METHODS
        trained = {"lora", "full_finetune", "provider_finetune", "distillation"}
        assert not ("prompting" in rec.methods and trained & set(rec.methods))
        assert rec.monitoring
        if rec.hosting == "hosted-api":
            local = {"lora", "full_finetune", "distillation", "quantization"}
            assert not local & set(rec.methods), "no local weights on a hosted model"
        if s.secret_documents:
            assert rec.hosting != "hosted-api" and "provider_finetune" not in rec.methods


@pytest.mark.parametrize(
    ("labels", "budget", "method"),
    [
        (LORA_MIN_EXAMPLES - 1, "high", "prompting"),
        (LORA_MIN_EXAMPLES, "high", "lora"),
        (FULL_MIN_EXAMPLES - 1, "high", "lora"),
        (FULL_MIN_EXAMPLES, "high", "full_finetune"),
        (FULL_MIN_EXAMPLES, "medium", "lora"),
        (FULL_MIN_EXAMPLES, 100_000, "full_finetune"),
        (FULL_MIN_EXAMPLES, 99_999, "lora"),
    ],
)
def test_label_thresholds(labels: int, budget: Any, method: str) -> None:
    rec = recommend(Situation(labelled_examples=labels, budget=budget))
    assert rec.methods == (method,)


def test_warnings_name_the_problem() -> None:
    def warned(**kwargs: Any) -> str:
        return " ".join(recommend(Situation(**kwargs)).warnings)

    assert "500 labelled examples is enough for LoRA but not for full" in warned(
        labelled_examples=500
    )
    assert "budget is medium" in warned(labelled_examples=8000)
    assert "streaming" in warned(documents=True, freshness="realtime")
    assert "no documents or feed" in warned(freshness="daily")
    assert "Citations need documents" in warned(citations_required=True)
    assert "conflicts with secret" in warned(hosted_model_only=True, secret_documents=True)
    assert "over a second" in warned(hosted_model_only=True, latency_budget_ms=500)
    assert "only while online" in warned(hosted_model_only=True, hardware="mobile")
    assert "at least 50" in warned(hosted_model_only=True, new_capability=True)
    assert "No teacher" in warned(hardware="edge", teacher_available=False)
    assert "100+ examples or find a teacher" in warned(new_capability=True, teacher_available=False)
    assert "needs 100+" in warned()
    assert warned(documents=True) == ""


def test_reasons_carry_the_facts() -> None:
    rec = recommend(Situation(documents=True, freshness="daily", secret_documents=True))
    assert rec.reasons[0].condition == "freshness=daily"
    assert "every day" in rec.reasons[0].because
    assert "no hosted API" in rec.reasons[-1].because
    assert rec.hosting == "self-hosted"


def test_sizes_from_memory_and_latency() -> None:
    # Half of 2 GB at 0.53 bytes a parameter; 15 GB/s × 2 s / 100 tokens = 0.3 GB.
    edge = Situation(hardware="edge", memory_gb=2.0)
    assert max_params_b(edge, "int4") == pytest.approx(1.0 / 0.53)
    timed = Situation(hardware="edge", memory_gb=2.0, latency_budget_ms=2000)
    assert max_params_b(timed, "int4") == pytest.approx(0.3 / 0.53)
    assert max_params_b(Situation(hardware="laptop"), "int8") == pytest.approx(8.0)
    # 100 tokens × 15 GB / 2000 GB/s = 0.75 s on a GPU; / 60 GB/s = 25 s on a laptop.
    assert reference_latency_ms(Situation()) == pytest.approx(750.0)
    assert reference_latency_ms(Situation(hardware="laptop")) == pytest.approx(25_000.0)
    assert recommend(Situation(latency_budget_ms=749)).methods == ("distillation", "quantization")
    assert recommend(Situation(latency_budget_ms=750)).methods == ("prompting",)


def test_quantization_level_and_size() -> None:
    edge = recommend(Situation(hardware="edge", memory_gb=2.0, latency_budget_ms=2000))
    assert edge.quantization == "int4" and edge.summary == "distillation + int4 quantization"
    assert edge.model_size == "≤0.6B parameters at int4"
    laptop = recommend(Situation(hardware="laptop", memory_gb=16.0))
    assert laptop.quantization == "int8" and laptop.hosting == "on-device"
    assert recommend(Situation()).model_size == "a 7-8B model"
    assert "classifier" in recommend(Situation(task="classification")).model_size
    assert recommend(Situation(hosted_model_only=True)).model_size == "the provider's model"


def test_monitoring_follows_the_methods() -> None:
    def signals(**kwargs: Any) -> str:
        return " | ".join(
            w.signal + " " + w.threshold for w in recommend(Situation(**kwargs)).monitoring
        )

    rag = signals(documents=True, freshness="daily", latency_budget_ms=2000)
    assert "retrieval recall@5" in rag and "refusal rate" in rag and "≤ 2 hours" in rag
    assert "p95 latency" in rag and "≤ 2000 ms" in rag
    assert "index lag" not in signals(documents=True)
    tuned = signals(labelled_examples=500)
    assert "held-out set" in tuned and "general-skills" in tuned and "recall" not in tuned
    provider = signals(hosted_model_only=True, labelled_examples=500)
    assert "held-out set" in provider and "general-skills" not in provider
    edge = signals(hardware="edge", memory_gb=2.0)
    assert "teacher-student agreement" in edge and "≤ 1.6 GB" in edge
    assert "golden set" in signals()
    assert all("query drift" in s for s in (rag, tuned, edge))


def test_what_runs_today_is_kept_until_a_measured_change_beats_it() -> None:
    rec = recommend(Situation(**DOCS, incumbent="gpt-4o-mini with a prompt"))
    keep = rec.reasons[-1]
    assert (
        keep.rule == "change.incumbent" and keep.condition == "incumbent=gpt-4o-mini with a prompt"
    )
    assert "keep it until rag measurably beats it" in keep.because
    assert "mentor bakeoff" in keep.because
    assert recommend(Situation(**DOCS)).reasons[-1].rule != "change.incumbent"
