"""``mentor rag ...``: index documents, search them, ask questions, evaluate and diagnose."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mentor.models.flags import EngineOpt, VLLMPythonOpt, VLLMUrlOpt, settings_from_flags
from mentor.utils.cli import fail
from mentor.utils.progress import progress_bar

if TYPE_CHECKING:  # the heavy modules load inside the commands: `mentor --help` stays fast
    from rich.progress import Progress

    from mentor.models.backends import EngineSettings
    from mentor.models.generation import EngineGenerator
    from mentor.models.protocols import Embedder, Generator
    from mentor.models.remote import RemoteGenerator
    from mentor.rag.index import Manifest
    from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, Searcher
    from mentor.rag.selfeval import SelfEvalSet
    from mentor.rag.synthetic import QueryStyle
    from mentor.rag.tune import FusionTuning

app = typer.Typer(
    help="Retrieval-augmented generation: index, search, ask, evaluate.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="The index folder.")]
CalibrateOpt = Annotated[
    bool,
    typer.Option(
        "--calibrate/--no-calibrate",
        help="Calibrate the threshold below which `ask` refuses, from the index's own questions "
        "against off-domain ones (a calibration made with `rag calibrate` is kept).",
    ),
]
RerankFusionOpt = Annotated[
    bool,
    typer.Option(
        "--rerank-fusion/--rerank-replace",
        help="Fuse the reranker's order with the first stage's (RRF), or let it replace it.",
    ),
]

UseRerankerOpt = Annotated[
    bool | None,
    typer.Option(
        "--use-reranker/--no-reranker",
        help="Rerank with the index's judged reranker, or not (default: only if it was kept).",
        show_default=False,
    ),
]
RerankDepthOpt = Annotated[
    int | None,
    typer.Option(
        help="Candidates the reranker rescores (default: the judged depth, else 30).", min=1
    ),
]


def _manifest(index: Path) -> Manifest:
    from mentor.rag.index import Manifest

    try:
        return Manifest.read(index)
    except FileNotFoundError:
        raise fail(
            f"{index}: no index here; build one with: mentor rag index PATH --index {index}"
        ) from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def open_retriever(index: Path, device: str = "auto") -> Retriever:
    """The index's retriever behind a spinner, or a clear error when there is no index."""
    from mentor.rag.retrieve import open_retriever as open_index

    manifest = _manifest(index)
    with console.status(f"loading {manifest.config.embedder}"):
        return open_index(index, device=device)


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index (recursively).")],
    index: IndexOpt,
    sync: Annotated[
        bool,
        typer.Option("--sync", help="Also remove documents of PATHS whose files were deleted."),
    ] = False,
    embedder: Annotated[
        str, typer.Option(help="Embedder for a new index (an existing index keeps its own).")
    ] = "minilm-l6",
    chunk_tokens: Annotated[
        int,
        typer.Option(help="Chunk size in the embedder's tokens (capped at what it reads).", min=16),
    ] = 384,
    chunk_overlap: Annotated[
        int, typer.Option(help="Tokens of context repeated between consecutive chunks.", min=0)
    ] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    calibrate: CalibrateOpt = True,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune/--no-tune",
            help="Tune the index after building it (synthetic questions, chunk size, fusion, "
            "reranker, refusal threshold; see --profile); --no-tune only calibrates.",
        ),
    ] = True,
    profile: ProfileOpt = "auto",
    tune_minutes: TuneMinutesOpt = 30.0,
    retune: Annotated[
        bool,
        typer.Option(
            help="Tune again even when under 20% of the chunks changed since the last tuning."
        ),
    ] = False,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Writer of the synthetic questions (tuning).")
    ] = "smollm2-135m-instruct",
    example_queries: ExampleQueriesOpt = None,
) -> None:
    """Index documents (.txt .md .html .pdf .docx, BEIR corpus.jsonl); re-runs embed only what
    changed. A killed run leaves the previous index usable; run again to finish it. The index is
    then tuned in one step within --tune-minutes (a re-run tunes again only when over 20% of
    the chunks changed, or with --retune); --no-tune only calibrates the confidence below which
    `ask` refuses (--no-calibrate: it never refuses)."""
    from mentor.models.loading import load_embedder
    from mentor.rag.index import IndexConfig, build_index

    for path in paths:
        if not path.exists():
            raise fail(f"{path}: no such file or folder")
    examples = _example_queries(example_queries)  # a bad file fails before the build
    config = IndexConfig(embedder=embedder, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
    location = config.embedder
    if (index / "index.json").exists():
        from mentor.rag.index import embedder_location

        config = _manifest(index).config
        location = embedder_location(index, config)  # a fine-tuned one lives in the index
    with console.status(f"loading {config.embedder}"):
        embedding = load_embedder(location, device=device)
    with progress_bar(console) as bar:
        task = bar.add_task("reading files", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = build_index(
            index,
            paths,
            embedding,
            config=config,
            sync=sync,
            progress=report,
            on_problem=lambda line: bar.console.print(
                f"[yellow]skipped[/yellow] {line}", highlight=False, soft_wrap=True
            ),
        )
    for item in result.skipped:
        console.print(
            f"[dim]not indexed (unsupported type)[/dim] {item}", highlight=False, soft_wrap=True
        )
    console.print(
        f"indexed {len(result.indexed)} new or changed documents ({result.chunks_added} chunks), "
        f"{result.unchanged} unchanged, {len(result.removed)} removed, "
        f"{len(result.skipped)} skipped, {len(result.failed)} failed; the index now holds "
        f"{result.documents} documents in {result.chunks} chunks "
        f"({result.seconds:.1f} s, of which embedding {result.embed_seconds:.1f} s)"
    )
    if not result.chunks:
        return
    if tune:
        from mentor.rag.autotune import needs_tuning
        from mentor.rag.retrieve import Retriever
        from mentor.rag.selfeval import load_examples

        due, why = needs_tuning(index, Retriever(index, embedding).chunks)
        restyled = bool(examples) and list(examples) != load_examples(index)
        if due or retune or restyled:
            asked = "asked" if retune else "new example queries"
            console.print(f"tuning the index ({why if due else asked})")
            _autotune(
                index, embedding, model, device, profile, tune_minutes, calibrate,
                examples=examples,
            )  # fmt: skip
            return
        console.print(why, highlight=False)
    elif examples:
        from mentor.rag.selfeval import EXAMPLES, save_examples

        save_examples(index, examples)  # for the tuning run to come
        console.print(f"kept {len(examples)} example queries in {index / EXAMPLES}")
    if calibrate:
        _auto_calibrate(index, embedding)


ExampleQueriesOpt = Annotated[
    Path | None,
    typer.Option(
        help="A few of your users' own queries (one a line, or JSONL with a text, query or "
        "question field; no judgements needed): when they are statements (claims, keywords), "
        "the synthetic queries tuning runs on are written in their style; questions keep the "
        "built-in prompt. Kept in the index for later runs.",
        show_default=False,
    ),
]


def _index_style(retriever: Retriever) -> QueryStyle | None:
    """The style of the example queries kept in the index (None without any), or a clear exit."""
    from mentor.rag.selfeval import index_style

    try:
        return index_style(retriever)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _example_queries(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    from mentor.rag.synthetic import read_example_queries

    try:
        return tuple(read_example_queries(path))
    except ValueError as exc:
        raise fail(str(exc)) from None


ProfileOpt = Annotated[
    str,
    typer.Option(
        help="auto (every step whose measured estimate fits --tune-minutes), fast (questions, "
        "fusion, calibration) or full (every step, reranker included)."
    ),
]
TuneMinutesOpt = Annotated[
    float, typer.Option(help="Time budget of the tuning, in minutes.", min=0.1)
]


class _Shown:
    """The one progress display of a tuning run: the steps with the elapsed time against the
    budget, and the current step's bar with its ETA."""

    def __init__(self, bar: Progress, budget_s: float) -> None:
        self.bar, self.budget_s = bar, budget_s
        self.overall = bar.add_task("tuning", total=None)
        self.current = bar.add_task("", total=None, visible=False)

    def step(self, name: str, number: int, total: int, estimate_s: float | None) -> None:
        guess = f", about {estimate_s / 60:.1f} min" if estimate_s else ""
        self.bar.update(
            self.overall,
            description=f"step {number}/{total}: {name}{guess} (budget "
            f"{self.budget_s / 60:.0f} min)",
            completed=number - 1,
            total=total,
        )
        self.bar.update(self.current, description=name, completed=0, total=None, visible=True)

    def update(self, what: str, done: int, total: int | None) -> None:
        self.bar.update(self.current, description=f"  {what}", completed=done, total=total)

    def note(self, line: str) -> None:
        self.bar.console.print(f"  {line}", highlight=False, soft_wrap=True)


def _autotune(
    index: Path,
    embedder: Embedder,
    model: str,
    device: str,
    profile: str,
    minutes: float,
    calibrate: bool = True,
    settings: EngineSettings | None = None,
    *,
    questions: int | None = None,
    switches: Mapping[str, bool | None] | None = None,
    embedder_budget_s: float | None = None,
    examples: tuple[str, ...] = (),
) -> None:
    """Run :func:`mentor.rag.autotune.autotune` with one progress display; print the outcome.
    ``switches``: step name -> True (run it whatever the profile), False (skip it), None."""
    from dataclasses import replace

    from mentor.rag.autotune import TuneOptions, autotune

    chosen = {name: on for name, on in (switches or {}).items() if on is not None}
    try:
        options = TuneOptions(
            profile=profile,  # type: ignore[arg-type]
            budget_s=minutes * 60,
            questions=questions,
            calibrate=calibrate,
            device=device,
            steps_on=tuple(name for name, on in chosen.items() if on),
            steps_off=tuple(name for name, on in chosen.items() if not on),
            example_queries=examples,
        )
        if embedder_budget_s is not None:
            options = replace(options, embedder_budget_s=embedder_budget_s)
    except ValueError as exc:
        raise fail(str(exc)) from None
    engine = settings or settings_from_flags(None, None, None)
    with progress_bar(console) as bar:
        shown = _Shown(bar, options.budget_s)
        report = autotune(
            index,
            embedder,
            lambda: _generator(model, device, engine),
            options,
            display=shown,
        )
        bar.update(shown.overall, completed=len(report.steps))
    ran = [s for s in report.steps if s.status in ("done", "reused")]
    console.print(
        f"tuned in {report.seconds:.0f} s ({profile} profile): "
        f"{', '.join(s.name for s in ran) or 'nothing'}; skipped: "
        f"{', '.join(s.name for s in report.steps if s.status == 'skipped') or 'none'}; "
        f"saved in {index / 'autotune.json'}",
        highlight=False,
    )


def _auto_calibrate(index: Path, embedder: Embedder) -> None:
    """Recalibrate the refusal threshold from the index's own questions (a second's work);
    a calibration the user made with `rag calibrate --queries` is kept."""
    from mentor.rag.calibrate import auto_calibrate, load_calibration
    from mentor.rag.retrieve import Retriever

    with console.status("calibrating the refusal threshold"):
        result = auto_calibrate(Retriever(index, embedder))
    if result is None:
        kept = load_calibration(index)
        if kept is not None:
            console.print(f"refusal threshold kept: {kept.describe()}", highlight=False)
        return
    console.print(
        f"refusal threshold {result.describe()}; saved to {index / 'calibration.json'}",
        highlight=False,
    )


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    index: IndexOpt,
    k: Annotated[int, typer.Option("-k", help="How many chunks to return.", min=1)] = 5,
    mode: ModeOpt = None,
    rrf_k: RrfKOpt = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="FIELD=VALUE (doc_id, source, title, heading, page); * and ? glob. "
            "Repeat to combine.",
        ),
    ] = None,
    reranker: Annotated[
        Path | None,
        typer.Option(help="A reranker trained by `mentor rag train-reranker`; rescores the top."),
    ] = None,
    use_reranker: UseRerankerOpt = None,
    rerank_depth: RerankDepthOpt = None,
    rerank_fusion: RerankFusionOpt = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Find the chunks that best match QUERY (reranked by --reranker, or by the index's judged
    reranker when it was kept)."""
    from mentor.rag.retrieve import parse_filters

    try:
        parsed = parse_filters(filters or [])
    except ValueError as exc:
        raise fail(str(exc)) from None
    config = _search_config(
        index,
        mode=mode,
        k=k,
        rrf_k=rrf_k,
        dense_weight=dense_weight,
        bm25_weight=bm25_weight,
        rerank_fusion=rerank_fusion,
        filters=parsed,
    )
    retriever = open_retriever(index, device)
    scorer, judged_depth = _chosen_reranker(index, reranker, use_reranker, device)
    config = replace(config, rerank_depth=rerank_depth or judged_depth or config.rerank_depth)
    result = retriever.search(query, config, reranker=scorer)
    if as_json:
        print(
            json.dumps(
                {
                    "query": query,
                    "timings_ms": {s: v * 1000 for s, v in result.timings.items()},
                    "hits": [
                        {
                            "rank": h.rank,
                            "score": h.score,
                            "chunk_id": h.chunk.chunk_id,
                            "doc_id": h.chunk.doc_id,
                            "source": h.chunk.source,
                            "page": h.chunk.page,
                            "title": h.chunk.title,
                            "heading": h.chunk.heading,
                            "stages": h.stages,
                            "text": h.chunk.text,
                        }
                        for h in result.hits
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"{query}  ({sum(result.timings.values()) * 1000:.0f} ms)")
    for column in ("#", "score", "document", "where", "text"):
        table.add_column(column, overflow="fold")
    for hit in result.hits:
        where = hit.chunk.heading or hit.chunk.title
        if hit.chunk.page is not None:
            where += f" (p. {hit.chunk.page})"
        text = " ".join(hit.chunk.text.split())
        table.add_row(
            str(hit.rank),
            f"{hit.score:.3f}",
            hit.chunk.doc_id,
            where,
            text[:220] + ("…" if len(text) > 220 else ""),
        )
    console.print(table)


@app.command("info")
def info_cmd(index: IndexOpt) -> None:
    """What an index holds and how it was built."""
    from mentor.rag.calibrate import load_calibration

    manifest = _manifest(index)
    table = Table(show_header=False, title=str(index))
    rows = {
        "documents": f"{manifest.documents:,}",
        "chunks": f"{manifest.chunks:,}",
        "embedder": f"{manifest.config.embedder} ({manifest.dim}-d)",
        "chunking": f"{manifest.config.chunk_tokens} tokens, {manifest.config.chunk_overlap} "
        "overlap",
        "bm25": f"{manifest.config.analyzer.describe()}, heading "
        f"x{manifest.config.bm25_heading_weight}, k1={manifest.config.bm25_k1}, "
        f"b={manifest.config.bm25_b}",
        "table version": str(manifest.lance_version),
        "updated": manifest.updated,
    }
    from mentor.rag.selfeval import EXAMPLES, SelfEvalSet, load_examples
    from mentor.rag.tune import load_fusion

    tuned = load_fusion(index)
    if tuned is None:
        rows["search"] = "default hybrid (not tuned: mentor rag tune --index ...)"
    else:
        rows["search"] = f"{_describe(tuned.setting)} (tuned: {tuned.chosen}, {tuned.created})"
        rows["held-out nDCG@10"] = ", ".join(
            f"{name} {score:.3f}" for name, score in tuned.held_out_ndcg.items()
        )
    selfeval = SelfEvalSet.load(index)
    if selfeval is not None:
        style = ", in the style of the example queries" if selfeval.style else ""
        rows["synthetic questions"] = (
            f"{len(selfeval.tuning)} tuning, {len(selfeval.held_out)} held out "
            f"(by {selfeval.generator}{style})"
        )
    if examples := load_examples(index):
        rows["example queries"] = f"{len(examples)} kept ({EXAMPLES}; delete it to stop using them)"
    from mentor.rag.autotune import load_report

    tuned_run = load_report(index)
    if tuned_run is not None:
        skipped = [s.name for s in tuned_run.steps if s.status == "skipped"]
        rows["tuning run"] = (
            f"{tuned_run.profile} profile, {tuned_run.created}, {tuned_run.seconds:.0f} s"
            + ("" if tuned_run.finished else " (unfinished: run mentor rag tune again)")
            + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        )
    calibration = load_calibration(index)
    rows["refusal threshold"] = (
        calibration.describe()
        if calibration is not None
        else "none: ask answers every question (mentor rag calibrate, or re-index)"
    )
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def _describe(setting: dict[str, object]) -> str:
    """A tuned setting in a few words."""
    mode = setting["mode"]
    if mode != "hybrid":
        return f"{mode} only"
    if setting["fusion"] == "convex":
        return (
            f"hybrid, convex fusion alpha={setting['alpha']} ({setting['normalization']}), "
            f"{setting['candidates']} candidates"
        )
    return (
        f"hybrid, RRF k={setting['rrf_k']}, weights dense {setting['dense_weight']} / bm25 "
        f"{setting['bm25_weight']}, {setting['candidates']} candidates"
    )


ModeOpt = Annotated[
    str | None,
    typer.Option(help="dense, bm25 or hybrid (default: the index's tuned setting, else hybrid)."),
]
RrfKOpt = Annotated[
    float | None,
    typer.Option(help="k of reciprocal rank fusion (default: tuned, else 60).", min=0),
]
DenseWeightOpt = Annotated[
    float | None, typer.Option(help="Weight of dense ranks in fusion (default: tuned, else 1).")
]
Bm25WeightOpt = Annotated[
    float | None, typer.Option(help="Weight of BM25 ranks in fusion (default: tuned, else 1).")
]


def _search_config(index: Path, **explicit: object) -> SearchConfig:
    """Explicit flags (not None) > the index's tuned setting (`mentor rag tune`) > defaults."""
    from mentor.rag.tune import resolve_search

    try:
        return resolve_search(index, explicit)
    except ValueError as exc:  # a bad --mode, say
        raise fail(str(exc)) from None


@app.command("eval")
def eval_cmd(
    index: IndexOpt,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="BEIR queries.jsonl (with --qrels), or a qa JSONL whose records carry doc_ids "
            "(default: the held-out part of the index's synthetic questions)."
        ),
    ] = None,
    qrels: Annotated[
        Path | None, typer.Option(help="BEIR qrels TSV (query-id, corpus-id, score).")
    ] = None,
    mode: ModeOpt = None,
    rrf_k: RrfKOpt = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    reranker: Annotated[
        Path | None, typer.Option(help="A reranker trained by `mentor rag train-reranker`.")
    ] = None,
    use_reranker: UseRerankerOpt = None,
    rerank_depth: RerankDepthOpt = None,
    rerank_fusion: RerankFusionOpt = True,
    ks: Annotated[str, typer.Option("--ks", help="Cutoffs, comma-separated.")] = "1,3,5,10,100",
    out: Annotated[
        Path | None,
        typer.Option(help="Write the report here (.json for JSON, anything else for markdown)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Without --queries and no synthetic set yet: its writer."
        ),
    ] = "smollm2-135m-instruct",
    questions: QuestionsOpt = 200,
) -> None:
    """Precision, recall, MRR, nDCG and MAP at each cutoff (BEIR/TREC definitions), and
    latency p50/p95 per stage. Without --queries: on the index's own synthetic questions
    (held-out part; written first if the index has none)."""
    from mentor.rag.evaluation import evaluate_retrieval, load_eval_set, write_report
    from mentor.rag.selfeval import SelfEvalSet, as_eval_set

    config = _search_config(
        index,
        mode=mode,
        rrf_k=rrf_k,
        dense_weight=dense_weight,
        bm25_weight=bm25_weight,
        rerank_fusion=rerank_fusion,
    )
    try:
        cutoffs = tuple(int(k) for k in ks.split(","))
        eval_set = load_eval_set(queries, qrels) if queries is not None else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    retriever = open_retriever(index, device)
    if eval_set is None:
        selfeval = SelfEvalSet.load(index)
        if selfeval is None:
            selfeval = _write_selfeval(index, retriever, model, device, questions, None)
        eval_set = as_eval_set(selfeval.held_out)
        if not eval_set.queries:
            raise fail(f"{index}: no held-out synthetic questions; run mentor rag tune again")
        err.print(
            f"synthetic: {len(eval_set.queries)} held-out questions written by "
            f"{selfeval.generator} for the index's own chunks (no human judgements)"
        )
    scorer, judged_depth = _chosen_reranker(index, reranker, use_reranker, device)
    config = replace(config, rerank_depth=rerank_depth or judged_depth or config.rerank_depth)
    with progress_bar(console) as bar:
        task = bar.add_task("evaluating", total=len(eval_set.queries))
        report = evaluate_retrieval(
            retriever,
            eval_set,
            config,
            reranker=scorer,
            ks=cutoffs,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if out is not None:
        write_report(report, out)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console.print(report.to_markdown(), markup=False, highlight=False)


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Generator: a registry name, pulled name or model folder."),
]
RerankerOpt = Annotated[
    Path | None,
    typer.Option(
        help="A reranker trained by `mentor rag train-reranker`; rescores the top candidates."
    ),
]
ExpansionOpt = Annotated[
    str,
    typer.Option(
        help="auto (what `mentor rag tune` measured best, else none), none, multi-query or hyde."
    ),
]


