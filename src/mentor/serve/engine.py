"""The model behind the server: one text engine, any number of LoRA adapters on its base.

Decoding is the models layer's (:class:`~mentor.models.engine.TextEngine`, by default an
:class:`~mentor.models.engine.HFEngine` over the loaded model, which batches concurrent requests):
this file adds what a server needs on top. Adapters stay unmerged beside the base weights
(:mod:`mentor.train.lora`), and each request names its own (``Request.adapter``): requests for
different adapters share one forward pass, each row's update computed with its own A and B
(:func:`mentor.train.lora.use_row_adapters`), and a request for ``base`` gets none.

Requests arrive from the scheduler's worker threads (:mod:`mentor.serve.scheduler`); adding or
removing an adapter changes the model on the engine's decode thread, between two passes, and a
removal waits for the requests still using that adapter.

With ``--engine vllm`` the text engine is a vLLM server (:func:`mentor.models.vllm.open_vllm`):
there is no model here, and adapters are registered with the server instead (``host``).

Run: ``mentor serve --model smollm2-135m-instruct --adapter legal=runs/a``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mentor.models.engine import Completion, HFEngine, Request, TextEngine, TokenLogprobs
from mentor.models.protocols import SamplingConfig
from mentor.models.vllm_server import VLLMError, VLLMSettings
from mentor.train.adapters import AdapterInfo, load_adapter, read_info
from mentor.train.lora import delete_adapter, set_adapter, use_row_adapters

if TYPE_CHECKING:
    from rich.console import Console
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class AdapterHost(Protocol):
    """A text engine that holds adapters itself (a vLLM server) rather than on ``Engine.model``."""

    def add_adapter(self, name: str, folder: Path) -> object: ...

    def remove_adapter(self, name: str) -> None: ...


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
    host: AdapterHost | None = None
    """Where adapters are registered when there is no ``model`` (the vLLM engine)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.lm.name
        self.context_length = self.context_length or self.lm.context_length
        self._in_use: Counter[str] = Counter()  # adapter -> requests decoding with it
        self._idle = threading.Condition()

    @property
    def concurrency(self) -> int:
        """Requests the engine decodes together (1 for an engine that takes one at a time)."""
        return int(getattr(self.lm, "max_running", 1))

    @classmethod
    def local(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        *,
        context_length: int = 0,
        quantized: bool = False,
        max_running: int = 32,
        kv_budget_tokens: int | None = None,
    ) -> Engine:
        """A Hugging Face model and its tokenizer, decoded by :class:`HFEngine` with up to
        ``max_running`` requests in one batch (within ``kv_budget_tokens``)."""
        lm = HFEngine(
            model, tokenizer, name=name, max_running=max_running, kv_budget_tokens=kv_budget_tokens
        )
        engine = cls(lm, model, name, context_length=context_length, quantized=quantized)
        lm.row_adapters = engine.row_adapters
        return engine

    def row_adapters(self, names: Sequence[str | None]) -> AbstractContextManager[object]:
        """One forward pass with row i under adapter ``names[i]`` (None: the base)."""
        if not self.adapters or self.model is None:
            return nullcontext()
        return use_row_adapters(self.model, names)

    @classmethod
    def remote(cls, lm: Any, name: str) -> Engine:
        """An engine that registers adapters itself (:class:`~mentor.models.vllm.VLLMEngine`);
        the adapters it already serves are listed."""
        engine = cls(lm, None, name, host=lm)
        for adapter, facts in getattr(lm, "adapters", {}).items():
            engine.adapters[adapter] = read_info(facts.path)
        return engine

    # ---- adapters: the model changes between two forward passes ------------------------------

    def _between_passes(self, fn: Callable[[], object]) -> object:
        call = getattr(self.lm, "call", None)  # HFEngine.call: on its decode thread
        return call(fn) if call is not None else fn()

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
        if self.host is not None:
            facts = read_info(Path(folder))  # a clear error for a folder that is no adapter
            try:
                self.host.add_adapter(name, Path(folder))
            except VLLMError as exc:
                raise ValueError(str(exc)) from None
            self.adapters[name] = facts
            return facts
        if self.model is None:
            raise ValueError(f"{folder}: {self.name} takes no adapters (its engine has no model)")
        model = self.model

        def load() -> AdapterInfo:
            loaded = load_adapter(model, Path(folder), name=name)
            set_adapter(model, None)  # the base stays the default; requests name their adapter
            return loaded

        info = self._between_passes(load)
        assert isinstance(info, AdapterInfo)
        self.adapters[name] = info
        return info

    def remove_adapter(self, name: str) -> None:
        """Unlist ``name`` at once (new requests for it get a 404), then delete its weights
        when the requests still decoding with it have finished."""
        if name not in self.adapters:
            raise KeyError(name)
        model = self.model
        del self.adapters[name]
        with self._idle:
            self._idle.wait_for(lambda: self._in_use[name] == 0)
        if self.host is not None:
            self.host.remove_adapter(name)
            return
        assert model is not None  # adapters are only ever added to a model (or a host)
        self._between_passes(lambda: delete_adapter(model, name))

    def model_ids(self) -> list[str]:
        return [self.name, *(f"{self.name}:{a}" for a in self.adapters)]

    def adapter_for(self, model_id: str) -> str | None:
        """The adapter a request's ``model`` names (None: the base); KeyError if unknown.

        ``<base>:<adapter>`` or the adapter's bare name, as vLLM's clients send it (an adapter
        may not take the model's own name, so the two never clash)."""
        if model_id == self.name or model_id == "base":
            return None
        if model_id in self.adapters:
            return model_id
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

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (an echoed token-id prompt)."""
        return str(self.lm.tokenizer.decode(list(ids)))  # type: ignore[attr-defined]

    def vocab_size(self) -> int | None:
        """Ids a prompt may hold (None: the engine does not say)."""
        tokenizer = getattr(self.lm, "tokenizer", None)
        return None if tokenizer is None else len(tokenizer)

    def scores_prompts(self) -> bool:
        """Whether the engine returns a prompt's own log-probabilities (``echo`` + ``logprobs``)."""
        return callable(getattr(self.lm, "prompt_logprobs", None))

    def prompt_logprobs(
        self, prompt: list[int], k: int, *, adapter: str | None
    ) -> list[TokenLogprobs]:
        """Each prompt token's log-probability after the ones before it (the first: NaN)."""
        if adapter is not None:
            with self._idle:
                if adapter not in self.adapters:
                    raise KeyError(adapter)
                self._in_use[adapter] += 1
        try:
            return list(self.lm.prompt_logprobs(prompt, k, adapter))  # type: ignore[attr-defined]
        finally:
            if adapter is not None:
                with self._idle:
                    self._in_use[adapter] -= 1
                    self._idle.notify_all()

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
        """Yield the reply's text pieces, decoded with ``adapter`` (None: the base model);
        ``result`` holds the counts."""
        if adapter is not None:
            with self._idle:
                if adapter not in self.adapters:
                    raise KeyError(adapter)
                self._in_use[adapter] += 1
        try:
            request = Request(prompt, sampling, deadline, cancelled, adapter)
            yield from self.lm.stream(request, result)
        finally:
            if adapter is not None:
                with self._idle:
                    self._in_use[adapter] -= 1
                    self._idle.notify_all()


