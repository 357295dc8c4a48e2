"""The bakeoff's verdict: the measured arms, filtered by the situation's constraints and read
together with the advisor's decision framework.

1. The advisor runs on the situation as the data shows it (how many labelled questions, whether
   there are documents, whether a teacher was named) plus the facts the config states (freshness,
   hardware, latency budget, budget, secrecy).
2. An arm is eligible when it ran, its p95 latency fits the budget, its weights fit the
   hardware's memory and, when knowledge changes weekly or faster, it retrieves (a model without
   retrieval answers from what it was trained on; its score on the knowledge-update questions is
   quoted as the evidence).
3. Among the eligible arms, those whose primary score is not measurably below the best one's
   (the paired 95% interval of the difference reaches 0) are tied; of these the one closest to
   the framework's methods wins, then the cheapest a year. A clear winner wins on its own, and
   the paragraph says when the measurement overrules the framework.
4. An incumbent (what the team runs today: a model, an adapter trained elsewhere, a hosted
   endpoint; method ``incumbent`` or ``hosted``, which the framework has no rule for) is a
   candidate like any arm. Tied with the best, it is kept unless a tied challenger costs less a
   year: switching has costs the bakeoff does not measure, so it must buy quality or money. The
   paragraph says how the chosen arm compares to the incumbent, or why the incumbent is kept.
   With secret documents, an arm that sends retrieved passages to an endpoint off this machine
   is excluded.
5. The fallback is the best eligible arm of other methods; the monitoring plan puts measured
   thresholds beside the framework's signals.
6. When the chosen arm was written as a GGUF file (:mod:`mentor.bakeoff.export`), the paragraph
   names the file, so the edge recommendation ends in something llama.cpp or Ollama can run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mentor.advisor.report import Advice, advise
from mentor.advisor.rules import METHODS
from mentor.advisor.situation import Situation
from mentor.bakeoff.config import BakeoffConfig
from mentor.bakeoff.results import ArmResult, Estimate, Exported, Verdict, Watch
from mentor.bakeoff.scoring import metric_statistic
from mentor.evaluate.stats import paired_bootstrap

FRESH = ("weekly", "daily", "realtime")
MEMORY_SHARE = 0.8  # of the device's memory, as in the advisor's monitoring plan


def situation_for(config: BakeoffConfig, counts: dict[str, int]) -> Situation:
    """The advisor's situation: what the data shows, plus the facts the config states."""
    facts = config.situation
    return Situation(
        task="chat",
        freshness=facts.freshness,
        citations_required=facts.citations_required,
        documents=counts.get("documents", 0) > 0,
        document_count=counts.get("documents", 0),
        secret_documents=facts.secret_documents,
        labelled_examples=counts.get("train", 0),
        unlabelled_text=False,
        teacher_available=config.models.teacher is not None,
        new_capability=facts.new_capability,
        hardware=facts.hardware,
        memory_gb=facts.memory_gb,
        latency_budget_ms=facts.latency_budget_ms,
        budget=facts.budget,
        queries_per_day=facts.queries_per_day,
        incumbent=_incumbents_text(config),
    )


def _incumbents_text(config: BakeoffConfig) -> str | None:
    """The incumbents the arms measure, as the advisor's ``incumbent`` fact."""
    used = {arm.model for arm in config.arms}
    named = [
        f"{name} ({spec.description})" if spec.description else name
        for name, spec in config.incumbents.items()
        if name in used
    ]
    return " and ".join(named) or None