@contextmanager
def _generator(model: str, device: str, settings: EngineSettings) -> Iterator[EngineGenerator]:
    """``model`` on the engine ``settings`` picks (``--engine``), for the block."""
    from mentor.models.backends import open_engine
    from mentor.models.generation import EngineGenerator

    with ExitStack() as stack:
        with console.status(f"loading {model} ({settings.kind} engine)"):
            try:
                engine = stack.enter_context(open_engine(model, settings=settings, device=device))
            except ValueError as exc:
                raise fail(str(exc)) from None
        yield EngineGenerator(engine)


def _hosted(model: str, url: str, key_env: str, rpm: float | None) -> RemoteGenerator:
    """``model`` served by the OpenAI-compatible endpoint at ``url``, answers cached."""
    from mentor.models.remote import EndpointSettings, open_remote

    settings = EndpointSettings(
        base_url=url, model=model, api_key_env=key_env, requests_per_minute=rpm
    )
    return open_remote(settings)


def _reranker(folder: Path | None, device: str) -> Reranker | None:
    if folder is None:
        return None
    from mentor.rag.reranker import CrossEncoderReranker

    return CrossEncoderReranker(folder, device="cpu" if device == "auto" else device)


def _chosen_reranker(
    index: Path, folder: Path | None, use: bool | None, device: str
) -> tuple[Reranker | None, int | None]:
    """The reranker for a search and its depth (:func:`mentor.rag.rerank_gate.chosen_reranker`:
    ``--reranker`` as given; ``--no-reranker`` none; else the index's kept one)."""
    from mentor.rag.rerank_gate import chosen_reranker

    try:
        return chosen_reranker(index, folder, use, device)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _searcher(retriever: Retriever, expansion: str, generator: Generator) -> Searcher:
    from mentor.rag.expansion import make_expander
    from mentor.rag.tune import ExpandingSearcher, load_tuning

    if expansion == "auto":
        tuning = load_tuning(retriever.folder)
        expansion = tuning.expansion if tuning else "none"
    if expansion not in ("none", "multi-query", "hyde"):
        raise fail(f"--expansion {expansion}: expected auto, none, multi-query or hyde")
    return ExpandingSearcher(retriever, make_expander(expansion, generator))  # type: ignore[arg-type]


