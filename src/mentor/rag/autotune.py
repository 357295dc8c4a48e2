"""One step from a built index to a tuned one, within a time budget, resumable.

:func:`autotune` runs the tuning steps of an index in order, each deciding on the TUNING
synthetic questions and guarded on the HELD-OUT ones (a setting is kept only where it measures
better beyond noise), and each reading what the earlier ones chose:

1. ``questions``: the self-evaluation set (:func:`mentor.rag.selfeval.build_selfeval`), read
   back when the index already has one for its documents (questions are written once);
2. ``lexical``: BM25 fitted to the corpus (:func:`mentor.rag.lexical.tune_lexical`: language,
   title weight, k1 and b); ``embedder``: the embedder fine-tuned on the tuning questions and
   the corpus re-embedded (:func:`mentor.rag.embed_tune.tune_embedder`), where that fits;
3. ``chunk_size``: the index rebuilt from the same files at other chunk sizes in a scratch
   folder, judged by default hybrid search (relevance is per document, so the same questions
   judge any chunking); a winner beyond noise is swapped in by one manifest write
   (:func:`swap_in`), the tuning files beside the index untouched;
4. ``fusion``: :func:`mentor.rag.tune.tune_fusion`;
5. ``reranker``: a cross-encoder trained on the tuning questions, judged on the held-out ones
   against the tuned first stage (:mod:`mentor.rag.rerank_gate`), kept only when it pays;
6. ``calibration``: the refusal threshold (:func:`mentor.rag.calibrate.auto_calibrate`).

Profiles: ``fast`` runs questions (fewer), fusion and calibration; ``full`` runs everything;
``auto`` runs everything whose estimated time (from rates measured on this index: a search,
an embedding) fits what is left of the budget after the cheap steps still to come, and records
why it skipped the rest. Each step's seconds, result and the fingerprint of its inputs (the
manifest and the tuning files it reads) go to ``autotune.json``, written after every step: a
killed run started again reuses every finished step whose inputs did not change.

Run: ``mentor rag index PATHS --index idx`` (tunes after building), or
``mentor rag tune --index idx --profile full``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from mentor.models.protocols import Embedder, Generator
from mentor.rag.index import MANIFEST, Manifest, build_index, chunk_limit, remove_unnamed
from mentor.rag.records import Chunk
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.selfeval import (
    EXAMPLES,
    SELFEVAL,
    SelfEvalSet,
    build_selfeval,
    index_style,
    load_examples,
    save_examples,
)
from mentor.rag.synthetic import QueryStyle, SyntheticQuestion
from mentor.utils.fs import atomic_write_text, remove_tree

AUTOTUNE = "autotune.json"
SCRATCH = ".autotune"
"""Scratch folder inside the index: candidate indexes at other chunk sizes."""
Profile = Literal["auto", "fast", "full"]
PROFILES: tuple[Profile, ...] = ("auto", "fast", "full")
RETUNE_SHARE = 0.2
"""Share of chunks changed since the last tuning above which a re-index tunes again."""
RERANKER = "reranker"
"""The trained reranker's folder inside the index (named relative, so the index can move)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class TuneOptions:
    """What :func:`autotune` runs and how long it may take."""

    profile: Profile = "auto"
    """fast (questions, fusion, calibration), full (every step) or auto (every step whose
    estimate fits the budget)."""
    budget_s: float = 1800.0
    """Seconds the whole run should take (auto skips what would blow it; question writing and
    reranker training stop at their share of it)."""
    questions: int | None = None
    """Chunks to write a synthetic question for (default: 320, of which about 40% are held out:
    fewer left the guard unable to tell a real gain of 0.02 from noise on SciFact; 60 for fast)."""
    chunk_sizes: tuple[int, ...] = (128, 192, 256, 384)
    """Chunk sizes (tokens) the chunk-size step tries, the index's own among them or not (sizes
    above what the embedder reads fall together)."""
    embedder_budget_s: float = 300.0
    """Most seconds for fine-tuning the embedder and re-embedding the corpus (less when the
    budget has less left)."""
    steps_on: tuple[str, ...] = ()
    """Steps run whatever the profile says (and never skipped for time): ``--lexical`` ..."""
    steps_off: tuple[str, ...] = ()
    """Steps never run: ``--no-lexical`` ..."""
    reranker_base: str = "minilm-l6"
    """Encoder the reranker is trained from (registry name or folder)."""
    reranker_minutes: float = 10.0
    """Most minutes of reranker training (less when the budget has less left)."""
    negatives: int = 3
    """Hard negatives per training question of the reranker."""
    reranker_questions: int = 400
    """More synthetic questions written to train the reranker on, for chunks of documents the
    held-out questions do not ask about (so the judge still sees unseen documents); 0: train on
    the tuning questions alone."""
    calibrate: bool = True
    """Run the calibration step (off: a threshold already there is left as it is)."""
    example_queries: tuple[str, ...] = ()
    """A few of the users' own queries (text only, no judgements): when they are statements
    (claims, keywords) the synthetic questions are written in their style; questions keep the
    built-in prompt. Kept beside the index, so later runs use them without being given them
    again; () uses the kept ones, if any."""
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r}: expected one of {', '.join(PROFILES)}")
        if self.budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        if self.questions is not None and self.questions < 2:
            raise ValueError(f"questions must be >= 2, got {self.questions}")
        if not self.chunk_sizes or min(self.chunk_sizes) < 16:
            raise ValueError(f"chunk_sizes must be >= 16 tokens, got {self.chunk_sizes}")
        if both := set(self.steps_on) & set(self.steps_off):
            raise ValueError(f"steps both on and off: {sorted(both)}")

    def question_count(self) -> int:
        return self.questions or (60 if self.profile == "fast" else 320)


