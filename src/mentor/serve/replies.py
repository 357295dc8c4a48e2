"""A finished or streaming generation turned into OpenAI's reply shapes, with its accounting.

Non-streamed requests get one ``chat.completion`` / ``text_completion`` object; streamed ones get
server-sent events (``chat.completion.chunk``), ending with ``data: [DONE]``. A request for ``n``
choices runs ``n`` jobs side by side (their chunks interleave, each with its ``index``); asked
for, each token's log-probabilities travel with the text they made, in OpenAI's shapes. Either
way the request is counted in ``/metrics`` and written to the request log
(:mod:`mentor.monitor.log`).
Passages that ``search_documents`` found travel in an extra ``sources`` field, which OpenAI
clients keep in ``model_extra``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from mentor.models.engine import TokenChoice, TokenLogprobs
from mentor.rag.answer import is_refusal
from mentor.rag.records import Hit
from mentor.serve.chat import EmptyPromptError, Finished, Piece, PromptTooLongError
from mentor.serve.scheduler import Job, QueueFullError
from mentor.serve.schemas import ChatRequest, CompletionRequest
from mentor.serve.state import APIError, Server, error_body


async def respond(
    server: Server,
    body: ChatRequest | CompletionRequest,
    works: Sequence[Callable[[Job], Any]],
    query: str | None,
    *,
    chat: bool,
) -> Response:
    """Run one job per choice (``n`` of them, decoding side by side) and reply with them all."""
    started = time.time()
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    jobs: list[Job] = []
    try:
        for work in works:
            jobs.append(server.scheduler.submit(work))
    except QueueFullError as exc:
        for job in jobs:
            job.cancel()
        raise APIError(503, f"the server is busy ({exc}); retry shortly",
                       code="overloaded") from None  # fmt: skip
    streams = [job.stream() for job in jobs]
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    try:
        firsts = [await _first(events, chat) for events in streams]
    except BaseException:
        for job in jobs:
            job.cancel()
        raise
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        merged = _merged(firsts, streams)
        sse = _sse(server, jobs, merged, rid, body, chat, include_usage, started, query)
        return StreamingResponse(sse, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip
    choices: list[dict[str, Any]] = []
    dones: list[Finished] = []
    for index, (first, events) in enumerate(zip(firsts, streams, strict=True)):
        pieces: list[str] = []
        tokens: list[TokenLogprobs] = []
        item = first
        while not isinstance(item, Finished):
            pieces.append(item.text)
            tokens += item.logprobs
            item = await anext(events)
        tokens += item.logprobs
        dones.append(item)
        choices.append(_choice(body, chat, index, "".join(pieces), tokens, item))
    done = _together(dones, body.n)
    if any(d.finish_reason == "timeout" for d in dones):
        _finish(server, endpoint, body.model, 504, started, done, query, stream=False)
        raise APIError(504, f"the generation ran past the server's {server.limits.timeout_s} s "
                       "limit; ask for fewer max_tokens", code="timeout")  # fmt: skip
    _finish(server, endpoint, body.model, 200, started, done, query, stream=False)
    kind = "chat.completion" if chat else "text_completion"
    reply: dict[str, Any] = {
        "id": rid,
        "object": kind,
        "created": int(started),
        "model": body.model,
        "choices": choices,
        "usage": _usage(done),
    }
    if done.searches:
        reply["sources"] = [s for r in done.searches for s in r.sources()]
    return JSONResponse(reply)


async def _first(events: AsyncIterator[Piece | Finished], chat: bool) -> Piece | Finished:
    """A job's first event; the errors found before any token (the prompt) as 400s."""
    try:
        return await anext(events)
    except PromptTooLongError as exc:
        raise APIError(400, str(exc), param="messages" if chat else "prompt",
                       code="context_length_exceeded") from None  # fmt: skip
    except EmptyPromptError as exc:
        field_name = "messages" if chat else "prompt"
        raise APIError(400, f"{field_name}: {exc}", param=field_name,
                       code="invalid_value") from None  # fmt: skip
    except StopAsyncIteration:
        raise APIError(500, "the generation ended without a result") from None


def _choice(
    body: ChatRequest | CompletionRequest,
    chat: bool,
    index: int,
    text: str,
    tokens: Sequence[TokenLogprobs],
    done: Finished,
) -> dict[str, Any]:
    asked = body.top() is not None
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if done.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in done.tool_calls]
        return {"index": index, "message": message, "finish_reason": done.finish_reason,
                "logprobs": chat_logprobs(tokens) if asked else None}  # fmt: skip
    logprobs = completion_logprobs(tokens, 0) if asked else None
    return {"index": index, "text": text, "finish_reason": done.finish_reason,
            "logprobs": logprobs}  # fmt: skip