@app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question to answer from the documents.")],
    index: IndexOpt,
    model: ModelOpt = "smollm2-135m-instruct",
    k: Annotated[int, typer.Option("-k", help="Sources to put in the prompt.", min=1)] = 4,
    mode: ModeOpt = None,
    reranker: RerankerOpt = None,
    use_reranker: UseRerankerOpt = None,
    rerank_depth: RerankDepthOpt = None,
    expansion: ExpansionOpt = "auto",
    threshold: Annotated[
        float | None,
        typer.Option(help="Refuse below this retrieval confidence (default: the calibrated one)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.", min=1)] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
) -> None:
    """Answer QUESTION from the indexed documents, streaming, with numbered citations; refuse
    when retrieval confidence is below the calibrated threshold."""
    import sys

    from mentor.models.protocols import SamplingConfig
    from mentor.rag.answer import ask
    from mentor.rag.calibrate import load_threshold

    config = _search_config(index, mode=mode, k=k)
    settings = settings_from_flags(engine, vllm_url, vllm_python)
    retriever = open_retriever(index, device)
    limit = threshold if threshold is not None else load_threshold(index)
    if config.mode == "bm25" and limit is not None and threshold is None:
        limit = None  # BM25 alone gives no similarity to compare with a calibrated threshold
    scorer, judged_depth = _chosen_reranker(index, reranker, use_reranker, device)
    config = replace(config, rerank_depth=rerank_depth or judged_depth or config.rerank_depth)

    def show(piece: str) -> None:
        if not as_json:
            sys.stdout.write(piece)
            sys.stdout.flush()

    with _generator(model, device, settings) as generator:
        answer = ask(
            _searcher(retriever, expansion, generator),
            generator,
            question,
            search=config,
            reranker=scorer,
            threshold=limit,
            sampling=SamplingConfig(max_new_tokens=max_new_tokens),
            on_token=show,
        )
    if as_json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
        return
    sys.stdout.write("\n")
    for cite in answer.citations:
        page = f", p. {cite.page}" if cite.page is not None else ""
        console.print(
            f"[{cite.number}] {cite.doc_id}{page} ({cite.title})", markup=False, highlight=False
        )
    if not answer.citations and not answer.abstained:
        # The model cited nothing (small ones often don't): show what it was given to read.
        console.print("sources in the prompt (none cited):", style="dim")
        for number, hit in enumerate(answer.hits, start=1):
            page = f", p. {hit.chunk.page}" if hit.chunk.page is not None else ""
            console.print(
                f"[{number}] {hit.chunk.doc_id}{page} ({hit.chunk.title})",
                markup=False,
                highlight=False,
                style="dim",
            )
    for note in answer.notes:
        console.print(f"note: {note}", style="dim", highlight=False)