def load_engine(
    model: str,
    *,
    name: str | None = None,
    adapters: Sequence[tuple[str, Path]] = (),
    device: str = "auto",
    dtype: str = "auto",
    max_running: int = 32,
    kv_cache_gb: float | None = None,
) -> Engine:
    """Load ``model`` (a registry name, a model folder or a quantized folder) with its adapters;
    up to ``max_running`` requests decode together, within ``kv_cache_gb`` of KV cache."""
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.quantize.io import MANIFEST_FILE, load_quantized

    folder = Path(model).expanduser()
    quantized = (folder / MANIFEST_FILE).exists()  # a folder written by mentor quantize
    if quantized:
        lm = load_quantized(folder, device=device)
        tokenizer = load_tokenizer(folder)
    else:
        lm = load_causal_lm(model, device=device, dtype=dtype)  # type: ignore[arg-type]
        tokenizer = load_tokenizer(model)
    engine = Engine.local(
        lm,
        tokenizer,
        name or _default_name(model),
        quantized=quantized,
        max_running=max_running,
        kv_budget_tokens=kv_tokens(lm, kv_cache_gb),
    )
    for adapter, path in adapters:
        engine.add_adapter(adapter, path)
    return engine  # each request names its adapter (Engine.stream)


@contextmanager
def open_vllm_engine(
    model: str,
    *,
    name: str | None = None,
    adapters: Sequence[tuple[str, Path]] = (),
    settings: VLLMSettings,
    max_running: int = 32,
    console: Console | None = None,
) -> Iterator[Engine]:
    """``model`` served by vLLM (started, or attached at ``settings.url``) with its adapters
    registered there; up to ``max_running`` requests in flight. Stops what it started."""
    from mentor.models.loading import load_tokenizer, resolve_model_path
    from mentor.models.vllm import open_vllm
    from mentor.quantize.io import MANIFEST_FILE

    folder = resolve_model_path(model)
    if (folder / MANIFEST_FILE).exists():
        raise ValueError(f"{folder}: a mentor quantize folder; --engine vllm serves HF folders")
    tokenizer = load_tokenizer(folder)
    served = name or _default_name(model)
    with open_vllm(
        folder, tokenizer, name=served, adapters=dict(adapters), settings=settings, console=console
    ) as lm:
        lm.max_running = max_running
        yield Engine.remote(lm, served)


def kv_tokens(model: nn.Module, gigabytes: float | None) -> int | None:
    """Tokens of KV cache that ``gigabytes`` hold for ``model`` (None: the engine's default)."""
    if gigabytes is None:
        return None
    from mentor.models.kv import bytes_per_token

    dtype = next(model.parameters()).dtype
    return max(1, int(gigabytes * 1024**3) // bytes_per_token(model.config, dtype))


def _default_name(model: str) -> str:
    path = Path(model).expanduser()
    return path.name if path.exists() else model
