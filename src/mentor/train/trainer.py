"""The training loop: AdamW, warmup then cosine, accumulation, clipping, bf16, validation with early
stopping, checkpoints that resume exactly, and the same loop on N processes under DDP or FSDP
(``strategy``; see :mod:`mentor.train.sharding`).

The loop trains an *objective*: an ``nn.Module`` whose ``forward(**batch tensors)`` returns the
loss *summed* over the batch's targets (tokens, or examples for a classifier). Summing lets the
loop divide by the number of targets in the whole optimizer step, across micro-batches and
processes, so 2 processes x batch 4 take exactly the step 1 process x batch 8 takes.

Data order is a pure function of (seed, epoch), and a checkpoint stores the step, so a resumed
run sees the same batches, the same dropout masks and the same optimizer state as one that never
stopped. Run: see :mod:`mentor.finetune.recipe` (``mentor finetune``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.progress import TextColumn
from safetensors.torch import load_file, save_file
from torch import nn

from mentor.train.checkpoint import (
    CheckpointWriter,
    TrainerState,
    latest,
    load_checkpoint,
    load_trainable,
    trainable_state,
)
from mentor.train.distributed import World
from mentor.train.sharding import full_trainable_state, global_norm, shard, unshard
from mentor.utils.fs import atomic_path, atomic_write_text
from mentor.utils.progress import progress_bar
from mentor.utils.tracking import Tracker


class TrainSettings(BaseModel):
    """How to train; the same fields as the ``train:`` section of a run YAML."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=8, ge=1, description="Rows per micro-batch per process.")
    grad_accum: int = Field(
        default=1, ge=1, description="Micro-batches summed into one optimizer step."
    )
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    warmup: float = Field(
        default=0.05, ge=0, lt=1, description="Share of the steps spent warming the rate up."
    )
    min_lr_ratio: float = Field(
        default=0.1, ge=0, le=1, description="The cosine ends at this share of the peak rate."
    )
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip the gradient to this L2 norm (None: no clipping)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="auto: bf16 autocast where the hardware runs it fast (AMX CPUs, recent "
        "GPUs), else fp32. Weights being trained stay in fp32.",
    )
    eval_every: int = Field(
        default=50, ge=1, description="Validate every N steps (and at the end)."
    )
    patience: int | None = Field(
        default=3,
        ge=1,
        description="Stop after this many validations without a better loss (None: never).",
    )
    save_every: int = Field(default=50, ge=1, description="Checkpoint every N steps.")
    keep: int = Field(default=2, ge=1, description="Checkpoints kept on disk (newest).")
    seed: int = Field(default=0, description="Seed of data order, dropout and initialisation.")
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="How several processes (torchrun) share the work. ddp: every process holds "
        "the whole model, gradients and optimizer state. fsdp: each holds 1/N of them "
        "(FSDP2), gathering a block's weights only while it runs; for models whose training "
        "state does not fit one GPU. The same losses either way.",
    )
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        default="adamw",
        description="adamw: torch's AdamW, fp32 moments (8 bytes a trained weight); adamw_8bit: "
        "bitsandbytes' blockwise 8-bit moments (2 bytes); paged_adamw_8bit: the same in CUDA "
        "unified memory, paged to the CPU when the GPU runs short (CUDA only). The 8-bit ones "
        "need bitsandbytes (pip install mentor[qlora]).",
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Recompute each transformer block's activations in backward instead of "
        "keeping them: most of the activation memory saved for about a third more compute, the "
        "same losses and gradients. auto: on when the step's memory estimate exceeds what the "
        "device has free.",
    )

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads a bare ``on``/``off`` as true/false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    def fingerprint(self, rows: int, world_size: int) -> str:
        """What must not change between a run and its resume (the strategy is the checkpoint's
        format, checked when it is read; checkpointing changes no result)."""
        fixed = self.model_dump(
            exclude={
                "save_every", "keep", "eval_every", "patience", "strategy",
                "gradient_checkpointing",
            }
        )  # fmt: skip
        if fixed["optimizer"] == "adamw":  # the default: runs begun before the field resume
            del fixed["optimizer"]
        text = json.dumps({**fixed, "rows": rows, "world": world_size}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Batch(Protocol):
    n_targets: int
    n_tokens: int


RowT = TypeVar("RowT")


class TrainingDivergedError(RuntimeError):
    """The loss or gradient became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    steps: int
    train_loss: float
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    tokens: int
    seconds: float
    tokens_per_s: float
    peak_memory_mb: float
    resumed_from: int | None


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak rate at ``step`` (0-based): linear warmup, then cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def use_bf16(precision: str, device: torch.device) -> bool:
    from mentor.models.loading import preferred_dtype

    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return preferred_dtype(device) == torch.bfloat16


def build_optimizer(
    params: list[nn.Parameter], settings: TrainSettings, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer ``settings.optimizer`` names, over ``params``."""
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "paged_adamw_8bit" and device.type != "cuda":
        raise ValueError(
            f"train.optimizer: paged_adamw_8bit pages CUDA memory; on {device.type} use "
            "adamw_8bit or adamw"
        )
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ValueError(
            f"train.optimizer: {settings.optimizer} needs bitsandbytes "
            "(pip install mentor[qlora]); or use adamw"
        ) from None
    kind = (
        bnb.optim.PagedAdamW8bit
        if settings.optimizer == "paged_adamw_8bit"
        else (bnb.optim.AdamW8bit)
    )
    optimizer: torch.optim.Optimizer = kind(
        params, lr=settings.lr, weight_decay=settings.weight_decay
    )
    return optimizer


def epoch_order(rows: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(rows, generator=generator).tolist()


def step_rows(
    order: list[int], index: int, global_batch: int, settings: TrainSettings, world: World
) -> list[list[int]]:
    """This process's row indices for each micro-batch of optimizer step ``index`` of an epoch.

    The step takes ``global_batch`` rows; micro-batch ``a`` is its ``a``-th slice of
    ``batch_size x world`` rows, of which this rank takes the ``rank``-th ``batch_size``."""
    if len(order) <= global_batch:
        chosen = order  # fewer rows than one step: every step sees them all
    else:
        chosen = order[index * global_batch : (index + 1) * global_batch]
    width = settings.batch_size * world.size
    micro = [chosen[a : a + width] for a in range(0, len(chosen), width)]
    return [
        m[world.rank * settings.batch_size : (world.rank + 1) * settings.batch_size] for m in micro
    ]


def _tensors(batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        f.name: value.to(device, non_blocking=True)
        for f in dataclasses.fields(batch)
        if isinstance(value := getattr(batch, f.name), torch.Tensor)
    }


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(
    objective: nn.Module,
    train_rows: Sequence[RowT],
    collate: Callable[[Sequence[RowT]], Any],
    settings: TrainSettings,
    out: Path,
    *,
    val_rows: Sequence[RowT] | None = None,
    resume: bool = False,
    world: World | None = None,
    device: torch.device | None = None,
    console: Console | None = None,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Train ``objective``'s parameters that require grad; write checkpoints, metrics and the
    best weights (by validation loss, when there is validation data) under ``out``; process 0
    also hands each step's metrics (the line of ``metrics.jsonl``) to ``tracker``.

    On return the objective holds the best validation weights, or the last ones without
    validation. ``resume`` continues from the newest checkpoint in ``out``. With strategy fsdp
    the objective is sharded in place while training and whole again on return (on every
    process); after an exception it is left sharded."""
    world = world or World()
    device = device or torch.device("cpu")
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    global_batch = settings.batch_size * world.size * settings.grad_accum
    if world.distributed and len(train_rows) < global_batch:
        raise ValueError(
            f"{len(train_rows)} training rows cannot fill one step of {global_batch} rows "
            f"across {world.size} processes"
        )
    steps_per_epoch = max(1, len(train_rows) // global_batch)
    total = settings.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch))
    warmup = math.ceil(settings.warmup * total)

    if not any(p.requires_grad for p in objective.parameters()):
        raise ValueError("nothing to train: no parameter requires grad")
    bf16 = use_bf16(settings.precision, device)
    sharded = settings.strategy == "fsdp"
    # the optimizer must hold the sharded parameters, so sharding comes first
    sharding = shard(objective, device, bf16) if sharded else None
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, settings, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, settings.min_lr_ratio)
    )
    fingerprint = settings.fingerprint(len(train_rows), world.size)
    state = TrainerState(settings_fingerprint=fingerprint)
    checkpoints = CheckpointWriter(
        out / "checkpoints", world.rank, world.barrier, settings.keep, sharded=sharded
    )
    metrics_file, best_file = out / "metrics.jsonl", out / "best.safetensors"
    resumed_from = None
    if resume and (found := latest(out / "checkpoints")) is not None:
        state = load_checkpoint(found, objective, optimizer, world.rank, sharded=sharded)
        if state.settings_fingerprint != fingerprint:
            raise ValueError(
                f"{out}: the run was started with other settings or data; resume with the "
                "same ones, or train into a new folder"
            )
        scheduler.load_state_dict(state.scheduler)
        resumed_from = state.step
        if world.is_main:
            _truncate_metrics(metrics_file, state.step)
        console.print(f"resuming from {found.name} (step {state.step} of {total})")
    else:
        if world.is_main:
            metrics_file.unlink(missing_ok=True)
            best_file.unlink(missing_ok=True)
        torch.manual_seed(settings.seed + world.rank)

    model: nn.Module = objective
    if world.distributed and not sharded:
        model = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    started = time.perf_counter() - state.elapsed_s
    train_time, train_tokens, stopped_early, last_loss = 0.0, 0, False, float("nan")
    first_step = state.step

    progress = progress_bar(console)
    progress.columns = (*progress.columns, TextColumn("{task.fields[stats]}"))
    with progress if world.is_main else nullcontext():
        task = progress.add_task("training", total=total, completed=state.step, stats="")
        while state.step < total:
            epoch, index = divmod(state.step, steps_per_epoch)
            order = epoch_order(len(train_rows), settings.seed, epoch)
            step_start = time.perf_counter()
            batches = [
                collate([train_rows[i] for i in rows])
                for rows in step_rows(order, index, global_batch, settings, world)
                if rows
            ]
            step_loss, grad_norm = _optimizer_step(
                model, batches, params, optimizer, settings, world, device, bf16
            )
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                raise TrainingDivergedError(_diverged(state.step + 1, step_loss, out))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens = int(world.sum(sum(b.n_tokens for b in batches)))
            state.step += 1
            state.tokens += tokens
            elapsed = time.perf_counter() - step_start
            train_time += elapsed
            train_tokens += tokens
            last_loss = step_loss
            record = {
                "step": state.step,
                "epoch": round(state.step / steps_per_epoch, 4),
                "loss": step_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens": state.tokens,
                "tokens_per_s": tokens / elapsed if elapsed else 0.0,
            }
            if val_rows and (state.step % settings.eval_every == 0 or state.step == total):
                val_loss = validation_loss(objective, val_rows, collate, settings, world, device)
                record["val_loss"] = val_loss
                stopped_early = _track_best(state, val_loss, settings, objective, best_file, world)
            if world.is_main:
                with metrics_file.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if tracker is not None:  # the step is the tracker's x axis, not a metric
                    values = {k: float(v) for k, v in record.items() if k != "step"}
                    tracker.log(values, state.step)
                speed = train_tokens / max(train_time, 1e-9)
                stats = f"loss {step_loss:.4f}  {speed:,.0f} tok/s"
                progress.update(task, completed=state.step, stats=stats)
                if not console.is_terminal and state.step % max(1, total // 20) == 0:
                    # a log file gets a line every 5% instead of a live bar
                    left = (total - state.step) * train_time / max(1, state.step - first_step)
                    console.print(f"step {state.step}/{total}  {stats}  ~{left:.0f} s left")
            if state.step % settings.save_every == 0 or state.step == total or stopped_early:
                state.scheduler = scheduler.state_dict()
                state.elapsed_s = time.perf_counter() - started
                checkpoints.save(objective, optimizer, state)
            if stopped_early:
                console.print(
                    f"early stop at step {state.step}: no better validation loss in "
                    f"{settings.patience} evaluations (best {state.best_val_loss:.4f} at step "
                    f"{state.best_step})"
                )
                break

    if sharding is not None:
        optimizer.state.clear()  # the sharded moments go before the whole weights arrive
        unshard(objective, sharding)
    if state.best_step is not None and best_file.exists():
        world.barrier()
        load_trainable(objective, load_file(str(best_file)))
    if world.is_main:
        write_loss_plot(metrics_file, out / "loss_curve.png")
    return TrainResult(
        steps=state.step,
        train_loss=last_loss,
        best_val_loss=state.best_val_loss,
        best_step=state.best_step,
        stopped_early=stopped_early,
        tokens=state.tokens,
        seconds=time.perf_counter() - started,
        tokens_per_s=train_tokens / train_time if train_time else 0.0,
        peak_memory_mb=_peak_memory_mb(device),
        resumed_from=resumed_from,
    )


def _optimizer_step(
    model: nn.Module,
    batches: list[Any],
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    world: World,
    device: torch.device,
    bf16: bool,
) -> tuple[float, float]:
    """Forward and backward every micro-batch of one step, clip; return (mean loss, grad norm).

    The optimizer is not stepped here, so a non-finite loss leaves the weights untouched."""
    n_targets = world.sum(sum(b.n_targets for b in batches))
    if n_targets == 0:
        raise ValueError("a training step has no targets (every label is masked)")
    model.train()
    loss_sum = 0.0
    for k, batch in enumerate(batches):
        last = k == len(batches) - 1
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        sync = model.no_sync() if ddp and not last else nullcontext()  # type: ignore[operator]
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = model(**_tensors(batch, device))
            # DDP and FSDP average gradients over processes; scaling by world size / all
            # targets makes the step's gradient the mean over every target of every process
            # and micro-batch.
            (loss.float() * world.size / n_targets).backward()
        loss_sum += float(loss.detach())
    limit = settings.max_grad_norm if settings.max_grad_norm else float("inf")
    grad_norm = global_norm(torch.nn.utils.clip_grad_norm_(params, limit))
    return world.sum(loss_sum) / n_targets, grad_norm


def _track_best(
    state: TrainerState,
    val_loss: float,
    settings: TrainSettings,
    objective: nn.Module,
    best_file: Path,
    world: World,
) -> bool:
    """Keep the best weights on disk; return whether patience has run out."""
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step = val_loss, state.step
        state.evals_without_improvement = 0
        # sharded weights are gathered by every process, whole ones read where they are
        sharded = settings.strategy == "fsdp"
        weights = full_trainable_state(objective) if sharded else None
        if world.is_main:
            with atomic_path(best_file) as tmp:
                save_file(weights or trainable_state(objective), str(tmp))
        return False
    state.evals_without_improvement += 1
    return settings.patience is not None and state.evals_without_improvement >= settings.patience


@torch.no_grad()
def validation_loss(
    objective: nn.Module,
    rows: Sequence[RowT],
    collate: Callable[[Sequence[RowT]], Any],
    settings: TrainSettings,
    world: World,
    device: torch.device,
) -> float:
    """Mean loss per target over ``rows`` (each process scores its share)."""
    objective.eval()
    mine = list(rows)[world.rank :: world.size]
    total = targets = 0.0
    bf16 = use_bf16(settings.precision, device)
    starts = range(0, len(mine), settings.batch_size)
    if settings.strategy == "fsdp":
        # every forward gathers weights from all processes, so all run the same number: one
        # with a batch fewer than the others scores a spare one and drops it
        most = math.ceil(math.ceil(len(rows) / world.size) / settings.batch_size)
        starts = range(0, most * settings.batch_size, settings.batch_size)
    for start in starts:
        chunk = mine[start : start + settings.batch_size]
        batch = collate(chunk or list(rows)[: settings.batch_size])
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = float(objective(**_tensors(batch, device)))
        if chunk:
            total += loss
            targets += batch.n_targets
    objective.train()
    return world.sum(total) / max(world.sum(targets), 1.0)


def _diverged(step: int, loss: float, out: Path) -> str:
    found = latest(out / "checkpoints")
    kept = (
        f"the last good checkpoint is {found} (resume from it with --resume)"
        if found
        else "no checkpoint had been written yet"
    )
    return (
        f"step {step}: the loss became {loss} (or the gradient did); training stopped before the "
        f"bad update, and {kept}. Lower the learning rate, or check the data for broken rows."
    )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines a killed run wrote after its last checkpoint."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_loss_plot(metrics_file: Path, target: Path) -> Path | None:
    """Training (and validation) loss against step, as a PNG."""
    rows = read_metrics(metrics_file)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", lw=1)
    val = [r for r in rows if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per target")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target
