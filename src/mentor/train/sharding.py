"""Fully sharded data parallel (FSDP2) for the trainer: shard, checkpoint, gather, unshard.

With ``--strategy fsdp`` each of N processes keeps 1/N of every parameter, gradient and optimizer
state; a transformer block's parameters are all-gathered just before its forward (and again in
backward) and gradients are reduce-scattered after it. DDP keeps everything whole on every
process, so FSDP is what lets a model whose optimizer state does not fit one GPU train on several.

The trainer uses this module in four places:

- :func:`shard` before the optimizer is built: ``fully_shard`` on each transformer block, then on
  the whole objective (bf16 parameters with fp32 gradient reduction when training bf16 on CUDA);
- :func:`save_sharded` / :func:`load_sharded` inside a checkpoint folder: each process writes its
  own shards with ``torch.distributed.checkpoint`` (trainable parameters and optimizer state);
- :func:`full_trainable_state` for ``best.safetensors``: whole tensors gathered to process 0, in
  the file format a single process writes;
- :func:`unshard` when training ends: the objective gets back plain tensors on every process, so
  what follows (saving the adapter or model, scoring it) is the same code as without FSDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class _ModuleBefore:
    """A module as it was before ``fully_shard`` changed its class, hooks and attributes."""

    module: nn.Module
    cls: type
    keys: frozenset[str]
    hooks: dict[str, dict[Any, Any]]


@dataclass
class ShardRecord:
    """What :func:`shard` changed, for :func:`unshard` to put back."""

    modules: list[_ModuleBefore]
    params: list[tuple[list[tuple[nn.Module, str]], bool]]
    """Each original parameter once (tied ones share an entry): where it is registered, and
    whether it requires grad."""


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks under ``module``: Hugging Face models name their block classes in
    ``_no_split_modules`` (``LlamaDecoderLayer``), the unit that must stay on one device."""
    names: set[str] = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or ())
    return [sub for sub in module.modules() if sub is not module and type(sub).__name__ in names]


def shard(objective: nn.Module, device: torch.device, bf16: bool) -> ShardRecord:
    """Shard ``objective`` in place over every process of the default group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise ValueError(
            "strategy fsdp needs a process group: launch with torchrun, or call "
            "mentor.train.distributed.setup(device, strategy='fsdp') first"
        )
    record = ShardRecord(modules=[_before(m) for m in objective.modules()], params=[])
    seen: dict[int, int] = {}
    for module in objective.modules():
        for name, param in module._parameters.items():
            if param is None:
                continue
            if id(param) not in seen:
                seen[id(param)] = len(record.params)
                record.params.append(([], param.requires_grad))
            record.params[seen[id(param)]][0].append((module, name))
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # On CUDA the blocks compute in bf16 from bf16 copies gathered at half the traffic, and
    # gradients are reduced in fp32; on a CPU the trainer's bf16 autocast does the casting.
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16 and device.type == "cuda"
        else MixedPrecisionPolicy()
    )
    for block in transformer_blocks(objective):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(objective, mesh=mesh, mp_policy=policy)
    return record


def _before(module: nn.Module) -> _ModuleBefore:
    hooks = {
        key: dict(value)
        for key, value in vars(module).items()
        if "hooks" in key and isinstance(value, dict)
    }
    return _ModuleBefore(module, type(module), frozenset(vars(module)), hooks)


def global_norm(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s result as a number: on sharded gradients it is a replicated
    DTensor that already holds the norm over every process's shards."""
    from torch.distributed.tensor import DTensor

    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def _state_options(
    *, full_state_dict: bool = False, cpu_offload: bool = False, strict: bool = True
) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # the frozen base never changes, so checkpoints and best weights hold the trained part only
    return StateDictOptions(
        full_state_dict=full_state_dict,
        cpu_offload=cpu_offload,
        ignore_frozen_params=True,
        strict=strict,
    )


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the trainable parameters and optimizer state."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    model_state, optim_state = get_state_dict(model, optimizer, options=_state_options())
    save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read this process's shards back into the (sharded) model and optimizer."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    model_state, optim_state = get_state_dict(model, optimizer, options=_state_options())
    # in place, and it fails unless every trainable tensor is in the folder
    load({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=_state_options(strict=False),  # not strict: the frozen base is not in the file
    )


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Whole trainable tensors on process 0's CPU (an empty dict elsewhere), named and deduplicated
    as :func:`mentor.train.checkpoint.trainable_state` names them. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = {name for name, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(
        model, options=_state_options(full_state_dict=True, cpu_offload=True)
    )
    return {
        name: t.contiguous()
        for name, t in full.items()
        if name in names and isinstance(t, torch.Tensor)
    }


def unshard(objective: nn.Module, record: ShardRecord) -> None:
    """Undo :func:`shard`: whole tensors on every process, the modules' classes and hooks as they
    were. Every process must call it; the sharded copies are freed once the optimizer is."""
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    for module in objective.modules():
        if isinstance(module, FSDPModule):
            module.reshard()  # registered parameters are the sharded ones again
    whole: list[torch.Tensor] = []
    for places, _ in record.params:  # the same order on every process: the all-gathers pair up
        module, name = places[0]
        param = module._parameters[name]
        assert param is not None
        data = param.detach()
        whole.append(data.full_tensor() if isinstance(data, DTensor) else data)
    for before in record.modules:
        module = before.module
        module.__class__ = before.cls
        for key in set(vars(module)) - before.keys:  # FSDP's state and registry
            del vars(module)[key]
        for key, hooks in before.hooks.items():
            current = vars(module)[key]
            current.clear()
            current.update(hooks)
        _module_state_mapping.pop(module, None)
    for (places, requires_grad), tensor in zip(record.params, whole, strict=True):
        param = nn.Parameter(tensor, requires_grad=requires_grad)
        for module, name in places:
            module._parameters[name] = param
