"""Fine-tuning: ``mentor finetune`` as a recipe (SFT of a causal LM with our LoRA or in full,
and text classification with an encoder), its typed config and its report. The building blocks
(LoRA, adapters, trainer, data) are the training layer's (:mod:`mentor.train`).

- ``config.py``: :class:`FinetuneConfig`, typed, with help on every field (YAML mirrors it);
- ``recipe.py``: :func:`run_sft`: train, save, score base against tuned, write the report;
- ``classify.py``: :func:`run_classification`: an encoder and head against a frozen baseline;
- ``commands.py``: ``mentor finetune`` and ``mentor adapters``.

    from mentor.finetune import load_config, run_sft
    config = load_config(Path("examples/finetune/smollm2-lora.yaml"), {})
    report = run_sft(config, console=Console())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.finetune.classify import ClassifierResult, run_classification, train_classifier
    from mentor.finetune.config import FinetuneConfig, load_config
    from mentor.finetune.recipe import FinetuneReport, run_sft

__all__ = [
    "ClassifierResult",
    "FinetuneConfig",
    "FinetuneReport",
    "load_config",
    "run_classification",
    "run_sft",
    "train_classifier",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "ClassifierResult": "mentor.finetune.classify",
        "run_classification": "mentor.finetune.classify",
        "train_classifier": "mentor.finetune.classify",
        "FinetuneConfig": "mentor.finetune.config",
        "load_config": "mentor.finetune.config",
        "FinetuneReport": "mentor.finetune.recipe",
        "run_sft": "mentor.finetune.recipe",
    },
)
