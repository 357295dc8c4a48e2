"""Typed run configs from YAML plus command-line overrides, shared by every ``mentor`` recipe."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (empty for an empty file); ``ValueError``
    naming the file when it is missing, not YAML, or not a mapping."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top")
    return loaded or {}


def load_yaml_config(
    schema: type[ConfigT],
    path: Path | None,
    overrides: dict[str, Any],
    path_keys: Sequence[str] = ("data", "val", "eval", "unlabelled"),
) -> ConfigT:
    """The YAML at ``path`` (if any) with ``overrides`` applied, validated as ``schema``.

    ``None`` overrides are ignored; dotted keys such as ``train.lr`` reach into sections. Paths
    under ``path_keys`` in the file are relative to the file. Errors name the file and field."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
        base = Path(path).parent
        for key in path_keys:
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str(base / data[key])
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, leaf = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        target[leaf] = value
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}{problems}") from None
