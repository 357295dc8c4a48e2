"""Offline teacher: its top-k log-probabilities at every trained position, computed once, stored
compressed, reused across epochs, runs and students.

An online teacher runs a forward pass for every student step of every epoch; for a 1.5B teacher
on a CPU that is most of the run. Here the teacher reads each example once. At each position
that carries a target (after the causal shift, so the assistant's tokens of a chat) it keeps
the ``k`` most likely next tokens and their log-probabilities over the full vocabulary.

    folder/
      teacher_topk.json     identity (teacher weights, tokenizer, data, k) and finished shards
      shard-00000.npz       examples [0, shard_size): log-probs fp16 (rows, k), ids int32
      ...                   (rows, k), offsets int64 (examples + 1): example i is rows
                            offsets[i]:offsets[i+1]

Shards are written atomically and recorded in the manifest after they land, so an interrupted
build resumes at the first missing shard. The identity keeps a cache from being used with
another teacher, tokenizer, data or k: the folder is refused with the reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from mentor.distill.losses import IGNORE, TopK
from mentor.train.data import Example
from mentor.train.objectives import backbone_and_head
from mentor.utils.fs import atomic_path, atomic_write_text
from mentor.utils.progress import progress_bar

MANIFEST = "teacher_topk.json"
FORMAT = 1


class CacheMismatchError(ValueError):
    """The folder holds a cache made for another teacher, tokenizer, data or k."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the vocabulary (token -> id, added tokens included)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def data_fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of the examples' token ids and labels, in order."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(e.labels, dtype=np.int64).tobytes())
        digest.update(b";")
    return digest.hexdigest()


def target_positions(example: Example) -> list[int]:
    """Positions t whose next token t+1 is a target, the rows the cache keeps for ``example``."""
    return [t for t in range(len(example.labels) - 1) if example.labels[t + 1] != IGNORE]


@dataclass(frozen=True)
class CacheIdentity:
    teacher: str  # fingerprint of the teacher's weights
    tokenizer: str
    data: str
    k: int
    examples: int
    format: int = FORMAT