def _together(dones: Sequence[Finished], n: int) -> Finished:
    """The choices' accounting as one: each prompt once (its ``n`` choices share it), every
    choice's completion tokens."""
    return replace(
        dones[0],
        prompt_tokens=sum(d.prompt_tokens for d in dones[::n]),
        completion_tokens=sum(d.completion_tokens for d in dones),
    )


def _alternative(choice: TokenChoice) -> dict[str, Any]:
    raw = choice.raw if choice.raw is not None else choice.text.encode()
    return {"token": choice.text, "logprob": choice.logprob, "bytes": list(raw)}


def chat_logprobs(tokens: Sequence[TokenLogprobs]) -> dict[str, Any]:
    """Chat's ``choices[].logprobs``: one entry per token, with its ``top_logprobs``."""
    content = [
        {**_alternative(t.chosen), "top_logprobs": [_alternative(a) for a in t.top]} for t in tokens
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(tokens: Sequence[TokenLogprobs], offset: int) -> dict[str, Any]:
    """Completions' ``choices[].logprobs``: parallel lists, ``text_offset`` counted in
    characters of the choice's text from ``offset`` (where the reply starts)."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.chosen.text)
    return {
        "tokens": [t.chosen.text for t in tokens],
        # an echoed prompt's first token has no context: NaN in, null out (as OpenAI sends)
        "token_logprobs": [
            None if math.isnan(t.chosen.logprob) else t.chosen.logprob for t in tokens
        ],
        "top_logprobs": [None if math.isnan(t.chosen.logprob) else _by_text(t.top) for t in tokens],
        "text_offset": offsets,
    }


def _by_text(top: Sequence[TokenChoice]) -> dict[str, float]:
    """Alternatives keyed by text, as completions send them; of two tokens with the same text
    (byte pieces both shown as U+FFFD) the likelier stays."""
    out: dict[str, float] = {}
    for choice in top:
        out.setdefault(choice.text, choice.logprob)
    return out


async def _merged(
    firsts: Sequence[Piece | Finished], streams: Sequence[AsyncIterator[Piece | Finished]]
) -> AsyncIterator[tuple[int, Piece | Finished]]:
    """The choices' events as they come, each with its choice's index."""
    events: asyncio.Queue[tuple[int, Piece | Finished | BaseException]] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            await events.put((index, firsts[index]))
            if not isinstance(firsts[index], Finished):
                async for item in streams[index]:
                    await events.put((index, item))
        except Exception as exc:  # raised to the reader, in the stream
            await events.put((index, exc))

    tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
    try:
        left = len(streams)
        while left:
            index, item = await events.get()
            if isinstance(item, BaseException):
                raise item
            yield index, item
            left -= isinstance(item, Finished)
    finally:
        for task in tasks:
            task.cancel()


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
    jobs: Sequence[Job],
    merged: AsyncIterator[tuple[int, Piece | Finished]],
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
    asked = body.top() is not None
    offsets = [0] * len(jobs)  # completions' text_offset, per choice

    def chunk(
        index: int,
        delta: dict[str, Any] | str,
        finish: str | None = None,
        tokens: Sequence[TokenLogprobs] = (),
    ) -> str:
        logprobs: dict[str, Any] | None = None
        if asked and chat:
            logprobs = chat_logprobs(tokens)
        elif asked:
            logprobs = completion_logprobs(tokens, offsets[index])
            offsets[index] += sum(len(t.chosen.text) for t in tokens)
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": logprobs}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        extra = {"usage": None} if include_usage else {}
        return f"data: {dumps({**head, 'choices': [choice], **extra})}\n\n"

    ended: dict[int, Finished] = {}  # by choice index: the prompts' order, for the usage
    status = 200
    try:
        if chat:
            for index in range(len(jobs)):
                yield chunk(index, {"role": "assistant", "content": ""})
        async for index, item in merged:
            if not isinstance(item, Finished):
                yield chunk(index, {"content": item.text} if chat else item.text,
                            tokens=item.logprobs)  # fmt: skip
                continue
            ended[index] = item
            if item.finish_reason == "timeout":
                status = 504
                message = f"the generation ran past the server's {server.limits.timeout_s} s limit"
                yield f"data: {dumps(error_body(504, message, None, 'timeout'))}\n\n"
                return
            if item.tool_calls:
                calls = [{"index": i, **c.to_openai()} for i, c in enumerate(item.tool_calls)]
                yield chunk(index, {"tool_calls": calls})
            yield chunk(index, {} if chat else "", item.finish_reason, item.logprobs)
        done = _together([ended[i] for i in sorted(ended)], body.n)
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
        for job in jobs:
            job.cancel()
        dones = [ended[i] for i in sorted(ended)]
        done = _together(dones, body.n) if dones else Finished("cancelled")
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
