"""The bakeoff's verdict on synthetic measurements: it follows the measured scores within the
situation's constraints and changes when the data changes the way the decision framework says it
should (no labels but documents; many labels and stable knowledge; fresh knowledge; an edge
target; a latency budget).

Every arm answers the same 40 questions; an arm "right on k" is right on questions 0..k-1, so
the better of two arms is right on a superset of the other's questions and the paired bootstrap
sees a clean difference. Costs are priced the way a real run prices them (``scoring.costs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mentor.advisor.report import advise
from mentor.bakeoff.config import BakeoffConfig
from mentor.bakeoff.export import wanted
from mentor.bakeoff.recommend import exclusions, situation_for, verdict, with_export
from mentor.bakeoff.results import (
    ArmResult,
    Estimate,
    Exported,
    Grounding,
    ScoredAnswer,
    Verdict,
)
from mentor.bakeoff.runner import price
from mentor.bakeoff.scoring import metric_statistic
from mentor.evaluate.stats import bootstrap

N = 40
PRIMARY = "contains"
GB = 1024.0  # MB


def _answers(name: str, right: int | set[int]) -> list[ScoredAnswer]:
    hits = set(range(right)) if isinstance(right, int) else right
    return [
        ScoredAnswer(
            id=f"te-{i:03d}",
            question=f"question {i}?",
            reference=f"fact {i}",
            answer=f"fact {i}" if i in hits else f"{name} guess",
            scores={PRIMARY: float(i in hits), "token_f1": 1.0 if i in hits else 0.2},
        )
        for i in range(N)
    ]


def _arm(
    name: str,
    model: str,
    methods: list[str],
    right: int | set[int],
    *,
    memory_mb: float = 3000.0,
    p95: float = 500.0,
    updates: float | None = None,
    training_s: float = 0.0,
    index_s: float = 0.0,
) -> ArmResult:
    answers = _answers(name, right)
    quality = {m: bootstrap(metric_statistic(m, answers, None), N) for m in (PRIMARY, "token_f1")}
    retrieves = "rag" in methods
    return ArmResult(
        name=name,
        model=model,
        methods=methods,
        description=f"{name} (synthetic)",
        questions=N,
        quality=quality,
        updates=None if updates is None else Estimate(updates, updates - 0.1, updates + 0.1),
        grounding=Grounding(0.9, 0.02, 0.92, "lexical") if retrieves else None,
        latency_ms={"p50": p95 / 2, "p95": p95, "mean": p95 / 2, "queries": 8.0},
        model_memory_mb=memory_mb,
        peak_memory_mb=memory_mb + 200,
        training_s=training_s,
        index_s=index_s,
        answers=answers,
    )


def _failed(name: str, model: str, methods: list[str], error: str) -> ArmResult:
    return ArmResult(name, model, methods, name, status="failed", error=error)


def measured_arms() -> list[ArmResult]:
    """One set of measurements, read under every situation below.

    lora is measurably best (36/40) but answers from its weights (10% after the update);
    lora+rag (30) beats rag (24) measurably; rag-int4 (22) is the only model under 1 GB."""
    return [
        _arm("closed-book", "base", ["prompting"], 12, p95=400, updates=0.05),
        _arm("rag", "base", ["rag"], 24, memory_mb=3100, p95=900, updates=0.80, index_s=60),
        _arm("lora", "lora", ["lora"], 36, p95=420, updates=0.10, training_s=3600),
        _arm(
            "lora+rag",
            "lora",
            ["lora", "rag"],
            30,
            memory_mb=3100,
            p95=950,
            updates=0.85,
            training_s=3600,
            index_s=60,
        ),
        _arm(
            "rag-int4",
            "base",
            ["rag", "quantization"],
            22,
            memory_mb=900,
            p95=700,
            updates=0.75,
            training_s=120,
            index_s=60,
        ),
    ]


ARM_SPECS: dict[str, dict[str, Any]] = {
    "closed-book": {"name": "closed-book"},
    "rag": {"name": "rag", "retrieval": {"k": 3}},
    "lora": {"name": "lora", "model": "lora"},
    "lora+rag": {"name": "lora+rag", "model": "lora", "retrieval": {"k": 3}},
    "rag-int4": {"name": "rag-int4", "retrieval": {"k": 3}, "quantize": "int4"},
    "full-ft": {"name": "full-ft", "model": "full"},
}


def _config(
    tmp_path: Path,
    arms: list[ArmResult],
    *,
    docs: bool = True,
    train: bool = True,
    **situation: Any,
) -> BakeoffConfig:
    """A valid config naming ``arms``; the files need not exist, only the situation is read."""
    data: dict[str, Any] = {"test": str(tmp_path / "test.jsonl")}
    if docs:
        data["docs"] = str(tmp_path / "docs")
    if train:
        data["train"] = str(tmp_path / "train.jsonl")
    training = {"lora": {"method": "lora"}, "full": {"method": "full"}} if train else {}
    return BakeoffConfig.model_validate(
        {
            "name": "synthetic",
            "data": data,
            "primary": PRIMARY,
            "training": training,
            "arms": [ARM_SPECS[a.name] for a in arms],
            "situation": {"hardware": "cpu_server", **situation},
        }
    )


def _verdict(
    tmp_path: Path,
    arms: list[ArmResult],
    counts: dict[str, int],
    *,
    docs: bool = True,
    train: bool = True,
    **situation: Any,
) -> tuple[Verdict, BakeoffConfig]:
    config = _config(tmp_path, arms, docs=docs, train=train, **situation)
    price(arms, config)
    return verdict(arms, arms[0], config, counts), config


def _framework(config: BakeoffConfig, counts: dict[str, int]) -> tuple[str, ...]:
    return advise(situation_for(config, counts)).recommendation.methods


def _by_name(arms: list[ArmResult]) -> dict[str, ArmResult]:
    return {a.name: a for a in arms}


DOCS_AND_LABELS = {"documents": 6, "train": 2000, "validation": 100, "test": N}
LABELS_ONLY = {"documents": 0, "train": 2000, "validation": 100, "test": N}
DOCS_ONLY = {"documents": 6, "train": 0, "validation": 0, "test": N}


# --- the situation the advisor sees -----------------------------------------------------------


def test_situation_reads_the_data_and_the_stated_facts(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        measured_arms(),
        freshness="daily",
        hardware="edge",
        memory_gb=2,
        latency_budget_ms=800,
        secret_documents=True,
        queries_per_day=50,
    )
    s = situation_for(config, DOCS_AND_LABELS)
    assert (s.documents, s.document_count, s.labelled_examples) == (True, 6, 2000)
    assert (s.freshness, s.hardware, s.memory(), s.latency_budget_ms) == ("daily", "edge", 2, 800)
    assert s.secret_documents and s.queries_per_day == 50
    assert not s.teacher_available  # no teacher named: distillation would use the base itself
    empty = situation_for(config, {})
    assert (empty.documents, empty.labelled_examples) == (False, 0)
    config.models.teacher = "qwen2.5-coder-0.5b-instruct"
    assert situation_for(config, DOCS_AND_LABELS).teacher_available


# --- (a) no labels, but documents ------------------------------------------------------------


def test_no_labels_but_documents_picks_retrieval_as_the_framework_does(tmp_path: Path) -> None:
    everything = _by_name(measured_arms())
    # without labelled questions no model can be trained: only base arms exist
    arms = [everything["closed-book"], everything["rag"], everything["rag-int4"]]
    v, config = _verdict(tmp_path, arms, DOCS_ONLY, train=False, freshness="monthly")
    assert _framework(config, DOCS_ONLY) == ("rag",)
    assert v.arm == "rag" and v.methods == ["rag"]
    assert v.agrees and v.advisor_methods == ["rag"]
    assert v.eligible == ["rag", "rag-int4", "closed-book"] and v.excluded == {}
    assert "Use rag" in v.paragraph and "agrees: it recommends" in v.paragraph
    # rag-int4 is within the noise of rag (22 vs 24 of 40): the framework's plain rag wins it
    assert "rag-int4 scored within the noise of the best" in v.paragraph
    assert v.fallback_arm == "rag-int4"  # the best eligible arm of other methods
    assert "+30.0 points" in v.paragraph  # 24/40 against the base's 12/40


# --- (b) many labels, stable knowledge -------------------------------------------------------


def test_many_labels_no_documents_picks_the_measurably_best_tuned_arm(tmp_path: Path) -> None:
    everything = _by_name(measured_arms())
    arms = [everything["closed-book"], everything["lora"]]
    v, config = _verdict(tmp_path, arms, LABELS_ONLY, docs=False, freshness="static")
    assert _framework(config, LABELS_ONLY) == ("lora",)
    assert v.arm == "lora" and v.agrees
    assert v.fallback_arm == "closed-book"
    assert "Use lora" in v.paragraph and "+60.0 points" in v.paragraph


def test_many_labels_stable_knowledge_the_measurement_overrules_the_framework(
    tmp_path: Path,
) -> None:
    v, config = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static")
    assert _framework(config, DOCS_AND_LABELS) == ("lora", "rag")
    # lora (36/40) is measurably above lora+rag (30/40), so the framework's pick loses
    assert v.arm == "lora" and not v.agrees
    assert v.advisor_methods == ["lora", "rag"]
    assert v.excluded == {}
    assert v.eligible == ["lora", "lora+rag", "rag", "rag-int4", "closed-book"]
    # the paragraph says so, and names the framework's arm that lost
    assert "The measurements point to lora on this data instead" in v.paragraph
    assert "lora+rag" in v.paragraph.split("instead", 1)[1]
    assert v.fallback_arm == "lora+rag"


def test_a_tie_within_the_noise_goes_to_the_framework_not_the_top_score(tmp_path: Path) -> None:
    arms = measured_arms()
    by_name = _by_name(arms)
    # lora+rag now one question behind lora (30 vs 31 of 40): within the noise
    by_name["lora"] = arms[2] = _arm("lora", "lora", ["lora"], 31, p95=420, updates=0.10)
    v, config = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    assert _framework(config, DOCS_AND_LABELS) == ("lora", "rag")
    assert by_name["lora"].quality[PRIMARY].value > by_name["lora+rag"].quality[PRIMARY].value
    assert v.arm == "lora+rag" and v.agrees
    assert v.eligible[0] == "lora"  # still listed best first
    assert "lora scored within the noise of the best" in v.paragraph
    assert "closest to the framework's advice" in v.paragraph


def test_a_tie_without_docs_goes_to_the_tuned_arm_the_framework_wants(tmp_path: Path) -> None:
    arms = [
        _arm("closed-book", "base", ["prompting"], 20, p95=300),
        _arm("lora", "lora", ["lora"], 21, p95=300, training_s=36_000),  # dearer, 1 more right
    ]
    v, config = _verdict(tmp_path, arms, LABELS_ONLY, docs=False, freshness="static")
    assert _framework(config, LABELS_ONLY) == ("lora",)
    assert v.arm == "lora" and v.agrees
    # the same two arms with no labels: the framework wants prompting, and gets it
    counts = {**LABELS_ONLY, "train": 0}
    v, config = _verdict(tmp_path, arms, counts, docs=False, freshness="static")
    assert _framework(config, counts) == ("prompting",)
    assert v.arm == "closed-book" and v.agrees


@pytest.mark.parametrize(("rag_p95", "chosen"), [(300.0, "rag"), (3000.0, "lora")])
def test_a_tie_the_framework_cannot_break_goes_to_the_cheaper_arm(
    tmp_path: Path, rag_p95: float, chosen: str
) -> None:
    # the framework wants lora + rag; lora alone and rag alone each have half of it
    arms = [
        _arm("closed-book", "base", ["prompting"], 10, p95=400),
        _arm("rag", "base", ["rag"], 30, p95=rag_p95),
        _arm("lora", "lora", ["lora"], 30, p95=1000, training_s=600),
    ]
    v, _ = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    assert v.arm == chosen


# --- (c) fresh knowledge ---------------------------------------------------------------------


@pytest.mark.parametrize("freshness", ["weekly", "daily", "realtime"])
def test_fresh_knowledge_excludes_arms_without_retrieval_quoting_their_update_score(
    tmp_path: Path, freshness: str
) -> None:
    v, config = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness=freshness)
    assert _framework(config, DOCS_AND_LABELS) == ("lora", "rag")
    assert set(v.excluded) == {"lora", "closed-book"}
    why = v.excluded["lora"]
    assert f"knowledge changes {freshness}" in why and "no retrieval" in why
    assert "it scores 10.0% contains on questions about changed documents" in why
    assert "retrieval arms up to 85.0%" in why
    assert v.arm == "lora+rag" and "rag" in v.methods and v.agrees
    assert v.eligible == ["lora+rag", "rag", "rag-int4"]
    assert any(line.startswith("excluded: lora: knowledge changes") for line in v.reasons)


def test_monthly_knowledge_keeps_arms_without_retrieval(tmp_path: Path) -> None:
    v, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="monthly")
    assert v.excluded == {} and v.arm == "lora"


# --- (d) an edge target ----------------------------------------------------------------------


def test_edge_target_excludes_models_over_its_memory_and_picks_the_small_arm(
    tmp_path: Path,
) -> None:
    v, config = _verdict(
        tmp_path,
        measured_arms(),
        DOCS_AND_LABELS,
        freshness="static",
        hardware="edge",
        memory_gb=2,
    )
    assert "quantization" in _framework(config, DOCS_AND_LABELS)
    assert set(v.excluded) == {"closed-book", "rag", "lora", "lora+rag"}
    planned = "; the edge has 2 GB, of which 80% is planned for the model"
    assert v.excluded["lora"] == f"needs 3.1 GB at its peak (weights and working memory){planned}"
    assert v.excluded["rag"] == f"needs 3.2 GB at its peak (weights and working memory){planned}"
    assert v.arm == "rag-int4" and v.eligible == ["rag-int4"]
    assert not v.agrees  # the framework also wants LoRA; no eligible arm has it
    assert (
        "Of the measured arms, rag-int4 is the closest to that advice (it lacks lora)"
        in v.paragraph
    )
    assert v.fallback_arm is None  # nothing else fits: the framework's fallback instead
    assert v.fallback.startswith("retrieval-augmented generation")


def test_edge_default_memory_is_the_hardwares(tmp_path: Path) -> None:
    arms = measured_arms()
    for arm in arms:  # every arm fits 80% of the edge's default 4 GB ...
        arm.model_memory_mb = arm.peak_memory_mb = 1.5 * GB
    arms[3].peak_memory_mb = 3.5 * GB  # ... but this one's peak does not
    v, _ = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static", hardware="edge")
    assert v.excluded == {
        "lora+rag": "needs 3.5 GB at its peak (weights and working memory); the edge has 4 GB, "
        "of which 80% is planned for the model"
    }
    assert v.arm == "lora"


# --- the same measurements, different data ---------------------------------------------------


def test_the_same_measurements_give_different_verdicts_as_the_situation_changes(
    tmp_path: Path,
) -> None:
    stable, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static")
    fresh, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="daily")
    edge, _ = _verdict(
        tmp_path,
        measured_arms(),
        DOCS_AND_LABELS,
        freshness="static",
        hardware="edge",
        memory_gb=2,
    )
    no_labels, _ = _verdict(
        tmp_path,
        [a for a in measured_arms() if a.model == "base"],
        DOCS_ONLY,
        train=False,
        freshness="static",
    )
    picks = [stable.arm, fresh.arm, edge.arm, no_labels.arm]
    assert picks == ["lora", "lora+rag", "rag-int4", "rag"]
    assert stable.advisor_methods != edge.advisor_methods != no_labels.advisor_methods


# --- (e) latency, nothing eligible, failures, fallback, monitoring ---------------------------


def test_latency_budget_excludes_slow_arms(tmp_path: Path) -> None:
    v, _ = _verdict(
        tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static", latency_budget_ms=800
    )
    assert v.excluded == {
        "rag": "p95 latency 900 ms is over the 800 ms budget",
        "lora+rag": "p95 latency 950 ms is over the 800 ms budget",
    }
    assert v.arm == "lora" and "rag" not in v.eligible


def test_when_every_arm_is_excluded_there_is_no_arm_and_the_paragraph_says_why(
    tmp_path: Path,
) -> None:
    v, config = _verdict(
        tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static", latency_budget_ms=100
    )
    assert v.arm is None and v.eligible == [] and v.fallback_arm is None
    assert set(v.excluded) == {a.name for a in measured_arms()}
    assert all("over the 100 ms budget" in why for why in v.excluded.values())
    assert v.paragraph.startswith("No arm met the constraints")
    assert "relax the constraint" in v.paragraph
    assert v.methods == list(_framework(config, DOCS_AND_LABELS)) and not v.agrees
    assert v.monitoring  # the framework's plan still applies


def test_failed_arms_are_excluded_with_their_error(tmp_path: Path) -> None:
    arms = [
        *measured_arms(),
        _failed("full-ft", "full", ["full_finetune"], "RuntimeError: out of memory"),
    ]
    v, _ = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    assert v.excluded == {"full-ft": "failed: RuntimeError: out of memory"}
    assert "full-ft" not in v.eligible and v.arm == "lora"
    assert "excluded: full-ft: failed: RuntimeError: out of memory" in v.reasons


def test_a_failed_best_arm_leaves_the_next(tmp_path: Path) -> None:
    arms = measured_arms()
    arms[2] = _failed("lora", "lora", ["lora"], "ValueError: bad adapter")
    v, _ = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    assert v.arm == "lora+rag" and v.agrees
    assert v.excluded == {"lora": "failed: ValueError: bad adapter"}


def test_exclusions_without_update_questions_give_no_score(tmp_path: Path) -> None:
    arms = measured_arms()
    for arm in arms:
        arm.updates = None
    config = _config(tmp_path, arms, freshness="daily")
    out = exclusions(arms, situation_for(config, DOCS_AND_LABELS), PRIMARY)
    assert out["lora"] == (
        "knowledge changes daily and this arm has no retrieval, so it answers from what it was "
        "trained on"
    )


def test_the_fallback_is_the_best_arm_of_other_methods(tmp_path: Path) -> None:
    v, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="daily")
    assert v.arm == "lora+rag"
    assert v.fallback_arm == "rag"  # the next best eligible arm, and of other methods
    assert v.fallback.startswith("rag (rag), the best eligible arm of other methods")
    assert "Fallback: rag (rag)" in v.paragraph


def test_monitoring_puts_measured_thresholds_beside_the_framework(tmp_path: Path) -> None:
    arms = measured_arms()
    v, config = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    chosen = _by_name(arms)["lora"]
    low = chosen.quality[PRIMARY].low
    signals = {w.signal: w.threshold for w in v.monitoring}
    assert signals[f"{PRIMARY} on a weekly sample of 50 labelled real questions"] == (
        f"below {100 * low:.1f}% (the low end of the measured interval)"
    )
    assert signals["p95 answer latency"] == "above 630 ms (1.5x the measured 420 ms)"
    # lora answers from its weights: its score on changed documents is the thing to watch
    assert signals["questions about documents changed since training"] == (
        "any: this arm scored 10.0% on them"
    )
    framework = advise(situation_for(config, DOCS_AND_LABELS)).recommendation.monitoring
    assert framework[0].signal in signals


def test_monitoring_of_a_retrieval_arm_watches_its_grounding(tmp_path: Path) -> None:
    v, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="daily")
    signals = {w.signal: w.threshold for w in v.monitoring}
    assert signals["share of answers supported by the retrieved passages"] == (
        "below 80.0% (measured 90.0%)"
    )
    assert "questions about documents changed since training" not in signals


def test_the_paragraph_quotes_measurements_and_costs(tmp_path: Path) -> None:
    v, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static")
    assert "On 40 held-out questions it scores contains 90.0% (95% CI" in v.paragraph
    assert "+60.0 points" in v.paragraph and "over closed-book" in v.paragraph
    assert "It answers in 420 ms at p95 here" in v.paragraph
    assert "a year at 1,000/day" in v.paragraph
    assert v.reasons[0].startswith("measured: lora contains 90.0%")


def test_the_verdict_is_deterministic(tmp_path: Path) -> None:
    first, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static")
    second, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static")
    assert first == second


def test_an_arm_scored_on_other_questions_is_never_tied(tmp_path: Path) -> None:
    arms = measured_arms()
    # as in the tie above (31 against 30 of 40), but lora+rag answered other questions, so no
    # paired difference can say they are level: the top score stands
    arms[2] = _arm("lora", "lora", ["lora"], 31, p95=420, updates=0.10)
    for answer in arms[3].answers:
        answer.id = "other-" + answer.id
    v, _ = _verdict(tmp_path, arms, DOCS_AND_LABELS, freshness="static")
    assert v.arm == "lora"


# --- the edge recommendation names its GGUF file ------------------------------------------------


def test_the_edge_verdict_names_the_gguf_file_before_the_fallback(tmp_path: Path) -> None:
    v, _ = _verdict(
        tmp_path, measured_arms(), DOCS_AND_LABELS, freshness="static", hardware="edge",
        memory_gb=2,
    )  # fmt: skip
    exported = Exported(
        "rag-int4", "out/export/rag-int4/rag-int4.q4_1.gguf", "q4_1", size_mb=98.4,
        modelfile="out/export/rag-int4/Modelfile", quantized="int4", exact=210, retrieval=True,
    )  # fmt: skip
    named = with_export(v, exported, "edge")
    sentence = (
        "To run it on the edge device: out/export/rag-int4/rag-int4.q4_1.gguf (q4_1, 98 MB, the "
        "int4 codes that were measured) loads in llama.cpp and LM Studio, and in Ollama "
        "with `ollama create NAME -f out/export/rag-int4/Modelfile`; its retrieval is mentor's, "
        "not in the file (`mentor serve` with the index)."
    )
    assert sentence in named.paragraph
    assert named.paragraph.index(sentence) < named.paragraph.index(" Fallback: ")
    assert named.paragraph.replace(sentence + " ", "") == v.paragraph  # nothing else changed
    assert named.reasons[-1] == "export: out/export/rag-int4/rag-int4.q4_1.gguf (q4_1)"
    assert named.export is exported and v.export is None


def test_a_failed_export_is_said_and_the_verdict_stands(tmp_path: Path) -> None:
    v, _ = _verdict(tmp_path, measured_arms(), DOCS_AND_LABELS, hardware="laptop")
    failed = Exported(v.arm or "", None, "f16", error="GPT2LMHeadModel: no llama.cpp mapping")
    named = with_export(v, failed, "laptop")
    assert f"No GGUF file was written for {v.arm}: GPT2LMHeadModel: no llama.cpp mapping." in (
        named.paragraph
    )
    assert named.arm == v.arm and named.reasons[-1].startswith("export: none (GPT2LMHeadModel")


@pytest.mark.parametrize(
    ("setting", "hardware", "methods", "expected"),
    [
        ("auto", "cpu_server", ["rag"], False),
        ("auto", "cpu_server", ["lora", "quantization"], True),  # the advisor's edge advice
        ("auto", "laptop", ["rag"], True),
        ("auto", "mobile", ["distillation"], True),
        ("auto", "edge", ["hosted"], False),  # an endpoint's weights are not here
        ("always", "server_gpu", ["full_finetune"], True),
        ("never", "edge", ["lora", "quantization"], False),
    ],
)
def test_which_verdicts_get_a_gguf_file(
    setting: str, hardware: str, methods: list[str], expected: bool
) -> None:
    assert wanted(setting, hardware, methods) is expected
