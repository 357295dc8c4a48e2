"""An encoder with a classification head: mean pooling and a linear layer, LoRA or full.

    token ids ─► encoder (BERT: LoRA on its linear layers, or every weight trained)
              ─► mean over the real tokens (B, H) ─► dropout ─► Linear(H, labels) ─► logits

The building blocks ``mentor finetune --task classify`` (:mod:`mentor.finetune.classify`) and
classifier distillation (:mod:`mentor.distill.classify`) share: reading labelled text, the label
set, encoding and collating rows, building, saving and loading the classifier::

    texts, labels = load_classification(Path("train.csv"))
    label_set = LabelSet.from_labels(labels)
    model, tokenizer = build_classifier("minilm-l6", label_set, method="lora")
    rows = encode(texts, label_set.ids(labels), tokenizer, max_length=128)
    save_classifier(model, out / "model", tokenizer=tokenizer, base_model="minilm-l6", lora=...)
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file
from torch import nn

from mentor.data.io import read_records
from mentor.data.schemas import ClassificationRecord
from mentor.models.loading import NO_HUB_KERNELS, resolve_model_path
from mentor.train.adapters import load_adapter, save_adapter
from mentor.train.data import DataError
from mentor.train.lora import LoRAConfig, adapter_names, add_lora, mark_trainable
from mentor.utils.fs import atomic_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


Method = Literal["lora", "full"]
Labelled = tuple[list[str], list[str]]
"""Texts and their label names, in file order."""

ADAPTER = "default"
ADAPTER_DIR, ENCODER_DIR = "adapter", "encoder"
HEAD_FILE, LABELS_FILE, CARD_FILE = "classifier_head.safetensors", "labels.json", "classifier.json"
# CSV columns taken as the label when there is no ``label`` column (BANKING77 says ``category``).
LABEL_COLUMNS = ("label", "category", "intent", "class")


# ---- data -------------------------------------------------------------------------------------


def _csv_mapping(path: Path, label_column: str | None) -> dict[str, str] | None:
    if path.suffix.lower() != ".csv":
        return None
    if label_column is not None:
        return {"label": label_column}
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = {c.strip().lower() for c in next(csv.reader(fh), [])}
    found = next((c for c in LABEL_COLUMNS if c in header), None)
    return {"label": found} if found not in (None, "label") else None


def load_classification(path: Path, label_column: str | None = None) -> Labelled:
    """Texts and labels of a classification ``.jsonl`` (``text``, ``label``) or ``.csv`` file.

    A CSV's label column is ``label_column``, else the first of :data:`LABEL_COLUMNS` in its
    header. :class:`DataError` lists every bad row as ``path:line: what``."""
    path = Path(path)
    result = read_records(path, "classification", _csv_mapping(path, label_column))
    if result.errors:
        raise DataError([str(p) for p in result.errors])
    records = [cast(ClassificationRecord, r.data) for r in result.records]
    return [r.text for r in records], [r.label for r in records]


@dataclass(frozen=True)
class LabelSet:
    """Label names in sorted order; a label's id is its position (the head's output row)."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelSet:
        return cls(tuple(sorted(set(labels))))

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def ids(self, labels: Sequence[str]) -> list[int]:
        unknown = sorted(set(labels) - set(self._index))
        if unknown:
            raise ValueError(
                f"{len(unknown)} labels the classifier does not know: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )
        return [self._index[label] for label in labels]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.names[i] for i in ids]


