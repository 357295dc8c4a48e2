"""The one way mentor turns a causal LM and its tokenizer into text: an engine.

Every caller that wants text goes through a :class:`TextEngine`: the server streams requests,
evaluation, the bakeoff, distillation's teacher, synthetic questions and quantize's speed run
answer many prompts at once, and :class:`~mentor.models.generation.EngineGenerator` (what
``rag ask`` and ``mentor generate`` use) wraps one for chat; callers pick the engine with
:func:`~mentor.models.backends.open_engine` (this builtin one, or a vLLM server). There is one
request type (token ids, a :class:`~mentor.models.protocols.SamplingConfig` and the adapter to
run) and one result type (:class:`Completion`). :class:`HFEngine` runs a Hugging Face model with
our own decode loop, batched continuously (Yu et al., 2022, "Orca"):

    submit ─► waiting ─► admit (max_running, KV budget) ─► prefill, pick the first token
                                                              │  join the running batch
    running batch (B, L) ─► forward(last tokens (B, 1)) ─► logits (B, V) ─► pick per row
          ▲                                                                     │
          └──────────── finished rows leave, new rows join between passes ◄─────┘

The loop is ours rather than ``model.generate`` so that each step can check a request's deadline
and whether its client is still there, text leaves as soon as a token completes a character, and
every row keeps its own sampling settings, seed, penalties, stop strings and LoRA adapter. On
CUDA a request alone runs through :class:`~mentor.models.static_decode.StaticDecoder` (a static
cache and one captured graph per token) until a second one arrives.

    engine = HFEngine(model, tokenizer, name="smollm2")
    prompt = engine.encode_chat([{"role": "user", "content": "Hi!"}])
    for piece in engine.stream(Request(prompt, SamplingConfig(max_new_tokens=32))):
        print(piece, end="")  # other threads' requests decode in the same passes meanwhile
    answers = engine.generate([Request(p, SamplingConfig()) for p in prompts], batch_size=16)
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch

from mentor.models import static_decode
from mentor.models.chat import encode_chat
from mentor.models.constrain import JsonConstraint
from mentor.models.kv import Batch, bytes_per_token, extend, join, joinable, keep
from mentor.models.protocols import SamplingConfig
from mentor.models.repetition import LoopGuard

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


@dataclass(frozen=True)
class TokenChoice:
    """One token and its log-probability under the model."""

    token_id: int
    text: str
    """The token decoded alone (a piece of a multi-byte character shows as U+FFFD)."""
    logprob: float
    raw: bytes | None = None
    """The token's own bytes where ``text`` cannot show them (a piece of a character); None:
    ``text`` encoded as UTF-8."""


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token's log-probability and the most likely tokens at its position."""

    chosen: TokenChoice
    top: tuple[TokenChoice, ...] = ()
    """Most likely first; as many as ``SamplingConfig.logprobs`` asks."""


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
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    """One entry per generated token when ``SamplingConfig.logprobs`` is set, appended before
    the token's text is streamed."""
    loop_dropped: int = 0
    """Tokens the loop guard dropped from the end of the text: a copy of an earlier stretch
    (``SamplingConfig.loop_ngram``); 0 when the reply did not loop. ``completion_tokens``
    still counts them (they were generated)."""


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

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, lock: AbstractContextManager[Any] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self._lock = lock if lock is not None else nullcontext()
        self.ids: list[int] = []
        self._prefix = 0  # start of the window
        self._read = 0  # end of what was already emitted

    def _decode(self, ids: list[int]) -> str:
        with self._lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 bytes (GPT-2's ``bytes_to_unicode``)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shown = keep + [256 + i for i in range(256 - len(keep))]
    others = [b for b in range(256) if b not in keep]
    return {chr(c): b for c, b in zip(shown, keep + others, strict=True)}


_BYTES = _byte_alphabet()


def token_bytes(tokenizer: PreTrainedTokenizerBase, token: int) -> bytes | None:
    """The raw bytes of one token of a byte-level BPE (``Ġ`` for a space...) or a
    SentencePiece byte-fallback token (``<0xE2>``); None if it is neither."""
    piece = str(tokenizer.convert_ids_to_tokens(token))
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    if piece and all(c in _BYTES for c in piece):
        return bytes(_BYTES[c] for c in piece)
    return None


def token_choice(tokenizer: PreTrainedTokenizerBase, token: int, logprob: float) -> TokenChoice:
    """A token with its text, and its raw bytes when the text is a broken character (every
    engine reports tokens this way, whoever computed the logprob)."""
    text = str(tokenizer.decode([token]))
    if "\ufffd" not in text:
        return TokenChoice(token, text, logprob)
    return TokenChoice(token, text, logprob, token_bytes(tokenizer, token))


def top_logprobs(logits: torch.Tensor, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token`` and the ``k`` most likely (id, log-probability) pairs,
    from one row of raw logits (V,): the model's own distribution, before any penalty,
    temperature or top_p (what OpenAI and vLLM's default ``raw_logprobs`` report), so the
    numbers are the same whatever sampling settings the request chose."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if k <= 0:
        return float(logprobs[token]), []
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]))
    return float(logprobs[token]), list(zip(ids.tolist(), values.tolist(), strict=True))


