"""The OpenAI-compatible HTTP API: FastAPI routes over the engine, the scheduler and an index.

Routes (all but ``/health`` need ``Authorization: Bearer <key>`` unless auth is off):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed as server-sent events when
  ``stream`` is true; ``model`` is ``<base>`` or ``<base>:<adapter>``.
- ``GET /v1/models``; ``POST /v1/adapters`` and ``DELETE /v1/adapters/{name}`` add and remove
  adapters while the server runs, and so do vLLM's ``POST /v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` (``{"lora_name", "lora_path"}``): admin keys only
  (``Server.admin_keys``), and loading only from the folders under ``Server.adapter_roots`` (off
  when either is empty). A request names an adapter ``<base>:<adapter>`` or by its bare name.
- ``POST /v1/embeddings`` with the index's embedder (or ``--embedder``).
- ``POST /v1/retrieve`` over the served index; with an index, chat turns get the
  ``search_documents`` tool (:mod:`mentor.serve.chat`).
- ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` (with a key too).

Errors come in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 naming the
field for a bad body, 401 without a valid key, 404 for an unknown model, 413 for a body over the
cap, 403 for an admin route without an admin key, 503 with Retry-After when the queue is full,
504 when a generation runs past the timeout; anything unforeseen is a 500 in the same shape. Every
error is counted in ``/metrics`` under its route's template (``/v1/adapters/{name}``), and
requests that match no route or carry no valid key under one fixed label each, so the label set
stays bounded whatever clients send.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mentor.models.protocols import Embedder, SamplingConfig
from mentor.rag.filters import check_filters
from mentor.serve.chat import (
    chat_turn,
    completion_turn,
)
from mentor.serve.replies import evidence, record, respond
from mentor.serve.schemas import (
    SEED_MAX,
    AdapterRequest,
    BadBiasError,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ErrorBody,
    LoadLoRARequest,
    RetrieveRequest,
    UnloadLoRARequest,
)
from mentor.serve.state import APIError, Server, error_response
from mentor.serve.tools import public_source


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
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # A chunked body: read it all (at most limit bytes) before the app sees any, so an
        # oversized one gets the same 413 rather than a parse error from inside the framework.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = f"the request body is over the {self.limit}-byte limit"
        await error_response(413, body, code="request_too_large")(scope, receive, send)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why}
    for status, why in (
        (400, "A bad field, named in error.param."),
        (401, "No valid API key."),
        (404, "Unknown model, adapter or resource."),
        (413, "The body is over the server's limit."),
        (500, "An unforeseen server error."),
    )
}
_GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "content": {"application/json": {}, "text/event-stream": {}},
        "description": "The reply; server-sent events when stream is true.",
    },
    503: {"model": ErrorBody, "description": "The queue is full; retry after Retry-After."},
    504: {"model": ErrorBody, "description": "The generation ran past the server's timeout."},
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"model": ErrorBody, "description": "Not an admin key, or adapter loading is off."},
}
UNMATCHED, UNAUTHENTICATED = "unmatched", "unauthenticated"
"""The metrics labels of requests that match no route, and of those without a valid key."""


def _label(request: Request) -> str:
    """The route template a request matched (a bounded set), never the raw path."""
    route = request.scope.get("route")
    return str(getattr(route, "path", UNMATCHED))


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="mentor", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=server.limits.max_body_bytes)

    @app.middleware("http")
    async def arrival(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.started = time.time()
        return await call_next(request)

    def refused(request: Request, status: int, message: str, label: str | None = None) -> None:
        started = getattr(request.state, "started", time.time())
        record(server, label or _label(request), "", status, started, error=message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where or 'body'}: {first['msg']}"
        refused(request, 400, message)
        return error_response(400, message, param=where or None, code="invalid_value")

    @app.exception_handler(APIError)
    async def apierror_response(request: Request, exc: APIError) -> Response:
        refused(request, exc.status, exc.message, UNAUTHENTICATED if exc.status == 401 else None)
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        refused(request, exc.status_code, message, UNMATCHED if exc.status_code == 404 else None)
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # Every request the schema accepts should be answered; this is the net under that goal.
        message = f"internal error: {type(exc).__name__}"
        refused(request, 500, f"{message}: {exc}")
        return error_response(500, message, code="server_error")

    async def authorized(request: Request) -> None:
        if not server.api_keys:  # --no-auth: admin routes still check for an admin key
            return
        if _key(request, (*server.api_keys, *server.admin_keys)) is None:
            raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                           code="invalid_api_key")  # fmt: skip

    async def admin(request: Request) -> None:
        await authorized(request)
        if not server.admin_keys:
            raise APIError(403, "adapter management is off on this server (start it with "
                           "--admin-key-env VAR)", code="permission_denied")  # fmt: skip
        if _key(request, server.admin_keys) is None:
            raise APIError(403, "adapter management needs an admin key",
                           code="permission_denied")  # fmt: skip

    auth = [Depends(authorized)]
    admins = [Depends(admin)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": server.engine.name,
            "adapters": sorted(server.engine.adapters),
            "queue": server.scheduler.depth,
            "running": len(server.scheduler.running),
            "retrieval": server.retrieval is not None,
            "uptime_s": round(time.time() - server.started, 1),
        }

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        schema = app.openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)  # validation errors are 400s
        return schema

    @app.get("/metrics", dependencies=auth, responses=_ERRORS)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=auth, responses=_ERRORS)
    async def models() -> dict[str, Any]:
        created = int(server.started)
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "mentor"}
                for m in server.engine.model_ids()
            ],
        }

    async def load(name: str, asked: str, *, param: str, name_param: str) -> None:
        if name == server.engine.name:
            raise APIError(400, f"{name_param}: {name!r} is the model's own name",
                           param=name_param)  # fmt: skip
        path = allowed_adapter_path(asked, server.adapter_roots, param=param)
        try:
            await server.scheduler.run(lambda: server.engine.add_adapter(name, path))
        except (ValueError, OSError) as exc:
            raise APIError(400, f"{param}: {exc}", param=param) from None

    async def unload(name: str) -> None:
        try:
            await server.scheduler.run(lambda: server.engine.remove_adapter(name))
        except KeyError:
            raise APIError(404, f"no adapter {name!r}", code="model_not_found") from None

    @app.post("/v1/adapters", dependencies=admins, responses=_ADMIN_ERRORS)
    async def add_adapter(body: AdapterRequest) -> dict[str, Any]:
        await load(body.name, body.path, param="path", name_param="name")
        return {"id": f"{server.engine.name}:{body.name}", "object": "model", "loaded": True}

    @app.delete("/v1/adapters/{name}", dependencies=admins, responses=_ADMIN_ERRORS)
    async def remove_adapter(name: str) -> dict[str, Any]:
        await unload(name)
        return {"id": f"{server.engine.name}:{name}", "object": "model", "deleted": True}

    @app.post("/v1/load_lora_adapter", dependencies=admins, responses=_ADMIN_ERRORS)
    async def load_lora_adapter(body: LoadLoRARequest) -> Response:
        """vLLM's route: same rules as ``POST /v1/adapters``; the reply is vLLM's plain text."""
        if body.load_inplace and body.lora_name in server.engine.adapters:
            await unload(body.lora_name)
        await load(body.lora_name, body.lora_path, param="lora_path", name_param="lora_name")
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=admins, responses=_ADMIN_ERRORS)
    async def unload_lora_adapter(body: UnloadLoRARequest) -> Response:
        await unload(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    @app.post("/v1/chat/completions", dependencies=auth, responses=_GENERATION_ERRORS)
    async def chat(body: ChatRequest) -> Response:
        adapter = _adapter(server, body.model)
        sampling, fit = _sampling(server, body, body.limit(), "max_completion_tokens"
                                  if body.max_completion_tokens else "max_tokens")  # fmt: skip
        messages = [m.to_template() for m in body.messages]
        tools = [t.model_dump(exclude={"function": {"strict"}}) for t in body.tools or []]
        query = next((m.text() for m in reversed(body.messages) if m.role == "user"), None)
        works = [
            chat_turn(
                server.engine,
                messages,
                choice,
                fit_context=fit,
                adapter=adapter,
                client_tools=tools,
                retrieval=server.retrieval,
                timeout_s=server.limits.timeout_s,
                tool_choice=body.tool_choice if isinstance(body.tool_choice, str) else None,
            )
            for choice in _choices(sampling, body.n)
        ]
        return await respond(server, body, works, query, chat=True)

    @app.post("/v1/completions", dependencies=auth, responses=_GENERATION_ERRORS)
    async def completions(body: CompletionRequest) -> Response:
        adapter = _adapter(server, body.model)
        sampling, fit = _sampling(server, body, body.max_tokens, "max_tokens")
        if body.echo and body.logprobs is not None and not server.engine.scores_prompts():
            raise APIError(400, f"echo: this server's engine ({type(server.engine.lm).__name__}) "
                           "does not score prompts; leave logprobs out or echo false",
                           param="echo")  # fmt: skip
        prompts = body.prompts()
        vocab = server.engine.vocab_size()
        for i, prompt in enumerate(prompts):
            ids = prompt if isinstance(prompt, list) and vocab is not None else []
            bad = [t for t in ids if not 0 <= t < (vocab or 0)]
            if bad:
                where = "prompt" if len(prompts) == 1 else f"prompt.{i}"
                raise APIError(400, f"{where}: token id {bad[0]} is outside the vocabulary "
                               f"(0..{(vocab or 0) - 1})", param=where)  # fmt: skip
        works = [
            completion_turn(
                server.engine,
                prompt,
                choice,
                fit_context=fit,
                adapter=adapter,
                timeout_s=server.limits.timeout_s,
                echo=body.echo,
            )
            for prompt in prompts
            for choice in _choices(sampling, body.n)
        ]
        return await respond(server, body, works, body.text(), chat=False)

    @app.post("/v1/embeddings", dependencies=auth, responses=_ERRORS)
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        embedder = server.embedder
        if embedder is None:
            raise APIError(404, "this server has no embedder (start it with --embedder or --rag)",
                           param="model", code="model_not_found")  # fmt: skip
        if body.model != embedder.name:
            message = (
                f"model: no embedding model {body.model!r} here; this server has {embedder.name}"
            )
            raise APIError(404, message, param="model", code="model_not_found")
        inputs = body.inputs()
        if len(inputs) > server.limits.max_embedding_inputs:
            raise APIError(400, f"input: at most {server.limits.max_embedding_inputs} inputs",
                           param="input")  # fmt: skip
        texts = [_embedding_text(embedder, item, f"input.{i}") for i, item in enumerate(inputs)]
        tokens = sum(
            len(item) if isinstance(item, list) else _count_tokens(embedder, item)
            for item in inputs
        )
        vectors = await asyncio.to_thread(embedder.embed, texts)
        data = []
        for i, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
            value: Any = vector.tolist()
            if body.encoding_format == "base64":
                value = base64.b64encode(vector.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/v1/retrieve", dependencies=auth, responses=_ERRORS)
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        if server.retrieval is None:
            raise APIError(404, "this server has no index (start it with --rag INDEX)")
        for key, value in body.filters.items():  # one at a time, to name the bad one
            try:
                check_filters({key: value})
            except ValueError as exc:
                raise APIError(400, f"filters: {exc}", param="filters") from None
        started = time.time()
        searcher = server.retrieval.searcher
        # The server's own setting (the index's tuned one), with what the request names.
        config = replace(
            server.retrieval.search,
            mode=body.mode or server.retrieval.search.mode,
            k=body.top_k,
            filters=body.filters,
        )
        try:
            result = await asyncio.to_thread(
                searcher.search, body.query, config, server.retrieval.reranker
            )
        except ValueError as exc:
            raise APIError(400, str(exc), param="filters") from None
        hits = [
            {
                "rank": i + 1,
                "score": float(hit.score),
                "chunk_id": hit.chunk.chunk_id,
                "doc_id": hit.chunk.doc_id,
                "title": hit.chunk.title,
                "source": public_source(hit.chunk),
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


def _key(request: Request, keys: tuple[str, ...]) -> str | None:
    """The bearer key of ``request`` if it is one of ``keys`` (compared in constant time)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    given = key.strip().encode()
    found = [k for k in keys if secrets.compare_digest(given, k.encode())]
    return found[0] if found else None


