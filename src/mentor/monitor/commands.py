"""``mentor monitor ...``: read the server's request log; report figures, drift and alerts.

mentor monitor report --log requests.db --out monitor-report
mentor monitor report --log requests.db --recent-hours 24 --fail-on-alert   # for cron
mentor monitor tail --log requests.db -n 20
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mentor.utils.cli import fail

if TYPE_CHECKING:
    from mentor.monitor.report import MonitorReport

app = typer.Typer(
    help="Monitor a running server: its request log, latency, refusals and query drift.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

LogOpt = Annotated[Path, typer.Option("--log", help="The server's request log (a SQLite file).")]
_WHEN = "unix seconds or an ISO time, UTC unless it says otherwise"


def _time_option(what: str) -> typer.models.OptionInfo:
    return typer.Option(help=f"{what}: {_WHEN}.")  # type: ignore[no-any-return]


def parse_time(value: str | None, option: str) -> float | None:
    """Unix seconds from ``value``: a number, or an ISO 8601 time (naive means UTC)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option}: expected unix seconds or an ISO time such as 2025-05-01T13:00, "
            f"got {value!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@app.command("report")
def report_cmd(
    log: LogOpt,
    out: Annotated[
        Path, typer.Option(help="Folder for report.json, report.md and the plots.")
    ] = Path("monitor-report"),
    since: Annotated[str | None, _time_option("Only requests from this time")] = None,
    until: Annotated[str | None, _time_option("Only requests before this time")] = None,
    recent_hours: Annotated[
        float | None,
        typer.Option(help="Recent window: the last H hours before the newest request.", min=0),
    ] = None,
    recent_share: Annotated[
        float | None,
        typer.Option(
            help="Recent window: the newest share of requests (default 0.2).", min=0, max=1
        ),
    ] = None,
    reference_share: Annotated[
        float, typer.Option(help="Reference window: the oldest share of requests.", min=0, max=1)
    ] = 0.5,
    reference_since: Annotated[str | None, _time_option("Reference window start")] = None,
    reference_until: Annotated[str | None, _time_option("Reference window end")] = None,
    recent_since: Annotated[
        str | None, _time_option("Recent window start (overrides --recent-hours/--recent-share)")
    ] = None,
    recent_until: Annotated[str | None, _time_option("Recent window end")] = None,
    embedder: Annotated[
        str, typer.Option(help="Embedder for the drift test (registry name or folder).")
    ] = "minilm-l6",
    drift: Annotated[
        bool, typer.Option("--drift/--no-drift", help="Test the queries for drift.")
    ] = True,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or mps (for the embedder).")
    ] = "auto",
    permutations: Annotated[
        int, typer.Option(help="Shuffles for the drift test's p-value.", min=1)
    ] = 500,
    max_queries: Annotated[
        int, typer.Option(help="Queries per window for the drift test (subsampled).", min=2)
    ] = 1000,
    min_queries: Annotated[
        int, typer.Option(help="Fewer queries per window and drift is not tested.", min=2)
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the drift test.")] = 0,
    max_p95_latency: Annotated[
        float, typer.Option(help="Alert above this p95 latency, seconds.")
    ] = 10.0,
    max_error_rate: Annotated[float, typer.Option(help="Alert above this error rate.")] = 0.05,
    max_refusal_rate: Annotated[
        float, typer.Option(help="Alert above this share of refused answers.")
    ] = 0.3,
    min_retrieval_score: Annotated[
        float | None,
        typer.Option(
            help="Top-1 score under which a retrieval is weak (default: the reference "
            "window's 10th percentile)."
        ),
    ] = None,
    max_low_retrieval_share: Annotated[
        float, typer.Option(help="Alert above this share of weak retrievals.")
    ] = 0.25,
    drift_p_value: Annotated[
        float, typer.Option(help="Alert (queries drifted) below this p-value.")
    ] = 0.01,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit with code 1 when any alert fires.")
    ] = False,
) -> None:
    """Volume, latency, tokens, retrieval scores, refusals and query drift of the logged
    requests, recent window against reference; alerts say what to do."""
    from mentor.monitor.files import write_report
    from mentor.monitor.log import read_records
    from mentor.monitor.report import DriftSettings, Thresholds, Windows, analyse

    if recent_hours is not None and recent_share is not None:
        raise fail("give --recent-hours or --recent-share, not both")
    try:
        windows = Windows(
            recent_hours=recent_hours,
            recent_share=0.2 if recent_share is None else recent_share,
            reference_share=reference_share,
            reference_since=parse_time(reference_since, "--reference-since"),
            reference_until=parse_time(reference_until, "--reference-until"),
            recent_since=parse_time(recent_since, "--recent-since"),
            recent_until=parse_time(recent_until, "--recent-until"),
        )
        records = read_records(log, parse_time(since, "--since"), parse_time(until, "--until"))
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    model = None
    if drift:
        from mentor.models.loading import load_embedder

        with console.status(f"loading {embedder}"):
            model = load_embedder(embedder, device=device)
    thresholds = Thresholds(
        max_p95_latency_s=max_p95_latency,
        max_error_rate=max_error_rate,
        max_refusal_rate=max_refusal_rate,
        min_retrieval_score=min_retrieval_score,
        max_low_retrieval_share=max_low_retrieval_share,
        drift_p_value=drift_p_value,
    )
    settings = DriftSettings(
        permutations=permutations, max_samples=max_queries, min_queries=min_queries, seed=seed
    )
    try:
        with console.status(f"analysing {len(records)} requests"):
            analysis = analyse(
                records,
                embedder=model,
                windows=windows,
                thresholds=thresholds,
                drift=settings,
                source=str(log),
            )
            written = write_report(analysis, out)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _print(analysis.report)
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if fail_on_alert and analysis.report.alerts:
        raise typer.Exit(1)


def _print(report: MonitorReport) -> None:
    from mentor.monitor.report import summary_rows

    windows = [w for w in (report.overall, report.reference, report.recent) if w is not None]
    table = Table(title=f"Requests in {report.source}")
    table.add_column("", no_wrap=True)
    for window in windows:
        table.add_column(window.name, justify="right")
    for name, values in summary_rows(report):
        table.add_row(name, *values)
    console.print(table)
    colour = "red" if report.drift and report.drift.drifted else "green" if report.drift else "dim"
    console.print(f"drift: [{colour}]{report.drift_verdict}[/{colour}]", highlight=False)
    if not report.alerts:
        console.print("[green]no alerts[/green]")
    for alert in report.alerts:
        console.print(f"[red]ALERT[/red] {alert.message}", highlight=False, soft_wrap=True)
        console.print(f"      -> {alert.action}", highlight=False, soft_wrap=True)


@app.command("tail")
def tail_cmd(
    log: LogOpt,
    n: Annotated[int, typer.Option("-n", help="How many of the newest requests.", min=1)] = 20,
) -> None:
    """The newest logged requests, one line each."""
    from mentor.monitor.log import read_records

    try:
        records = read_records(log)[-n:]
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    table = Table()
    for column in ("time (UTC)", "endpoint", "model", "status", "latency s", "top-1", "refused"):
        table.add_column(column)
    table.add_column("query", overflow="ellipsis", max_width=60)
    for r in records:
        top1 = f"{r.retrieval_scores[0]:.3f}" if r.retrieval_scores else "-"
        table.add_row(
            datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.endpoint,
            r.model,
            str(r.status),
            f"{r.latency_s:.3f}" if math.isfinite(r.latency_s) else "-",
            top1,
            "-" if r.refused is None else "yes" if r.refused else "no",
            (r.query or "").replace("\n", " "),
        )
    console.print(table)
