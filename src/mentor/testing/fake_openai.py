"""A scripted OpenAI-compatible server for tests: real HTTP on localhost, no model behind it.

``FakeOpenAI`` answers ``POST /v1/chat/completions`` (plain or streamed as server-sent events,
with usage) and ``GET /v1/models`` like a hosted endpoint, and ``POST /v1/completions`` with
token-id prompts, ``GET /health`` and ``POST /v1/load_lora_adapter``/``unload_lora_adapter``
like a vLLM server (a completion's text is a function of the prompt ids; adapters are served
under their own names; ``logprobs`` come back as vLLM sends them with
``return_tokens_as_token_ids``, and ``prompt_logprobs`` too: see :func:`fake_logprobs`), so
the real ``openai`` client, and everything mentor builds on it, can be tested end to end in
milliseconds. The reply is a function of the messages (by default it repeats the last user
message), cut after ``max_tokens`` words and before the first ``stop`` string. Scripted faults
make the next requests fail: a status with an OpenAI-style error body (429 with ``Retry-After``,
500, 400...) or a slow answer. Every request is recorded.

    fake = FakeOpenAI(lambda messages: "Paris.")
    fake.fail(Fault(429, retry_after=0.1), Fault(500))
    with fake.serve() as base_url:  # http://127.0.0.1:PORT/v1, uvicorn in a background thread
        ...
    assert fake.count == 3
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mentor.models.protocols import ChatMessage

__all__ = ["FakeCall", "FakeOpenAI", "Fault"]

Responder = Callable[[Sequence[ChatMessage]], str]
Completer = Callable[[str, list[int]], str]
"""(model, prompt token ids) -> the completion's text."""


@dataclass(frozen=True)
class Fault:
    """What the next request gets instead of a prompt answer."""

    status: int | None = 500
    """HTTP status of the error; None answers normally (after ``delay_s``: a slow response)."""
    message: str = "scripted failure"
    """The error body's ``error.message``."""
    retry_after: float | None = None
    """Seconds sent in a ``Retry-After`` header."""
    delay_s: float = 0.0
    """Seconds to wait before responding."""
    cut_after: int | None = None
    """With status None and a streamed request: drop the connection after this many pieces."""


@dataclass(frozen=True)
class FakeCall:
    """One request the server received."""

    body: dict[str, Any]
    api_key: str | None
    """The bearer token it carried, if any."""


def count_ids(model: str, prompt: list[int]) -> str:
    """The default completion: the model's name and the prompt's ids, one word each."""
    return " ".join([model, *(str(i) for i in prompt)])


