"""``mentor bakeoff``, top to bottom: data, models, indexes, training, every arm, the verdict, the
report.

The run folder keeps everything (``out/``):

- ``indexes/``, ``models/<name>/``, ``quantized/<arm>/``: what was built, each with its
  ``stage.json`` (see :mod:`mentor.bakeoff.stages`);
- ``endpoints/<arm>/``: an endpoint arm's cached answers (:mod:`mentor.bakeoff.incumbents`);
- ``arms/<arm>.json``: one arm's measurements, written as soon as the arm is done, with the
  fingerprint of what it was measured on. A rerun skips every arm whose fingerprint still matches
  (so an interrupted bakeoff resumes at the first unfinished arm) and measures again any arm that
  failed or whose model, data or settings changed;
- ``export/<arm>/``: the recommended arm as a GGUF file and Ollama Modelfile (config ``export``).
- ``report.json``, ``report.html``: the whole result.

An arm that fails (an exception while building or answering) is recorded with its error and the
others go on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from mentor.bakeoff.arms import (
    LATENCY_ENGINE,
    MERGED_FROM,
    Retrieval,
    Write,
    answer_all,
    answer_engine,
    arm_engine,
    engine_writer,
    folder_mb,
    load_arm_model,
    merges_adapter,
    peak_rss,
    release,
    time_answers,
    weights_mb,
)
from mentor.bakeoff.config import BASE, ArmSpec, BakeoffConfig, RetrievalSettings
from mentor.bakeoff.data import BakeoffData, Question, load_data, spread
from mentor.bakeoff.export import export_arm, source_for, wanted
from mentor.bakeoff.incumbents import (
    EndpointArm,
    endpoint_fingerprint,
    incumbent_built,
    open_endpoint_arm,
    preflight,
)
from mentor.bakeoff.recommend import verdict, with_export
from mentor.bakeoff.results import ArmResult, BakeoffResult, Verdict, arm_from_dict
from mentor.bakeoff.scoring import (
    UPDATES_PER_YEAR,
    costs,
    grounding,
    groups,
    metric_statistic,
    per_point,
    score_answer,
    token_usd_per_1k,
)
from mentor.bakeoff.stages import Built, build_rag_index, fingerprint, merged_docs, train_model
from mentor.evaluate.labels import LABEL_METRICS
from mentor.evaluate.stats import bootstrap, paired_bootstrap
from mentor.evaluate.text import TEXT_METRICS
from mentor.utils.fs import atomic_write_text
from mentor.utils.tracking import Prefixed, Tracker


def metrics_for(config: BakeoffConfig) -> list[str]:
    names = [*LABEL_METRICS, "contains"] if config.data.labels else list(TEXT_METRICS)
    return [config.primary, *[m for m in names if m != config.primary]]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "arm"


def arm_methods(arm: ArmSpec, config: BakeoffConfig) -> list[str]:
    """The advisor's method keys this arm is made of; an incumbent is ``incumbent`` (a model or
    adapter made elsewhere) or ``hosted`` (an endpoint), which the advisor has no key for."""
    methods: list[str] = []
    incumbent = config.incumbent(arm)
    if incumbent is not None:
        methods.append("hosted" if incumbent.kind == "endpoint" else "incumbent")
    elif arm.model != BASE:
        method = config.training[arm.model].method
        methods.append({"lora": "lora", "full": "full_finetune", "distill": "distillation"}[method])
    if arm.retrieval is not None:
        methods.append("rag")
    if arm.quantize is not None:
        methods.append("quantization")
    return methods or ["prompting"]


def _doc_texts(folder: Path | None) -> dict[str, str]:
    if folder is None:
        return {}
    return {
        p.stem: p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in {".md", ".txt"} and p.name.lower() != "readme.md"
    }


class Bakeoff:
    """One run: holds the data, the built indexes and models, and measures the arms."""

    def __init__(
        self,
        config: BakeoffConfig,
        console: Console,
        *,
        profile: str | None,
        tracker: Tracker | None = None,
    ) -> None:
        self.config = config
        self.console = console
        self.profile = profile
        self.tracker = tracker
        self.trained_live: set[str] = set()
        """Models trained in this run, whose curves the tracker got step by step."""
        self.out = config.out
        self.data: BakeoffData = load_data(config, self.out)
        self.docs = _doc_texts(self.data.docs)
        # the documents after the knowledge update: the closed-book arms' evidence on its questions
        self.updated_docs = {**self.docs, **_doc_texts(self.data.updated_docs)}
        self.indexes: dict[tuple[int, bool, str, float], Built] = {}
        self.retrievers: dict[tuple[int, bool], Any] = {}
        self.trained: dict[str, Built] = {}
        self.failed_training: dict[str, str] = {}
        self.embedder: Any = None

    # --- building -------------------------------------------------------------------------

    def pull_models(self) -> None:
        from mentor.models.pulling import pull_with_progress
        from mentor.models.registry import REGISTRY

        m = self.config.models
        uses_retrieval = any(a.retrieval for a in self.config.arms)
        names = [m.base, m.teacher, m.student, m.embedder if uses_retrieval else None]
        names += [self.config.incumbents[a.model].model for a in self.config.arms
                  if a.model in self.config.incumbents]  # fmt: skip
        wanted = list(dict.fromkeys(n for n in names if n and n in REGISTRY))
        if wanted:
            self.console.rule("models")
            pull_with_progress(wanted, self.console)

    def index(self, settings: RetrievalSettings, updated: bool) -> Built:
        key = (settings.chunk_tokens, updated, settings.tune, settings.tune_minutes)
        if key not in self.indexes:
            assert self.data.docs is not None
            docs = self.data.docs
            if updated:
                assert self.data.updated_docs is not None
                docs = merged_docs(docs, self.data.updated_docs, self.out / "docs-updated")
            tuned = "" if settings.tune == "fast" else f"-{settings.tune}"
            folder = self.out / "indexes" / f"{'updated' if updated else 'docs'}-{key[0]}{tuned}"
            self.indexes[key] = build_rag_index(
                docs,
                self.config.models.embedder,
                settings,
                folder,
                self.console,
                writer=self.config.models.base,
            )
        return self.indexes[key]

    def retrieval(self, settings: RetrievalSettings, updated: bool = False) -> Retrieval:
        from mentor.models.loading import load_embedder
        from mentor.rag import Retriever
        from mentor.rag.answer import DEFAULT_SYSTEM

        key = (settings.chunk_tokens, updated)
        if key not in self.retrievers:
            built = self.index(settings, updated)
            if self.embedder is None:
                self.embedder = load_embedder(self.config.models.embedder)
            self.retrievers[key] = Retriever(built.path, self.embedder)
        system = f"{DEFAULT_SYSTEM}\n{self.config.answer.system}"
        return Retrieval(self.retrievers[key], settings, system)

    def train_all(self) -> None:
        for name, spec in self.config.trained().items():
            self.console.rule(f"training: {name} ({spec.method})")
            rag_prompt: Callable[[str], Any] | None = None
            if spec.method == "distill" and spec.teacher_retrieval and self.data.docs is not None:
                teacher_rag = self.retrieval(RetrievalSettings())
                rag_prompt = lambda q, r=teacher_rag: r.search(q)[0]  # noqa: E731
            part = Prefixed(self.tracker, name) if self.tracker is not None else None
            try:
                self.trained[name] = train_model(
                    name,
                    spec,
                    self.config,
                    self.data.train,
                    self.data.validation,
                    self.out / "models" / slug(name),
                    self.console,
                    rag_prompt=rag_prompt,
                    docs=self.data.docs,
                    tracker=part,
                )
            except Exception as exc:  # one failed model must not stop the bakeoff
                self.failed_training[name] = f"training {name} failed: {exc}"
                self.console.print(f"[red]{self.failed_training[name]}[/red]")
                self.console.print(traceback.format_exc(limit=4), markup=False, highlight=False)
            if part is not None and part.steps:
                self.trained_live.add(name)
            release()

    def take_incumbents(self) -> None:
        """The model and adapter incumbents the arms use, as models built in no time."""
        for arm in self.config.arms:
            spec = self.config.incumbent(arm)
            if spec is not None and spec.kind != "endpoint" and arm.model not in self.trained:
                self.trained[arm.model] = incumbent_built(spec, self.config)

    # --- measuring ------------------------------------------------------------------------

    def _gold(self, updated: bool) -> Callable[[Question], list[str]]:
        texts = self.updated_docs if updated else self.docs

        def gold(q: Question) -> list[str]:
            return [texts[d] for d in q.doc_ids if d in texts]

        return gold

    def _score(
        self, questions: Sequence[Question], write: Write, arm: ArmSpec, updated: bool
    ) -> list[Any]:
        retrieval = self.retrieval(arm.retrieval, updated) if arm.retrieval else None
        answered = answer_all(
            write,
            questions,
            retrieval,
            self.config,
            self._gold(updated),
            self.console,
            f"{arm.name}: {'update' if updated else 'test'} questions",
        )
        labels = self.config.data.labels
        return [
            score_answer(
                id=q.id,
                question=q.question,
                reference=q.answer,
                answer=text,
                labels=labels,
                evidence=evidence,
                sources=sources,
                group=q.group,
            )
            for q, text, evidence, sources in zip(
                questions, answered.texts, answered.evidence, answered.sources, strict=True
            )
        ]

    def measure(self, arm: ArmSpec) -> ArmResult:
        config = self.config
        spec = config.incumbent(arm)
        if spec is not None and spec.endpoint is not None:
            folder = self.out / "endpoints" / slug(arm.name)
            with open_endpoint_arm(spec.endpoint, folder, config) as endpoint:
                return self._measure_endpoint(arm, endpoint)
        built = self.trained.get(arm.model)
        if arm.model != BASE and built is None:
            raise RuntimeError(self.failed_training.get(arm.model, f"{arm.model} was not built"))
        started = time.perf_counter()
        try:
            loaded = load_arm_model(arm, built, config, self.quant_folder(arm), self.console)
        except ValueError as exc:  # AdapterError: an incumbent adapter made for another base
            if spec is not None and spec.adapter is not None:
                raise ValueError(f"incumbents.{arm.model}.adapter: {exc}") from None
            raise
        retrieval = self.retrieval(arm.retrieval) if arm.retrieval else None
        choice, engine_note = answer_engine(arm, built, config)
        if engine_note:
            self.console.print(f"[yellow]{arm.name}: {engine_note}[/yellow]")
        with arm_engine(loaded, choice, config) as engine:
            scored, updates, seconds, tokens, rise = self._answer(
                arm,
                engine_writer(engine, config),
                functools.partial(time_answers, loaded, retrieval=retrieval, config=config),
            )
        index = self.index(arm.retrieval, False) if arm.retrieval else None
        held_mb = weights_mb(loaded.model) + (self._embedder_mb() if index else 0.0)
        result = self._result(arm, scored, updates, seconds, tokens, started)
        result.description = self._describe(arm, loaded.description, built)
        result.peak_memory_mb = held_mb + rise
        result.model_memory_mb = held_mb
        result.artifact_mb = loaded.artifact_mb + (folder_mb(index.path) if index else 0.0)
        result.training_s = (built.seconds if built else 0.0) + loaded.extra_build_s
        result.curve = built.curve if built else []
        result.answer_engine = choice
        result.engine_note = engine_note
        del loaded
        release()
        return result

    def _measure_endpoint(self, arm: ArmSpec, endpoint: EndpointArm) -> ArmResult:
        """An endpoint arm: its answers, the client's latency, the tokens it reported."""
        started = time.perf_counter()
        retrieval = self.retrieval(arm.retrieval) if arm.retrieval else None
        writer = endpoint.writer
        scored, updates, seconds, tokens, rise = self._answer(
            arm,
            writer,
            lambda questions: endpoint.time_answers(questions, retrieval, self.config),
        )
        result = self._result(arm, scored, updates, seconds, tokens, started)
        index = self.index(arm.retrieval, False) if arm.retrieval else None
        held_mb = self._embedder_mb() if index else 0.0
        label = f"{endpoint.spec.model} @ {endpoint.spec.base_url} (incumbent endpoint)"
        result.description = self._describe(arm, label, None)
        result.peak_memory_mb = held_mb + rise
        result.model_memory_mb = held_mb
        result.artifact_mb = folder_mb(index.path) if index else 0.0
        result.answer_engine = result.latency_engine = "endpoint"
        result.answer_batch_size = endpoint.spec.concurrency
        result.usage = writer.usage(endpoint.spec, first=len(self.data.test))
        result.offsite = endpoint.offsite
        share = result.usage.get("reported_share", 1.0)
        if share < 1.0:
            result.engine_note = (
                f"the endpoint reported token usage for {share:.0%} of the answers; the cost is "
                "their mean"
            )
        return result

    def _answer(
        self,
        arm: ArmSpec,
        write: Write,
        time_them: Callable[[Sequence[Question]], tuple[list[float], float]],
    ) -> tuple[list[Any], Any, list[float], float, float]:
        """Scored test answers, the update questions' estimate, latency seconds, mean tokens per
        answer and the rise of resident memory while answering."""
        config = self.config
        updates = None
        with peak_rss() as peak:
            before = peak[0]
            scored = self._score(self.data.test, write, arm, updated=False)
            latency_set = spread(self.data.test, config.answer.latency_queries)
            seconds, tokens = time_them(latency_set)
        if self.data.updates and (arm.retrieval is None or self.data.docs is not None):
            fresh = self._score(self.data.updates, write, arm, updated=True)
            stat = metric_statistic(config.primary, fresh, config.data.labels)
            updates = bootstrap(
                stat, len(fresh), resamples=config.answer.bootstrap, seed=config.answer.seed
            )
        return scored, updates, seconds, tokens, max(0.0, peak[0] - before)

    def _result(
        self,
        arm: ArmSpec,
        scored: list[Any],
        updates: Any,
        seconds: list[float],
        tokens: float,
        started: float,
    ) -> ArmResult:
        """What every arm reports; the caller fills in its model's memory, disk and build."""
        config = self.config
        labels = config.data.labels
        metrics = metrics_for(config)
        quality = {
            m: bootstrap(
                metric_statistic(m, scored, labels),
                len(scored),
                resamples=config.answer.bootstrap,
                seed=config.answer.seed,
            )
            for m in metrics
        }
        from mentor.evaluate.stats import latency_summary

        lat = latency_summary(seconds)
        index = self.index(arm.retrieval, False) if arm.retrieval else None
        spec = config.incumbent(arm)
        return ArmResult(
            name=arm.name,
            model=arm.model,
            methods=arm_methods(arm, config),
            description=arm.name,
            questions=len(scored),
            quality=quality,
            groups=groups(scored, metrics, labels),
            updates=updates,
            grounding=grounding(scored),
            latency_ms={
                "p50": lat.p50_ms,
                "p95": lat.p95_ms,
                "mean": lat.mean_ms,
                "queries": float(lat.count),
            },
            tokens_per_answer=tokens,
            index_s=index.seconds if index else 0.0,
            answers=scored,
            seconds=time.perf_counter() - started,
            answer_batch_size=config.answer.batch_size,
            latency_engine=LATENCY_ENGINE,
            incumbent=spec.kind if spec is not None else None,
        )

    def _embedder_mb(self) -> float:
        model = getattr(self.embedder, "model", None)
        return weights_mb(model) if model is not None else 0.0

    def _describe(self, arm: ArmSpec, model: str, built: Built | None) -> str:
        spec = self.config.incumbent(arm)
        parts = [model]
        if spec is not None and spec.description:
            parts.append(spec.description)
        if built is not None and built.notes:
            parts.append(built.notes[0])
        if arm.retrieval is not None:
            r = arm.retrieval
            mode = r.mode or "the index's tuned setting (else hybrid)"
            parts.append(f"retrieval: {mode}, top {r.k} passages of ~{r.chunk_tokens} tokens")
        return "; ".join(parts)

    def quant_folder(self, arm: ArmSpec) -> Path:
        """Where a quantized arm's model is (written once, reused while its source is the same)."""
        built = self.trained.get(arm.model)
        made_from = fingerprint(
            built.fingerprint if built else self.config.models.base, arm.quantize
        )
        return self.out / "quantized" / f"{slug(arm.name)}-{made_from}"

    def export(self, found: Verdict) -> Verdict:
        """``found`` naming the GGUF file of its arm, when the config's ``export`` asks for one."""
        config = self.config
        arm = next((a for a in config.arms if a.name == found.arm), None)
        if arm is None or not wanted(config.export, config.situation.hardware, found.methods):
            return found
        source = source_for(
            arm.quantize, self.trained.get(arm.model), config.models.base, self.quant_folder(arm)
        )
        exported = export_arm(
            arm.name,
            source,
            self.out / "export" / slug(arm.name),
            self.arm_fingerprint(arm),
            retrieval=arm.retrieval is not None,
            console=self.console,
        )
        return with_export(found, exported, config.situation.hardware)

    def arm_fingerprint(self, arm: ArmSpec) -> str:
        """What the arm's stored result was measured on. The engine that writes the answers is
        part of it: greedy answers from two engines can differ (other kernels, other rounding).
        The builtin engine adds nothing, so results stored before engines were chosen stay valid."""
        built = self.trained.get(arm.model)
        engine: str = answer_engine(arm, built, self.config)[0]
        spec = self.config.incumbent(arm)
        if spec is not None and spec.endpoint is not None:
            made_from: Any = endpoint_fingerprint(spec.endpoint)
            engine = "endpoint"
        else:
            made_from = built.fingerprint if built else self.config.models.base
        return fingerprint(
            arm.model_dump(),
            made_from,
            self.config.models.embedder if arm.retrieval else None,
            self.config.answer.model_dump(exclude={"bootstrap"}),
            self.config.primary,
            list(TEXT_METRICS),  # an arm stored under other metric names is measured again
            self.config.data.labels,
            [(q.id, q.question, q.answer, q.group) for q in self.data.test],
            [(q.id, q.question, q.answer) for q in self.data.updates],
            self.data.docs,  # retrieved from, or the closed-book arms' grounding evidence
            self.data.updated_docs if self.data.updates else None,
            *([] if engine == "builtin" else [f"answers: {engine}"]),
            *([MERGED_FROM] if merges_adapter(arm, built) else []),
        )

    def run_arm(self, arm: ArmSpec) -> ArmResult:
        """The arm's stored result if still valid, else a new measurement (or its failure)."""
        path = self.out / "arms" / f"{slug(arm.name)}.json"
        wanted = self.arm_fingerprint(arm)
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("fingerprint") == wanted and stored["arm"]["status"] == "done":
                self.console.print(f"{arm.name}: measured in an earlier run, reused ({path})")
                return arm_from_dict(stored["arm"])
        try:
            result = self.measure(arm)
        except Exception as exc:  # report the arm as failed; the others go on
            self.console.print(f"[red]{arm.name} failed: {exc}[/red]")
            self.console.print(traceback.format_exc(limit=6), markup=False, highlight=False)
            result = ArmResult(
                name=arm.name,
                model=arm.model,
                methods=arm_methods(arm, self.config),
                description=arm.name,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
            )
            release()
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": wanted, "arm": dataclasses.asdict(result)}
        atomic_write_text(path, json.dumps(record, indent=1, default=str))
        return result


