"""The OpenAI-compatible HTTP API: FastAPI routes over the engine, the scheduler and an index.

Routes (all but ``/health`` need ``Authorization: Bearer <key>`` unless auth is off):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed as server-sent events when
  ``stream`` is true; ``model`` is ``<base>`` or ``<base>:<adapter>``.
- ``GET /v1/models``; ``POST /v1/adapters`` and ``DELETE /v1/adapters/{name}`` add and remove
  adapters while the server runs.
- ``POST /v1/embeddings`` with the index's embedder (or ``--embedder``).
- ``POST /v1/retrieve`` over the served index; with an index, chat turns get the
  ``search_documents`` tool (:mod:`mentor.serve.chat`).
- ``GET /health``, ``GET /metrics`` (Prometheus text).

Errors come in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 naming the
field for a bad body, 401 without a valid key, 404 for an unknown model, 413 for a body over the
cap, 503 with Retry-After when the queue is full, 504 when a generation runs past the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mentor.models.protocols import SamplingConfig
from mentor.rag.retrieve import SearchConfig
from mentor.serve.chat import (
    chat_turn,
    completion_turn,
)
from mentor.serve.replies import evidence, record, respond
from mentor.serve.schemas import (
    AdapterRequest,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    RetrieveRequest,
)
from mentor.serve.state import APIError, Limits, Server, error_response

if TYPE_CHECKING:
    pass


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with a 413, whether or not they declare a length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLargeError:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = f"the request body is over the {self.limit}-byte limit"
        await error_response(413, body, code="request_too_large")(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="mentor", version="1", docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=server.limits.max_body_bytes)

    @app.middleware("http")
    async def arrival(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.started = time.time()
        return await call_next(request)

    def refused(request: Request, status: int, message: str) -> None:
        started = getattr(request.state, "started", time.time())
        record(server, request.url.path, "", status, started, error=message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where or 'body'}: {first['msg']}"
        refused(request, 400, message)
        return error_response(400, message, param=where or None, code="invalid_value")

    @app.exception_handler(APIError)
    async def apierror_response(request: Request, exc: APIError) -> Response:
        refused(request, exc.status, exc.message)
        return error_response(exc.status, exc.message, exc.param, exc.code)

    async def authorized(request: Request) -> None:
        if not server.api_keys:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            secrets.compare_digest(key.strip().encode(), k.encode()) for k in server.api_keys
        ):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                           code="invalid_api_key")  # fmt: skip

    auth = [Depends(authorized)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": server.engine.name,
            "adapters": sorted(server.engine.adapters),
            "queue": server.scheduler.depth,
            "busy": server.scheduler.running is not None,
            "retrieval": server.retrieval is not None,
            "uptime_s": round(time.time() - server.started, 1),
        }

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        created = int(server.started)
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "mentor"}
                for m in server.engine.model_ids()
            ],
        }

    @app.post("/v1/adapters", dependencies=auth)
    async def add_adapter(body: AdapterRequest) -> dict[str, Any]:
        path = Path(body.path).expanduser()
        if not path.is_dir():
            raise APIError(400, f"path: {path} is not a folder", param="path")
        try:
            await server.scheduler.run_exclusive(lambda: server.engine.add_adapter(body.name, path))
        except (ValueError, OSError) as exc:
            raise APIError(400, str(exc), param="path") from None
        return {"id": f"{server.engine.name}:{body.name}", "object": "model", "loaded": True}

    @app.delete("/v1/adapters/{name}", dependencies=auth)
    async def remove_adapter(name: str) -> dict[str, Any]:
        try:
            await server.scheduler.run_exclusive(lambda: server.engine.remove_adapter(name))
        except KeyError:
            raise APIError(404, f"no adapter {name!r}", code="model_not_found") from None
        return {"id": f"{server.engine.name}:{name}", "object": "model", "deleted": True}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(body: ChatRequest) -> Response:
        adapter = _adapter(server, body.model)
        sampling, fit = _sampling(server.limits, body, body.limit(), "max_completion_tokens"
                                  if body.max_completion_tokens else "max_tokens")  # fmt: skip
        messages = [m.to_template() for m in body.messages]
        tools = [t.model_dump() for t in body.tools or []]
        work = chat_turn(
            server.engine,
            messages,
            sampling,
            fit_context=fit,
            adapter=adapter,
            client_tools=tools,
            retrieval=server.retrieval,
            timeout_s=server.limits.timeout_s,
            tool_choice=body.tool_choice if isinstance(body.tool_choice, str) else None,
        )
        query = next((m.text() for m in reversed(body.messages) if m.role == "user"), None)
        return await respond(server, body, work, query, chat=True)

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest) -> Response:
        adapter = _adapter(server, body.model)
        sampling, fit = _sampling(server.limits, body, body.max_tokens, "max_tokens")
        work = completion_turn(server.engine, body.text(), sampling, fit_context=fit,
                               adapter=adapter, timeout_s=server.limits.timeout_s)  # fmt: skip
        return await respond(server, body, work, body.text(), chat=False)

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        embedder = server.embedder
        if embedder is None:
            raise APIError(404, "this server has no embedder (start it with --embedder or --rag)",
                           param="model", code="model_not_found")  # fmt: skip
        texts = body.texts()
        if len(texts) > server.limits.max_embedding_inputs:
            raise APIError(400, f"input: at most {server.limits.max_embedding_inputs} texts",
                           param="input")  # fmt: skip
        if any(not t for t in texts):
            raise APIError(400, "input: empty strings cannot be embedded", param="input")
        vectors = await asyncio.to_thread(embedder.embed, texts)
        data = []
        for i, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
            value: Any = vector.tolist()
            if body.encoding_format == "base64":
                value = base64.b64encode(vector.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/v1/retrieve", dependencies=auth)
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        if server.retrieval is None:
            raise APIError(404, "this server has no index (start it with --rag INDEX)")
        started = time.time()
        searcher = server.retrieval.searcher
        config = SearchConfig(mode=body.mode, k=body.top_k, filters=body.filters)
        try:
            result = await asyncio.to_thread(searcher.search, body.query, config)
        except ValueError as exc:
            raise APIError(400, str(exc), param="filters") from None
        hits = [
            {
                "rank": i + 1,
                "score": float(hit.score),
                "chunk_id": hit.chunk.chunk_id,
                "doc_id": hit.chunk.doc_id,
                "title": hit.chunk.title,
                "source": hit.chunk.source,
                "page": hit.chunk.page,
                "heading": hit.chunk.heading,
                "text": hit.chunk.text,
            }
            for i, hit in enumerate(result.hits)
        ]
        record(server, "/v1/retrieve", "retrieval", 200, started, query=body.query,
                scores=tuple(evidence(hit) for hit in result.hits))  # fmt: skip
        return {"object": "list", "query": body.query, "data": hits}

    return app


def _adapter(server: Server, model: str) -> str | None:
    try:
        return server.engine.adapter_for(model)
    except KeyError:
        known = ", ".join(server.engine.model_ids())
        raise APIError(404, f"model: no model {model!r} here; this server has {known}",
                       param="model", code="model_not_found") from None  # fmt: skip


def _sampling(
    limits: Limits, body: Any, asked: int | None, field_name: str
) -> tuple[SamplingConfig, bool]:
    """The request's sampling, and whether its reply may shrink to the room the prompt leaves
    (only when the client asked for no particular length)."""
    if asked is not None and asked > limits.max_tokens:
        raise APIError(400, f"{field_name}: at most {limits.max_tokens} on this server",
                       param=field_name)  # fmt: skip
    sampling = SamplingConfig(
        max_new_tokens=asked or limits.default_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stops(),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        ignore_eos=body.ignore_eos,
    )
    return sampling, asked is None