@app.command("calibrate")
def calibrate_cmd(
    index: IndexOpt,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="In-domain questions: a qa JSONL or BEIR queries.jsonl (default: questions drawn "
            "from the index's own chunks)."
        ),
    ] = None,
    unanswerable: Annotated[
        Path | None,
        typer.Option(
            help="A text file of questions the documents cannot answer, one per line (default: a "
            "built-in off-domain set)."
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="dense or hybrid (BM25 alone gives no comparable confidence).")
    ] = "hybrid",
    reranker: RerankerOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Pick the retrieval-confidence threshold below which `ask` refuses, from data."""
    from mentor.data import QARecord, QueryRecord, read_records
    from mentor.rag.calibrate import (
        OFF_DOMAIN_QUESTIONS,
        SOURCE_CHUNKS,
        SOURCE_USER,
        calibrate,
        questions_from_chunks,
    )
    from mentor.rag.retrieve import SearchConfig

    if mode not in ("dense", "hybrid"):
        raise fail(f"--mode {mode}: expected dense or hybrid")
    retriever = open_retriever(index, device)
    if queries is not None:
        loaded = read_records(queries)
        if loaded.errors:
            raise fail("\n".join(str(p) for p in loaded.errors[:20]))
        answerable = [
            r.data.question if isinstance(r.data, QARecord) else r.data.text
            for r in loaded.records
            if isinstance(r.data, QARecord | QueryRecord)
        ]
    else:
        answerable = questions_from_chunks(retriever.chunks)
    negatives = list(OFF_DOMAIN_QUESTIONS)
    if unanswerable is not None:
        negatives = [line.strip() for line in unanswerable.read_text().splitlines() if line.strip()]
    if not answerable or not negatives:
        raise fail("need at least one answerable and one unanswerable question")
    with console.status(
        f"scoring {len(answerable)} answerable and {len(negatives)} unanswerable questions"
    ):
        result = calibrate(
            retriever,
            answerable,
            negatives,
            search=SearchConfig(mode=mode),  # type: ignore[arg-type]
            reranker=_reranker(reranker, device),
            # the user's own questions are kept by later builds; the default ones are redone
            source=SOURCE_CHUNKS if queries is None and unanswerable is None else SOURCE_USER,
        )
    path = result.save(index)
    console.print(
        f"threshold {result.threshold:.3f} (balanced accuracy {result.balanced_accuracy:.2f}: "
        f"{result.refused_answerable:.0%} of answerable questions would be refused, "
        f"{result.answered_unanswerable:.0%} of unanswerable ones answered); saved to {path}"
    )


@app.command("diagnose")
def diagnose_cmd(
    question: Annotated[str, typer.Argument(help="The question whose answer went wrong.")],
    index: IndexOpt,
    reference: Annotated[
        str | None, typer.Option(help="The answer you expected; makes the diagnosis sharper.")
    ] = None,
    model: ModelOpt = "smollm2-135m-instruct",
    k: Annotated[int, typer.Option("-k", help="Sources to put in the prompt.", min=1)] = 4,
    mode: ModeOpt = None,
    reranker: RerankerOpt = None,
    use_reranker: UseRerankerOpt = None,
    rerank_depth: RerankDepthOpt = None,
    expansion: ExpansionOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
) -> None:
    """Say which stage broke for QUESTION (nothing retrieved, low scores, answer not in the
    sources, generator ignored the context), with the evidence."""
    from mentor.models.protocols import SamplingConfig
    from mentor.rag.calibrate import load_calibration
    from mentor.rag.diagnose import diagnose

    config = _search_config(index, mode=mode, k=k)
    settings = settings_from_flags(engine, vllm_url, vllm_python)
    retriever = open_retriever(index, device)
    scorer, judged_depth = _chosen_reranker(index, reranker, use_reranker, device)
    config = replace(config, rerank_depth=rerank_depth or judged_depth or config.rerank_depth)
    with _generator(model, device, settings) as generator, console.status("running each stage"):
        result = diagnose(
            _searcher(retriever, expansion, generator),
            generator,
            question,
            reference=reference,
            search=config,
            reranker=scorer,
            calibration=load_calibration(index),
            sampling=SamplingConfig(max_new_tokens=256),
        )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console.print(result.render(), markup=False, highlight=False)


QuestionsOpt = Annotated[
    int,
    typer.Option(
        "--questions",
        help="Chunks to write a synthetic question for (stratified by document).",
        min=2,
    ),
]


def _saved_selfeval(index: Path) -> SelfEvalSet | None:
    """The index's saved self-evaluation set when it has questions in both parts."""
    from mentor.rag.selfeval import SelfEvalSet

    saved = SelfEvalSet.load(index)
    return saved if saved is not None and saved.tuning and saved.held_out else None