WHERE = {"laptop": "on the laptop", "edge": "on the edge device", "mobile": "on the phone"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(e: Estimate) -> str:
    return f"{_pct(e.value)} (95% CI {_pct(e.low)}-{_pct(e.high)})"


def _points(e: Estimate) -> str:
    return f"{e.value:+.1f} points (CI {e.low:+.1f} to {e.high:+.1f})"


def _methods_text(methods: Sequence[str]) -> str:
    return " + ".join(methods)


def exclusions(arms: Sequence[ArmResult], situation: Situation, primary: str) -> dict[str, str]:
    """Arm -> why it cannot be recommended here (arms not named are eligible)."""
    out: dict[str, str] = {}
    rag_updates = [a.updates.value for a in arms if a.ok and "rag" in a.methods and a.updates]
    for arm in arms:
        if not arm.ok:
            out[arm.name] = f"failed: {arm.error}"
            continue
        if situation.secret_documents and arm.offsite and "rag" in arm.methods:
            out[arm.name] = (
                "the documents may not leave the site, and this arm sends retrieved passages to "
                "an endpoint off this machine"
            )
            continue
        budget = situation.latency_budget_ms
        p95 = arm.latency_ms.get("p95")
        if budget is not None and p95 is not None and p95 > budget:
            out[arm.name] = f"p95 latency {p95:,.0f} ms is over the {budget:,} ms budget"
            continue
        memory_gb = situation.memory()
        needed = max(arm.model_memory_mb, arm.peak_memory_mb) / 1024
        if needed > MEMORY_SHARE * memory_gb:
            out[arm.name] = (
                f"needs {needed:.1f} GB at its peak (weights and working memory); the "
                f"{situation.hardware} has {memory_gb:g} GB, of which {MEMORY_SHARE:.0%} is "
                "planned for the model"
            )
            continue
        if situation.freshness in FRESH and "rag" not in arm.methods:
            evidence = ""
            if arm.updates is not None:
                evidence = f": it scores {_pct(arm.updates.value)} {primary} on questions about "
                evidence += "changed documents"
                if rag_updates:
                    evidence += f", retrieval arms up to {_pct(max(rag_updates))}"
            out[arm.name] = (
                f"knowledge changes {situation.freshness} and this arm has no retrieval, so it "
                f"answers from what it was trained on{evidence}"
            )
    return out


def _overlap(arm: ArmResult, wanted: Sequence[str]) -> float:
    a, b = set(arm.methods) - {"prompting"}, set(wanted) - {"prompting"}
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _yearly(arm: ArmResult) -> float:
    return arm.costs.yearly_usd if arm.costs is not None else float("inf")


def _tied_with(
    best: ArmResult,
    arm: ArmResult,
    primary: str,
    labels: Sequence[str] | None,
    resamples: int,
    seed: int,
) -> bool:
    if arm is best:
        return True
    ids = [a.id for a in best.answers]
    if [a.id for a in arm.answers] != ids or not ids:
        return False
    diff = paired_bootstrap(
        metric_statistic(primary, best.answers, labels),
        metric_statistic(primary, arm.answers, labels),
        len(ids),
        scale=100.0,  # points
        resamples=resamples,
        seed=seed,
    )
    return diff.low <= 0.0


def choose(
    arms: Sequence[ArmResult],
    excluded: dict[str, str],
    advice: Advice,
    primary: str,
    labels: Sequence[str] | None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[ArmResult | None, list[ArmResult], list[ArmResult]]:
    """(chosen arm, eligible arms best first, arms tied with the best)."""
    eligible = sorted(
        (a for a in arms if a.name not in excluded and primary in a.quality),
        key=lambda a: -a.quality[primary].value,
    )
    if not eligible:
        return None, [], []
    best = eligible[0]
    tied = [a for a in eligible if _tied_with(best, a, primary, labels, resamples, seed)]
    wanted = advice.recommendation.methods
    chosen = max(tied, key=lambda a: (_overlap(a, wanted), -_yearly(a), a.quality[primary].value))
    kept = [a for a in tied if a.incumbent is not None]
    if kept and chosen.incumbent is None:
        incumbent = min(kept, key=_yearly)
        if _yearly(incumbent) <= _yearly(chosen):
            chosen = incumbent
    return chosen, eligible, tied


def _versus_incumbent(
    chosen: ArmResult,
    eligible: Sequence[ArmResult],
    tied: Sequence[ArmResult],
    primary: str,
    labels: Sequence[str] | None,
    resamples: int,
    seed: int,
) -> str:
    """One sentence on the incumbents: why the chosen one is kept, or how the chosen arm
    compares to the best incumbent measured."""
    incumbents = [a for a in eligible if a.incumbent is not None]
    if chosen.incumbent is not None:
        others = [a.name for a in tied if a is not chosen]
        if not others:
            return (
                f"{chosen.name} is what you run today ({chosen.incumbent}) and it scores "
                "measurably above every other eligible arm: keep it."
            )
        return (
            f"{chosen.name} is what you run today ({chosen.incumbent}); {', '.join(others)} "
            "scored within the noise of it and none costs less a year, so switching would buy "
            "neither quality nor money: keep it."
        )
    if not incumbents:
        return ""
    best = incumbents[0]  # eligible is sorted best first
    if [a.id for a in best.answers] != [a.id for a in chosen.answers] or not chosen.answers:
        return ""
    diff = paired_bootstrap(
        metric_statistic(primary, chosen.answers, labels),
        metric_statistic(primary, best.answers, labels),
        len(chosen.answers),
        scale=100.0,  # points
        resamples=resamples,
        seed=seed,
    )
    if any(a is best for a in tied):
        why = "it ties with it and costs less a year"
    else:
        why = "the difference is measurable"
    return (
        f"Against {best.name}, what you run today ({best.incumbent}), {chosen.name} scores "
        f"{_points(diff)}: {why}, so switching pays."
    )


def _disagreement(
    chosen: ArmResult,
    arms: Sequence[ArmResult],
    eligible: Sequence[ArmResult],
    wanted: Sequence[str],
    primary: str,
) -> str:
    """Why the measured choice is not the framework's methods, in one sentence."""
    said = f"The measurements point to {_methods_text(chosen.methods)} on this data instead"
    closer = [a for a in arms if _overlap(a, wanted) > _overlap(chosen, wanted)]
    if not closer:
        missing = [m for m in wanted if m not in chosen.methods]
        extra = [m for m in chosen.methods if m not in wanted and m != "prompting"]
        gap = "; ".join(
            part
            for part in (
                f"it lacks {_methods_text(missing)}" if missing else "",
                f"it adds {_methods_text(extra)}" if extra else "",
            )
            if part
        )
        return (
            f"Of the measured arms, {chosen.name} is the closest to that advice ({gap}); no arm "
            "with exactly those methods was measured."
        )
    nearest = max(closer, key=lambda a: _overlap(a, wanted))
    if nearest.name not in {a.name for a in eligible}:
        return f"{said}: the nearest arm to them, {nearest.name}, was excluded (see below)."
    score = nearest.quality[primary]
    return (
        f"{said}: the nearest arm to them, {nearest.name} ({_methods_text(nearest.methods)}), "
        f"scored {_ci(score)}, measurably below {chosen.name}."
    )


def _fallback(
    chosen: ArmResult, eligible: Sequence[ArmResult], advice: Advice
) -> tuple[str, str | None]:
    for arm in eligible:
        if set(arm.methods) != set(chosen.methods):
            return (
                f"{arm.name} ({_methods_text(arm.methods)}), the best eligible arm of other "
                f"methods, if {chosen.name} stops meeting its thresholds",
                arm.name,
            )
    fb = advice.recommendation.fallback
    return f"{METHODS.get(fb.method, fb.method)}: {fb.why.rstrip('.')}", None


def _monitoring(chosen: ArmResult, primary: str, advice: Advice) -> list[Watch]:
    quality = chosen.quality[primary]
    watches = [
        Watch(
            f"{primary} on a weekly sample of 50 labelled real questions",
            f"below {_pct(quality.low)} (the low end of the measured interval)",
            "re-run this bakeoff with the new questions; re-index or retrain as it shows",
        )
    ]
    p95 = chosen.latency_ms.get("p95")
    if p95:
        watches.append(
            Watch(
                "p95 answer latency",
                f"above {1.5 * p95:,.0f} ms (1.5x the measured {p95:,.0f} ms)",
                "add a replica, shorten answers, or quantize",
            )
        )
    g = chosen.grounding
    if g is not None and g.supported_share is not None and "rag" in chosen.methods:
        watches.append(
            Watch(
                "share of answers supported by the retrieved passages",
                f"below {_pct(max(0.0, g.supported_share - 0.1))} (measured "
                f"{_pct(g.supported_share)})",
                "check the index is current and retrieval recall on new questions",
            )
        )
    if chosen.updates is not None and "rag" not in chosen.methods:
        watches.append(
            Watch(
                "questions about documents changed since training",
                f"any: this arm scored {_pct(chosen.updates.value)} on them",
                "retrain after each knowledge change, or add retrieval",
            )
        )
    for w in advice.recommendation.monitoring[:3]:
        watches.append(Watch(w.signal, w.threshold, w.action))
    return watches


def verdict(
    arms: Sequence[ArmResult],
    base: ArmResult,
    config: BakeoffConfig,
    counts: dict[str, int],
) -> Verdict:
    """The recommendation for ``arms`` (scored, with costs) in the config's situation."""
    primary, labels = config.primary, config.data.labels
    situation = situation_for(config, counts)
    advice = advise(situation)
    rec = advice.recommendation
    excluded = exclusions(arms, situation, primary)
    chosen, eligible, tied = choose(
        arms,
        excluded,
        advice,
        primary,
        labels,
        resamples=config.answer.bootstrap,
        seed=config.answer.seed,
    )
    because = rec.reasons[0].because.rstrip(".") if rec.reasons else ""
    framework = (
        f"The decision framework recommends {rec.summary.rstrip('.')}"
        + (f", because {because[:1].lower()}{because[1:]}" if because else "")
        + "."
    )
    reasons = [f"framework: {r.because} ({r.condition})" for r in rec.reasons]
    if chosen is None:
        return Verdict(
            arm=None,
            methods=list(rec.methods),
            paragraph=(
                "No arm met the constraints (see the excluded arms). " + framework + " Measure "
                "an arm of those methods that fits, or relax the constraint that excluded them."
            ),
            reasons=reasons,
            fallback=f"{rec.fallback.method}: {rec.fallback.why.rstrip('.')}",
            fallback_arm=None,
            monitoring=[Watch(w.signal, w.threshold, w.action) for w in rec.monitoring],
            advisor_methods=list(rec.methods),
            advisor_summary=rec.summary,
            agrees=False,
            eligible=[],
            excluded=excluded,
        )
    quality = chosen.quality[primary]
    agrees = set(chosen.methods) - {"prompting"} == set(rec.methods) - {"prompting"}
    verb = "Keep" if chosen.incumbent is not None else "Use"
    parts = [f"{verb} {chosen.name} ({chosen.description})."]
    parts.append(f"On {chosen.questions} held-out questions it scores {primary} {_ci(quality)}")
    if chosen is not base and chosen.vs_base is not None:
        parts[-1] += f", {_points(chosen.vs_base)} over {base.name}"
    parts[-1] += "."
    if chosen.latency_ms:
        cost = chosen.costs
        line = f"It answers in {chosen.latency_ms['p95']:,.0f} ms at p95 here"
        if cost is not None:
            line += f" and costs about ${cost.serve_usd_per_1k:.3f} per 1,000 queries"
            line += f" (${cost.yearly_usd:,.0f} a year at {config.situation.queries_per_day:,}/day)"
        parts.append(line + ".")
    incumbent_line = _versus_incumbent(
        chosen,
        eligible,
        tied,
        primary,
        labels,
        config.answer.bootstrap,
        config.answer.seed,
    )
    if incumbent_line:
        parts.append(incumbent_line)
    elif len(tied) > 1:
        others = ", ".join(a.name for a in tied if a is not chosen)
        parts.append(
            f"{others} scored within the noise of the best; {chosen.name} was preferred as the "
            "closest to the framework's advice, then the cheapest."
        )
    if agrees:
        parts.append(framework.replace("recommends", "agrees: it recommends", 1))
    elif chosen.incumbent is not None:
        parts.append(
            framework
            + f" Its rule for what runs today is to keep it until a change measurably beats it, "
            f"and of the measured arms none beat {chosen.name}."
        )
    else:
        parts.append(framework + " " + _disagreement(chosen, arms, eligible, rec.methods, primary))
    fallback, fallback_arm = _fallback(chosen, eligible, advice)
    parts.append(f"Fallback: {fallback}.")
    reasons = (
        [f"measured: {a.name} {primary} {_ci(a.quality[primary])}" for a in eligible[:5]]
        + [f"excluded: {name}: {why}" for name, why in excluded.items()]
        + reasons
    )
    return Verdict(
        arm=chosen.name,
        methods=list(chosen.methods),
        paragraph=" ".join(parts),
        reasons=reasons,
        fallback=fallback,
        fallback_arm=fallback_arm,
        monitoring=_monitoring(chosen, primary, advice),
        advisor_methods=list(rec.methods),
        advisor_summary=rec.summary,
        agrees=agrees,
        eligible=[a.name for a in eligible],
        excluded=excluded,
    )


def export_sentence(exported: Exported, hardware: str) -> str:
    """One sentence naming the arm's GGUF file and how to run it, or why there is none."""
    if exported.path is None:
        return f"No GGUF file was written for {exported.arm}: {exported.error}."
    how = f"{exported.gguf_type}, {exported.size_mb:,.0f} MB"
    if exported.quantized and exported.exact:
        how += f", the {exported.quantized} codes that were measured"
    elif exported.quantized:
        how += (
            f", the measured {exported.quantized} weights quantized again (llama.cpp has no "
            "SmoothQuant scaling): check its answers there before relying on these scores"
        )
    line = (
        f"To run it {WHERE.get(hardware, 'outside mentor')}: {exported.path} ({how}) loads in "
        "llama.cpp and LM Studio"
    )
    if exported.modelfile:
        line += f", and in Ollama with `ollama create NAME -f {exported.modelfile}`"
    if exported.retrieval:
        line += "; its retrieval is mentor's, not in the file (`mentor serve` with the index)"
    return line + "."


def with_export(found: Verdict, exported: Exported, hardware: str) -> Verdict:
    """``found`` with the GGUF file of its arm named before the fallback, and as a reason."""
    sentence = export_sentence(exported, hardware)
    head, mark, tail = found.paragraph.rpartition(" Fallback: ")
    paragraph = f"{head} {sentence}{mark}{tail}" if mark else f"{found.paragraph} {sentence}"
    reason = (
        f"export: {exported.path} ({exported.gguf_type})"
        if exported.path
        else f"export: none ({exported.error})"
    )
    return dataclasses.replace(
        found, paragraph=paragraph, reasons=[*found.reasons, reason], export=exported
    )