class Display(Protocol):
    """Where :func:`autotune` reports (the CLI draws one progress display from it)."""

    def step(self, name: str, number: int, total: int, estimate_s: float | None) -> None:
        """Step ``number`` of ``total`` begins (``estimate_s``: its expected seconds)."""

    def update(self, what: str, done: int, total: int | None) -> None:
        """Progress inside the current step."""

    def note(self, line: str) -> None:
        """A line worth printing: what a step chose, or why it was skipped."""


class Quiet:
    """A :class:`Display` that shows nothing."""

    def step(self, name: str, number: int, total: int, estimate_s: float | None) -> None:
        pass

    def update(self, what: str, done: int, total: int | None) -> None:
        pass

    def note(self, line: str) -> None:
        pass


class SkipStepError(Exception):
    """Raised by a step that cannot run here; the message is the recorded reason."""


@dataclass
class StepRecord:
    """What one step did in a run."""

    name: str
    status: Literal["done", "reused", "skipped", "failed"]
    seconds: float = 0.0
    reason: str = ""
    """Why it was skipped or failed; what it chose when done."""
    result: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    """Fingerprints of its inputs before and after it ran: a later run with either reuses it."""


@dataclass
class AutotuneReport:
    """``autotune.json``: the steps of the last run and what the index was tuned to."""

    profile: str
    budget_s: float
    steps: list[StepRecord]
    settings: dict[str, Any] = field(default_factory=dict)
    """What the index now uses: chunking, search, reranker, refusal threshold."""
    seconds: float = 0.0
    finished: bool = False
    created: str = field(default_factory=_now)
    chunk_digests: list[str] = field(default_factory=list)
    """One short digest per chunk (id and text) when tuned: how much a re-index changed."""

    def save(self, index: Path) -> Path:
        path = index / AUTOTUNE
        atomic_write_text(path, json.dumps(asdict(self), indent=2))
        return path

    def record(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)


def load_report(index: Path) -> AutotuneReport | None:
    """The index's last autotune run, or None when it has none (or an unreadable one)."""
    path = index / AUTOTUNE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        raw["steps"] = [StepRecord(**s) for s in raw["steps"]]
        return AutotuneReport(**raw)
    except (ValueError, TypeError, KeyError):
        return None


def chunk_digests(chunks: Sequence[Chunk]) -> list[str]:
    return sorted(
        hashlib.sha1(f"{c.chunk_id}\0{c.text}".encode(), usedforsecurity=False).hexdigest()[:12]
        for c in chunks
    )


def changed_share(before: Sequence[str], after: Sequence[str]) -> float:
    """Share of chunks not the same in both (1 - kept / the larger count)."""
    if not before and not after:
        return 0.0
    kept = len(set(before) & set(after))
    return 1.0 - kept / max(len(set(before)), len(set(after)))


