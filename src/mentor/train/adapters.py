"""Adapter folders in PEFT's format, so PEFT (and vLLM) load ours and we load theirs.

A folder holds:

- ``adapter_config.json``: PEFT's ``LoraConfig`` fields (``peft_type: LORA``, ``r``,
  ``lora_alpha``, ``target_modules``, ...);
- ``adapter_model.safetensors``: ``base_model.model.<module path>.lora_A.weight`` (r, d_in) and
  ``...lora_B.weight`` (d_out, r) for every adapted layer, PEFT's key names;
- ``mentor_adapter.json`` (ours, ignored by PEFT): the base model's name and a fingerprint of
  its weights, so loading onto a different base is refused instead of producing garbage.

Folders are written atomically: a crash leaves the previous adapter in place.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mentor.train.lora import (
    LoRAConfig,
    adapter_names,
    adapter_state,
    add_lora,
    base_fingerprint,
    delete_adapter,
    lora_layers,
)
from mentor.utils.fs import atomic_dir, read_json_object

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
IDENTITY_FILE = "mentor_adapter.json"
PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter folder that cannot be used as asked (names the folder and the reason)."""


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder says about itself."""

    path: Path
    config: LoRAConfig
    base_model: str | None
    base_fingerprint: str | None
    task_type: str | None
    tensors: int
    parameters: int
    size_bytes: int
    extra: dict[str, Any]


def peft_config(
    config: LoRAConfig, targets: list[str], base_model: str | None, task_type: str
) -> dict[str, Any]:
    """The ``adapter_config.json`` PEFT writes for an equivalent ``LoraConfig``."""
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": config.use_rslora,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def _target_names(model: nn.Module, name: str) -> list[str]:
    """The adapted layers' own names (``q_proj``...), the form PEFT's ``target_modules`` takes."""
    return sorted(
        {path.rsplit(".", 1)[-1] for path, m in lora_layers(model).items() if name in m.lora_A}
    )


def save_adapter(
    model: nn.Module,
    folder: Path,
    *,
    name: str = "default",
    config: LoRAConfig,
    base_model: str | None = None,
    task_type: str = "CAUSAL_LM",
    extra: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> Path:
    """Write adapter ``name`` of ``model`` to ``folder`` in PEFT's format (atomically).

    ``fingerprint``: the base's :func:`base_fingerprint`, given when ``model`` holds a changed
    copy of it (a 4-bit one, for QLoRA) and the adapter is for the base as it was."""
    if name not in adapter_names(model):
        raise AdapterError(f"{folder}: the model has no adapter {name!r}")
    tensors = {
        PEFT_PREFIX + key: t.detach().to("cpu").contiguous()
        for key, t in adapter_state(model, name).items()
    }
    identity = {
        "base_model": base_model,
        "base_fingerprint": fingerprint or base_fingerprint(model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    settings = peft_config(config, _target_names(model, name), base_model, task_type)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / IDENTITY_FILE).write_text(json.dumps(identity, indent=2) + "\n")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, AdapterError, f"not an adapter folder (no {path.name})")


def lora_config_from_peft(settings: dict[str, Any], where: Path) -> LoRAConfig:
    """Our :class:`LoRAConfig` for a PEFT ``adapter_config.json``; refuses what we do not run."""
    if settings.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{where}: peft_type {settings.get('peft_type')!r} is not LORA")
    unsupported = [
        key
        for key, off in (
            ("use_dora", False),
            ("fan_in_fan_out", False),
            ("modules_to_save", None),
            ("layers_to_transform", None),
            ("rank_pattern", {}),
            ("alpha_pattern", {}),
        )
        if settings.get(key, off) not in (off, None, {}, [], False)
    ]
    if settings.get("bias", "none") != "none":
        unsupported.append("bias")
    if unsupported:
        raise AdapterError(f"{where}: unsupported LoRA options: {', '.join(unsupported)}")
    targets = settings.get("target_modules")
    if not targets:
        raise AdapterError(f"{where}: target_modules is missing")
    return LoRAConfig(
        r=int(settings["r"]),
        alpha=float(settings.get("lora_alpha", settings["r"])),
        dropout=float(settings.get("lora_dropout", 0.0)),
        targets=targets if isinstance(targets, str) else tuple(targets),
        use_rslora=bool(settings.get("use_rslora", False)),
    )


def read_info(folder: Path) -> AdapterInfo:
    folder = Path(folder)
    settings = _read_json(folder / CONFIG_FILE)
    identity = _read_json(folder / IDENTITY_FILE) if (folder / IDENTITY_FILE).exists() else {}
    config = lora_config_from_peft(settings, folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    shapes = _read_shapes(weights)
    return AdapterInfo(
        path=folder,
        config=config,
        base_model=identity.get("base_model") or settings.get("base_model_name_or_path"),
        base_fingerprint=identity.get("base_fingerprint"),
        task_type=settings.get("task_type"),
        tensors=len(shapes),
        parameters=sum(math.prod(shape) for shape in shapes),
        size_bytes=weights.stat().st_size,
        extra={k: v for k, v in identity.items() if k not in ("base_model", "base_fingerprint")},
    )


def load_adapter(
    model: nn.Module, folder: Path, *, name: str = "default", check_base: bool = True
) -> AdapterInfo:
    """Add the adapter in ``folder`` (ours or PEFT's) to ``model`` as ``name`` and activate it.

    The base fingerprint recorded at save time must match ``model``'s weights (PEFT's own folders
    carry none; their tensor names and shapes are still checked one by one)."""
    info = read_info(folder)
    if check_base and info.base_fingerprint is not None:
        actual = base_fingerprint(model)
        if actual != info.base_fingerprint:
            raise AdapterError(
                f"{folder}: this adapter was trained on a different base model "
                f"({info.base_model or 'unknown'}, weights {info.base_fingerprint[:12]}); the "
                f"model given has weights {actual[:12]}"
            )
    state = _read_weights(Path(folder) / WEIGHTS_FILE)
    try:
        add_lora(model, info.config, name)
    except ValueError as exc:
        raise AdapterError(f"{folder}: {exc}") from None
    ours = adapter_state(model, name)
    theirs = {_strip_peft_key(k): v for k, v in state.items()}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        delete_adapter(model, name)
        raise AdapterError(
            f"{folder}: the adapter does not fit this model: "
            + "; ".join(
                part
                for part in (
                    f"{len(missing)} layers without weights (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} tensors for absent layers (e.g. {unexpected[0]})"
                    if unexpected
                    else "",
                )
                if part
            )
        )
    with torch.no_grad():
        for key, param in ours.items():
            if param.shape != theirs[key].shape:
                delete_adapter(model, name)
                raise AdapterError(
                    f"{folder}: {key} has shape {tuple(theirs[key].shape)}, "
                    f"the model needs {tuple(param.shape)}"
                )
            param.copy_(theirs[key])
    return info


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise AdapterError(f"{path.parent}: no {path.name}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_shapes(path: Path) -> list[list[int]]:
    """Tensor shapes from the file's header, without reading the tensors."""
    if not path.exists():
        raise AdapterError(f"{path.parent}: no {path.name}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return [fh.get_slice(key).get_shape() for key in fh.keys()]  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from None


def _strip_peft_key(key: str) -> str:
    key = key.removeprefix(PEFT_PREFIX)
    # PEFT files written with an adapter name inside the key (``lora_A.<name>.weight``)
    for part in ("lora_A", "lora_B"):
        head, sep, tail = key.partition(f".{part}.")
        if sep and tail != "weight":
            key = f"{head}.{part}.weight"
    return key


def find_adapters(roots: list[Path]) -> list[Path]:
    """Adapter folders under ``roots`` (any depth), sorted."""
    found: set[Path] = set()
    for root in roots:
        if (root / CONFIG_FILE).exists():
            found.add(root)
        elif root.is_dir():
            found.update(p.parent for p in root.rglob(CONFIG_FILE) if "/." not in str(p))
    return sorted(found)