def allowed_adapter_path(asked: str, roots: tuple[Path, ...], *, param: str = "path") -> Path:
    """The folder ``asked`` names if it lies under one of ``roots`` (a relative path is taken
    under each root in turn); APIError otherwise, with one message whether or not it exists."""
    if not roots:
        raise APIError(403, "adapter loading is off on this server (start it with "
                       "--allow-adapter-loading DIR)", code="permission_denied")  # fmt: skip
    outside = APIError(400, f"{param}: {asked!r} is not an adapter folder under this server's "
                       "allowed adapter folders", param=param)  # fmt: skip
    for root in roots:
        try:
            base = root.resolve()
            path = (base / asked).resolve()  # an absolute `asked` replaces base
        except (OSError, RuntimeError, ValueError):  # link loops, NUL bytes
            raise outside from None
        if path != base and path.is_relative_to(base) and path.is_dir():
            return path
    raise outside


def _embedding_text(embedder: Embedder, item: str | list[int], where: str) -> str:
    """An embeddings input as text: token ids are read with the embedder's own tokenizer."""
    if isinstance(item, str):
        if not item:
            raise APIError(400, f"{where}: empty strings cannot be embedded", param=where)
        return item
    decode = getattr(embedder, "decode", None)
    if decode is None:
        raise APIError(400, f"{where}: {embedder.name} reads text only (it has no tokenizer to "
                       "read token ids with); send strings", param=where)  # fmt: skip
    if not item:
        raise APIError(400, f"{where}: an empty list of token ids", param=where)
    try:
        return str(decode(item))
    except ValueError as exc:
        raise APIError(400, f"{where}: {exc}", param=where) from None


