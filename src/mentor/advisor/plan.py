"""The whole recommendation: the rules' methods and reasons, then plan B and what to watch.

:func:`recommend` runs the layers of :mod:`mentor.advisor.rules` once each (knowledge, behaviour,
deployment, data handling), merges their methods in order, and adds the two parts that follow
from the methods chosen: a fallback for the main method and a monitoring plan for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

from mentor.advisor.rules import (
    INDEX_LAG,
    LORA_MIN_EXAMPLES,
    ON_DEVICE,
    Reason,
    behaviour,
    change,
    data_handling,
    deployment,
    knowledge,
    max_params_b,
    quant_level,
    serves_hosted,
)
from mentor.advisor.situation import Situation


@dataclass(frozen=True)
class Fallback:
    """What to switch to if the recommendation does not work out."""

    rule: str
    method: str
    why: str


@dataclass(frozen=True)
class Watch:
    """One thing to monitor once it runs."""

    signal: str
    threshold: str
    action: str


@dataclass(frozen=True)
class Recommendation:
    """The advice: methods in order, the branch of reasoning, and what to do next."""

    methods: tuple[str, ...]  # keys of METHODS, e.g. ("lora", "rag")
    summary: str
    hosting: str  # hosted-api, self-hosted or on-device
    model_size: str
    quantization: str | None  # int8, int4 or None
    reasons: tuple[Reason, ...]
    fallback: Fallback
    monitoring: tuple[Watch, ...]
    warnings: tuple[str, ...]


def fallback(s: Situation, methods: tuple[str, ...]) -> Fallback:
    """The plan B for the first (main) method."""
    first = methods[0]
    if first == "distillation":
        return Fallback(
            "fallback.bigger-model",
            "quantization",
            "If the student's agreement with the teacher stays under target, serve the largest "
            "model that fits, quantized to int4, or distil into the next size up.",
        )
    if first == "full_finetune":
        return Fallback(
            "fallback.lora",
            "lora",
            "If full fine-tuning overfits or forgets general skills, train LoRA instead: far "
            "fewer weights change and the base stays intact for rollback.",
        )
    if first == "lora":
        return Fallback(
            "fallback.base-model",
            "rag" if "rag" in methods else "prompting",
            "Keep the untuned base one switch away: if the adapter loses on the held-out set, "
            "route traffic to the base with few-shot prompts"
            + (" and retrieval." if "rag" in methods else "."),
        )
    if first == "provider_finetune":
        return Fallback(
            "fallback.prompting",
            "prompting",
            "If the tuned copy does not beat few-shot prompts on your held-out set, drop it: "
            "prompting needs no training and follows the provider's model upgrades.",
        )
    if first == "rag":
        if serves_hosted(s):
            return Fallback(
                "fallback.rag-provider",
                "provider_finetune",
                "If better retrieval (chunking, hybrid search, reranking) still leaves answers "
                "off-style or off-format, fine-tune through the provider on logged good answers.",
            )
        return Fallback(
            "fallback.rag-tune",
            "lora",
            "If recall stays low after tuning chunking, hybrid search and reranking, train a "
            "LoRA adapter on question-answer pairs generated from the documents; keep "
            "retrieval for what changes.",
        )
    if first == "prompting":
        if s.teacher_available and s.unlabelled_text and not serves_hosted(s):
            return Fallback(
                "fallback.synthetic",
                "distillation",
                "If prompting falls short, have the teacher label your unlabelled text, check a "
                "sample by hand, and train on it.",
            )
        return Fallback(
            "fallback.collect",
            "provider_finetune" if serves_hosted(s) else "lora",
            f"If prompting falls short, collect and check {LORA_MIN_EXAMPLES}+ labelled "
            "examples, then fine-tune on them.",
        )
    return Fallback(
        "fallback.distil-later",
        "distillation",
        "If the off-the-shelf small model falls short, find a teacher (an open model or an "
        "API whose terms allow it) and distil a student from it.",
    )


def monitoring(s: Situation, methods: tuple[str, ...]) -> tuple[Watch, ...]:
    """What to watch for each method, with thresholds, then for every deployment."""
    plan: list[Watch] = []
    if "rag" in methods:
        plan.append(
            Watch(
                "retrieval recall@5 on 50+ questions with known source passages",
                "≥ 0.80; alert on a 5-point drop",
                "check chunking and new document types (mentor rag eval / diagnose)",
            )
        )
        plan.append(
            Watch(
                "refusal rate: answers saying the documents do not cover the question",
                "≤ 10%; alert above 30% (mentor monitor's default)",
                "find the unanswered topics and add their documents",
            )
        )
        if s.freshness in INDEX_LAG:
            plan.append(
                Watch(
                    "index lag: age of the newest source item not yet indexed",
                    f"≤ {INDEX_LAG[s.freshness]}",
                    "fix or speed up the ingestion job",
                )
            )
    if {"lora", "full_finetune", "provider_finetune"} & set(methods):
        plan.append(
            Watch(
                "accuracy on the held-out set, re-scored monthly with fresh labelled samples",
                "alert on a 3-point drop from launch",
                "add the new examples and retrain",
            )
        )
    if {"lora", "full_finetune"} & set(methods):
        plan.append(
            Watch(
                "a general-skills check against the base model",
                "within 2 points of the base",
                "fewer epochs, a lower learning rate or rank: the model is forgetting",
            )
        )
    if "distillation" in methods:
        plan.append(
            Watch(
                "teacher-student agreement on a weekly sample of real queries",
                "≥ 90%; alert under 85%",
                "distil again on the recent queries",
            )
        )
    if "quantization" in methods:
        plan.append(
            Watch(
                "quality of the quantized model against its unquantized self",
                "within 1-2 points on the held-out set",
                "int8 instead of int4, or a larger group size",
            )
        )
        plan.append(
            Watch(
                "peak memory on the serving hardware",
                f"≤ {0.8 * s.memory():.1f} GB (80% of {s.memory():g} GB)",
                "a smaller student or int4",
            )
        )
    if "prompting" in methods:
        plan.append(
            Watch(
                "accuracy on a golden set of 50+ examples after any prompt or model change",
                "no drop from the last accepted version",
                "pin the model version; revert the prompt",
            )
        )
    plan.append(
        Watch(
            "query drift: launch-week queries vs this week's (mentor monitor report)",
            "permutation-test p < 0.01",
            "refresh the examples or documents for the new topics",
        )
    )
    if s.latency_budget_ms is not None:
        plan.append(
            Watch(
                "p95 latency of full answers",
                f"≤ {s.latency_budget_ms} ms",
                "shorter prompts, a smaller model or more replicas",
            )
        )
    return tuple(plan)


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Methods in order of first mention, each once."""
    return tuple(dict.fromkeys(m for group in groups for m in group))


