"""The model behind the server: one base, any number of LoRA adapters, a streaming decode loop.

Adapters stay unmerged beside the base weights (:mod:`mentor.train.lora`), so switching from
one request's adapter to the next is a pointer change on each wrapped layer: nothing is reloaded
or re-merged, and a request for ``base`` simply runs with no adapter active.

The decode loop is ours rather than ``model.generate`` so that every step can check the request's
deadline and whether its client is still there, and so that text leaves as soon as a token
completes a character:

    prompt ids ─► forward (fills the KV cache) ─► logits ─► pick ─► token ─► detokenize ─► text
                       ▲                                               │
                       └────────────── forward(token) ◄────────────────┘

Everything here runs on the scheduler's one worker thread (:mod:`mentor.serve.scheduler`).

Run: ``mentor serve --model smollm2-135m-instruct --adapter legal=runs/a``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from mentor.models.generation import StopCutter
from mentor.train.adapters import AdapterInfo, load_adapter
from mentor.train.lora import delete_adapter, use_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FinishReason = Literal["stop", "length", "timeout", "cancelled"]


@dataclass(frozen=True)
class Decoding:
    """How one request picks its tokens (the OpenAI request fields, already validated)."""

    max_tokens: int = 256
    """Most tokens to generate."""
    temperature: float = 0.0
    """0 decodes greedily; above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus mass: sample only among the most likely tokens that make up this much."""
    seed: int | None = None
    """Seed of this request's own random generator (sampling only)."""
    stop: tuple[str, ...] = ()
    """Strings that end the reply; they are not part of it."""
    presence_penalty: float = 0.0
    """Subtracted once from the logit of every token already generated (OpenAI's definition)."""
    frequency_penalty: float = 0.0
    """Subtracted from each token's logit once per time it was already generated."""
    ignore_eos: bool = False
    """Keep generating past the end-of-sequence token (benchmarks: a fixed reply length)."""
    fit_context: bool = False
    """Shorten max_tokens to the room the prompt leaves (for a default, not a client's value)."""


@dataclass
class Generated:
    """What one request produced, filled in as the loop runs."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    first_token_s: float | None = None
    """Seconds from the start of decoding to the first token."""
    seconds: float = 0.0


class Detokenizer:
    """Turns a growing list of token ids into text pieces, never splitting a character.

    Each step decodes a short window (the last complete piece plus the new tokens) and emits what
    the new tokens added, once it no longer ends in an incomplete UTF-8 sequence (shown by the
    tokenizer as U+FFFD).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the window
        self._read = 0  # end of what was already emitted

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""


def pick_token(
    logits: torch.Tensor,
    decoding: Decoding,
    generator: torch.Generator | None,
    counts: dict[int, int],
) -> int:
    """The next token from one row of logits (V,), after the penalties."""
    logits = logits.float()
    if counts and (decoding.presence_penalty or decoding.frequency_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
        times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        logits = logits.clone()
        logits[ids] -= decoding.frequency_penalty * times + decoding.presence_penalty
    if decoding.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / decoding.temperature, dim=-1)
    if decoding.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above
        sorted_probs[before >= decoding.top_p] = 0.0  # the top token always survives
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that end a reply: the generation config's EOS ids and the tokenizer's."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return ids


@dataclass
class Engine:
    """A causal LM and its tokenizer, the adapters loaded on it, and the decode loop."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    """The name clients use in ``model``; adapters are ``<name>:<adapter>``."""
    context_length: int = 0
    """Longest prompt + reply in tokens (0: the model's ``max_position_embeddings``)."""
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)
    quantized: bool = False
    """Loaded from a mentor quantize folder (no adapters on top)."""
    _stop_ids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.context_length:
            self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._stop_ids = stop_token_ids(self.model, self.tokenizer)

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
        info = load_adapter(self.model, Path(folder), name=name)
        self.adapters[name] = info
        return info

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(name)
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

    # ---- prompts ----------------------------------------------------------------------------

    def supports_tools(self) -> bool:
        """Whether the chat template renders a ``tools`` list itself."""
        return "tools" in (self.tokenizer.chat_template or "")

    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        """Token ids of the conversation plus the assistant's generation prompt."""
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"{self.name}: the tokenizer has no chat template; use /v1/completions"
            )
        kwargs: dict[str, Any] = {"tools": list(tools)} if tools else {}
        text = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **kwargs
        )
        return self.encode_text(str(text), special=False)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

    # ---- decoding ---------------------------------------------------------------------------

    def stream(
        self,
        prompt: list[int],
        decoding: Decoding,
        *,
        adapter: str | None,
        result: Generated,
        deadline: float | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[str]:
        """Yield the reply's text pieces; ``result`` holds the counts and why it ended."""
        device = self.model.device
        generator = None
        if decoding.temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(decoding.seed if decoding.seed is not None else time.time_ns())
        detok, cutter = Detokenizer(self.tokenizer), StopCutter(decoding.stop)
        counts: dict[int, int] = {}
        start = time.perf_counter()
        reason: FinishReason = "length"
        with torch.inference_mode(), use_adapter(self.model, adapter):
            from transformers import DynamicCache

            cache = DynamicCache()
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            for _ in range(decoding.max_tokens):
                token = pick_token(out.logits[0, -1], decoding, generator, counts)
                if result.first_token_s is None:
                    result.first_token_s = time.perf_counter() - start
                if token in self._stop_ids and not decoding.ignore_eos:
                    reason = "stop"
                    break
                result.completion_tokens += 1
                counts[token] = counts.get(token, 0) + 1
                text = cutter.feed(detok.add(token))
                if text:
                    yield text
                if cutter.stopped:
                    reason = "stop"
                    break
                if cancelled():
                    reason = "cancelled"
                    break
                if deadline is not None and time.monotonic() > deadline:
                    reason = "timeout"
                    break
                step = torch.tensor([[token]], dtype=torch.long, device=device)
                out = self.model(input_ids=step, cache=cache, use_cache=True)
        if not cutter.stopped:
            rest = cutter.flush()
            if rest:
                yield rest
        result.finish_reason = reason
        result.seconds = time.perf_counter() - start


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
    engine = Engine(lm, tokenizer, name or _default_name(model), quantized=quantized)
    for adapter, path in adapters:
        engine.add_adapter(adapter, path)
    return engine  # each request picks its adapter (Engine.stream), whichever was loaded last


def _default_name(model: str) -> str:
    path = Path(model).expanduser()
    return path.name if path.exists() else model