def _count_tokens(embedder: Embedder, text: str) -> int:
    """Tokens of ``text`` as the embedder reads it (words for one without a tokenizer)."""
    count = getattr(embedder, "count_tokens", None)
    return int(count(text)) if count is not None else len(text.split())


def _adapter(server: Server, model: str) -> str | None:
    try:
        return server.engine.adapter_for(model)
    except KeyError:
        known = ", ".join(server.engine.model_ids())
        raise APIError(404, f"model: no model {model!r} here; this server has {known}",
                       param="model", code="model_not_found") from None  # fmt: skip


def _sampling(
    server: Server, body: ChatRequest | CompletionRequest, asked: int | None, field_name: str
) -> tuple[SamplingConfig, bool]:
    """The request's sampling, and whether its reply may shrink to the room the prompt leaves
    (only when the client asked for no particular length)."""
    limits = server.limits
    if body.json_schema() is not None and not getattr(server.engine.lm, "constrains_json", False):
        raise APIError(400, f"response_format: this server's engine "
                       f"({type(server.engine.lm).__name__}) does not constrain replies to JSON",
                       param="response_format")  # fmt: skip
    if body.top() is not None and not getattr(server.engine.lm, "reports_logprobs", False):
        raise APIError(400, f"logprobs: this server's engine ({type(server.engine.lm).__name__}) "
                       "does not return log probabilities", param="logprobs")  # fmt: skip
    bias = _logit_bias(server, body)
    if asked is not None and asked > limits.max_tokens:
        raise APIError(400, f"{field_name}: at most {limits.max_tokens} on this server",
                       param=field_name)  # fmt: skip
    sampling = SamplingConfig(
        # the cap holds for a defaulted length too; fitting to the context only shortens it
        max_new_tokens=asked
        if asked is not None
        else min(limits.default_max_tokens, limits.max_tokens),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stops(),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        # OpenAI's API returns what the model wrote; mentor's loop guard would cut a reply the
        # client asked for in full (a client that wants fewer loops sets repetition_penalty).
        loop_ngram=0,
        ignore_eos=body.ignore_eos,
        logprobs=body.top(),
        json_schema=body.json_schema(),
        logit_bias=bias,
    )
    return sampling, asked is None


