"""The training layer every method builds on: our LoRA, adapter files, the trainer and what it
needs (checkpoints, distributed set-up, objectives, SFT data and packing, the encoder classifier).

- ``lora.py``: LoRA layers (W + (alpha/r)·B·A), several named adapters on one base, merge/unmerge;
- ``adapters.py``: adapter folders in PEFT's format, with the base's weight fingerprint;
- ``trainer.py``: the loop (bf16 autocast, validation, early stopping, resumable checkpoints);
- ``checkpoint.py``: atomic checkpoints of weights, optimizer, scheduler, RNGs, data position;
- ``distributed.py``: torchrun/accelerate set-up; ``objectives.py``: the losses the trainer takes;
- ``sharding.py``: FSDP2 for ``strategy="fsdp"`` (shard, sharded checkpoints, unshard);
- ``data.py``: SFT examples, assistant-only labels, packing; ``classifier.py``: encoder + head.

``finetune/``, ``distill/``, ``quantize/``, ``serve/`` and ``bakeoff/`` import from here, never
from each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.train.adapters import (
        AdapterError,
        AdapterInfo,
        find_adapters,
        load_adapter,
        read_info,
        save_adapter,
    )
    from mentor.train.lora import (
        LoRAConfig,
        LoRASettings,
        add_lora,
        base_fingerprint,
        delete_adapter,
        mark_trainable,
        merge,
        parameter_report,
        set_adapter,
        unmerge,
        use_adapter,
        use_row_adapters,
    )
    from mentor.train.trainer import TrainingDivergedError, TrainResult, TrainSettings, train

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "LoRAConfig",
    "LoRASettings",
    "TrainResult",
    "TrainSettings",
    "TrainingDivergedError",
    "add_lora",
    "base_fingerprint",
    "delete_adapter",
    "find_adapters",
    "load_adapter",
    "mark_trainable",
    "merge",
    "parameter_report",
    "read_info",
    "save_adapter",
    "set_adapter",
    "train",
    "unmerge",
    "use_adapter",
    "use_row_adapters",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "AdapterError": "mentor.train.adapters",
        "AdapterInfo": "mentor.train.adapters",
        "find_adapters": "mentor.train.adapters",
        "load_adapter": "mentor.train.adapters",
        "read_info": "mentor.train.adapters",
        "save_adapter": "mentor.train.adapters",
        "LoRAConfig": "mentor.train.lora",
        "LoRASettings": "mentor.train.lora",
        "add_lora": "mentor.train.lora",
        "base_fingerprint": "mentor.train.lora",
        "delete_adapter": "mentor.train.lora",
        "mark_trainable": "mentor.train.lora",
        "merge": "mentor.train.lora",
        "parameter_report": "mentor.train.lora",
        "set_adapter": "mentor.train.lora",
        "unmerge": "mentor.train.lora",
        "use_adapter": "mentor.train.lora",
        "use_row_adapters": "mentor.train.lora",
        "TrainResult": "mentor.train.trainer",
        "TrainSettings": "mentor.train.trainer",
        "TrainingDivergedError": "mentor.train.trainer",
        "train": "mentor.train.trainer",
    },
)
