"""Training checkpoints that resume exactly, written so that a kill at any moment loses nothing.

A checkpoint is a folder ``<run>/checkpoints/step-000120/`` with

- ``trainable.safetensors``: the parameters being trained (the adapter, or the whole model);
- ``optimizer.pt``: the optimizer's state (tensors and numbers only; read back with
  ``torch.load(weights_only=True)``, which never unpickles code);
- or, for a sharded (``--strategy fsdp``) run, ``sharded/`` in place of both: each process's
  shards of the trainable parameters and optimizer state (``torch.distributed.checkpoint``);
- ``rng-rank<r>.pt``: every random generator of each process (python, numpy, torch, CUDA), so
  dropout draws the same masks after a resume;
- ``trainer.json``: step, scheduler, early-stopping state and a fingerprint of the run settings.

It is written to a temporary folder and renamed into place; then ``latest`` (a small text file) is
swapped atomically to name it. A checkpoint without ``trainer.json`` was never finished and is
ignored; older ones beyond ``keep`` are pruned after the new one is in place.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mentor.utils.fs import atomic_write_text, make_temp_dir, remove_tree

STEP_DIR = re.compile(r"^step-(\d{6,})$")
SHARDED = "sharded"
"""The folder of a sharded checkpoint's ``torch.distributed.checkpoint`` files."""


@dataclass
class TrainerState:
    """Everything about the loop's position that is not a tensor."""

    step: int = 0
    """Optimizer steps taken."""
    tokens: int = 0
    """Tokens seen (all processes)."""
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    scheduler: dict[str, Any] = field(default_factory=dict)
    settings_fingerprint: str = ""
    elapsed_s: float = 0.0


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list[Any]:
    kind, keys, pos, has_gauss, cached = cast(tuple[Any, ...], np.random.get_state())
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters with ``requires_grad``, by name (tied parameters once)."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise ValueError(
            f"the checkpoint does not match the model ({len(missing)} missing, "
            f"{len(unknown)} unknown tensors, e.g. {(missing or unknown)[0]})"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def step_dirs(root: Path) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "trainer.json").exists()]
    return sorted(done, key=lambda p: int(STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, else the newest finished one, else ``None``."""
    pointer = root / "latest"
    if pointer.exists():
        named = root / pointer.read_text().strip()
        if (named / "trainer.json").exists():
            return named
    found = step_dirs(root)
    return found[-1] if found else None


def run_folder_problem(out: Path, resume: bool) -> str | None:
    """Why a run cannot start in ``out`` (nothing to resume, or a run already there), else None."""
    found = latest(out / "checkpoints")
    if resume and found is None:
        return f"{out}: no checkpoint to resume from"
    if not resume and found is not None:
        return (
            f"{out} already holds a run (checkpoint {found.name}); continue it with --resume, "
            "or train into another --out (or delete the folder)"
        )
    return None


class CheckpointWriter:
    """Writes checkpoints for one process of a (possibly distributed) run.

    Rank 0 owns the folder; every rank adds its own RNG file. ``barrier`` synchronises ranks
    (a no-op in a single process). ``sharded``: every process writes its own shards."""

    def __init__(
        self, root: Path, rank: int, barrier: Any, keep: int = 2, *, sharded: bool = False
    ) -> None:
        self.root = root
        self.rank = rank
        self.barrier = barrier
        self.keep = keep
        self.sharded = sharded

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState) -> Path:
        final = self.root / f"step-{state.step:06d}"
        staging = self.root / f".staging-step-{state.step:06d}"
        if self.rank == 0:
            remove_tree(staging)
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_dir(self.root, ".tmp-")
            tmp.rename(staging)
        self.barrier()
        torch.save(capture_rng(), staging / f"rng-rank{self.rank}.pt")
        if self.sharded:
            from mentor.train.sharding import save_sharded

            save_sharded(staging / SHARDED, model, optimizer)
            self.barrier()
        elif self.rank == 0:
            save_file(trainable_state(model), str(staging / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        if self.rank == 0:
            # trainer.json last: its presence marks the folder complete
            (staging / "trainer.json").write_text(json.dumps(asdict(state), indent=2))
        self.barrier()
        if self.rank == 0:
            remove_tree(final)
            staging.rename(final)
            atomic_write_text(self.root / "latest", final.name + "\n")
            for old in step_dirs(self.root)[: -self.keep]:
                remove_tree(old)
        self.barrier()
        return final


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int,
    *,
    sharded: bool = False,
) -> TrainerState:
    """Restore model, optimizer and this rank's RNG from ``folder``; return the loop state."""
    written = "fsdp" if (folder / SHARDED).is_dir() else "ddp"
    if written != ("fsdp" if sharded else "ddp"):
        raise ValueError(
            f"{folder} was written by a run with strategy {written}; resume it with "
            f"--strategy {written}"
        )
    if sharded:
        from mentor.train.sharding import load_sharded

        load_sharded(folder / SHARDED, model, optimizer)
    else:
        load_trainable(model, load_file(str(folder / "trainable.safetensors")))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    rng_file = folder / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        raise ValueError(
            f"{folder}: no random state for process {rank}; resume with the same number of "
            "processes the run was started with"
        )
    restore_rng(torch.load(rng_file, weights_only=True))
    return TrainerState(**json.loads((folder / "trainer.json").read_text()))
