"""Running one training command on several processes (DDP, or FSDP with ``--strategy fsdp``).

``torchrun --nproc_per_node N`` and ``accelerate launch`` both set ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them, joins the process group (NCCL on CUDA, gloo on CPU) and
says which device this process owns. With no such variables it is a single process and every
helper here is a no-op, except that FSDP's sharded parameters need a process group even alone:
for strategy ``fsdp`` a single process joins a group of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, value: float | int) -> float:
        """Sum of ``value`` over all processes."""
        if not self.distributed:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        return self.sum(1 if flag else 0) > 0


def setup(device: str, strategy: str = "ddp") -> tuple[World, torch.device]:
    """Join the process group if launched by torchrun/accelerate (or alone, for strategy
    ``fsdp``); return the world and device."""
    from mentor.models.loading import resolve_device

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        resolved = resolve_device(device)
        if strategy == "fsdp" and not dist.is_initialized():
            if resolved.type == "cuda" and resolved.index is not None:
                torch.cuda.set_device(resolved)
            # an in-memory store: a group of one needs no address or port
            backend = "nccl" if resolved.type == "cuda" else "gloo"
            store = dist.HashStore()  # type: ignore[attr-defined]
            dist.init_process_group(backend, store=store, rank=0, world_size=1)
        return World(), resolved
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(rank, size, local), torch.device(f"cuda:{local}" if use_cuda else "cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
