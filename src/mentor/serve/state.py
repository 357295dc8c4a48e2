"""What every route shares: the server's parts, its limits, and errors in OpenAI's shape."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

from mentor.models.protocols import Embedder
from mentor.serve.chat import Retrieval
from mentor.serve.engine import Engine
from mentor.serve.metrics import Metrics
from mentor.serve.scheduler import Scheduler

if TYPE_CHECKING:
    from mentor.monitor.log import RequestLog


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_tokens: int = 1024
    """Cap on max_tokens; a request asking for more gets a 400 naming the field."""
    default_max_tokens: int = 256
    """max_tokens when a request gives none (or null), itself capped by max_tokens."""
    max_body_bytes: int = 1_000_000
    """Largest request body; more gets a 413."""
    timeout_s: float | None = 120.0
    """A generation still running after this many seconds is stopped (504)."""
    max_queue: int = 256
    """Requests that may wait for the model; beyond it, 503 with Retry-After."""
    max_embedding_inputs: int = 256
    """Most texts in one /v1/embeddings request."""


class APIError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_body(status, message, param, code), status, headers=headers)


@dataclass
class Server:
    """Everything the routes share."""

    engine: Engine
    limits: Limits = field(default_factory=Limits)
    api_keys: tuple[str, ...] = ()
    """Accepted keys; empty means no authentication (the CLI allows that on localhost only)."""
    retrieval: Retrieval | None = None
    embedder: Embedder | None = None
    request_log: RequestLog | None = None
    admin_keys: tuple[str, ...] = ()
    """Keys that may also add and remove adapters; empty turns those routes off."""
    adapter_roots: tuple[Path, ...] = ()
    """Folders POST /v1/adapters may load from; empty turns loading off."""
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.limits.max_queue, workers=self.engine.concurrency)
        self.metrics = Metrics(
            lambda: float(self.scheduler.depth), lambda: float(len(self.engine.adapters))
        )
