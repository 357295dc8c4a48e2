"""The training layer every method builds on: our LoRA, adapter files, the trainer and what it
needs (checkpoints, distributed set-up, objectives, SFT data and packing, the encoder classifier).

- ``lora.py``: LoRA layers (W + (alpha/r)·B·A), several named adapters on one base, merge/unmerge;
- ``adapters.py``: adapter folders in PEFT's format, with the base's weight fingerprint;
- ``trainer.py``: the loop (bf16 autocast, validation, early stopping, resumable checkpoints);
- ``checkpoint.py``: atomic checkpoints of weights, optimizer, scheduler, RNGs, data position;
- ``distributed.py``: torchrun/accelerate set-up; ``objectives.py``: the losses the trainer takes;
- ``data.py``: SFT examples, assistant-only labels, packing; ``classifier.py``: encoder + head.

``finetune/``, ``distill/``, ``quantize/``, ``serve/`` and ``bakeoff/`` import from here, never
from each other.
"""