def echo(messages: Sequence[ChatMessage]) -> str:
    """The default reply: the last user message, repeated."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"You asked: {last}"


class FakeOpenAI:
    """A FastAPI app that plays an OpenAI-compatible endpoint serving ``model``.

    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get a 401."""

    def __init__(
        self,
        responder: Responder = echo,
        *,
        model: str = "fake-teacher",
        api_key: str | None = None,
        completer: Completer = count_ids,
        max_model_len: int = 2048,
    ) -> None:
        self.responder, self.model, self.api_key = responder, model, api_key
        self.completer, self.max_model_len = completer, max_model_len
        self.adapters: dict[str, str] = {}
        """vLLM-style LoRA adapters loaded: name -> path."""
        self.calls: list[FakeCall] = []
        self._faults: deque[Fault] = deque()
        self.app = self._build()

    def fail(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        self._faults.extend(faults)

    @property
    def count(self) -> int:
        """Chat-completion requests received so far, failed ones included."""
        return len(self.calls)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run the app with uvicorn on a free localhost port; yield its ``/v1`` base URL."""
        from mentor.serve.runner import serve_in_thread

        with serve_in_thread(self.app, startup_s=10) as url:
            yield f"{url}/v1"

    # -- the app ------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            base: dict[str, Any] = {"id": self.model, "object": "model", "root": self.model}
            adapters = [
                {"id": name, "object": "model", "root": path, "parent": self.model}
                for name, path in self.adapters.items()
            ]
            for entry in (base, *adapters):
                entry["max_model_len"] = self.max_model_len
            return {"object": "list", "data": [base, *adapters]}

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=200)

        @app.post("/v1/load_lora_adapter")
        async def load_adapter(request: Request) -> Response:
            body = await request.json()
            name, path = body.get("lora_name"), body.get("lora_path")
            if name in self.adapters:
                return _error(400, f"The lora adapter '{name}' has already been loaded.")
            self.adapters[str(name)] = str(path)
            return Response(f"Success: LoRA adapter '{name}' added successfully.")

        @app.post("/v1/unload_lora_adapter")
        async def unload_adapter(request: Request) -> Response:
            name = (await request.json()).get("lora_name")
            if self.adapters.pop(str(name), None) is None:
                return _error(404, f"The lora adapter '{name}' cannot be found.")
            return Response(f"Success: LoRA adapter '{name}' removed successfully.")

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.calls.append(FakeCall(body, None))
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status is not None:
                return _error(fault.status, fault.message)
            model = body.get("model")
            if model != self.model and model not in self.adapters:
                return _error(404, f"The model `{model}` does not exist.")
            prompt = body.get("prompt")
            if not isinstance(prompt, list) or not all(isinstance(i, int) for i in prompt):
                return _error(400, "this fake takes one prompt of token ids (parameter=prompt)")
            limit = body.get("max_tokens")
            if not isinstance(limit, int) or limit < 1:
                return _error(
                    400, f"max_tokens must be at least 1, got {limit}. (parameter=max_tokens)"
                )
            text, finish = _cut(self.completer(str(model), prompt), body)
            usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text.split())}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            k = body.get("logprobs")
            if body.get("stream"):
                cut = fault.cut_after if fault is not None else None
                events = _text_events(str(model), text, finish, usage, cut, k)
                return StreamingResponse(events, media_type="text/event-stream")
            choice = {"index": 0, "text": text, "finish_reason": finish}
            if isinstance(body.get("prompt_logprobs"), int):
                choice["prompt_logprobs"] = fake_prompt_logprobs(prompt, body["prompt_logprobs"])
            return JSONResponse(
                {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                 "model": model, "choices": [choice], "usage": usage}
            )  # fmt: skip

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
            self.calls.append(FakeCall(body, token))
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                return _error(fault.status, fault.message, headers)
            if self.api_key is not None and token != self.api_key:
                return _error(401, "Incorrect API key provided.")
            if body.get("model") != self.model:
                return _error(404, f"The model `{body.get('model')}` does not exist.")
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return _error(400, "'messages' must be a non-empty list.")
            text, finish = _cut(self.responder(messages), body)
            usage = {
                "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
                "completion_tokens": len(text.split()),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if body.get("stream"):
                with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                cut = fault.cut_after if fault is not None else None
                events = _events(self.model, text, finish, usage if with_usage else None, cut)
                return StreamingResponse(events, media_type="text/event-stream")
            return JSONResponse(
                {
                    "id": f"chatcmpl-fake-{self.count}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )

        return app


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "rate_limit_exceeded" if status == 429 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _cut(reply: str, body: dict[str, Any]) -> tuple[str, str]:
    """The reply after ``max_tokens`` words and before the first stop string; finish reason."""
    finish = "stop"
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    words = reply.split(" ")
    if isinstance(limit, int) and len(words) > limit:
        reply, finish = " ".join(words[:limit]), "length"
    stop = body.get("stop") or []
    for s in [stop] if isinstance(stop, str) else stop:
        if s and s in reply:
            reply, finish = reply[: reply.index(s)], "stop"
    return reply, finish


async def _events(
    model: str, text: str, finish: str, usage: dict[str, int] | None, cut_after: int | None
) -> AsyncIterator[str]:
    """Server-sent events: a chunk a word, the finish reason, the usage if asked, [DONE];
    with ``cut_after``, the connection drops after that many chunks instead."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    pieces = [w if i == 0 else f" {w}" for i, w in enumerate(text.split(" "))] if text else []
    for i, piece in enumerate(pieces):
        if i == cut_after:
            raise ConnectionAbortedError("scripted drop mid-stream")
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
    yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
    if usage is not None:
        yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"


def fake_logprobs(position: int, k: int) -> dict[str, Any]:
    """vLLM's ``choice.logprobs`` for the reply's word ``position`` (tokens as ``token_id:N``):
    the word is token ``10 + position`` of log-probability ``-0.5 * (position + 1)``, and the
    ``k`` likeliest are tokens 3, 4, ... of -0.1, -0.2, ... (with the chosen one: k + 1)."""
    chosen, value = f"token_id:{10 + position}", -0.5 * (position + 1)
    top = {f"token_id:{3 + j}": -0.1 * (j + 1) for j in range(k)} | {chosen: value}
    return {"text_offset": [0], "token_logprobs": [value], "tokens": [chosen],
            "top_logprobs": [top]}  # fmt: skip


def fake_prompt_logprobs(prompt: list[int], k: int) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs``: None for the first token, then token i at -0.25 * i, the
    ``k`` likeliest being tokens 3, 4, ... of -0.1, -0.2, ..."""
    out: list[dict[str, Any] | None] = [None]
    for i, token in enumerate(prompt[1:], start=1):
        entry = {str(3 + j): {"logprob": -0.1 * (j + 1), "rank": j + 1} for j in range(k)}
        out.append(entry | {str(token): {"logprob": -0.25 * i, "rank": 99}})
    return out


async def _text_events(
    model: str,
    text: str,
    finish: str,
    usage: dict[str, int],
    cut_after: int | None,
    logprobs: int | None = None,
) -> AsyncIterator[str]:
    """``/v1/completions`` as server-sent events: a chunk a word, the finish reason, the usage."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                "model": model, "choices": choices, **extra}  # fmt: skip
        return f"data: {json.dumps(data)}\n\n"

    pieces = [w if i == 0 else f" {w}" for i, w in enumerate(text.split(" "))] if text else []
    for i, piece in enumerate(pieces):
        if i == cut_after:
            raise ConnectionAbortedError("scripted drop mid-stream")
        scored = fake_logprobs(i, logprobs) if logprobs is not None else None
        yield chunk([{"index": 0, "text": piece, "logprobs": scored, "finish_reason": None}])
        await asyncio.sleep(0)  # let the client see each piece (and hang up) as it comes
    yield chunk([{"index": 0, "text": "", "finish_reason": finish}])
    yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"
