"""``mentor quantize``: int8 or int4 weights, saved with a report of what it cost and saved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mentor.utils.cli import fail

console = Console()
err = Console(stderr=True)


def quantize_cmd(
    model: Annotated[str, typer.Argument(help="Registry name (smollm2-135m-instruct) or folder.")],
    to: Annotated[
        str, typer.Option("--to", help="int8 (dynamic) or int4 (weight-only, per group).")
    ],
    adapter: Annotated[
        Path | None, typer.Option(help="LoRA adapter folder merged into the base first.")
    ] = None,
    group_size: Annotated[
        int, typer.Option(help="int4: inputs per scale (32, 64, 128, 256 are fast on CPU).")
    ] = 128,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: runs/quantize/MODEL-TO).")
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help="Held-out chat/qa JSONL: task metrics of both models."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Score at most N held-out examples.")] = None,
    text: Annotated[
        Path | None,
        typer.Option(help="Held-out text for perplexity (default: packaged English sample)."),
    ] = None,
    new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt when timing.")] = 32,
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest answer to a held-out example.")
    ] = 128,
    smooth: Annotated[
        bool,
        typer.Option(
            "--smooth/--no-smooth", help="int8: calibrate SmoothQuant factors against outliers."
        ),
    ] = True,
    alpha: Annotated[
        float, typer.Option(help="SmoothQuant strength, 0-1 (how much moves to the weights).")
    ] = 0.5,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Calibration text for SmoothQuant (default: packaged text)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Device to quantize and measure on.")] = "cpu",
) -> None:
    """Quantize MODEL (optionally with a LoRA adapter merged) to int8 or int4, save it under
    --out and report size on disk and in memory, latency, throughput, perplexity and (with
    --eval) task metrics against the fp32 model. Load it with mentor.quantize.load_quantized."""
    from mentor.models.hub import NotPulledError, PullError
    from mentor.models.registry import UnknownModelError
    from mentor.models.sources import SourceError
    from mentor.quantize.recipe import QuantizeSettings, run_quantize

    try:
        settings = QuantizeSettings(
            model=model,
            method=to,
            group_size=group_size,
            adapter=adapter,
            out=out,
            eval=eval_data,
            limit=limit,
            text=text,
            smooth=smooth,
            alpha=alpha,
            calibration=calibration,
            device=device,
            new_tokens=new_tokens,
            max_new_tokens=max_new_tokens,
        )
        result = run_quantize(settings, console=err)
    except UnknownModelError as exc:
        raise fail(str(exc.args[0]) if exc.args else str(exc)) from None
    except (NotPulledError, PullError, SourceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    console.print(result.report.to_markdown(), markup=False, highlight=False)
    console.print(f"saved {result.folder}; report {result.folder / 'report.md'}")


def export_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="Registry name, model folder (base, merged, fine-tuned, distilled) or a "
            "`mentor quantize` folder; with --adapter, the base the adapter was trained on."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The GGUF file to write.")],
    to: Annotated[str, typer.Option("--to", help="Format to export to (gguf).")] = "gguf",
    gguf_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="f32, f16, q8_0, q4_1 or q4_0 (default q8_0; an adapter: f16 or f32). An int4 "
            "folder goes to q4_1 and an int8 one to q8_0 with its codes unchanged.",
        ),
    ] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(help="LoRA adapter folder: written as a GGUF LoRA for llama.cpp (--lora)."),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="With --adapter: merge it into the model instead.")
    ] = False,
    modelfile: Annotated[
        bool, typer.Option("--modelfile", help="Also write an Ollama Modelfile next to --out.")
    ] = False,
    tokenizer_from: Annotated[
        Path | None,
        typer.Option(help="GGUF whose tokenizer to copy (default: the one MODEL came from)."),
    ] = None,
) -> None:
    """Export MODEL (or a LoRA adapter for it) to one GGUF file for llama.cpp, Ollama or LM
    Studio; --modelfile adds an Ollama Modelfile with the chat template."""
    from mentor.models.hub import NotPulledError, PullError
    from mentor.models.loading import resolve_model_path
    from mentor.models.registry import UnknownModelError
    from mentor.models.sources import SourceError
    from mentor.quantize.export import export_lora, export_model, write_modelfile

    if to != "gguf":
        raise fail(f"--to {to!r}: only gguf is exported")
    try:
        folder = resolve_model_path(model, log=lambda line: err.print(line))
        if adapter is not None and not merge:
            if modelfile:
                raise ValueError("--modelfile is for a model; an adapter goes in the base's one")
            result = export_lora(adapter, folder, out, gguf_type or "f16")
        else:
            result = export_model(
                folder,
                out,
                gguf_type or "q8_0",
                name=Path(model).name,
                tokenizer_from=tokenizer_from,
                merge=adapter if merge else None,
            )
            if modelfile:
                result.modelfile = write_modelfile(result, folder)
    except UnknownModelError as exc:
        raise fail(str(exc.args[0]) if exc.args else str(exc)) from None
    except (NotPulledError, PullError, SourceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.tensors.items()))
    console.print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB; tensors: {kinds})")
    if result.exact:
        console.print(f"{result.exact} quantized tensors carried over with mentor's own codes")
    if result.tokenizer:
        console.print(f"tokenizer from {result.tokenizer}")
    if result.modelfile is not None:
        console.print(f"Ollama: cd {result.path.parent} && ollama create NAME -f Modelfile")
