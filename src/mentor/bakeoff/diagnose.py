"""Trained arms that did not learn: found from the measurements and explained in words.

An arm built on a trained model (``lora``, ``full``, a distilled student) did not learn when its
primary score is not above the base arm's, or when its validation loss rose well above its best
value and its gain over the base is within the noise. ``not_learned(result)`` returns one
:class:`NotLearned` per such arm: what was measured (``signs``), why it happens with this
training (``reason``, from the run's configuration) and, when the config file has one, the
profile that shows the method properly (``pointer``). The report and the terminal summary print
``NotLearned.text``; nothing here changes the recommendation, which ranks by measurement anyway.

The curve is ``ArmResult.curve``: one mapping per logged step with ``step`` and ``loss``, and
``val_loss`` on the steps that evaluated (``stages._curve`` reads them from ``metrics.jsonl``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mentor.bakeoff.results import ArmResult, BakeoffResult

__all__ = ["RISE", "SPREAD", "CurveSummary", "NotLearned", "curve_summary", "not_learned"]

RISE = 1.25  # a last validation loss this many times its best: it rose "well above" it
SPREAD = 2.0  # a last validation loss this many times the last training loss: fitted only the
# training answers (a gap this wide on the tiny runs the profiles make is never noise)


@dataclass(frozen=True)
class CurveSummary:
    """The ends of a training curve; ``None`` where the curve has no such value."""

    first_loss: float | None
    last_loss: float | None
    first_val: float | None
    best_val: float | None
    last_val: float | None

    @property
    def val_rose(self) -> bool:
        """The last validation loss is well above the best one (overfitting)."""
        if self.best_val is None or self.last_val is None or self.best_val <= 0:
            return False
        return self.last_val > RISE * self.best_val

    @property
    def spread(self) -> bool:
        """Training loss fell while validation loss stayed far above it."""
        if None in (self.first_loss, self.last_loss, self.last_val):
            return False
        assert self.first_loss is not None and self.last_loss is not None
        assert self.last_val is not None
        return self.last_loss < self.first_loss and self.last_val > SPREAD * self.last_loss


def curve_summary(curve: Sequence[Mapping[str, float]]) -> CurveSummary:
    """First and last training loss; first, lowest and last validation loss."""
    losses = [p["loss"] for p in curve if "loss" in p]
    vals = [p["val_loss"] for p in curve if "val_loss" in p]
    return CurveSummary(
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        first_val=vals[0] if vals else None,
        best_val=min(vals) if vals else None,
        last_val=vals[-1] if vals else None,
    )


@dataclass(frozen=True)
class NotLearned:
    """One arm that trained without learning, and why."""

    arm: str
    signs: list[str]  # what was measured, one phrase each
    reason: str  # why, in words
    pointer: str | None  # the profile (or setting) that shows the method properly

    @property
    def text(self) -> str:
        line = f"{self.arm} did not learn: {'; '.join(self.signs)}. {self.reason}."
        return line + (f" {self.pointer}." if self.pointer else "")


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _signs(result: BakeoffResult, arm: ArmResult, base: ArmResult) -> list[str]:
    signs: list[str] = []
    mine, theirs = arm.quality.get(result.primary), base.quality.get(result.primary)
    if mine is not None and theirs is not None and mine.value <= theirs.value:
        signs.append(
            f"it scores {mine.value:.1%} on {result.primary}, no better than "
            f"{base.name} ({theirs.value:.1%})"
        )
    curve = curve_summary(arm.curve)
    if curve.val_rose:
        start = f"{curve.best_val:.1f}"
        if curve.first_val != curve.best_val:  # it fell first, then rose
            start = f"{curve.first_val:.1f} (best {curve.best_val:.1f})"
        signs.append(f"validation loss rose from {start} to {curve.last_val:.1f}")
    elif curve.spread:
        signs.append(
            f"validation loss stayed at {curve.last_val:.1f} while training loss fell from "
            f"{curve.first_loss:.1f} to {curve.last_loss:.1f}"
        )
    return signs


def _learned_little(result: BakeoffResult, arm: ArmResult, base: ArmResult) -> bool:
    mine, theirs = arm.quality.get(result.primary), base.quality.get(result.primary)
    if mine is not None and theirs is not None and mine.value <= theirs.value:
        return True
    significant = arm.vs_base is not None and arm.vs_base.excludes_zero() and arm.vs_base.value > 0
    return curve_summary(arm.curve).val_rose and not significant


def _reason(result: BakeoffResult, arm: ArmResult) -> str:
    """Why this training did not learn, from the run's configuration."""
    config = result.config
    spec = _section(_section(config, "training"), arm.model)
    models = _section(config, "models")
    overfit = curve_summary(arm.curve)
    fitted = overfit.val_rose or overfit.spread
    method = spec.get("method", "training")
    if method == "distill":
        base = models.get("base")
        teacher, student = models.get("teacher") or base, models.get("student") or base
        count = spec.get("teacher_limit") or result.data.get("train")
        answers = f"{count} answers" if count else "answers"
        if teacher == student:
            why = (
                f"the student ({student}) was its own teacher: it learned from {answers} it "
                "wrote itself, and a teacher no stronger than its student has little to teach"
            )
        else:
            why = f"the student ({student}) learned from {answers} written by {teacher}"
        if fitted:
            why += (
                f"; it overfit those {answers} (training loss fell) instead of learning the "
                "facts (validation loss on the reference answers did not)"
            )
        return why[0].upper() + why[1:]
    questions = result.data.get("train")
    epochs = spec.get("epochs")
    what = f"{method} on {arm.model}" + (
        f" with {questions} training questions" if questions else ""
    )
    what += f" for {epochs} epochs" if epochs else ""
    if fitted:
        return what[0].upper() + what[1:] + " memorised its training answers without generalising"
    return what[0].upper() + what[1:] + " did not move the held-out answers"


