"""Trained arms that did not learn: found from hand-made curves and scores, explained in words,
with a pointer to the profile that shows the method properly."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mentor.bakeoff.diagnose import curve_summary, not_learned
from mentor.bakeoff.results import ArmResult, BakeoffResult, Estimate

# The quick profile's distilled arm as measured: training loss 1.9 -> 0.8, validation 6.5 -> 6.6.
DISTILLED_CURVE = [
    {"step": 1.0, "loss": 1.86},
    {"step": 10.0, "loss": 0.73, "val_loss": 6.51},
    {"step": 12.0, "loss": 0.77, "val_loss": 6.55},
]
# The case: validation loss rising from 2.6 to 6.7.
RISING_CURVE = [
    {"step": 1.0, "loss": 2.0},
    {"step": 10.0, "loss": 1.0, "val_loss": 2.6},
    {"step": 20.0, "loss": 0.4, "val_loss": 6.7},
]
HEALTHY_CURVE = [
    {"step": 1.0, "loss": 4.9},
    {"step": 10.0, "loss": 2.9, "val_loss": 2.67},
    {"step": 33.0, "loss": 1.4, "val_loss": 1.95},
]
PROFILES: dict[str, Any] = {
    "quick": {
        "training.distilled.teacher_limit": 60,
        "training.distilled.epochs": 3,
        "arms": ["closed-book", "lora", "distilled"],
    },
    "full": {"models.teacher": "qwen2.5-coder-0.5b-instruct"},
}


def _arm(name: str, model: str, score: float, curve: list[dict[str, float]]) -> ArmResult:
    vs_base = Estimate(100 * score, 100 * score - 10, 100 * score + 10)
    return ArmResult(
        name=name,
        model=model,
        methods=["prompting"],
        description=name,
        questions=30,
        quality={"contains": Estimate(score, max(0.0, score - 0.1), score + 0.1)},
        vs_base=vs_base,
        curve=curve,
    )


def _result(distilled: ArmResult, profiles: dict[str, Any] | None = None) -> BakeoffResult:
    config: dict[str, Any] = {
        "models": {"base": "smollm2-135m-instruct", "teacher": None, "student": None},
        "training": {
            "lora": {"method": "lora", "epochs": 3},
            "distilled": {"method": "distill", "teacher_limit": 60, "epochs": 3},
        },
        "profiles": PROFILES if profiles is None else profiles,
    }
    return BakeoffResult(
        name="tidepool",
        profile="quick",
        primary="contains",
        metrics=["contains"],
        base="closed-book",
        arms=[
            _arm("closed-book", "base", 0.0, []),
            _arm("lora", "lora", 0.13, HEALTHY_CURVE),
            distilled,
        ],
        config=config,
        data={"train": 240},
    )


def test_curve_summary_reads_the_ends_and_the_best() -> None:
    summary = curve_summary(RISING_CURVE)
    assert (summary.first_loss, summary.last_loss) == (2.0, 0.4)
    assert (summary.first_val, summary.best_val, summary.last_val) == (2.6, 2.6, 6.7)
    assert summary.val_rose and not curve_summary(HEALTHY_CURVE).val_rose
    assert curve_summary(DISTILLED_CURVE).spread and not curve_summary(HEALTHY_CURVE).spread
    empty = curve_summary([])
    assert empty.last_val is None and not empty.val_rose and not empty.spread


def test_the_quick_distilled_arm_says_why_and_points_to_the_full_profile() -> None:
    (finding,) = not_learned(_result(_arm("distilled", "distilled", 0.0, DISTILLED_CURVE)))
    assert finding.arm == "distilled"
    text = finding.text
    assert "scores 0.0% on contains, no better than closed-book (0.0%)" in text
    assert "validation loss stayed at 6.5 while training loss fell from 1.9 to 0.8" in text
    assert "was its own teacher" in text and "60 answers" in text and "overfit" in text
    assert finding.pointer is not None
    assert "`full` profile (--profile full)" in finding.pointer
    assert "models.teacher=qwen2.5-coder-0.5b-instruct" in finding.pointer
    assert "training.distilled.teacher_limit=60" in finding.pointer  # the limit it lifts


def test_a_rising_validation_loss_is_named_with_its_ends() -> None:
    arm = _arm("distilled", "distilled", 0.0, RISING_CURVE)
    (finding,) = not_learned(_result(arm))
    assert "validation loss rose from 2.6 to 6.7" in finding.text


def test_a_rise_after_a_fall_names_the_first_and_best() -> None:
    curve = [*RISING_CURVE[:2], {"step": 15.0, "loss": 0.8, "val_loss": 2.0}, RISING_CURVE[2]]
    (finding,) = not_learned(_result(_arm("distilled", "distilled", 0.0, curve)))
    assert "validation loss rose from 2.6 (best 2.0) to 6.7" in finding.text


def test_a_rise_with_a_clear_gain_is_not_flagged_but_one_within_the_noise_is() -> None:
    clear = _arm("distilled", "distilled", 0.3, RISING_CURVE)  # +30 points, interval [20, 40]
    assert not_learned(_result(clear)) == []
    noisy = replace(clear, vs_base=Estimate(30.0, -5.0, 60.0))
    (finding,) = not_learned(_result(noisy))
    assert finding.signs == ["validation loss rose from 2.6 to 6.7"]


def test_arms_that_learned_and_base_arms_are_not_flagged() -> None:
    result = _result(_arm("distilled", "distilled", 0.2, HEALTHY_CURVE))
    rag = replace(_arm("rag", "base", 0.0, []), methods=["rag"])
    result.arms.append(rag)  # a base-model arm scoring no better is not a training failure
    assert not_learned(result) == []


def test_a_stronger_teacher_is_named_and_a_file_without_profiles_gets_advice() -> None:
    result = _result(_arm("distilled", "distilled", 0.0, DISTILLED_CURVE), profiles={})
    result.config["models"]["teacher"] = "qwen2.5-0.5b-instruct"
    (finding,) = not_learned(result)
    assert "learned from 60 answers written by qwen2.5-0.5b-instruct" in finding.reason
    assert finding.pointer is not None and "stronger teacher (models.teacher)" in finding.pointer


@pytest.mark.parametrize("profile", ["quick", None])
def test_a_profile_that_leaves_the_arm_out_is_not_pointed_to(profile: str | None) -> None:
    profiles = {**PROFILES, "full": {**PROFILES["full"], "arms": ["closed-book"]}}
    result = _result(_arm("lora", "lora", 0.0, RISING_CURVE), profiles=profiles)
    result.arms = [a for a in result.arms if a.name != "distilled"]
    result.profile = profile
    (finding,) = not_learned(result)
    assert finding.arm == "lora" and "memorised its training answers" in finding.reason
    assert finding.pointer is None  # lora has no profile that trains it differently


def test_an_incumbent_that_scores_like_the_base_is_not_said_to_have_not_learned() -> None:
    import dataclasses

    served = dataclasses.replace(_arm("served", "served", 0.0, []), incumbent="endpoint")
    assert [f.arm for f in not_learned(_result(served))] == []
    trained = _arm("served", "served", 0.0, DISTILLED_CURVE)  # the same scores, trained here
    assert [f.arm for f in not_learned(_result(trained))] == ["served"]