def _hosting(s: Situation) -> str:
    if serves_hosted(s):
        return "hosted-api"
    return "on-device" if s.hardware in ON_DEVICE else "self-hosted"


def _model_size(s: Situation, level: str | None) -> str:
    if serves_hosted(s):
        return "the provider's model"
    if s.task == "classification":
        return "a small encoder classifier, ≤110M parameters"
    if level is not None:
        return f"≤{max_params_b(s, level):.1f}B parameters at {level}"
    return "a 7-8B model"


def recommend(s: Situation) -> Recommendation:
    """The recommendation for ``s``: every layer runs once; the reasons read in layer order."""
    know = knowledge(s)
    has_rag = "rag" in know.methods
    deploy = deployment(s, has_rag)
    deploy_methods = _merge(*(step.methods for step in deploy))
    behave = behaviour(s, has_rag, "distillation" in deploy_methods)
    methods = _merge(behave.methods, deploy_methods, know.methods)  # never empty: see behaviour
    data = data_handling(s, methods)
    keep = change(s, methods)
    steps = (know, behave, *deploy, data, *([keep] if keep else []))
    level = quant_level(s) if "quantization" in methods else None
    names = [f"{level} {m}" if m == "quantization" else m for m in methods]
    return Recommendation(
        methods=methods,
        summary=" + ".join(names),
        hosting=_hosting(s),
        model_size=_model_size(s, level),
        quantization=level,
        reasons=tuple(step.reason for step in steps),
        fallback=fallback(s, methods),
        monitoring=monitoring(s, methods),
        warnings=tuple(w for step in steps for w in step.warnings),
    )