def _write_selfeval(
    index: Path,
    retriever: Retriever,
    model: str,
    device: str,
    questions: int,
    budget_minutes: float | None,
    settings: EngineSettings | None = None,
) -> SelfEvalSet:
    """The index's synthetic questions, written by ``model`` (cached replies reused), split."""
    from mentor.rag.selfeval import build_selfeval

    style = _index_style(retriever)
    settings = settings or settings_from_flags(None, None, None)
    with _generator(model, device, settings) as generator, progress_bar(console) as bar:
        task = bar.add_task(f"writing questions with {model}", total=questions)
        result = build_selfeval(
            index,
            retriever.chunks,
            generator,
            questions=questions,
            budget_s=None if budget_minutes is None else budget_minutes * 60,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            style=style,
        )
    dropped = ", ".join(f"{n} {why}" for why, n in result.dropped.items()) or "none"
    console.print(
        f"{len(result.tuning)} tuning and {len(result.held_out)} held-out synthetic questions "
        f"(dropped: {dropped}; {result.seconds:.0f} s writing)"
    )
    return result


@app.command("tune")
def tune_cmd(
    index: IndexOpt,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="Judged questions: BEIR queries.jsonl (with --qrels) or a qa JSONL with doc_ids; "
            "with them, query expansion is also decided."
        ),
    ] = None,
    qrels: Annotated[Path | None, typer.Option(help="BEIR qrels TSV.")] = None,
    model: ModelOpt = "smollm2-135m-instruct",
    questions: Annotated[
        int | None,
        typer.Option(
            "--questions",
            help="Chunks to write a synthetic question for, stratified by document (default: 320; "
            "60 in the fast profile).",
            min=2,
            show_default=False,
        ),
    ] = None,
    max_queries: Annotated[
        int, typer.Option(help="Judged questions to measure expansion on.", min=1)
    ] = 40,
    margin: Annotated[
        float, typer.Option(help="nDCG@10 an expansion must gain over none to be turned on.")
    ] = 0.01,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
    calibrate: CalibrateOpt = True,
    profile: Annotated[
        str,
        typer.Option(help="auto, fast or full: the tuning steps run (see `rag index --help`)."),
    ] = "auto",
    tune_minutes: TuneMinutesOpt = 30.0,
    lexical: Annotated[
        bool | None,
        typer.Option(
            "--lexical/--no-lexical",
            help="Tune BM25 to the corpus (language, title weight, k1 and b), kept only where it "
            "beats the default on held-out questions (default: as the profile says).",
            show_default=False,
        ),
    ] = None,
    embedder_tune: Annotated[
        bool | None,
        typer.Option(
            "--embedder-tune/--no-embedder-tune",
            help="Fine-tune the embedder on the tuning questions, kept only if better on the "
            "held-out ones (default: as the profile says, when re-embedding the corpus takes at "
            "most half of --embedder-budget-minutes).",
            show_default=False,
        ),
    ] = None,
    embedder_budget_minutes: Annotated[
        float,
        typer.Option(help="Time for fine-tuning the embedder and re-embedding the corpus.", min=0),
    ] = 5.0,
    example_queries: ExampleQueriesOpt = None,
) -> None:
    """Tune retrieval on synthetic questions the local model writes for the index, each choice
    kept only where it beats the simpler one on held-out questions: BM25, the embedder, chunk
    size, the fusion setting, a reranker, the refusal threshold (the steps of the profile, within
    --tune-minutes); with --queries, also decide query expansion."""
    from mentor.rag.tune import load_fusion

    settings = settings_from_flags(engine, vllm_url, vllm_python)
    examples = _example_queries(example_queries)
    retriever = open_retriever(index, device)
    _autotune(
        index,
        retriever.embedder,
        model,
        device,
        profile,
        tune_minutes,
        calibrate,
        settings,
        questions=questions,
        switches={"lexical": lexical, "embedder": embedder_tune},
        embedder_budget_s=embedder_budget_minutes * 60,
        examples=examples,
    )
    if queries is None:
        return
    retriever = open_retriever(index, device)  # a step may have swapped the table in
    _tune_expansion(index, retriever, queries, qrels, model, device, settings,
                    max_queries, margin, load_fusion(index), calibrate=False)  # fmt: skip