def needs_tuning(
    index: Path, chunks: Sequence[Chunk], share: float = RETUNE_SHARE
) -> tuple[bool, str]:
    """Whether a re-index should tune again: never tuned, a run left unfinished, or more than
    ``share`` of the chunks changed since the last tuning; with the reason."""
    report = load_report(index)
    if report is None:
        return True, "never tuned"
    if not report.finished:
        return True, "the last tuning did not finish"
    changed = changed_share(report.chunk_digests, chunk_digests(chunks))
    if changed > share:
        return True, f"{changed:.0%} of the chunks changed since it was tuned"
    return False, (
        f"{changed:.0%} of the chunks changed since it was tuned ({report.created}), not above "
        f"{share:.0%}: not tuned again (--retune to force)"
    )


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Context:
    """What the steps share: the index, its opened retriever, the questions, measured rates."""

    index: Path
    embedder: Embedder
    generator: Callable[[], AbstractContextManager[Generator]]
    """Opens the question writer; called only when questions must be written."""
    options: TuneOptions
    display: Display
    started: float = field(default_factory=time.perf_counter)
    selfeval: SelfEvalSet | None = None
    rates: dict[str, float] = field(default_factory=dict)
    _retriever: Retriever | None = None

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(self.index, self.embedder)
        return self._retriever

    def reopen(self) -> None:
        """Forget the opened index (after a step swapped another in)."""
        self._retriever = None
        self.rates.pop("search_s", None)

    def left(self) -> float:
        return self.options.budget_s - (time.perf_counter() - self.started)

    def questions(self) -> SelfEvalSet:
        if self.selfeval is None:
            raise SkipStepError("no synthetic questions (the questions step did not run)")
        return self.selfeval

    def style(self) -> QueryStyle | None:
        """The style of the example queries kept beside the index (None: plain questions)."""
        try:
            return index_style(self.retriever, self.options.seed)
        except ValueError as exc:
            raise SkipStepError(str(exc)) from None

    def search_s(self) -> float:
        """Seconds one default hybrid search takes here (measured on a few questions once)."""
        if "search_s" not in self.rates:
            probes = [q.question for q in (self.selfeval.tuning if self.selfeval else [])[:5]]
            probes = probes or [c.text[:200] for c in self.retriever.chunks[:5]]
            t0 = time.perf_counter()
            for text in probes:
                self.retriever.search(text, SearchConfig())
            self.rates["search_s"] = (time.perf_counter() - t0) / max(len(probes), 1)
        return self.rates["search_s"]

    def embed_s(self) -> float:
        """Seconds to embed one chunk of the index (measured on up to 32 chunks once)."""
        if "embed_s" not in self.rates:
            from mentor.rag.index import embed_input

            sample = [embed_input(c) for c in self.retriever.chunks[:32]]
            t0 = time.perf_counter()
            if sample:
                self.embedder.embed(sample, batch_size=32)
            self.rates["embed_s"] = (time.perf_counter() - t0) / max(len(sample), 1)
        return self.rates["embed_s"]


Run = Callable[[Context], tuple[str, dict[str, Any]]]
"""A step: (a line saying what it chose, its result to record); raises :class:`SkipStepError`."""


@dataclass
class Step:
    """One step of :func:`autotune`."""

    name: str
    run: Run | None
    """None: a slot whose tuner is not in this build (recorded as skipped, ``missing`` why)."""
    profiles: frozenset[str]
    """The profiles that run it."""
    inputs: tuple[str, ...] = ()
    """Files of the index whose content, with the manifest, decides whether it must rerun."""
    estimate: Callable[[Context], float] | None = None
    """Expected seconds from measured rates; ``auto`` skips the step when it does not fit."""
    missing: str = ""


def _fingerprint(index: Path, step: Step, options: TuneOptions) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([step.name, _option_key(step.name, options)]).encode())
    for name in (MANIFEST, *step.inputs):
        path = index / name
        digest.update(name.encode())
        if name == MANIFEST:
            digest.update(_manifest_key(index))
        else:
            digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()[:16]


def _manifest_key(index: Path) -> bytes:
    """The manifest without its time stamp and BM25 folder name (a re-index that changed nothing
    rebuilds BM25 under a new name from the same table version and settings): a re-index that
    changed nothing keeps the key."""
    raw = json.loads((index / MANIFEST).read_text())
    raw.pop("updated", None)
    raw.pop("bm25_dir", None)
    return json.dumps(raw, sort_keys=True).encode()


def _option_key(name: str, options: TuneOptions) -> Any:
    """The options a step's result depends on (a change reruns it)."""
    return {
        "questions": options.question_count(),
        "chunk_size": list(options.chunk_sizes),
        # A run that had no time to train is done all the same: more time must run it again.
        "embedder": options.embedder_budget_s,
        "reranker": [options.reranker_base, options.negatives, options.reranker_questions],
    }.get(name)


def autotune(
    index: Path,
    embedder: Embedder,
    generator: Callable[[], AbstractContextManager[Generator]],
    options: TuneOptions | None = None,
    *,
    steps: Sequence[Step] | None = None,
    display: Display | None = None,
) -> AutotuneReport:
    """Run the tuning steps over ``index`` (see the module docstring) and save
    ``autotune.json``; ``steps`` defaults to :func:`default_steps`."""
    options = options or TuneOptions()
    display = display or Quiet()
    plan = list(steps) if steps is not None else default_steps()
    ctx = Context(index, embedder, generator, options, display)
    if options.example_queries:
        save_examples(index, options.example_queries)
    previous = load_report(index)
    report = AutotuneReport(options.profile, options.budget_s, [])
    if unknown := {*options.steps_on, *options.steps_off} - {s.name for s in plan}:
        raise ValueError(f"no such tuning steps: {sorted(unknown)}")
    chosen = [
        s
        for s in plan
        if (options.profile in s.profiles or s.name in options.steps_on)
        and s.name not in options.steps_off
    ]
    for number, step in enumerate(plan, start=1):
        if step not in chosen:
            why = (
                "turned off"
                if step.name in options.steps_off
                else f"not in the {options.profile} profile"
            )
            report.steps.append(StepRecord(step.name, "skipped", reason=why))
            continue
        key = _fingerprint(index, step, options)
        before = previous.record(step.name) if previous is not None else None
        if step.run is None:
            display.step(step.name, number, len(plan), None)
            record = StepRecord(step.name, "skipped", reason=step.missing or "not in this build")
        elif before is not None and before.status in ("done", "reused") and key in before.keys:
            display.step(step.name, number, len(plan), 0.0)
            record = replace(before, status="reused", seconds=0.0)
            if step.name == "questions":  # the later steps need the questions themselves
                ctx.selfeval = SelfEvalSet.load(index)
        else:
            estimate = _estimate(ctx, step)
            display.step(step.name, number, len(plan), estimate)
            later = chosen[chosen.index(step) + 1 :]
            why = _over_budget(ctx, step, estimate, later)
            record = (
                _run_step(ctx, step, key)
                if not why
                else StepRecord(step.name, "skipped", reason=why)
            )
        report.steps.append(record)
        display.note(_line(record))
        report.seconds = time.perf_counter() - ctx.started
        report.save(index)  # a killed run keeps what is finished
    report.settings = current_settings(index)
    report.chunk_digests = chunk_digests(ctx.retriever.chunks)
    report.seconds = time.perf_counter() - ctx.started
    report.finished = True
    report.save(index)
    return report