def price(arms: list[ArmResult], config: BakeoffConfig) -> None:
    """Fill in every measured arm's costs, its paired difference to the first arm (the base)
    and its cost per point gained over it."""
    primary, labels = config.primary, config.data.labels
    for arm in arms:
        if arm.ok:
            by_tokens = None
            if arm.usage:  # an endpoint billed by the token
                by_tokens = token_usd_per_1k(
                    arm.usage["prompt_tokens"],
                    arm.usage["completion_tokens"],
                    arm.usage["input_usd_per_million"],
                    arm.usage["output_usd_per_million"],
                )
            arm.costs = costs(
                build_s=arm.training_s + arm.index_s,
                mean_answer_s=arm.latency_ms["mean"] / 1000,
                train_usd_per_hour=config.costs.train_usd_per_hour,
                serve_usd_per_hour=config.costs.serve_usd_per_hour,
                concurrency=config.costs.concurrency,
                updates_per_year=UPDATES_PER_YEAR[config.situation.freshness],
                queries_per_day=config.situation.queries_per_day,
                token_usd_per_1k=by_tokens,
            )
    base = arms[0]
    if base.costs is None:
        return
    for arm in arms:
        if arm.costs is None:
            continue
        if [a.id for a in arm.answers] == [a.id for a in base.answers]:
            arm.vs_base = paired_bootstrap(
                metric_statistic(primary, arm.answers, labels),
                metric_statistic(primary, base.answers, labels),
                len(arm.answers),
                scale=100.0,  # points
                resamples=config.answer.bootstrap,
                seed=config.answer.seed,
            )
        if arm is not base:
            gain = 100 * (arm.quality[primary].value - base.quality[primary].value)
            arm.costs.usd_per_point = per_point(arm.costs, base.costs, gain)


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }


