"""``mentor distill``: a student learns from a teacher (logits or generated answers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mentor.models.flags import EngineOpt, VLLMPythonOpt, VLLMUrlOpt, engine_overrides
from mentor.utils.cli import (
    GradientCheckpointingOpt,
    OverlongOpt,
    ReportToOpt,
    StrategyOpt,
    checkpointing_setting,
    fail,
)

console = Console()
err = Console(stderr=True)


def distill_cmd(
    teacher: Annotated[
        str | None, typer.Option(help="The model to learn from: registry name, folder, hf:ID.")
    ] = None,
    teacher_url: Annotated[
        str | None,
        typer.Option(
            help="A hosted teacher: the OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) "
            "serving --teacher; sequence distillation only."
        ),
    ] = None,
    teacher_key_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the endpoint's key [OPENAI_API_KEY]; '' for a "
            "local server without one."
        ),
    ] = None,
    teacher_rpm: Annotated[
        float | None, typer.Option(help="Requests per minute the endpoint allows.")
    ] = None,
    student: Annotated[
        str | None, typer.Option(help="The model that learns [smollm2-135m-instruct].")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Chat or qa JSONL: training conversations (logits) or prompts."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="logits (same tokenizer) or sequence (teacher's answers) [logits]."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A run YAML (see examples/distill); flags override it.")
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help="Held-out set: teacher and student are compared on it."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder [runs/distill].")] = None,
    unlabelled: Annotated[
        Path | None, typer.Option(help="Classifiers: extra unlabelled texts for soft labels.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")
    ] = False,
    keep_every: Annotated[
        int | None,
        typer.Option(help="Build the student from every k-th teacher layer instead."),
    ] = None,
    student_method: Annotated[
        str | None, typer.Option(help="full or lora training of the student [full].")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Weight of CE on the data; 1-alpha on KD [0.5].")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="KD temperature tau [2].")] = None,
    divergence: Annotated[
        str | None, typer.Option(help="forward_kl, reverse_kl or jsd [forward_kl].")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(help="Cache the teacher's top-k log-probs once [32]; 0 runs it online."),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Teacher cache folder.")] = None,
    similarity_embedder: Annotated[
        str | None,
        typer.Option(help="Embedder of the report's answer-similarity column ('' skips it)."),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data [3].")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate [2e-4].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per micro-batch [8].")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest example in tokens.")] = None,
    overlong: OverlongOpt = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Longest teacher answer (sequence) [256].")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16 or fp32.")] = None,
    strategy: StrategyOpt = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps [50].")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N steps [50].")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Compare on at most N examples.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed [0].")] = None,
    gradient_checkpointing: GradientCheckpointingOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Distil TEACHER into STUDENT on DATA, save the student and write the teacher-student
    report (retention, agreement, similarity, size and speed) under --out. Runs unchanged
    under torchrun for several GPUs."""
    from mentor.distill.config import load_config

    if config is None and (teacher is None or data is None):
        raise fail("give --teacher and --data (or --config distill.yaml)")
    overrides = {
        "teacher": teacher,
        "teacher_endpoint.base_url": teacher_url,
        "teacher_endpoint.api_key_env": teacher_key_env,
        "teacher_endpoint.requests_per_minute": teacher_rpm,
        "student": student,
        "data": str(data) if data else None,
        "method": method,
        "eval": str(eval_data) if eval_data else None,
        "out": str(out) if out else None,
        "unlabelled": str(unlabelled) if unlabelled else None,
        "keep_every": keep_every,
        "student_method": student_method,
        "max_length": max_length,
        "overlong": overlong,
        "device": device,
        "eval_limit": eval_limit,
        "kd.alpha": alpha,
        "kd.temperature": temperature,
        "kd.divergence": divergence,
        "kd.top_k": top_k,
        "kd.cache_dir": str(cache_dir) if cache_dir else None,
        "similarity_embedder": similarity_embedder,
        "generation.max_new_tokens": max_new_tokens,
        "train.epochs": epochs,
        "train.max_steps": max_steps,
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.precision": precision,
        "train.strategy": strategy,
        "train.save_every": save_every,
        "train.eval_every": eval_every,
        "train.seed": seed,
        "train.gradient_checkpointing": checkpointing_setting(gradient_checkpointing),
        **engine_overrides(engine, vllm_url, vllm_python),
        "report_to": report_to or None,
    }
    try:
        settings = load_config(config, overrides)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not str(settings.data).startswith("hf:") and not settings.data.exists():
        raise fail(f"{settings.data}: no such file or folder")

    from mentor.distill.recipe import run_distill
    from mentor.models.hub import NotPulledError, PullError
    from mentor.models.registry import UnknownModelError
    from mentor.models.remote import RemoteError
    from mentor.models.sources import SourceError
    from mentor.train.checkpoint import run_folder_problem
    from mentor.train.data import DataError
    from mentor.train.trainer import TrainingDivergedError
    from mentor.utils.tracking import report_outputs, run_name, tracking

    problem = run_folder_problem(settings.out, resume)
    if problem:
        raise fail(problem)
    try:
        classify = _is_classification(settings.data)
        if classify and settings.teacher_endpoint is not None:
            raise fail("a hosted teacher only writes answers; a classifier needs its logits")
        with tracking(
            settings.report_to,
            run_dir=settings.out,
            name=run_name("distill", settings.out),
            config=json.loads(settings.model_dump_json()),
            console=err,
        ) as tracker:
            if classify:
                from mentor.distill.classify import run_classifier_distill

                saved = run_classifier_distill(
                    settings, resume=resume, console=err, tracker=tracker
                ).model_dir
            else:
                saved = run_distill(settings, resume=resume, console=err, tracker=tracker).saved
            report_outputs(tracker, settings.out, saved)
    except (DataError, TrainingDivergedError) as exc:
        raise fail(str(exc)) from None
    except (
        UnknownModelError,
        NotPulledError,
        PullError,
        SourceError,
        RemoteError,
        ValueError,
    ) as exc:
        raise fail(str(exc)) from None
    report = settings.out / "report.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)
    console.print(f"saved {saved}; report {report}")


def _is_classification(data: Path) -> bool:
    from mentor.data.io import read_records

    return read_records(data).schema == "classification"