def pick_token(
    logits: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    counts: Mapping[int, int],
    seen: Sequence[int] = (),
) -> int:
    """The next token from one row of logits (V,), after the logit bias and the penalties.

    ``sampling.logit_bias`` is added first, as OpenAI adds it to the logits; ``counts`` holds how
    often each token was generated so far (OpenAI's presence and frequency penalties subtract
    from those logits); ``seen`` holds the prompt's and the reply's tokens, whose logits the
    repetition penalty divides (if positive) or multiplies (if negative), as in Keskar et al.
    (2019) and Hugging Face's ``repetition_penalty``.
    """
    logits = logits.float()
    if sampling.logit_bias:
        ids = torch.tensor([i for i, _ in sampling.logit_bias], device=logits.device)
        bias = torch.tensor([b for _, b in sampling.logit_bias], device=logits.device)
        logits = logits.clone()
        logits[ids] += bias
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


def check_logit_bias(bias: Sequence[tuple[int, float]], vocab_size: int) -> None:
    """Refuse a bias on an id the logits do not have (a negative one would index from the end)."""
    for token, _ in bias:
        if not 0 <= token < vocab_size:
            raise ValueError(
                f"logit_bias: token id {token} is outside the vocabulary (0..{vocab_size - 1})"
            )


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
    if not model.training:  # nothing to switch (and no walk over every module per pass)
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train(True)


# ---- the engine --------------------------------------------------------------------------------

RowAdapters = Callable[[Sequence[str | None]], AbstractContextManager[Any]]
"""Runs one forward pass with row i under adapter ``names[i]`` (None: the base), e.g.
``lambda names: mentor.train.lora.use_row_adapters(model, names)``."""

SHARED_PREFILL_TOKENS = 128
"""Prompts up to this long are prefilled together in one padded pass; longer ones alone."""
PREFILL_TOKENS = 2048
"""Prompt tokens admitted between two decode passes (at least one request): a burst of long
prompts is prefilled over several passes, so running requests keep producing tokens."""
IDLE_SECONDS = 2.0
"""The decode thread ends after this long with nothing to do (the next request starts another)."""


class _Done:
    """Marks the end of a row's stream of pieces."""


_DONE = _Done()