def split_validation(
    texts: Sequence[str], labels: Sequence[str], share: float, seed: int = 0
) -> tuple[Labelled, Labelled]:
    """Hold out ``share`` of each label's rows (rounded, at least one row of each label stays in
    training), the same rows for the same seed. Returns (train, validation), each in file order."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the validation share must be in [0, 1), got {share}")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        held.update(rows[: min(round(share * len(rows)), len(rows) - 1)])

    def pick(keep: bool) -> Labelled:
        chosen = [i for i in range(len(texts)) if (i in held) != keep]
        return [texts[i] for i in chosen], [labels[i] for i in chosen]

    return pick(True), pick(False)


@dataclass(frozen=True)
class ClassRow:
    """One tokenised text (with its special tokens) and its label id."""

    input_ids: list[int]
    label: int


@dataclass
class ClassBatch:
    """Right-padded rows, what :class:`SequenceClassifier`'s forward takes (all ``(B, T)`` but
    ``labels``, ``(B,)``)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    n_targets: int
    """Texts in the batch: the loss is summed over them."""
    n_tokens: int
    """Tokens that are not padding."""


def encode(
    texts: Sequence[str],
    label_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
) -> list[ClassRow]:
    """Tokenise every text once, cut to ``max_length`` tokens (special tokens included)."""
    ids = _token_ids(texts, tokenizer, max_length)
    return [ClassRow(row, label) for row, label in zip(ids, label_ids, strict=True)]


def _token_ids(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(row) for row in encoded["input_ids"]]


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, mask


def collate(rows: Sequence[ClassRow], pad_id: int) -> ClassBatch:
    """Pad the rows to the longest one of the batch."""
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    input_ids, mask = _pad([r.input_ids for r in rows], pad_id)
    return ClassBatch(
        input_ids=input_ids,
        attention_mask=mask,
        labels=torch.tensor([r.label for r in rows], dtype=torch.long),
        n_targets=len(rows),
        n_tokens=int(mask.sum()),
    )


# ---- the model --------------------------------------------------------------------------------


class SequenceClassifier(nn.Module):
    """A Hugging Face encoder, mean pooling over the attention mask, dropout and a linear head."""

    def __init__(
        self, encoder: nn.Module, labels: LabelSet, *, dropout: float = 0.1, max_length: int = 128
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        hidden_size = int(cast(Any, encoder).config.hidden_size)  # a transformers config
        self.head = nn.Linear(hidden_size, len(labels))
        self.labels = labels
        self.max_length = max_length

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states: torch.Tensor = hidden.last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        out: torch.Tensor = self.head(self.dropout(pooled))  # (B, labels)
        return out

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy summed over the batch (the trainer divides by the texts of a step)."""
        logits = self.logits(input_ids, attention_mask)
        return F.cross_entropy(logits.float(), labels, reduction="sum")

    @torch.no_grad()
    def predict_logits(
        self, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, batch_size: int = 64
    ) -> torch.Tensor:
        """Logits ``(len(texts), labels)`` in fp32 on the CPU, computed in eval mode."""
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no padding token")
        rows = _token_ids(texts, tokenizer, self.max_length)
        # Texts of similar length share a batch: less padding to run through the encoder.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = torch.zeros(len(rows), len(self.labels))
        device = self.head.weight.device
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                ids, mask = _pad([rows[i] for i in chosen], int(pad_id))
                out[chosen] = self.logits(ids.to(device), mask.to(device)).float().cpu()
        finally:
            self.train(was_training)
        return out

    def predict(
        self, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, batch_size: int = 64
    ) -> list[int]:
        """The most likely label id of each text."""
        ids: list[int] = self.predict_logits(texts, tokenizer, batch_size).argmax(-1).tolist()
        return ids


def load_encoder(folder: Path) -> nn.Module:
    """The Hugging Face encoder in ``folder`` in fp32, without its pooler."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(
        str(folder), use_safetensors=True, dtype=torch.float32, **NO_HUB_KERNELS
    )
    # Mean pooling reads the last hidden states; BERT's pooler (a dense layer on [CLS]) would
    # only take LoRA adapters and weights that never get a gradient.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return cast(nn.Module, encoder)


