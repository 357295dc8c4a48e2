"""A finished or streaming generation turned into OpenAI's reply shapes, with its accounting.

Non-streamed requests get one ``chat.completion`` / ``text_completion`` object; streamed ones get
server-sent events (``chat.completion.chunk``), ending with ``data: [DONE]``. Either way the
request is counted in ``/metrics`` and written to the request log (:mod:`mentor.monitor.log`).
Passages that ``search_documents`` found travel in an extra ``sources`` field, which OpenAI
clients keep in ``model_extra``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from mentor.rag.answer import is_refusal
from mentor.rag.records import Hit
from mentor.serve.chat import EmptyPromptError, Finished, Piece, PromptTooLongError
from mentor.serve.scheduler import Job, QueueFullError
from mentor.serve.schemas import ChatRequest, CompletionRequest
from mentor.serve.state import APIError, Server, error_body


async def respond(
    server: Server,
    body: ChatRequest | CompletionRequest,
    work: Callable[[Job], Any],
    query: str | None,
    *,
    chat: bool,
) -> Response:
    started = time.time()
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    try:
        job = server.scheduler.submit(work)
    except QueueFullError as exc:
        raise APIError(503, f"the server is busy ({exc}); retry shortly",
                       code="overloaded") from None  # fmt: skip
    events = job.stream()
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    try:
        first = await anext(events)
    except PromptTooLongError as exc:
        raise APIError(400, str(exc), param="messages" if chat else "prompt",
                       code="context_length_exceeded") from None  # fmt: skip
    except EmptyPromptError as exc:
        field_name = "messages" if chat else "prompt"
        raise APIError(400, f"{field_name}: {exc}", param=field_name,
                       code="invalid_value") from None  # fmt: skip
    except StopAsyncIteration:
        raise APIError(500, "the generation ended without a result") from None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = _sse(server, job, first, events, rid, body, chat, include_usage, started, query)
        return StreamingResponse(sse, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip
    pieces: list[str] = []
    item = first
    while not isinstance(item, Finished):
        pieces.append(item.text)
        item = await anext(events)
    done = item
    if done.finish_reason == "timeout":
        _finish(server, endpoint, body.model, 504, started, done, query, stream=False)
        raise APIError(504, f"the generation ran past the server's {server.limits.timeout_s} s "
                       "limit; ask for fewer max_tokens", code="timeout")  # fmt: skip
    _finish(server, endpoint, body.model, 200, started, done, query, stream=False)
    text = "".join(pieces)
    usage = _usage(done)
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if done.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in done.tool_calls]
        finish = done.finish_reason
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish,
                                  "logprobs": None}  # fmt: skip
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": (body.text() if body.echo else "") + text,  # type: ignore[union-attr]
                  "finish_reason": done.finish_reason, "logprobs": None}  # fmt: skip
        kind = "text_completion"
    reply: dict[str, Any] = {"id": rid, "object": kind, "created": int(started),
                             "model": body.model, "choices": [choice], "usage": usage}  # fmt: skip
    if done.searches:
        reply["sources"] = [s for r in done.searches for s in r.sources()]
    return JSONResponse(reply)


def dumps(value: object) -> str:
    """Compact JSON for the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def evidence(hit: Hit) -> float:
    """A hit's score comparable across queries, for the request log: its dense cosine when it
    has one (fused RRF scores depend only on ranks; see mentor.rag.answer.confidence)."""
    return float(hit.stages.get("dense", hit.score))


def _usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


async def _sse(
    server: Server,
    job: Job,
    first: Piece | Finished,
    events: AsyncIterator[Piece | Finished],
    rid: str,
    body: ChatRequest | CompletionRequest,
    chat: bool,
    include_usage: bool,
    started: float,
    query: str | None,
) -> AsyncIterator[str]:
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": rid, "object": kind, "created": int(started), "model": body.model}

    def chunk(delta: dict[str, Any] | str, finish: str | None = None) -> str:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        extra = {"usage": None} if include_usage else {}
        return f"data: {dumps({**head, 'choices': [choice], **extra})}\n\n"

    done: Finished | None = None
    status = 200
    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""})
        item = first
        while True:
            if isinstance(item, Finished):
                done = item
                break
            yield chunk({"content": item.text} if chat else item.text)
            item = await anext(events)
        if done.finish_reason == "timeout":
            status = 504
            message = f"the generation ran past the server's {server.limits.timeout_s} s limit"
            yield f"data: {dumps(error_body(504, message, None, 'timeout'))}\n\n"
            return
        if done.tool_calls:
            calls = [{"index": i, **c.to_openai()} for i, c in enumerate(done.tool_calls)]
            yield chunk({"tool_calls": calls})
        final = chunk({} if chat else "", done.finish_reason)
        yield final
        if include_usage:
            usage = {**head, "choices": [], "usage": _usage(done)}
            yield f"data: {dumps(usage)}\n\n"
        if done.searches:
            sources = [s for r in done.searches for s in r.sources()]
            yield f"data: {dumps({**head, 'choices': [], 'sources': sources})}\n\n"
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    except Exception as exc:  # an error mid-stream can only be reported in the stream
        status = 500
        yield f"data: {dumps(error_body(500, str(exc), None, 'server_error'))}\n\n"
    finally:
        job.cancel()
        if done is None:
            done = Finished("cancelled")
        _finish(server, endpoint, body.model, status, started, done, query, stream=True)


def _finish(
    server: Server,
    endpoint: str,
    model: str,
    status: int,
    started: float,
    done: Finished,
    query: str | None,
    *,
    stream: bool,
) -> None:
    metrics = server.metrics
    metrics.prompt_tokens.labels(model).inc(done.prompt_tokens)
    metrics.completion_tokens.labels(model).inc(done.completion_tokens)
    if done.first_token_s is not None:
        metrics.first_token.observe(done.first_token_s)
    metrics.searches.inc(len(done.searches))
    scores = tuple(evidence(h) for r in done.searches[:1] for h in r.hits)
    record(server, endpoint, model, status, started, query=query, answer=done.text,
            prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
            stream=stream, scores=scores, refused=is_refusal(done.text) if status == 200 else None,
            error=None if status < 400 else done.finish_reason)  # fmt: skip


def record(
    server: Server,
    endpoint: str,
    model: str,
    status: int,
    started: float,
    *,
    query: str | None = None,
    answer: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    stream: bool = False,
    scores: Sequence[float] = (),
    refused: bool | None = None,
    error: str | None = None,
) -> None:
    latency = time.time() - started
    server.metrics.requests.labels(endpoint, model, str(status)).inc()
    server.metrics.seconds.labels(endpoint).observe(latency)
    if server.request_log is None:
        return
    from mentor.monitor.log import RequestRecord

    server.request_log.record(
        RequestRecord(
            time=started,
            endpoint=endpoint,
            model=model,
            status=status,
            latency_s=latency,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            stream=stream,
            query=query,
            answer=answer,
            retrieval_scores=tuple(scores),
            refused=refused,
            error=error,
        )
    )