@dataclass
class _Row:
    """One request's state from submission to its last token."""

    request: Request
    result: Completion
    detok: Detokenizer
    cutter: StopCutter
    generator: torch.Generator | None
    seen: list[int]
    submitted: float
    pieces: queue.SimpleQueue[str | _Done | BaseException] | None
    """Where streamed text goes (None: nobody streams this row, only its result is wanted)."""
    finished: threading.Event = field(default_factory=threading.Event)
    counts: dict[int, int] = field(default_factory=dict)
    last: int = 0
    """The token to feed at the next forward pass."""
    done: bool = False
    abandoned: bool = False
    """Its reader went away (a closed stream): stop at the next step."""
    error: BaseException | None = None
    """What failed the forward pass this row was in."""
    constraint: JsonConstraint | None = None
    """The tokens the reply may take next (``SamplingConfig.json_schema``)."""
    generated: list[int] = field(default_factory=list)
    loop: LoopGuard | None = None
    """Watches the reply for loops (None: ``SamplingConfig.loop_ngram`` is 0)."""
    held: list[str] = field(default_factory=list)
    """Text of the reply's last tokens, one piece per token, held back while they may be the
    start of a loop (``loop.held`` of them)."""

    @property
    def reserved(self) -> int:
        """KV-cache tokens the row may come to hold: its prompt and every token it may add."""
        return len(self.request.prompt) + self.request.sampling.max_new_tokens

    def finish(self, reason: FinishReason) -> None:
        self.done = True
        self.result.finish_reason = reason

    def emit(self, item: str | _Done | BaseException) -> None:
        if self.pieces is not None and item != "":
            self.pieces.put(item)


