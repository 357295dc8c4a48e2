"""The cost model and the estimate, against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mentor.advisor.costs import CostModel, Range, SetupDays, estimate, load_cost_model
from mentor.advisor.plan import recommend
from mentor.advisor.rules import METHODS
from mentor.advisor.situation import Situation


def _model(**overrides: Any) -> CostModel:
    """Round numbers that make the hand arithmetic below easy to follow."""
    base: dict[str, Any] = {
        "engineer_usd_per_day": [100, 200],
        "setup_days": {name: [1, 1] for name in METHODS} | {"lora": [2, 4]},
        "gpu_usd_per_hour": [2, 4],
        "lora_gpu_hours_per_1k_examples": [0.5, 1],
        "tuning_runs": [1, 2],
        "retrains_per_year": [1, 2],
        "classifier_queries_per_hour": [50, 100],
        "peak_factor": [1, 2],
        "cpu_server_usd_per_month": [10, 20],
        "few_shot_tokens": [100, 300],
        "api_usd_per_1k_tokens": [0.001, 0.002],
    }
    return CostModel.model_validate(base | overrides)


def _line(estimate_: Any, item: str) -> tuple[float, float]:
    (line,) = [line for line in estimate_.lines if line.item == item]
    return line.low, line.high


def test_self_hosted_classifier_by_hand() -> None:
    s = Situation(
        task="classification",
        labelled_examples=2000,
        queries_per_day=2400,
        tokens_per_query=100,
        hardware="cpu_server",
    )
    rec = recommend(s)
    assert rec.methods == ("lora",)
    cost = estimate(s, rec, _model())
    # setup: 2 days × $100 | 4 days × $200
    assert _line(cost, "setup: lora") == pytest.approx((200, 800))
    # training: 2k examples × 0.5 h/1k × 1 run × $2 | 2 × 1 × 2 × $4
    assert _line(cost, "LoRA training") == pytest.approx((2, 16))
    assert _line(cost, "retraining") == pytest.approx((2, 32))  # 1 × 2 | 2 × 16
    # servers: 2400/24 × 1 = 100 an hour / 100 → 1 × 12 × $10 | 100 × 2 / 50 → 4 × 12 × $20
    assert _line(cost, "servers") == pytest.approx((120, 960))
    assert (cost.one_time.low, cost.one_time.high) == pytest.approx((202, 816))
    assert (cost.yearly.low, cost.yearly.high) == pytest.approx((122, 992))
    assert cost.per_query is not None
    assert cost.per_query.low == pytest.approx(122 / (2400 * 365))
    # baseline: 1 day setup; 2400 × 365 × (100 + 100) / 1k × $0.001 | (100 + 300), $0.002
    assert cost.baseline == "hosted API with few-shot prompts"
    assert (cost.baseline_one_time.low, cost.baseline_one_time.high) == pytest.approx((100, 200))
    assert (cost.baseline_yearly.low, cost.baseline_yearly.high) == pytest.approx((175.2, 700.8))
    # cheap case: (202 - 100) / ((175.2 - 122) / 12) months; dear case: never cheaper to run
    low, high = cost.break_even_months
    assert low == pytest.approx(102 / (53.2 / 12))
    assert high is None


def test_distillation_teacher_local_when_secret() -> None:
    model = _model(
        distill_examples=[1000, 2000],
        teacher_gpu_hours_per_1k_examples=[1, 2],
        teacher_tokens_per_example=[100, 200],
        student_gpu_hours_per_1k_examples=[0.5, 1],
    )
    open_ = Situation(hardware="edge", memory_gb=2)
    secret = Situation(hardware="edge", memory_gb=2, secret_documents=True)
    hosted_teacher = estimate(open_, recommend(open_), model)
    # 1k × 100 tokens / 1k × $0.001 | 2k × 200 / 1k × $0.002
    assert _line(hosted_teacher, "teacher outputs") == pytest.approx((0.1, 0.8))
    local_teacher = estimate(secret, recommend(secret), model)
    # 1k/1k × 1 h × $2 | 2k/1k × 2 h × $4
    assert _line(local_teacher, "teacher outputs") == pytest.approx((2, 16))
    # 1k/1k × 0.5 h × 1 run × $2 | 2 × 1 × 2 × $4
    assert _line(local_teacher, "student training") == pytest.approx((1, 16))
    assert _line(local_teacher, "serving") == (0, 0)
    assert any("for scale only" in note for note in local_teacher.notes)


def test_hosted_rag_and_provider_finetune_by_hand() -> None:
    model = _model(
        embed_usd_per_1k_documents=[1, 2],
        changed_share_per_update=[0.1, 0.2],
        vector_db_usd_per_month=[10, 20],
        rag_context_tokens=[1000, 2000],
        api_finetuned_usd_per_1k_tokens=[0.002, 0.004],
        api_training_usd_per_1k_tokens=[0.01, 0.02],
        epochs=[1, 2],
    )
    s = Situation(
        hosted_model_only=True,
        documents=True,
        document_count=2000,
        freshness="weekly",
        labelled_examples=100,
        tokens_per_query=100,
        queries_per_day=1000,
    )
    rec = recommend(s)
    assert rec.methods == ("provider_finetune", "rag")
    cost = estimate(s, rec, model)
    assert _line(cost, "index the documents") == pytest.approx((2, 4))  # 2k/1k × $1 | $2
    assert _line(cost, "vector store") == pytest.approx((120, 240))
    # 52 updates × 10% | 20% of the index cost
    assert _line(cost, "re-index changes") == pytest.approx((2 * 5.2, 4 * 10.4))
    # 100 examples × 100 tokens × 1 epoch × 1 run / 1k × $0.01 | × 2 × 2 × $0.02
    assert _line(cost, "provider fine-tuning") == pytest.approx((0.1, 0.8))
    # 1000 × 365 × (100 + 1000) / 1k × $0.002 | (100 + 2000) × $0.004
    assert _line(cost, "API tokens") == pytest.approx((803, 3066))
    assert cost.baseline == "hosted API with few-shot prompts and retrieval"


def test_the_baseline_itself_never_breaks_even() -> None:
    s = Situation(hosted_model_only=True, documents=True)
    cost = estimate(s, recommend(s), CostModel())
    assert cost.break_even_months == (None, None)
    assert cost.yearly.low < cost.baseline_yearly.low  # no few-shot examples in its prompts
    assert any("like the baseline" in note for note in cost.notes)


def test_budget_notes() -> None:
    s = Situation(labelled_examples=500, budget=10)
    cost = estimate(s, recommend(s), CostModel())
    assert any("Even the low" in note for note in cost.notes)
    s = Situation(labelled_examples=500, budget=5000, hardware="laptop")
    cost = estimate(s, recommend(s), CostModel())
    assert cost.one_time.low + cost.yearly.low <= 5000 < cost.one_time.high + cost.yearly.high
    assert any("The high first-year" in note for note in cost.notes)


def test_no_queries_no_per_query_price() -> None:
    s = Situation(queries_per_day=0, documents=True)
    assert estimate(s, recommend(s), CostModel()).per_query is None


def test_default_ranges_are_ordered_and_documented() -> None:
    model = CostModel()
    for name, info in CostModel.model_fields.items():
        assert info.description, name
        value = getattr(model, name)
        if isinstance(value, Range):
            assert 0 <= value.low <= value.high, name
    assert set(SetupDays.model_fields) == set(METHODS), "a setup cost for every method"
    for name, info in SetupDays.model_fields.items():
        assert info.description, name


def test_range_shorthands_and_errors() -> None:
    assert Range.model_validate(3) == Range(low=3, high=3)
    assert Range.model_validate([1, 2]) == Range(low=1, high=2)
    with pytest.raises(ValidationError, match="above high"):
        Range.model_validate([3, 1])
    with pytest.raises(ValidationError, match="expected \\[low, high\\]"):
        Range.model_validate([1, 2, 3])


def test_cost_yaml_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "costs.yaml"
    path.write_text("gpu_usd_per_hour: [2.0, 3.5]\nsetup_days:\n  lora: 1\n")
    model = load_cost_model(path)
    assert model.gpu_usd_per_hour == Range(low=2.0, high=3.5)
    assert model.setup_days.lora == Range(low=1, high=1)
    assert model.setup_days.rag == SetupDays().rag
    assert load_cost_model(None) == CostModel()
    path.write_text("gpu_usd_per_hr: 2\n")
    with pytest.raises(ValueError, match=r"costs.yaml: gpu_usd_per_hr: Extra inputs"):
        load_cost_model(path)
    path.write_text("gpu_usd_per_hour: [5, 1]\n")
    with pytest.raises(ValueError, match=r"costs.yaml: gpu_usd_per_hour: .*above high"):
        load_cost_model(path)


def test_break_even_in_words() -> None:
    from mentor.advisor.report import break_even_text

    assert break_even_text((3.2, 14.0)) == "3.2-14.0 months"
    assert break_even_text((14.0, 3.2)) == "3.2-14.0 months"
    assert break_even_text((None, None)) == "never"
    assert break_even_text((0.0, None)) == "at once with cheap prices, never with dear ones"
    assert (
        break_even_text((4.1, None)) == "after 4.1 months with cheap prices, never with dear ones"
    )
    assert break_even_text((0.0, 0.0)) == "at once"