def _tune_expansion(
    index: Path,
    retriever: Retriever,
    queries: Path,
    qrels: Path | None,
    model: str,
    device: str,
    settings: EngineSettings,
    max_queries: int,
    margin: float,
    fusion: FusionTuning | None,
    *,
    calibrate: bool,
) -> None:
    """Decide query expansion on the user's judged questions (`rag tune --queries`)."""
    from mentor.rag.evaluation import load_eval_set
    from mentor.rag.retrieve import SearchConfig
    from mentor.rag.tune import tune_expansion

    try:
        eval_set = load_eval_set(queries, qrels)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with (
        _generator(model, device, settings) as generator,
        console.status("measuring none, multi-query and HyDE"),
    ):
        tuning = tune_expansion(
            retriever,
            eval_set,
            generator,
            SearchConfig() if fusion is None else fusion.apply(SearchConfig()),
            max_queries=max_queries,
            margin=margin,
        )
    tuning.save(index)
    table = Table(title=f"query expansion on {tuning.queries} questions")
    for column in ("expansion", "nDCG@10", "p50 ms"):
        table.add_column(column)
    for name, score in tuning.ndcg_at_10.items():
        table.add_row(name, f"{score:.3f}", f"{tuning.p50_ms[name]:.0f}")
    console.print(table)
    console.print(f"chosen: {tuning.expansion} (saved in {index / 'tuning.json'})")
    if calibrate:
        _auto_calibrate(index, retriever.embedder)