def _touches(key: str, arm: ArmResult, distill: bool) -> bool:
    return key.startswith(f"training.{arm.model}.") or (distill and key.startswith("models."))


def _pointer(result: BakeoffResult, arm: ArmResult) -> str | None:
    """Another profile of the same file that trains this arm's model differently, if any."""
    profiles = _section(result.config, "profiles")
    distill = _section(_section(result.config, "training"), arm.model).get("method") == "distill"
    mine = _section(profiles, result.profile or "")
    limits = [f"{k}={v}" for k, v in mine.items() if _touches(k, arm, distill)]
    for name, raw in profiles.items():
        if name == result.profile or not isinstance(raw, Mapping):
            continue
        arms = raw.get("arms")
        if isinstance(arms, list) and arm.name not in arms:
            continue
        changes = [f"{k}={v}" for k, v in raw.items() if _touches(k, arm, distill)]
        if not changes and not limits:
            continue
        detail = ", ".join(changes)
        if limits:
            dropped = f"without the {result.profile} profile's {' and '.join(limits)}"
            detail = f"{detail}, {dropped}" if detail else dropped
        return f"The `{name}` profile (--profile {name}) shows the method properly: {detail}"
    if distill:
        return (
            f"To see the method work, distil from a stronger teacher (models.teacher) on more "
            f"answers (training.{arm.model}.teacher_limit)"
        )
    return None


def not_learned(result: BakeoffResult) -> list[NotLearned]:
    """The arms built on a trained model that learned nothing measurable, in report order (an
    incumbent was trained elsewhere, if at all: nothing of its training is here to diagnose)."""
    try:
        base = result.arm(result.base)
    except KeyError:
        return []
    found = []
    for arm in result.arms:
        if not arm.ok or arm.model == "base" or arm.name == base.name or arm.incumbent:
            continue
        if _learned_little(result, arm, base):
            signs = _signs(result, arm, base) or ["its gain over the base is within the noise"]
            found.append(NotLearned(arm.name, signs, _reason(result, arm), _pointer(result, arm)))
    return found