def run_bakeoff(
    config: BakeoffConfig,
    *,
    console: Console,
    profile: str | None = None,
    tracker: Tracker | None = None,
) -> BakeoffResult:
    """Build, measure and compare every arm of ``config``; write report.json and report.html.
    ``tracker`` gets each model's training steps as it trains (``MODEL/loss``) and, at the end,
    the curves of models reused from an earlier run, the scores, the table and the reports
    (:func:`mentor.bakeoff.tracking.report_bakeoff`)."""
    from mentor.bakeoff.datasets import references
    from mentor.bakeoff.report import print_summary, write_html
    from mentor.bakeoff.tracking import report_bakeoff

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    bakeoff = Bakeoff(config, console, profile=profile, tracker=tracker)
    counts = bakeoff.data.counts()
    console.print(
        f"{config.name}: {counts['documents']} documents, {counts['train']} training, "
        f"{counts['validation']} validation, {counts['test']} test questions"
        + (f", {counts['updates']} about updated documents" if counts["updates"] else "")
        + f"; {len(config.arms)} arms"
    )
    preflight(config)  # a missing key or adapter fails now, not after the training
    bakeoff.pull_models()
    bakeoff.train_all()
    bakeoff.take_incumbents()
    arms: list[ArmResult] = []
    for n, arm in enumerate(config.arms, start=1):
        spent = time.perf_counter() - started
        console.rule(f"arm {n}/{len(config.arms)}: {arm.name}  ({spent / 60:.1f} min so far)")
        arms.append(bakeoff.run_arm(arm))
    price(arms, config)
    notes = [bakeoff.failed_training[n] for n in bakeoff.failed_training]
    result = BakeoffResult(
        name=config.name,
        profile=profile,
        primary=config.primary,
        metrics=metrics_for(config),
        base=arms[0].name,
        arms=arms,
        references=references(config.data.prepare),
        data=counts,
        machine=_machine(),
        config=json.loads(config.model_dump_json()),
        started=started_at,
        notes=notes,
    )
    result.verdict = bakeoff.export(verdict(arms, arms[0], config, counts))
    result.seconds = time.perf_counter() - started
    result.save(config.out / "report.json")
    html = write_html(result, config.out / "report.html")
    print_summary(result, console, html)
    if tracker is not None:
        report_bakeoff(tracker, result, config.out, logged=bakeoff.trained_live)
    return result