@dataclass
class Manifest:
    identity: CacheIdentity
    shard_size: int
    done: list[int] = field(default_factory=list)
    positions: int = 0
    teacher_name: str = ""
    seconds: float = 0.0

    @property
    def shards(self) -> int:
        return -(-self.identity.examples // self.shard_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        raw = json.loads(path.read_text())
        return cls(identity=CacheIdentity(**raw.pop("identity")), **raw)


@dataclass(frozen=True)
class BuildStats:
    shards_computed: int
    shards_reused: int
    forward_passes: int
    positions: int
    seconds: float
    bytes_on_disk: int


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.npz"


@torch.no_grad()
def _topk_batch(
    teacher: nn.Module, batch: Sequence[Example], k: int, device: torch.device, chunk: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One teacher forward over a right-padded batch; top-k at each example's target positions."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
    backbone, head = backbone_and_head(teacher)
    hidden = backbone(
        input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
    ).last_hidden_state  # (B, T, H)
    out = []
    for row, e in enumerate(batch):
        positions = torch.tensor(target_positions(e), dtype=torch.long, device=device)
        picked = hidden[row, positions]  # (n, H)
        values, indices = [], []
        for start in range(0, len(positions), chunk):  # the (n, V) logits a chunk at a time
            logprobs = torch.log_softmax(head(picked[start : start + chunk]).float(), dim=-1)
            top = logprobs.topk(k, dim=-1)
            values.append(top.values.cpu())
            indices.append(top.indices.cpu())
        if values:
            lp = torch.cat(values).to(torch.float16).numpy()
            ix = torch.cat(indices).to(torch.int32).numpy()
        else:
            lp, ix = np.zeros((0, k), np.float16), np.zeros((0, k), np.int32)
        out.append((lp, ix))
    return out


class TeacherCache:
    """A finished cache: the teacher's top-k rows for each example, read a shard at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = Manifest.read(folder / MANIFEST)
        missing = set(range(self.manifest.shards)) - set(self.manifest.done)
        if missing:
            raise ValueError(
                f"{folder}: teacher cache is incomplete ({len(missing)} of "
                f"{self.manifest.shards} shards missing); build it again to resume"
            )
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    @property
    def k(self) -> int:
        return self.manifest.identity.k

    def __len__(self) -> int:
        return self.manifest.identity.examples

    def _shard(self, index: int) -> dict[str, np.ndarray]:
        if index not in self._shards:
            with np.load(_shard_path(self.folder, index), allow_pickle=False) as data:
                self._shards[index] = {name: data[name] for name in data.files}
        return self._shards[index]

    def rows(self, example: int) -> TopK:
        """The teacher's top-k for one example: (n, k) log-probs (fp32) and ids (int64)."""
        if not 0 <= example < len(self):
            raise IndexError(f"example {example} is outside the cache's {len(self)}")
        shard = self._shard(example // self.manifest.shard_size)
        i = example % self.manifest.shard_size
        start, end = int(shard["offsets"][i]), int(shard["offsets"][i + 1])
        return TopK(
            torch.from_numpy(shard["logprobs"][start:end].astype(np.float32)),
            torch.from_numpy(shard["ids"][start:end].astype(np.int64)),
        )


def build_cache(
    folder: Path,
    teacher: nn.Module,
    examples: Sequence[Example],
    *,
    k: int,
    teacher_fingerprint: str,
    tokenizer_hash: str,
    teacher_name: str = "",
    batch_size: int = 8,
    shard_size: int = 256,
    chunk: int = 512,
    device: torch.device | None = None,
    console: Console | None = None,
) -> tuple[TeacherCache, BuildStats]:
    """Compute (or finish, or reuse) the teacher's top-k cache for ``examples`` in ``folder``."""
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    device = device or torch.device("cpu")
    console = console or Console(stderr=True)
    identity = CacheIdentity(
        teacher_fingerprint, tokenizer_hash, data_fingerprint(examples), k, len(examples)
    )
    path = folder / MANIFEST
    if path.exists():
        manifest = Manifest.read(path)
        if manifest.identity != identity:
            differs = [
                name
                for name in ("teacher", "tokenizer", "data", "k", "examples", "format")
                if getattr(manifest.identity, name) != getattr(identity, name)
            ]
            raise CacheMismatchError(
                f"{folder} holds a teacher cache for another {', '.join(differs)}; "
                "give another folder or delete this one"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(identity, shard_size, teacher_name=teacher_name)
    todo = [s for s in range(manifest.shards) if s not in set(manifest.done)]
    reused = manifest.shards - len(todo)
    forward_passes = 0
    started = time.perf_counter()
    teacher.eval()
    with progress_bar(console) as bar:
        task = bar.add_task("teacher top-k", total=len(examples))
        bar.advance(task, sum(len(_shard_range(s, manifest)) for s in manifest.done))
        for s in todo:
            lp_parts: list[np.ndarray] = []
            id_parts: list[np.ndarray] = []
            part = [examples[i] for i in _shard_range(s, manifest)]
            for b in range(0, len(part), batch_size):
                batch = part[b : b + batch_size]
                for lp, ix in _topk_batch(teacher, batch, k, device, chunk):
                    lp_parts.append(lp)
                    id_parts.append(ix)
                forward_passes += 1
                bar.advance(task, len(batch))
            offsets = np.cumsum([0] + [len(x) for x in lp_parts]).astype(np.int64)
            with atomic_path(_shard_path(folder, s)) as tmp, tmp.open("wb") as fh:
                np.savez_compressed(
                    fh,
                    logprobs=np.concatenate(lp_parts),
                    ids=np.concatenate(id_parts),
                    offsets=offsets,
                )
            manifest.done.append(s)
            manifest.positions += int(offsets[-1])
            manifest.seconds += time.perf_counter() - started
            started = time.perf_counter()
            atomic_write_text(path, manifest.to_json())
    if not todo and not path.exists():  # no examples at all: still leave a valid, empty cache
        atomic_write_text(path, manifest.to_json())
    size = sum(f.stat().st_size for f in folder.glob("shard-*.npz"))
    stats = BuildStats(
        len(todo), reused, forward_passes, manifest.positions, manifest.seconds, size
    )
    return TeacherCache(folder), stats


def _shard_range(index: int, manifest: Manifest) -> range:
    start = index * manifest.shard_size
    return range(start, min(start + manifest.shard_size, manifest.identity.examples))