def _logit_bias(
    server: Server, body: ChatRequest | CompletionRequest
) -> tuple[tuple[int, float], ...]:
    """The request's logit bias as (id, bias) pairs: each key a token id of the vocabulary, and
    an engine that applies it; a 400 naming ``logit_bias.<key>`` otherwise."""
    if not body.logit_bias:
        return ()
    lm = server.engine.lm
    if not getattr(lm, "biases_logits", False):
        raise APIError(400, f"logit_bias: this server's engine ({type(lm).__name__}) does not "
                       "apply a logit bias", param="logit_bias")  # fmt: skip
    try:
        pairs = body.biases()
    except BadBiasError as exc:
        raise APIError(400, f"logit_bias.{exc.key}: {exc}", param=f"logit_bias.{exc.key}",
                       code="invalid_value") from None  # fmt: skip
    vocab = server.engine.vocab_size()  # the tokenizer's: what prompt ids are checked against
    for token, _ in pairs:
        if vocab is not None and token >= vocab:
            raise APIError(400, f"logit_bias.{token}: token id {token} is outside the "
                           f"vocabulary (0..{vocab - 1})", param=f"logit_bias.{token}",
                           code="invalid_value")  # fmt: skip
    return pairs


def _choices(sampling: SamplingConfig, n: int) -> list[SamplingConfig]:
    """``n`` samplings for ``n`` independent choices: a given seed becomes seed, seed + 1, ...
    (so a seeded request is repeatable and its choices still differ); unseeded ones each draw
    their own."""
    seed = sampling.seed
    if seed is None or n == 1:
        return [sampling] * n
    step = 1 if seed + n - 1 <= SEED_MAX else -1
    return [replace(sampling, seed=seed + step * i) for i in range(n)]