class HFEngine:
    """A Hugging Face causal LM behind the :class:`TextEngine` protocol, continuously batched.

    Requests from any number of threads share one decode thread: each forward pass advances every
    running request by one token; a new request is prefilled and joins the batch between two
    passes (:mod:`mentor.models.kv`), and one that finishes leaves at once. At most
    ``max_running`` requests run together, and only while their prompts plus their
    ``max_new_tokens`` fit ``kv_budget_tokens``; the rest wait in order. Each row keeps its own
    sampling settings, seed, penalties, stop strings, deadline, cancellation and LoRA adapter
    (``row_adapters`` runs one pass with a different adapter per row).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "model",
        max_running: int = 32,
        kv_budget_tokens: int | None = None,
        row_adapters: RowAdapters | None = None,
        single_stream: bool | None = None,
    ) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {max_running}")
        self.reports_logprobs = True
        """Fills ``Completion.logprobs`` when ``SamplingConfig.logprobs`` asks."""
        self.constrains_json = True
        """Honours ``SamplingConfig.json_schema`` (:mod:`mentor.models.constrain`)."""
        self.biases_logits = True
        """Honours ``SamplingConfig.logit_bias`` (:func:`pick_token`, on every decoding path)."""
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
        """Entries of a logits row (the ids a ``logit_bias`` may name)."""
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.max_running = max_running
        self.kv_budget_tokens = kv_budget_tokens or default_kv_budget(model)
        self.row_adapters = row_adapters
        self.pad_id = padding_id(tokenizer)
        # transformers 5 names the KV cache argument ``cache``; 4.x names it ``past_key_values``
        # (and would silently ignore ``cache``, decoding every step without context).
        accepted = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent mutable use
        self._wake = threading.Condition()
        self._waiting: deque[_Row] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._running: list[_Row] = []
        self._batch: Batch | None = None
        self._joinable = True  # learned from the first cache
        self._thread: threading.Thread | None = None
        self._closed: list[_Row] = []  # rows finished in this pass, to signal after it
        if single_stream is None:
            single_stream = model.device.type == "cuda" and static_decode.supported(model)
        self.single_stream = single_stream
        """A lone request decodes through a :class:`StaticDecoder` (a static KV cache and, on
        CUDA, one captured graph per token) until a second one arrives; default: on CUDA."""
        self._decoders: dict[int, static_decode.StaticDecoder] = {}
        self._solo: static_decode.StaticDecoder | None = None  # decoding the lone row
        self.steps = 0
        """Forward passes so far (prefills included)."""

    # ---- prompts ----------------------------------------------------------------------------

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        """Only the template's markup becomes control tokens; every content is text
        (:func:`mentor.models.chat.encode_chat`)."""
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the tokenizer has no chat template")
        with self._tokenizer_lock:
            return encode_chat(self.tokenizer, messages, tools=tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

    def supports_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    # ---- requests in, text out (any thread) -------------------------------------------------

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        row = self._submit(request, result, streamed=True)
        assert row.pieces is not None
        try:
            while True:
                item = row.pieces.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not row.finished.is_set():
                row.abandoned = True  # the reader left early: the row stops at the next step

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        """Every request's completion, in order, at most ``batch_size`` of them running at once
        (shortest prompts first, so rows of a batch pad little); a finished one is replaced at
        the next step. Each text is the whole reply decoded at once, cut at a stop string."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [Completion() for _ in requests]
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))
        pending = deque(order)
        running: list[_Row] = []
        while pending or running:
            chosen = [
                pending.popleft() for _ in range(min(len(pending), batch_size - len(running)))
            ]
            running += self._submit_all([(requests[i], results[i]) for i in chosen])
            running[0].finished.wait()
            for row in [r for r in running if r.finished.is_set()]:
                running.remove(row)
                if row.error is not None:
                    for other in running:
                        other.abandoned = True
                    raise row.error
        return results

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the decode thread between two forward passes and return its result
        (changing the model, e.g. adding an adapter, while no pass is running)."""
        if threading.current_thread() is self._thread:
            return fn()
        done: Future[Any] = Future()
        with self._wake:
            self._calls.append((fn, done))
            self._start()
        return done.result()

    def prompt_logprobs(
        self, prompt: Sequence[int], k: int, adapter: str | None = None
    ) -> list[TokenLogprobs]:
        """Each prompt token's log-probability given the tokens before it, with the ``k``
        likeliest alternatives (one full pass on the decode thread, between two decode passes;
        what loglikelihood evaluation asks for). The first token has no context: its logprob is
        NaN and it has no alternatives."""
        if not prompt:
            raise ValueError("a prompt must have at least one token")
        ids = list(prompt)

        def score() -> list[TokenLogprobs]:
            names = [adapter]
            adapters = self.row_adapters(names) if self.row_adapters else nullcontext()
            with torch.inference_mode(), eval_mode(self.model), adapters:
                tokens = torch.tensor([ids], dtype=torch.long, device=self.model.device)
                logits = self.model(input_ids=tokens).logits[0]  # (L, V)
            self.steps += 1
            with self._tokenizer_lock:
                first = str(self.tokenizer.decode([ids[0]]))
            head = TokenLogprobs(TokenChoice(ids[0], first, float("nan")))
            return [head, *(self._logprobs(logits[i - 1], ids[i], k) for i in range(1, len(ids)))]

        if adapter is not None and self.row_adapters is None:
            raise ValueError(f"{self.name} runs no adapters, and this request asks for one")
        return cast(list[TokenLogprobs], self.call(score))

    @property
    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        with self._wake:
            return len(self._running), len(self._waiting)

    def _submit(self, request: Request, result: Completion | None, *, streamed: bool) -> _Row:
        (row,) = self._submit_all(
            [(request, result if result is not None else Completion())], streamed=streamed
        )
        return row

    def _submit_all(
        self, work: Sequence[tuple[Request, Completion]], *, streamed: bool = False
    ) -> list[_Row]:
        """Queue requests together (they are prefilled in one pass when there is room)."""
        for request, _ in work:
            if not request.prompt:
                raise ValueError("a prompt must have at least one token")
            if request.adapter is not None and self.row_adapters is None:
                raise ValueError(f"{self.name} runs no adapters, and this request asks for one")
            check_logit_bias(request.sampling.logit_bias, self.vocab_size)
        rows = [self._row(request, result, streamed) for request, result in work]
        with self._wake:
            self._waiting.extend(rows)
            self._start()
        return rows

    def _row(self, request: Request, result: Completion, streamed: bool) -> _Row:
        generator = None
        if request.sampling.temperature > 0:
            generator = torch.Generator(device=self.model.device)
            seed = request.sampling.seed
            generator.manual_seed(seed if seed is not None else time.time_ns())
        result.prompt_tokens = len(request.prompt)
        constraint = None
        if request.sampling.json_schema is not None:  # built here: a bad schema fails the submit
            with self._tokenizer_lock:
                constraint = JsonConstraint.build(
                    self.tokenizer, request.sampling.json_schema, stop_ids=sorted(self.stop_ids)
                )
        return _Row(
            request,
            result,
            Detokenizer(self.tokenizer, self._tokenizer_lock),
            StopCutter(request.sampling.stop),
            generator,
            seen=list(request.prompt) if request.sampling.repetition_penalty != 1.0 else [],
            submitted=time.perf_counter(),
            pieces=queue.SimpleQueue() if streamed else None,
            constraint=constraint,
            loop=self._loop_guard(request.sampling),
        )

    @staticmethod
    def _loop_guard(sampling: SamplingConfig) -> LoopGuard | None:
        """The request's loop guard, if it has one: not for a reply constrained to JSON (a cut
        would break it) nor one that must run its full length (``ignore_eos``: benchmarks)."""
        if not sampling.loop_ngram or sampling.json_schema is not None or sampling.ignore_eos:
            return None
        return LoopGuard(sampling.loop_ngram)

    def _start(self) -> None:
        """Start the decode thread if none runs (call holding ``_wake``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mentor-decode", daemon=True)
            self._thread.start()
        self._wake.notify()

    # ---- the decode thread ------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    if not (self._waiting or self._running or self._calls):
                        self._wake.wait(IDLE_SECONDS)
                    if not (self._waiting or self._running or self._calls):
                        self._thread = None  # the next submission starts a new thread
                        return
                    calls = list(self._calls)
                    self._calls.clear()
                for fn, done in calls:
                    try:
                        done.set_result(fn())
                    except BaseException as exc:  # handed to the caller, the loop goes on
                        done.set_exception(exc)
                joining = self._admit()
                # Dropout off for the passes; a model caught mid-training gets its mode back
                # before any caller learns its rows are done (and goes on training).
                with eval_mode(self.model):
                    try:
                        if joining:
                            self._prefill(joining)
                        if self._running:
                            self._advance()
                    except BaseException as exc:  # every row in the failed pass gets the error
                        for row in self._running + joining:
                            if not row.done:
                                row.done, row.error = True, exc
                                self._closed.append(row)
                        self._running, self._batch, self._solo = [], None, None
                closed, self._closed = self._closed, []
                for row in closed:
                    row.emit(row.error if row.error is not None else _DONE)
                    row.finished.set()

    def _admit(self) -> list[_Row]:
        """Waiting rows that may join now: room in ``max_running`` and the KV budget, in order,
        and at most ``PREFILL_TOKENS`` of prompt between two decode passes.

        A cancelled or abandoned row leaves the queue without running. A model whose cache
        cannot take rows mid-flight admits only into an empty batch."""
        with self._wake:
            if self._running and not self._joinable:
                return []
            joining: list[_Row] = []
            reserved = sum(r.reserved for r in self._running)
            prefill = 0
            while self._waiting and len(self._running) + len(joining) < self.max_running:
                row = self._waiting[0]
                if row.abandoned or (row.request.cancelled and row.request.cancelled()):
                    self._waiting.popleft()
                    row.finish("cancelled")
                    self._close(row)
                    continue
                busy = self._running or joining
                if busy and reserved + row.reserved > self.kv_budget_tokens:
                    break  # the oldest waits for room rather than be overtaken
                if joining and prefill + len(row.request.prompt) > PREFILL_TOKENS:
                    break  # the next pass takes it
                reserved += row.reserved
                prefill += len(row.request.prompt)
                joining.append(self._waiting.popleft())
            return joining

    def _adapters(self, rows: Sequence[_Row]) -> AbstractContextManager[Any]:
        """Each row's adapter for one pass (all None too: the base, whatever was active)."""
        if self.row_adapters is None:
            return nullcontext()
        return self.row_adapters([r.request.adapter for r in rows])

    def _forward(self, ids: torch.Tensor, rows: Sequence[_Row], **kwargs: Any) -> torch.Tensor:
        """One pass; the last position's logits (B, V)."""
        with self._adapters(rows):
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)
        self.steps += 1
        return cast(torch.Tensor, out.logits[:, -1])

    # ---- one request alone: the single-stream decoder -----------------------------------------

    def _alone(self, rows: Sequence[_Row]) -> bool:
        """Whether ``rows`` is one base-model request with nothing else running or waiting."""
        if not self.single_stream or self._running or len(rows) != 1:
            return False
        with self._wake:
            waiting = bool(self._waiting)
        row = rows[0]
        return not waiting and row.request.adapter is None and row.reserved <= self.context_length

    def _decoder(self, tokens: int) -> static_decode.StaticDecoder:
        """The decoder whose cache fits ``tokens``: sizes grow by 4x from 512 up to the context,
        each compiled once, so a short request does not attend over a full context's slots."""
        size = 512
        while size < tokens and size < self.context_length:
            size *= 4
        size = min(size, self.context_length)
        if size not in self._decoders:
            compiled = self.model.device.type == "cuda"
            with torch.inference_mode(False):  # its buffers are written outside inference mode
                self._decoders[size] = static_decode.StaticDecoder(
                    self.model, size, static=True, compile=compiled
                )
        return self._decoders[size]

    def _leave_single_stream(self) -> Batch:
        """The lone row's cache as a one-row batch, which others can join."""
        assert self._solo is not None
        length = self._solo.length
        cache = self._solo.export_cache()
        self._solo = None
        mask = torch.ones((1, length), dtype=torch.long, device=self.model.device)
        return Batch(cache, mask, torch.tensor([length], device=self.model.device))

    def _prefill(self, rows: list[_Row]) -> None:
        """Run the new rows' prompts, pick their first tokens, and join them to the batch.

        Short prompts share one padded pass (a pass over a few short rows costs about what one
        costs); a long prompt gets a pass of its own, where padding would cost its full compute.
        """
        if self._solo is not None:
            self._batch = self._leave_single_stream()
        elif self._alone(rows):
            self._solo = self._decoder(rows[0].reserved)
            self._solo.reset()
            with self._adapters(rows):
                logits = self._solo.prefill(rows[0].request.prompt)
            self.steps += 1
            self._running += rows
            self._pick(rows, logits[None])
            return
        short = [r for r in rows if len(r.request.prompt) <= SHARED_PREFILL_TOKENS]
        groups = ([short] if short else []) + [[r] for r in rows if r not in short]
        for i, group in enumerate(groups):
            if self._batch is not None and not self._joinable:  # learned from the first pass
                with self._wake:
                    self._waiting.extendleft(reversed([r for g in groups[i:] for r in g]))
                return
            self._prefill_group(group)

    def _prefill_group(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        device = self.model.device
        padded = left_pad([r.request.prompt for r in rows], self.pad_id, device)
        mask = padded["attention_mask"]  # (b, l)
        cache = DynamicCache()
        kwargs: dict[str, Any] = {self._cache_arg: cache}
        if bool((mask == 0).any()):  # unpadded, the model's own causal mask takes a faster path
            kwargs |= {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        logits = self._forward(padded["input_ids"], rows, **kwargs)
        joining = Batch(cache, mask, mask.sum(-1))
        if self._batch is None:
            self._joinable = joinable(cache)
            self._batch = joining
        else:
            self._batch = join(self._batch, joining)
        self._running += rows
        self._pick(rows, logits)

    def _advance(self) -> None:
        """One forward pass over every running row, then the next token for each."""
        if self._solo is not None:
            rows = self._running
            with self._adapters(rows):
                logits = self._solo.step(rows[0].last)
            self.steps += 1
            self._pick(rows, logits[None])
            return
        batch = self._batch
        assert batch is not None
        rows = self._running
        mask, positions = extend(batch)
        ids = torch.tensor([r.last for r in rows], dtype=torch.long, device=mask.device)[:, None]
        kwargs: dict[str, Any] = {self._cache_arg: batch.cache}
        if bool((mask == 0).any()):
            kwargs |= {"attention_mask": mask, "position_ids": positions}
        # Without padding every row's position is the cache's length, which the model assumes
        # (given position ids, transformers checks them for packed sequences at every step).
        logits = self._forward(ids, rows, **kwargs)
        self._pick(rows, logits)

    def _pick(self, rows: Sequence[_Row], logits: torch.Tensor) -> None:
        """Each row's next token from its logits; finished rows leave the batch."""
        for i, row in enumerate(rows):
            if not row.done:
                row.emit(self._step(row, logits[i]))
        if any(r.done for r in self._running):
            staying = [i for i, r in enumerate(self._running) if not r.done]
            for row in self._running:
                if row.done:
                    self._close(row)
            if self._solo is not None:
                self._solo = None  # the lone row finished; its decoder waits for the next
            else:
                assert self._batch is not None
                self._batch = keep(self._batch, staying) if staying else None
            with self._wake:
                self._running = [self._running[i] for i in staying]

    def _step(self, row: _Row, logits: torch.Tensor) -> str:
        """Pick one row's next token; return the text it completes (maybe empty)."""
        sampling, result, request = row.request.sampling, row.result, row.request
        if row.abandoned or (request.cancelled is not None and request.cancelled()):
            row.finish("cancelled")
            return ""
        allowed = logits
        if row.constraint is not None:
            with self._tokenizer_lock:
                ids = row.constraint([*request.prompt, *row.generated])
            if not ids:  # the grammar allows nothing more (not even an end): stop here
                row.finish("stop")
                return ""
            allowed = torch.full_like(logits, float("-inf"))
            allowed[ids] = logits[ids]
        token = pick_token(allowed, sampling, row.generator, row.counts, row.seen)
        row.generated.append(token)
        if result.first_token_s is None:
            result.first_token_s = time.perf_counter() - row.submitted
        if token in self.stop_ids and not sampling.ignore_eos:
            row.finish("stop")
            return ""
        if sampling.logprobs is not None:
            result.logprobs.append(self._logprobs(logits, token, sampling.logprobs))
        row.last = token
        result.completion_tokens += 1
        row.counts[token] = row.counts.get(token, 0) + 1
        if row.seen:
            row.seen.append(token)
        text = row.detok.add(token)
        if row.loop is not None:
            text = self._hold(row, token, text)
        text = row.cutter.feed(text)
        if row.loop is not None and row.loop.looped:
            row.result.loop_dropped = row.loop.held
            row.finish("stop")
        elif row.cutter.stopped:
            row.finish("stop")
        elif request.cancelled is not None and request.cancelled():
            row.finish("cancelled")
        elif request.deadline is not None and time.monotonic() > request.deadline:
            row.finish("timeout")
        elif result.completion_tokens >= sampling.max_new_tokens:
            row.finish("length")
        return text

    @staticmethod
    def _hold(row: _Row, token: int, text: str) -> str:
        """The text to release now: what precedes the copy in progress (all of it dropped if
        the copy reached the guard's length)."""
        assert row.loop is not None
        row.loop.add(token)
        row.held.append(text)
        if row.loop.looped:
            row.held = []
            return ""
        cut = len(row.held) - row.loop.held
        out, row.held = "".join(row.held[:cut]), row.held[cut:]
        return out

    def _logprobs(self, logits: torch.Tensor, token: int, k: int) -> TokenLogprobs:
        chosen, top = top_logprobs(logits, token, k)
        with self._tokenizer_lock:
            choices = [token_choice(self.tokenizer, i, lp) for i, lp in [(token, chosen), *top]]
        return TokenLogprobs(choices[0], tuple(choices[1:]))

    def _close(self, row: _Row) -> None:
        """A finished row's last text, its result, and the end of its stream."""
        if not row.cutter.stopped:
            row.emit(row.cutter.feed("".join(row.held)))  # the reply ended mid-copy: no loop
            if not row.cutter.stopped:
                row.emit(row.cutter.flush())
        ids = row.detok.ids[: len(row.detok.ids) - row.result.loop_dropped]
        with self._tokenizer_lock:
            text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        hits = [text.find(s) for s in row.cutter.stop if s in text]
        row.result.text = text[: min(hits)] if hits else text
        row.result.seconds = time.perf_counter() - row.submitted
        self._closed.append(row)  # signalled by the loop, after the pass


def default_kv_budget(model: PreTrainedModel) -> int:
    """KV-cache tokens the running batch may reserve: 2 GiB worth on a CPU, a third of the free
    memory on a GPU (weights already loaded), never below one full context."""
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    per_token = bytes_per_token(model.config, dtype)
    memory = 2 * 1024**3
    device = model.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        memory = free // 3
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    return max(context, memory // per_token)
