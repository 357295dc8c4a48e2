"""The one way mentor turns a causal LM and its tokenizer into text: an engine.

Every caller that wants text from a local model goes through a :class:`TextEngine`: the server
streams one request at a time, evaluation, the bakeoff, distillation's teacher and quantize's
speed run answer many prompts in batches, and :class:`~mentor.models.generation.HFGenerator`
(what ``rag ask`` and ``mentor generate`` use) wraps one for chat. There is one request type
(token ids plus a :class:`~mentor.models.protocols.SamplingConfig`) and one result type
(:class:`Completion`). :class:`HFEngine` runs a Hugging Face model with our own decode loop:

    prompts ─► left pad (B, T) ─► forward (fills the KV cache) ─► logits (B, V) ─► pick per row
                                     ▲                                                  │
                                     └─────────── forward(next tokens (B, 1)) ◄─────────┘

The loop is ours rather than ``model.generate`` so that each step can check a request's deadline
and whether its client is still there, text leaves as soon as a token completes a character, and
every row of a batch keeps its own sampling settings, seed, penalties and stop strings. Another
backend (continuous batching across requests, a vLLM server) satisfies the same protocol.

    engine = HFEngine(model, tokenizer, name="smollm2")
    prompt = engine.encode_chat([{"role": "user", "content": "Hi!"}])
    for piece in engine.stream(Request(prompt, SamplingConfig(max_new_tokens=32))):
        print(piece, end="")
    answers = engine.generate([Request(p, SamplingConfig()) for p in prompts], batch_size=8)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from mentor.models.chat import encode_chat
from mentor.models.protocols import SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FinishReason = Literal["stop", "length", "timeout", "cancelled"]


@dataclass(frozen=True)
class Request:
    """One prompt to continue."""

    prompt: list[int]
    """Token ids, special tokens and chat template already applied."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    deadline: float | None = None
    """``time.monotonic()`` past which decoding stops with ``finish_reason="timeout"``."""
    cancelled: Callable[[], bool] | None = None
    """Asked after every token; True stops decoding with ``finish_reason="cancelled"``."""
    adapter: str | None = None
    """The LoRA adapter this request runs with (None: the base model)."""