def _judge(
    retriever: Retriever,
    index: Path,
    folder: Path,
    queries: dict[str, str],
    positives: dict[str, set[str]],
    device: str,
    first_stage: SearchConfig | None = None,
) -> None:
    """Judge the reranker at ``folder`` on held-out questions against ``first_stage`` (default:
    the index's search as ``search`` and ``ask`` run it: its tuned fusion, else the default);
    save and print the verdict."""
    from mentor.rag.rerank_gate import judge_reranker, save_decision
    from mentor.rag.reranker import CrossEncoderReranker
    from mentor.rag.tune import resolve_search

    if not queries:
        console.print("no held-out questions: the reranker was not judged (use it with --reranker)")
        return
    scorer = CrossEncoderReranker(folder, device="cpu" if device == "auto" else device)
    with console.status(f"judging the reranker on {len(queries)} held-out questions"):
        decision = judge_reranker(
            retriever,
            queries,
            positives,
            scorer,
            first_stage or resolve_search(index, {}),
            reranker_name=str(folder.resolve()),
        )
    save_decision(decision, index, folder)
    table = Table(title="nDCG@10 on the held-out questions by rerank depth")
    table.add_column("first stage")
    for depth in decision.by_depth:
        table.add_column(f"depth {depth}" + (" (chosen)" if depth == decision.depth else ""))
    table.add_row(f"{decision.first_stage:.3f}", *(f"{v:.3f}" for v in decision.by_depth.values()))
    console.print(table)
    console.print(f"{decision.reason()}; saved in {index / 'reranker.json'}")


