"""The model behind the server: one text engine, any number of LoRA adapters on its base.

Decoding is the models layer's (:class:`~mentor.models.engine.TextEngine`, by default an
:class:`~mentor.models.engine.HFEngine` over the loaded model): this file adds what a server needs
on top. Adapters stay unmerged beside the base weights (:mod:`mentor.train.lora`), so switching
from one request's adapter to the next is a pointer change on each wrapped layer: nothing is
reloaded or re-merged, and a request for ``base`` simply runs with no adapter active.

Everything here runs on the scheduler's one worker thread (:mod:`mentor.serve.scheduler`).

Run: ``mentor serve --model smollm2-135m-instruct --adapter legal=runs/a``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentor.models.engine import Completion, HFEngine, Request, TextEngine
from mentor.models.protocols import SamplingConfig
from mentor.train.adapters import AdapterInfo, load_adapter
from mentor.train.lora import delete_adapter, use_adapter

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Engine:
    """A text engine, the adapters loaded on its model, and the names clients use."""

    lm: TextEngine
    """What decodes: an :class:`HFEngine`, or any other :class:`TextEngine`."""
    model: nn.Module | None = None
    """The module adapters attach to (the engine's model); None refuses adapters."""
    name: str = ""
    """The name clients use in ``model``; adapters are ``<name>:<adapter>`` ('': ``lm.name``)."""
    context_length: int = 0
    """Longest prompt + reply in tokens (0: the engine's own)."""
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)
    quantized: bool = False
    """Loaded from a mentor quantize folder (no adapters on top)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.lm.name
        self.context_length = self.context_length or self.lm.context_length

    @classmethod
    def local(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        *,
        context_length: int = 0,
        quantized: bool = False,
    ) -> Engine:
        """A Hugging Face model and its tokenizer, decoded by :class:`HFEngine`."""
        lm = HFEngine(model, tokenizer, name=name)
        return cls(lm, model, name, context_length=context_length, quantized=quantized)

    # ---- adapters: call on the worker thread (Scheduler.run_exclusive) ----------------------

    def add_adapter(self, name: str, folder: Path) -> AdapterInfo:
        if not name or ":" in name or "/" in name:
            raise ValueError(f"adapter name {name!r}: use letters, digits, '-' or '_'")
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} is already loaded; remove it first")
        if self.quantized:
            raise ValueError(
                f"{folder}: {self.name} is quantized, and adapters run on unquantized bases only; "
                "merge the adapter when quantizing instead (mentor quantize MODEL --adapter A)"
            )
        if self.model is None:
            raise ValueError(f"{folder}: {self.name} takes no adapters (its engine has no model)")
        info = load_adapter(self.model, Path(folder), name=name)
        self.adapters[name] = info
        return info

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(name)
        assert self.model is not None  # adapters are only ever added to a model
        delete_adapter(self.model, name)
        del self.adapters[name]

    def model_ids(self) -> list[str]:
        return [self.name, *(f"{self.name}:{a}" for a in self.adapters)]

    def adapter_for(self, model_id: str) -> str | None:
        """The adapter a request's ``model`` names (None: the base); KeyError if unknown."""
        if model_id == self.name or model_id == "base":
            return None
        base, _, adapter = model_id.partition(":")
        if base in (self.name, "base") and adapter in self.adapters:
            return adapter
        raise KeyError(model_id)

    # ---- prompts and decoding ---------------------------------------------------------------

    def supports_tools(self) -> bool:
        """Whether the chat template renders a ``tools`` list itself."""
        return self.lm.supports_tools()

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        return self.lm.encode_chat(messages, tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        return self.lm.encode_text(text, special=special)

    def stream(
        self,
        prompt: list[int],
        sampling: SamplingConfig,
        *,
        adapter: str | None,
        result: Completion,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text pieces with ``adapter`` active; ``result`` holds the counts."""
        active = use_adapter(self.model, adapter) if self.model is not None else nullcontext()
        with active:
            yield from self.lm.stream(Request(prompt, sampling, deadline, cancelled), result)


def load_engine(
    model: str,
    *,
    name: str | None = None,
    adapters: Sequence[tuple[str, Path]] = (),
    device: str = "auto",
    dtype: str = "auto",
) -> Engine:
    """Load ``model`` (a registry name, a model folder or a quantized folder) with its adapters."""
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.quantize.io import MANIFEST_FILE, load_quantized

    folder = Path(model).expanduser()
    quantized = (folder / MANIFEST_FILE).exists()  # a folder written by mentor quantize
    if quantized:
        lm = load_quantized(folder, device="cpu" if device == "auto" else device)
        tokenizer = load_tokenizer(folder)
    else:
        lm = load_causal_lm(model, device=device, dtype=dtype)  # type: ignore[arg-type]
        tokenizer = load_tokenizer(model)
    engine = Engine.local(lm, tokenizer, name or _default_name(model), quantized=quantized)
    for adapter, path in adapters:
        engine.add_adapter(adapter, path)
    return engine  # each request picks its adapter (Engine.stream), whichever was loaded last


def _default_name(model: str) -> str:
    path = Path(model).expanduser()
    return path.name if path.exists() else model