@dataclass
class Completion:
    """What one request produced; :meth:`TextEngine.stream` fills it in as it goes."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""
    finish_reason: FinishReason | None = None
    first_token_s: float | None = None
    """Seconds from the start of decoding to the first token."""
    seconds: float = 0.0


class TextEngine(Protocol):
    """Turns token-id prompts into text, one streamed or many batched."""

    name: str
    context_length: int
    """Longest prompt + reply, in tokens."""

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        """Token ids of the conversation plus the assistant's generation prompt."""
        ...

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of plain text (``special``: with the tokenizer's BOS/EOS conventions)."""
        ...

    def supports_tools(self) -> bool:
        """Whether the chat template renders a ``tools`` list itself."""
        ...

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        """Yield the reply's text pieces; ``result`` gets the counts and why it ended."""
        ...

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        """Every request's completion, in order."""
        ...


# ---- pieces of the loop (pure, tested on their own) --------------------------------------------


class StopCutter:
    """Passes text through, holding back just enough to cut cleanly at a stop string."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self.stop:
            return text
        self._buffer += text
        hits = [self._buffer.find(s) for s in self.stop if s in self._buffer]
        if hits:
            self.stopped = True
            out, self._buffer = self._buffer[: min(hits)], ""
            return out
        cut = max(0, len(self._buffer) - self._hold)
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


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
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    counts: Mapping[int, int],
    seen: Sequence[int] = (),
) -> int:
    """The next token from one row of logits (V,), after the penalties.

    ``counts`` holds how often each token was generated so far (OpenAI's presence and frequency
    penalties subtract from those logits); ``seen`` holds the prompt's and the reply's tokens, whose
    logits the repetition penalty divides (if positive) or multiplies (if negative), as in
    Keskar et al. (2019) and Hugging Face's ``repetition_penalty``.
    """
    logits = logits.float()
    if counts and (sampling.presence_penalty or sampling.frequency_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
        times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        logits = logits.clone()
        logits[ids] -= sampling.frequency_penalty * times + sampling.presence_penalty
    if seen and sampling.repetition_penalty != 1.0:
        ids = torch.tensor(sorted(set(seen)), dtype=torch.long, device=logits.device)
        values = logits[ids]
        penalty = sampling.repetition_penalty
        logits = logits.clone()
        logits[ids] = torch.where(values < 0, values * penalty, values / penalty)
    if sampling.temperature <= 0:
        return int(logits.argmax())
    # float64, and the best logit moved to 0 before dividing: a temperature of 1e-300 then gives
    # 0 and -inf (a greedy pick) instead of inf/NaN, and a top_p of 1e-50 is no float32 zero.
    shifted = logits.double() - logits.max().double()
    probs = torch.softmax(shifted / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above
        drop = before >= sampling.top_p
        drop[0] = False  # the top token always survives
        sorted_probs[drop] = 0.0
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


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad batches with: the pad token, else the end-of-sequence token."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if not isinstance(pad_id, int):
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return pad_id


def left_pad(rows: Sequence[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Rows of ids left padded into one batch, so every row's new tokens start at one column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off while the block runs; the caller's model may be mid-training: restore it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---- the engine --------------------------------------------------------------------------------


@dataclass
class _Row:
    """One request's state inside a batch."""

    request: Request
    result: Completion
    detok: Detokenizer
    cutter: StopCutter
    generator: torch.Generator | None
    seen: list[int]
    counts: dict[int, int] = field(default_factory=dict)
    done: bool = False

    def finish(self, reason: FinishReason) -> None:
        self.done = True
        self.result.finish_reason = reason


class HFEngine:
    """A Hugging Face causal LM and its tokenizer behind the :class:`TextEngine` protocol."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str = "model"
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.stop_ids = stop_token_ids(model, tokenizer)
        # transformers 5 names the KV cache argument ``cache``; 4.x names it ``past_key_values``
        # (and would silently ignore ``cache``, decoding every step without context).
        accepted = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"

    # ---- prompts ----------------------------------------------------------------------------

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        """Only the template's markup becomes control tokens; every content is text
        (:func:`mentor.models.chat.encode_chat`)."""
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the tokenizer has no chat template")
        return encode_chat(self.tokenizer, messages, tools=tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

    def supports_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    # ---- decoding ---------------------------------------------------------------------------

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        result = result if result is not None else Completion()
        for _, piece in self._decode([request], [result]):
            yield piece

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        """Batches of similar length (sorted by prompt length, so little padding), in order.

        Each completion's text is the whole reply decoded at once, cut at a stop string."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [Completion() for _ in requests]
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for _ in self._decode([requests[i] for i in chunk], [results[i] for i in chunk]):
                pass
        return results

    def _decode(
        self, requests: Sequence[Request], results: Sequence[Completion]
    ) -> Iterator[tuple[int, str]]:
        """(row, text piece) as the batch decodes; fills ``results`` in."""
        if any(not r.prompt for r in requests):
            raise ValueError("a prompt must have at least one token")
        device = self.model.device
        start = time.perf_counter()
        rows = [self._row(r, c) for r, c in zip(requests, results, strict=True)]
        pad_id = padding_id(self.tokenizer)
        batch = left_pad([r.prompt for r in requests], pad_id, device)
        mask = batch["attention_mask"]  # (B, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding shifts each row's positions
        steps = max(r.sampling.max_new_tokens for r in requests)
        with torch.inference_mode(), eval_mode(self.model):
            from transformers import DynamicCache

            cache = DynamicCache()
            # Without padding the model builds its own causal mask, which lets attention take
            # its fast unmasked path; a padded batch needs the mask and the shifted positions.
            padded = bool((mask == 0).any())
            extra: dict[str, Any] = (
                {"attention_mask": mask, "position_ids": positions} if padded else {}
            )
            extra[self._cache_arg] = cache
            out = self.model(
                input_ids=batch["input_ids"], use_cache=True, logits_to_keep=1, **extra
            )
            for step in range(steps):
                logits = out.logits[:, -1]  # (B, V)
                tokens = [pad_id] * len(rows)
                for i, row in enumerate(rows):
                    if row.done:
                        continue
                    piece = self._step(row, logits[i], step, start)
                    if piece:
                        yield i, piece
                    if not row.done:
                        tokens[i] = row.detok.ids[-1]
                if all(row.done for row in rows):
                    break
                if padded:
                    mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                    positions = positions[:, -1:] + 1
                    extra = {"attention_mask": mask, "position_ids": positions}
                extra[self._cache_arg] = cache
                out = self.model(
                    input_ids=torch.tensor(tokens, dtype=torch.long, device=device)[:, None],
                    use_cache=True,
                    **extra,
                )
        for i, row in enumerate(rows):
            if not row.done:
                row.finish("length")
            if not row.cutter.stopped:
                rest = row.cutter.flush()
                if rest:
                    yield i, rest
            row.result.text = self._final_text(row)
            row.result.seconds = time.perf_counter() - start

    def _row(self, request: Request, result: Completion) -> _Row:
        generator = None
        if request.sampling.temperature > 0:
            generator = torch.Generator(device=self.model.device)
            seed = request.sampling.seed
            generator.manual_seed(seed if seed is not None else time.time_ns())
        result.prompt_tokens = len(request.prompt)
        return _Row(
            request,
            result,
            Detokenizer(self.tokenizer),
            StopCutter(request.sampling.stop),
            generator,
            seen=list(request.prompt) if request.sampling.repetition_penalty != 1.0 else [],
        )

    def _step(self, row: _Row, logits: torch.Tensor, step: int, start: float) -> str:
        """Pick one row's next token; return the text it completes (maybe empty)."""
        sampling, result = row.request.sampling, row.result
        if step >= sampling.max_new_tokens:
            row.finish("length")
            return ""
        token = pick_token(logits, sampling, row.generator, row.counts, row.seen)
        if result.first_token_s is None:
            result.first_token_s = time.perf_counter() - start
        if token in self.stop_ids and not sampling.ignore_eos:
            row.finish("stop")
            return ""
        result.completion_tokens += 1
        row.counts[token] = row.counts.get(token, 0) + 1
        if row.seen:
            row.seen.append(token)
        text = row.cutter.feed(row.detok.add(token))
        request = row.request
        if row.cutter.stopped:
            row.finish("stop")
        elif request.cancelled is not None and request.cancelled():
            row.finish("cancelled")
        elif request.deadline is not None and time.monotonic() > request.deadline:
            row.finish("timeout")
        elif result.completion_tokens >= sampling.max_new_tokens:
            row.finish("length")
        return text

    def _final_text(self, row: _Row) -> str:
        text = str(self.tokenizer.decode(row.detok.ids, skip_special_tokens=True))
        hits = [text.find(s) for s in row.cutter.stop if s in text]
        return text[: min(hits)] if hits else text
