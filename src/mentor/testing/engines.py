"""A scripted :class:`~mentor.models.engine.TextEngine`: real prompts, canned replies.

``ScriptedEngine`` renders prompts with a real tokenizer (so chat templates, tool rendering and
context lengths behave as with a model) but answers from a script, one whitespace-separated word
per "token", optionally slowly. It records every prompt as text, so a test can assert on what a
component sent (the server's tool loop, retrieval prompts). No model and no torch are needed.

    lm = ScriptedEngine(tokenizer, script=["Refunds take 14 days [1]."], context_length=8192)
    engine = Engine(lm)          # mentor.serve.engine: the server over any text engine

``FakeVLLM`` stands in for :mod:`mentor.models.vllm` so that ``--engine vllm`` can be tested
without vLLM: it records what each server was opened with and what each request asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mentor.models.chat import encode_chat
from mentor.models.engine import Completion, Request, TokenChoice, TokenLogprobs


class ScriptedEngine:
    """Replies taken in order from ``script`` ("nothing scripted" once it runs out)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        script: Sequence[str] = (),
        name: str = "scripted",
        context_length: int = 8192,
        delay_s: float = 0.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.script = list(script)
        self.name = name
        self.context_length = context_length
        self.delay_s = delay_s
        """Seconds to wait before each word (to test timeouts, queues and cancellation)."""
        self.prompts: list[str] = []
        """Every prompt this engine was asked to continue, decoded to text, in order."""
        self.prompt_ids: list[list[int]] = []
        """The same prompts as token ids."""
        self.reports_logprobs = True
        """Each word is one token, of log-probability -0.5 * its position (-0.5, -1.0, ...),
        with the alternatives ``alt0``, ``alt1``... each 1.0 below the one before it."""

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        return encode_chat(self.tokenizer, messages, tools=tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=special)["input_ids"]]

    def supports_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        result = result if result is not None else Completion()
        result.prompt_tokens = len(request.prompt)
        self.prompts.append(str(self.tokenizer.decode(request.prompt)))
        self.prompt_ids.append(list(request.prompt))
        reply = self.script.pop(0) if self.script else "nothing scripted"
        started = time.perf_counter()
        result.finish_reason = "stop"
        for word in reply.split(" "):
            if self.delay_s:
                time.sleep(self.delay_s)
            if request.deadline is not None and time.monotonic() > request.deadline:
                result.finish_reason = "timeout"
                break
            if request.cancelled is not None and request.cancelled():
                result.finish_reason = "cancelled"
                break
            if result.completion_tokens >= request.sampling.max_new_tokens:
                result.finish_reason = "length"
                break
            result.completion_tokens += 1
            if result.first_token_s is None:
                result.first_token_s = time.perf_counter() - started
            piece = word if result.completion_tokens == 1 else f" {word}"
            if request.sampling.logprobs is not None:
                result.logprobs.append(_scripted_logprobs(piece, result.completion_tokens,
                                                          request.sampling.logprobs))  # fmt: skip
            result.text += piece
            yield piece
        result.seconds = time.perf_counter() - started

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        results = [Completion() for _ in requests]
        for request, result in zip(requests, results, strict=True):
            for _ in self.stream(request, result):
                pass
        return results


def _scripted_logprobs(piece: str, position: int, k: int) -> TokenLogprobs:
    chosen = TokenChoice(position, piece, -0.5 * position)
    top = [TokenChoice(-1 - j, f"alt{j}", chosen.logprob - 1.0 - j) for j in range(max(0, k - 1))]
    return TokenLogprobs(chosen, tuple([chosen, *top][:k]))


@dataclass
class VLLMOpened:
    """What one ``open_vllm`` call was given, and the adapters its requests asked for."""

    folder: Path
    name: str
    adapters: dict[str, Path]
    settings: Any
    request_adapters: list[str | None] = field(default_factory=list)


class _RecordingEngine(ScriptedEngine):
    """A :class:`ScriptedEngine` that notes each request's adapter."""

    def __init__(self, tokenizer: Any, opened: VLLMOpened) -> None:
        super().__init__(tokenizer, name=opened.name)
        self.opened = opened

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        self.opened.request_adapters.append(request.adapter)
        return super().stream(request, result)


class FakeVLLM:
    """Stands in for :mod:`mentor.models.vllm` (no server, no GPU): ``open_vllm`` records what it
    was given in ``opened`` and yields a scripted engine that records each request's adapter.

        monkeypatch.setitem(sys.modules, "mentor.models.vllm", FakeVLLM().module())
    """

    def __init__(self) -> None:
        self.opened: list[VLLMOpened] = []

    @contextmanager
    def open_vllm(
        self,
        model_folder: Path,
        tokenizer: Any,
        *,
        name: str,
        adapters: Mapping[str, Path],
        settings: Any,
    ) -> Iterator[ScriptedEngine]:
        opened = VLLMOpened(Path(model_folder), name, dict(adapters), settings)
        self.opened.append(opened)
        yield _RecordingEngine(tokenizer, opened)

    def module(self) -> ModuleType:
        """A module with ``VLLMSettings`` (any fields, kept as given) and ``open_vllm``."""
        from pydantic import BaseModel, ConfigDict

        class VLLMSettings(BaseModel):
            model_config = ConfigDict(extra="allow")

        module = ModuleType("mentor.models.vllm")
        module.VLLMSettings = VLLMSettings  # type: ignore[attr-defined]
        module.open_vllm = self.open_vllm  # type: ignore[attr-defined]
        return module