def _estimate(ctx: Context, step: Step) -> float | None:
    if step.run is None or step.estimate is None:
        return None
    try:
        return step.estimate(ctx)
    except SkipStepError:
        return None  # the step itself says why when it runs


def _run_step(ctx: Context, step: Step, key: str) -> StepRecord:
    assert step.run is not None
    t0 = time.perf_counter()
    try:
        said, result = step.run(ctx)
    except SkipStepError as exc:
        return StepRecord(step.name, "skipped", time.perf_counter() - t0, str(exc))
    after = _fingerprint(ctx.index, step, ctx.options)
    keys = list(dict.fromkeys([key, after]))
    return StepRecord(step.name, "done", time.perf_counter() - t0, said, result, keys)


def _over_budget(ctx: Context, step: Step, estimate: float | None, later: Sequence[Step]) -> str:
    """Why ``auto`` skips ``step`` (empty: it runs): its estimate does not fit what is left
    after the estimates of the cheap steps after it (those every profile runs)."""
    if ctx.options.profile != "auto" or estimate is None or step.name in FAST_STEPS:
        return ""
    if step.name in ctx.options.steps_on:
        return ""
    reserve = sum(_estimate(ctx, o) or 0.0 for o in later if o.name in FAST_STEPS)
    left = ctx.left() - reserve
    if estimate <= left:
        return ""
    return (
        f"estimated {estimate / 60:.1f} min, {max(left, 0.0) / 60:.1f} min of the "
        f"{ctx.options.budget_s / 60:.0f} min budget left after the later steps "
        "(more --tune-minutes, or --profile full, runs it)"
    )


def _line(record: StepRecord) -> str:
    if record.status == "done":
        return f"{record.name}: {record.reason} ({record.seconds:.0f} s)"
    if record.status == "reused":
        return f"{record.name}: unchanged since the last run, kept ({record.reason})"
    return f"{record.name}: {record.status}: {record.reason}"