def build_classifier(
    encoder: str | Path,
    labels: LabelSet,
    *,
    method: Method = "lora",
    lora: LoRAConfig | None = None,
    seed: int = 0,
    dropout: float = 0.1,
    max_length: int = 128,
) -> tuple[SequenceClassifier, PreTrainedTokenizerBase]:
    """A classifier on the encoder ``encoder`` (a registry name or a folder) and its tokenizer.

    ``lora``: only the adapter (``lora``, default :class:`LoRAConfig`) and the head train;
    ``full``: every weight does. The head and adapter start from ``seed``, whatever the global
    random state."""
    from transformers import AutoTokenizer

    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least two labels, got {list(labels.names)}")
    folder = resolve_model_path(encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    base = load_encoder(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SequenceClassifier(base, labels, dropout=dropout, max_length=max_length)
        if method == "lora":
            add_lora(base, lora or LoRAConfig(), ADAPTER)
            mark_trainable(model, ADAPTER)
            model.head.requires_grad_(True)
        elif method == "full":
            model.requires_grad_(True)
        else:
            raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    return model, tokenizer


def method_of(model: SequenceClassifier) -> Method:
    return "lora" if adapter_names(model.encoder) else "full"


def save_classifier(
    model: SequenceClassifier,
    folder: Path,
    *,
    tokenizer: PreTrainedTokenizerBase,
    base_model: str,
    lora: LoRAConfig | None = None,
) -> Path:
    """Write the classifier to ``folder`` (atomically: a crash leaves the old one).

    Always ``classifier_head.safetensors``, ``labels.json`` and ``classifier.json`` (method,
    base model, pooling, lengths); then for LoRA the adapter in PEFT's format in ``adapter/``
    (the base is loaded from ``base_model``), for full fine-tuning the whole encoder and its
    tokenizer in ``encoder/``."""
    method = method_of(model)
    if (method == "lora") != (lora is not None):
        raise ValueError(
            "pass the adapter's LoRAConfig exactly when the model carries one "
            f"(this one is fine-tuned by {method})"
        )
    card = {
        "method": method,
        "base_model": base_model,
        "pooling": "mean",
        "dropout": model.dropout.p,
        "max_length": model.max_length,
        "labels": len(model.labels),
    }
    head = {k: v.detach().to("cpu").contiguous() for k, v in model.head.state_dict().items()}
    with atomic_dir(Path(folder)) as tmp:
        if lora is not None:
            save_adapter(
                model.encoder,
                tmp / ADAPTER_DIR,
                name=ADAPTER,
                config=lora,
                base_model=base_model,
                task_type="FEATURE_EXTRACTION",
            )
        else:
            encoder = cast(Any, model.encoder)
            encoder.save_pretrained(tmp / ENCODER_DIR, safe_serialization=True)
            tokenizer.save_pretrained(str(tmp / ENCODER_DIR))
        save_file(head, str(tmp / HEAD_FILE))
        (tmp / LABELS_FILE).write_text(json.dumps(list(model.labels.names), indent=2) + "\n")
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return Path(folder)


def load_classifier(
    folder: Path, *, device: str = "cpu", base_model: str | Path | None = None
) -> tuple[SequenceClassifier, PreTrainedTokenizerBase]:
    """A classifier written by :func:`save_classifier`, in eval mode on ``device``.

    A LoRA classifier loads its base from the name it recorded, or from ``base_model``; the
    adapter refuses a base whose weights differ from the one it was trained on."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / CARD_FILE).exists():
        raise FileNotFoundError(f"{folder}: not a classifier folder (no {CARD_FILE})")
    card = json.loads((folder / CARD_FILE).read_text())
    labels = LabelSet(tuple(json.loads((folder / LABELS_FILE).read_text())))
    if card["method"] == "lora":
        source = resolve_model_path(base_model or card["base_model"])
        encoder = load_encoder(source)
        load_adapter(encoder, folder / ADAPTER_DIR, name=ADAPTER)
    else:
        source = folder / ENCODER_DIR
        encoder = load_encoder(source)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = SequenceClassifier(
        encoder, labels, dropout=float(card["dropout"]), max_length=int(card["max_length"])
    )
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    model.to(torch.device(device))
    return model.eval(), tokenizer