@app.command("judge-reranker")
def judge_reranker_cmd(
    index: IndexOpt,
    reranker: Annotated[Path, typer.Option(help="A reranker trained by train-reranker.")],
    questions: Annotated[
        Path | None,
        typer.Option(help="Held-out questions (default: the reranker's held-out-questions.jsonl)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Compare the first stage with and without RERANKER on held-out questions, choose the rerank
    depth, and save whether to use it by default."""
    from mentor.rag.rerank_gate import HELD_OUT, read_questions

    path = questions or reranker / HELD_OUT
    if not path.is_file():
        raise fail(f"{path}: no held-out questions; pass --questions")
    try:
        queries, positives = read_questions(path)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _judge(open_retriever(index, device), index, reranker, queries, positives, device)


@app.command("train-reranker")
def train_reranker_cmd(
    index: IndexOpt,
    out: Annotated[Path, typer.Option(help="Folder to write the trained reranker to.")],
    queries: Annotated[
        Path | None,
        typer.Option(
            help="Judged questions: BEIR queries.jsonl (with --qrels) or a qa JSONL with doc_ids. "
            "Without them, questions are generated for the index's own chunks."
        ),
    ] = None,
    qrels: Annotated[Path | None, typer.Option(help="BEIR qrels TSV.")] = None,
    synthetic: Annotated[
        int,
        typer.Option(
            help="Without --queries: how many chunks to write a synthetic question for.", min=1
        ),
    ] = 300,
    model: ModelOpt = "smollm2-135m-instruct",
    model_url: Annotated[
        str | None,
        typer.Option(
            help="Write the synthetic questions with a hosted --model: its OpenAI-compatible "
            "endpoint (e.g. http://localhost:8000/v1)."
        ),
    ] = None,
    model_key_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding the endpoint's key; '' for a local server "
            "without one."
        ),
    ] = "OPENAI_API_KEY",
    model_rpm: Annotated[
        float | None, typer.Option(help="Requests per minute the endpoint allows.", min=0.001)
    ] = None,
    base: Annotated[
        str, typer.Option(help="Encoder to start from (registry name or folder).")
    ] = "minilm-l6",
    negatives: Annotated[int, typer.Option(help="Hard negatives per question.", min=1)] = 3,
    epochs: Annotated[
        int, typer.Option(help="Most passes over the training pairs (early stopping may end it).")
    ] = 3,
    batch_size: Annotated[int, typer.Option(help="Questions per optimiser step.", min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    max_length: Annotated[
        int,
        typer.Option(
            help="Tokens of question and passage together; 0 measures what the chunks need.",
            min=0,
        ),
    ] = 0,
    patience: Annotated[
        int,
        typer.Option(help="Stop after this many held-out checks without a gain; 0 never.", min=0),
    ] = 2,
    time_budget: Annotated[
        float,
        typer.Option(
            help="Most minutes of training (the loop alone; early stopping usually ends it "
            "sooner); the best weights so far are kept when it runs out.",
            min=0.1,
        ),
    ] = 15.0,
    validation_share: Annotated[
        float,
        typer.Option(
            help="Share of documents (synthetic) or questions (--queries) held out: early "
            "stopping, the rerank depth and the keep-or-drop verdict are measured on them.",
            min=0.0,
            max=0.5,
        ),
    ] = 0.2,
    judge: Annotated[
        bool,
        typer.Option(
            help="After training, compare first stage vs reranker on the held-out questions and "
            "save the verdict with the index (search and ask use a kept reranker by default)."
        ),
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
    reuse_questions: Annotated[
        bool,
        typer.Option(
            "--reuse-questions/--new-questions",
            help="Without --queries: train on the tuning part of the index's self-evaluation "
            "questions (selfeval.json, from `rag tune`) and judge on its held-out part, when it "
            "has them, instead of writing questions of its own.",
        ),
    ] = True,
) -> None:
    """Fine-tune a MiniLM cross-encoder on (question, relevant passage) pairs with hard negatives
    mined from the index: from judgements, or from synthetic questions for unlabelled domains."""
    import random

    from mentor.rag.autotune import selfeval_questions
    from mentor.rag.evaluation import load_eval_set
    from mentor.rag.rerank_gate import HELD_OUT, write_questions
    from mentor.rag.reranker import mine_pairs, train_reranker
    from mentor.rag.synthetic import split_by_document

    settings = settings_from_flags(engine, vllm_url, vllm_python)
    retriever = open_retriever(index, device)
    if queries is not None:
        try:
            eval_set = load_eval_set(queries, qrels)
        except ValueError as exc:
            raise fail(str(exc)) from None
        texts = eval_set.queries
        positives = {q: {d for d, r in rel.items() if r > 0} for q, rel in eval_set.qrels.items()}
    elif reuse_questions and (selfeval := _saved_selfeval(index)) is not None:
        texts, positives, held_texts, held_positives = selfeval_questions(
            selfeval.tuning, selfeval.held_out, retriever.chunks
        )
        console.print(
            f"the index's synthetic questions: {len(texts)} to train on, {len(held_texts)} held "
            f"out (by {selfeval.generator}; --new-questions writes others)"
        )
    else:
        from mentor.models.remote import RemoteError
        from mentor.rag.synthetic import synthetic_questions

        style = _index_style(retriever)
        generator: Generator
        hosted: RemoteGenerator | None = None
        local = ExitStack()  # the local model's engine (a vLLM server) closes after the questions
        if model_url is None:
            generator = local.enter_context(_generator(model, device, settings))
        else:
            try:
                generator = hosted = _hosted(model, model_url, model_key_env, model_rpm)
            except (RemoteError, ValueError) as exc:
                raise fail(str(exc)) from None
        with local, progress_bar(console) as bar:
            task = bar.add_task(f"writing questions with {model}", total=synthetic)
            written = synthetic_questions(
                retriever.chunks,
                generator,
                max_chunks=synthetic,
                cache=out.with_name(out.name + ".questions.jsonl"),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                style=style,
            )
        if hosted is not None:  # what the endpoint cost: requests, cached answers, tokens
            console.print(f"{hosted.settings.label}: {hosted.tally.summary()}")
            hosted.close()
        train_q, held_q = split_by_document(written.questions, validation_share, seed=0)
        texts, positives, held_texts, held_positives = selfeval_questions(
            train_q, held_q, retriever.chunks
        )
        dropped = ", ".join(f"{n} {why}" for why, n in written.dropped.items()) or "none"
        console.print(
            f"{len(written.questions)} synthetic questions kept (dropped: {dropped}; "
            f"{written.reused} read back from an earlier run); {len(held_q)} of them, on "
            f"{len({q.doc_id for q in held_q})} documents, held out"
        )
    if queries is not None:
        ids = sorted(texts)
        random.Random(0).shuffle(ids)
        cut = int(len(ids) * validation_share)
        held_texts = {q: texts[q] for q in ids[:cut]}
        held_positives = {q: positives.get(q, set()) for q in ids[:cut]}
        texts = {q: texts[q] for q in ids[cut:]}
    with console.status("mining hard negatives from the index"):
        pairs = mine_pairs(retriever, texts, positives, negatives_per_query=negatives)
        held_pairs = mine_pairs(
            retriever, held_texts, held_positives, negatives_per_query=negatives
        )
    if not pairs:
        raise fail("no training pairs: check that the judged documents are in the index")
    with progress_bar(console) as bar:
        task = bar.add_task("training", total=None)

        def report(step: int, total: int, loss: float) -> None:
            bar.update(task, description=f"training (loss {loss:.3f})", completed=step, total=total)

        result = train_reranker(
            pairs,
            out=out,
            base=base,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_length=max_length or None,
            device=device,
            validation=held_pairs or None,
            patience=patience or None,
            max_seconds=time_budget * 60,
            progress=report,
        )
    mrr = ""
    if result.mrr_before is not None and result.mrr_after is not None:
        mrr = (
            f"; validation MRR of the positive among its negatives {result.mrr_before:.3f} "
            f"-> {result.mrr_after:.3f}"
        )
    stop = f", stopped early ({result.stopped}) with step {result.best_step}" * bool(result.stopped)
    console.print(
        f"trained on {result.pairs} questions at {result.max_length} tokens in "
        f"{result.train_seconds:.0f} s ({result.pairs_per_second:.1f}/s){stop}, final loss "
        f"{result.final_loss:.3f}{mrr}; saved to {out}"
    )
    write_questions(out / HELD_OUT, held_texts, held_positives)
    if judge:
        _judge(retriever, index, out, held_texts, held_positives, device)