def current_settings(index: Path) -> dict[str, Any]:
    """What the index now uses, from its files: chunking, search, reranker, threshold."""
    from mentor.rag.calibrate import load_calibration
    from mentor.rag.rerank_gate import load_decision
    from mentor.rag.tune import load_fusion

    manifest = Manifest.read(index)
    fusion = load_fusion(index)
    try:
        decision = load_decision(index)
    except ValueError:
        decision = None
    calibration = load_calibration(index)
    return {
        "chunk_tokens": manifest.config.chunk_tokens,
        "chunk_overlap": manifest.config.chunk_overlap,
        "search": fusion.setting if fusion is not None else "default hybrid",
        "search_chosen": fusion.chosen if fusion is not None else None,
        "reranker": (
            {"keep": decision.keep, "depth": decision.depth, "gain": decision.gain.value}
            if decision is not None
            else None
        ),
        "threshold": calibration.threshold if calibration is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# The steps

FAST_STEPS = ("questions", "fusion", "calibration")
"""The steps of the fast profile; ``auto`` never skips them for time."""


def default_steps() -> list[Step]:
    """The steps in order.

    A step's ``run`` is ``(ctx) -> (line, result)``: it reads ``ctx.questions()`` (tuning and
    held-out parts), saves its choice beside the index, and calls ``ctx.reopen()`` when it
    changed what the retriever reads (a BM25 rebuilt with other parameters); one that re-embeds
    the index also sets ``ctx.embedder``, so the later steps search with the new one. Its
    ``estimate`` lets ``auto`` skip it for time."""
    every = frozenset(PROFILES)
    deep = frozenset({"auto", "full"})
    return [
        Step("questions", _questions, every, (EXAMPLES,)),
        Step("lexical", _lexical, deep, (SELFEVAL,), _lexical_estimate),
        Step("embedder", _embedder, deep, (SELFEVAL, "lexical.json"), _embedder_estimate),
        Step("chunk_size", _chunk_size, deep, (SELFEVAL,), _chunk_size_estimate),
        Step("fusion", _fusion, every, (SELFEVAL,), _fusion_estimate),
        Step("reranker", _reranker, deep, (SELFEVAL, "fusion.json"), _reranker_estimate),
        Step("calibration", _calibration, every, (SELFEVAL, "fusion.json"), _calibration_estimate),
    ]


def _questions(ctx: Context) -> tuple[str, dict[str, Any]]:
    """The index's synthetic questions: the saved set when every document it asks about is
    still indexed, else written (replies of unchanged chunks come from the cache)."""
    docs = {c.doc_id for c in ctx.retriever.chunks}
    style = ctx.style()
    saved = SelfEvalSet.load(ctx.index)
    asked = [] if saved is None else [*saved.tuning, *saved.held_out]
    if (
        saved is not None
        and saved.tuning
        and saved.held_out
        and {q.doc_id for q in asked} <= docs
        and saved.style == ("" if style is None else style.key)
    ):
        ctx.selfeval = saved
        return _said(saved, "read back"), {"written": False}
    wanted = ctx.options.question_count()
    share = 0.5 if ctx.options.profile == "fast" else 0.35
    ctx.display.update("writing questions", 0, wanted)
    with ctx.generator() as generator:
        made = build_selfeval(
            ctx.index,
            ctx.retriever.chunks,
            generator,
            questions=wanted,
            seed=ctx.options.seed,
            budget_s=max(ctx.left() * share, 1.0),
            progress=lambda done, total: ctx.display.update("writing questions", done, total),
            style=style,
        )
    ctx.selfeval = made
    how = f"written in {made.seconds:.0f} s"
    if style is None and load_examples(ctx.index):
        how += ", as plain questions: the example queries are questions themselves"
    if style is not None:
        shown = len(style.demonstrations)
        how += f", in the style of {shown} example {'query' if shown == 1 else 'queries'}"
    return _said(made, how), {"written": True, "style": made.style}


def _said(made: SelfEvalSet, how: str) -> str:
    return f"{len(made.tuning)} tuning and {len(made.held_out)} held-out questions ({how})"


def _lexical_estimate(ctx: Context) -> float:
    # About 16 BM25 indexes built in memory: 17 s for SciFact's 11,280 chunks on 2 cores.
    return 0.002 * len(ctx.retriever.chunks) + 2.0


def _lexical(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.rag.lexical import describe_setting, tune_lexical

    try:
        result = tune_lexical(
            ctx.index,
            ctx.questions(),
            progress=lambda stage, done, total: ctx.display.update(stage, done, total),
        )
    except ValueError as exc:
        raise SkipStepError(str(exc)) from None
    if result.applied:
        ctx.reopen()  # BM25 was rebuilt with the kept setting
    held = result.held_out_ndcg.get(result.chosen, 0.0)
    return (
        f"{result.chosen}: {describe_setting(result.setting)}, language "
        f"{result.language or 'unknown'} (held-out BM25 nDCG@10 {held:.3f})",
        {"chosen": result.chosen, "setting": result.setting, "applied": result.applied},
    )


def _embedder_budget(ctx: Context) -> float:
    return max(min(ctx.options.embedder_budget_s, ctx.left()), 1.0)


def _embedder_estimate(ctx: Context) -> float:
    """Training plus re-embedding the corpus, at most the embedder's budget; a corpus whose
    re-embedding alone takes more than half of that budget is not worth starting."""
    from mentor.rag.embed_tune import fits_budget

    chunks = len(ctx.retriever.chunks)
    if not fits_budget(chunks, ctx.embed_s(), ctx.options.embedder_budget_s):
        raise SkipStepError(
            f"re-embedding {chunks} chunks would take ~{chunks * ctx.embed_s():.0f} s, over half "
            f"of the embedder's {ctx.options.embedder_budget_s:.0f} s (--embedder-tune runs it "
            "anyway, --embedder-budget-minutes gives it more)"
        )
    return ctx.options.embedder_budget_s


def _embedder(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.models.loading import load_embedder
    from mentor.rag.embed_tune import fits_budget, tune_embedder
    from mentor.rag.index import embedder_location

    chunks = len(ctx.retriever.chunks)
    forced = "embedder" in ctx.options.steps_on
    if not forced and not fits_budget(chunks, ctx.embed_s(), ctx.options.embedder_budget_s):
        _embedder_estimate(ctx)  # raises SkipStepError with the reason
    try:
        result = tune_embedder(
            ctx.index,
            ctx.questions(),
            budget_s=_embedder_budget(ctx),
            device=ctx.options.device,
            progress=lambda stage, done, total: ctx.display.update(stage, done, total),
        )
    except ValueError as exc:
        raise SkipStepError(str(exc)) from None
    manifest = Manifest.read(ctx.index)
    if result.chosen == "tuned":
        location = embedder_location(ctx.index, manifest.config)
        ctx.embedder = load_embedder(location, device=ctx.options.device)
        ctx.reopen()
        ctx.rates.pop("embed_s", None)
    held = ", ".join(f"{n} {v:.3f}" for n, v in result.held_out_ndcg.items()) or "n/a"
    return (
        f"{result.chosen} ({result.reason}; held-out dense nDCG@10 {held}; training "
        f"{result.train_seconds:.0f} s, re-embedding {result.embed_seconds:.0f} s)",
        {"chosen": result.chosen, "embedder": result.embedder},
    )


def _fusion_estimate(ctx: Context) -> float:
    made = ctx.questions()
    return 2 * (len(made.tuning) + len(made.held_out)) * ctx.search_s() + 5.0


def _fusion(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.rag.tune import tune_fusion

    made = ctx.questions()
    try:
        tuned = tune_fusion(
            ctx.retriever,
            made.tuning,
            made.held_out,
            seed=ctx.options.seed,
            progress=lambda stage, done, total: ctx.display.update(stage, done, total),
        )
    except ValueError as exc:
        raise SkipStepError(str(exc)) from None
    tuned.save(ctx.index)
    held = tuned.held_out_ndcg.get(tuned.chosen, 0.0)
    return (
        f"{tuned.chosen} (held-out nDCG@10 {held:.3f})",
        {"chosen": tuned.chosen, "setting": tuned.setting},
    )


def _calibration_estimate(ctx: Context) -> float:
    made = ctx.questions() if ctx.selfeval is not None else None
    count = 40 + (len(made.tuning) + len(made.held_out) if made is not None else 40)
    return count * ctx.search_s() + 2.0


def _calibration(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.rag.calibrate import auto_calibrate, load_calibration

    if not ctx.options.calibrate:
        raise SkipStepError("calibration turned off (--no-calibrate)")
    result = auto_calibrate(ctx.retriever)
    if result is None:
        kept = load_calibration(ctx.index)
        if kept is None:
            raise SkipStepError("nothing to calibrate on")
        return f"the user's threshold kept: {kept.describe()}", {"threshold": kept.threshold}
    return result.describe(), {"threshold": result.threshold}


# chunk size ----------------------------------------------------------------------------------


def chunk_candidates(manifest: Manifest, sizes: Sequence[int], embedder: Embedder) -> list[int]:
    """The sizes to build: those asked, within what the embedder reads, other than the index's
    own (after the same cap)."""
    own = chunk_limit(embedder, manifest.config.chunk_tokens)
    capped = [chunk_limit(embedder, s) for s in sizes]
    return sorted({s for s in capped if s != own})


def _sources(manifest: Manifest) -> list[Path]:
    if not manifest.sources:
        raise SkipStepError(
            "the index does not record the paths it was built from (built before they were "
            "recorded: index it again)"
        )
    paths = [Path(s) for s in manifest.sources]
    gone = [str(p) for p in paths if not p.exists()]
    if gone:
        raise SkipStepError(
            f"the documents are gone from {', '.join(gone[:3])}: cannot re-chunk them"
        )
    return paths


def _chunk_size_estimate(ctx: Context) -> float:
    manifest = Manifest.read(ctx.index)
    _sources(manifest)
    sizes = chunk_candidates(manifest, ctx.options.chunk_sizes, ctx.embedder)
    if not sizes:
        raise SkipStepError("no other chunk size to try")
    made = ctx.questions()
    # Each candidate embeds the same text again (a little more with smaller chunks' overlap),
    # and every index answers each question once.
    rebuild = manifest.chunks * ctx.embed_s() * 1.3
    searches = (len(sizes) + 1) * (len(made.tuning) + len(made.held_out)) * ctx.search_s()
    return len(sizes) * rebuild + searches


def _doc_ndcg(
    retriever: Retriever, questions: Sequence[SyntheticQuestion], depth: int = 100
) -> list[float]:
    """Per-question nDCG@10 (document level) of default hybrid search."""
    from mentor.rag.tune import per_query_ndcg, retrieve_once

    queries = {f"q{i}": q.question for i, q in enumerate(questions)}
    found = retrieve_once(retriever, queries, depth)
    doc_of = {c.chunk_id: c.doc_id for c in retriever.chunks}
    relevant = {f"q{i}": q.doc_id for i, q in enumerate(questions)}
    return per_query_ndcg(found, relevant, doc_of, SearchConfig(candidates=depth))


def _rechunk_progress(ctx: Context, what: str) -> Callable[[str, int, int], None]:
    return lambda _stage, done, total: ctx.display.update(what, done, total)


def _chunk_size(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.rag.tune import simplest_within_noise

    made = ctx.questions()
    if not made.tuning or not made.held_out:
        raise SkipStepError("need tuning and held-out questions")
    manifest = Manifest.read(ctx.index)
    paths = _sources(manifest)
    sizes = chunk_candidates(manifest, ctx.options.chunk_sizes, ctx.embedder)
    if not sizes:
        raise SkipStepError("no other chunk size to try")
    remove_unnamed(ctx.index)
    own = manifest.config.chunk_tokens
    docs = {c.doc_id for c in ctx.retriever.chunks}
    scores = {own: _doc_ndcg(ctx.retriever, made.tuning)}
    folders: dict[int, Path] = {}
    for number, size in enumerate(sizes, start=1):
        folder = ctx.index / SCRATCH / f"chunks-{size}"
        overlap = round(manifest.config.chunk_overlap * size / max(own, 1))
        config = replace(manifest.config, chunk_tokens=size, chunk_overlap=overlap)
        build_index(
            folder,
            paths,
            ctx.embedder,
            config=config,
            sync=True,
            progress=_rechunk_progress(ctx, f"re-chunking at {size} tokens"),
        )
        candidate = Retriever(folder, ctx.embedder)
        if {c.doc_id for c in candidate.chunks} != docs:
            ctx.display.note(
                f"chunk size {size}: the rebuilt index holds other documents; left out"
            )
            continue
        ctx.display.update(f"searching at {size} tokens", number, len(sizes))
        scores[size] = _doc_ndcg(candidate, made.tuning)
        folders[size] = folder
    means = {size: sum(v) / len(v) for size, v in scores.items()}
    best = max(means, key=lambda s: (means[s], s == own))
    result: dict[str, Any] = {"tuning_ndcg": {str(s): m for s, m in means.items()}, "kept": own}
    if best == own:
        remove_tree(ctx.index / SCRATCH)
        return f"{own} tokens kept (best on the tuning questions)", result
    held = {
        "own": _doc_ndcg(ctx.retriever, made.held_out),
        "best": _doc_ndcg(Retriever(folders[best], ctx.embedder), made.held_out),
    }
    chosen, gaps = simplest_within_noise(held, ["own", "best"], seed=ctx.options.seed)
    result["held_out_ndcg"] = {n: sum(v) / len(v) for n, v in held.items()}
    result["held_out_gap"] = [gaps["own"].value, gaps["own"].low, gaps["own"].high]
    if chosen == "own":
        remove_tree(ctx.index / SCRATCH)
        return f"{own} tokens kept ({best} was not better beyond noise on held out)", result
    ctx.reopen()
    swap_in(ctx.index, folders[best])
    remove_tree(ctx.index / SCRATCH)
    result["kept"] = best
    return f"{best} tokens swapped in (was {own})", result


def swap_in(index: Path, candidate: Path) -> None:
    """Make the index at ``index`` serve the chunks of the index at ``candidate``.

    The candidate's table and BM25 folders move into ``index`` under new names, then one
    atomic manifest write points at them: the commit point. Killed before it, the old index is
    whole (:func:`mentor.rag.index.remove_unnamed` removes the moved folders); after it, the new
    one. Every other file of ``index`` (questions, tuning, calibration, reranker) stays."""
    old = Manifest.read(index)
    new = Manifest.read(candidate)
    tag = f"c{new.config.chunk_tokens}-{time.time_ns()}"
    lance, bm25 = f"lance-{tag}", f"bm25-{new.lance_version}-{tag}"
    (candidate / new.lance_dir).rename(index / lance)
    (candidate / new.bm25_dir).rename(index / bm25)
    committed = replace(new, lance_dir=lance, bm25_dir=bm25, sources=old.sources, updated=_now())
    committed.write(index)
    remove_tree(index / old.lance_dir)
    remove_tree(index / old.bm25_dir)


# reranker ------------------------------------------------------------------------------------


def selfeval_questions(
    tuning: Sequence[SyntheticQuestion],
    held_out: Sequence[SyntheticQuestion],
    chunks: Sequence[Chunk],
) -> tuple[dict[str, str], dict[str, set[str]], dict[str, str], dict[str, set[str]]]:
    """Synthetic questions split by document as reranker questions: (tuning texts, their
    positives, held-out texts, their positives). A tuning question's positive is its chunk
    while the index still has it (the passage to train on; ``mine_pairs`` keeps its document's
    other chunks out of the negatives), else its document (after re-chunking). A held-out
    question's positive is its document, so the reranker is judged per document as every other
    tuning step is."""
    ids = {c.chunk_id for c in chunks}

    def positive(q: SyntheticQuestion) -> set[str]:
        return {q.chunk_id} if q.chunk_id in ids else {q.doc_id}

    texts = {f"s{i}": q.question for i, q in enumerate(tuning)}
    positives = {f"s{i}": positive(q) for i, q in enumerate(tuning)}
    held_texts = {f"h{i}": q.question for i, q in enumerate(held_out)}
    held_positives = {f"h{i}": {q.doc_id} for i, q in enumerate(held_out)}
    return texts, positives, held_texts, held_positives


JUDGE_PASSAGE_S = 0.01
"""Assumed seconds to score one passage while judging (a MiniLM cross-encoder on a CPU core);
no reranker is loaded before the step to measure it."""
MIN_TRAIN_S = 60.0
"""Least training time worth starting a reranker with."""


WRITE_S = 1.0
"""Assumed seconds to write one synthetic question when none were written in this run
(SmolLM2-135M in batches of 16 on 2 CPU cores: about 0.6)."""


def _write_s(ctx: Context) -> float:
    made = ctx.questions()
    count = len(made.tuning) + len(made.held_out)
    return made.seconds / count if made.seconds > 0 and count else WRITE_S


def _reranker_estimate(ctx: Context) -> float:
    made = ctx.questions()
    training = len(made.tuning) + ctx.options.reranker_questions
    mining = 2 * (training + len(made.held_out)) * ctx.search_s()
    judging = len(made.held_out) * (ctx.search_s() + 50 * JUDGE_PASSAGE_S)
    writing = ctx.options.reranker_questions * _write_s(ctx)
    return writing + mining + judging + MIN_TRAIN_S


def training_questions(ctx: Context, share: float) -> list[SyntheticQuestion]:
    """``reranker_questions`` more questions for the reranker, about chunks of documents no
    held-out question asks about and not asked about yet; writing stops at ``share`` of the
    time left (replies are cached with the self-evaluation ones: a rerun writes none again)."""
    from mentor.rag.selfeval import REPLIES
    from mentor.rag.synthetic import GROUP, sample_chunks, synthetic_questions

    made = ctx.questions()
    if ctx.options.reranker_questions <= 0:
        return []
    held_docs = {q.doc_id for q in made.held_out}
    asked = {q.chunk_id for q in [*made.tuning, *made.held_out]}
    pool = [
        c for c in ctx.retriever.chunks if c.doc_id not in held_docs and c.chunk_id not in asked
    ]
    picked = sample_chunks(pool, ctx.options.reranker_questions, ctx.options.seed + 1)
    budget = max(ctx.left() * share, 1.0)
    started = time.perf_counter()
    written: list[SyntheticQuestion] = []
    seen = {q.question for q in [*made.tuning, *made.held_out]}
    style = ctx.style()
    with ctx.generator() as generator:
        for start in range(0, len(picked), GROUP):
            group = picked[start : start + GROUP]
            more = synthetic_questions(group, generator, cache=ctx.index / REPLIES, style=style)
            written += [q for q in more.questions if q.question not in seen]
            seen.update(q.question for q in more.questions)
            ctx.display.update(
                "writing questions for the reranker", start + len(group), len(picked)
            )
            if time.perf_counter() - started > budget:
                break
    return written


def _reranker(ctx: Context) -> tuple[str, dict[str, Any]]:
    from mentor.rag.rerank_gate import HELD_OUT, judge_reranker, save_decision, write_questions
    from mentor.rag.reranker import CrossEncoderReranker, mine_pairs, train_reranker
    from mentor.rag.tune import resolve_search

    made = ctx.questions()
    retriever = ctx.retriever
    texts, positives, held_texts, held_positives = selfeval_questions(
        made.tuning, made.held_out, retriever.chunks
    )
    for i, q in enumerate(training_questions(ctx, share=0.35)):
        texts[f"x{i}"], positives[f"x{i}"] = q.question, {q.chunk_id}
    ctx.display.update("mining hard negatives", 0, None)
    negatives = ctx.options.negatives
    pairs = mine_pairs(retriever, texts, positives, negatives_per_query=negatives)
    held_pairs = mine_pairs(retriever, held_texts, held_positives, negatives_per_query=negatives)
    if not pairs or not held_texts:
        raise SkipStepError("no training pairs or no held-out questions")
    judging = len(held_texts) * (ctx.search_s() + 50 * JUDGE_PASSAGE_S)
    cap = ctx.options.reranker_minutes * 60
    if ctx.options.profile == "auto":
        cap = min(cap, max(ctx.left() - judging, MIN_TRAIN_S))
    out = ctx.index / RERANKER
    trained = train_reranker(
        pairs,
        out=out,
        base=ctx.options.reranker_base,
        device=ctx.options.device,
        validation=held_pairs or None,
        max_seconds=cap,
        seed=ctx.options.seed,
        progress=lambda step, total, loss: ctx.display.update(
            f"training the reranker (loss {loss:.3f})", step, total
        ),
    )
    write_questions(out / HELD_OUT, held_texts, held_positives)
    ctx.display.update("judging the reranker on held-out questions", 0, None)
    device = "cpu" if ctx.options.device == "auto" else ctx.options.device
    decision = judge_reranker(
        retriever,
        held_texts,
        held_positives,
        CrossEncoderReranker(out, device=device),
        resolve_search(ctx.index, {}),  # the tuned first stage it must beat
        reranker_name=RERANKER,  # relative to the index: the index may move
        seed=ctx.options.seed,
    )
    save_decision(decision, ctx.index, out)
    return decision.reason(), {
        "keep": decision.keep,
        "depth": decision.depth,
        "gain": decision.gain.value,
        "train_seconds": trained.train_seconds,
        "pairs": trained.pairs,
    }
