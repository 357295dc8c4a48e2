"""Serving: an OpenAI-compatible API over a text engine, its LoRA adapters and a mentor index.

- ``engine.py``: :class:`Engine`, a :class:`~mentor.models.engine.TextEngine` with adapters;
- ``app.py``: the FastAPI routes; ``schemas.py``: request bodies; ``state.py``: limits, errors;
- ``scheduler.py``: the one worker thread; ``chat.py``: a chat turn and the tool loop;
- ``tools.py``: ``search_documents`` over the index; ``replies.py``: responses and streaming;
- ``metrics.py``: Prometheus; ``runner.py``: uvicorn in a thread; ``commands.py``:
  ``mentor serve`` and ``mentor generate``.

    from mentor.serve import Limits, Server, create_app, load_engine, serve_in_thread
    server = Server(load_engine("smollm2-135m-instruct"), Limits(), keys=("KEY",))
    with serve_in_thread(create_app(server)) as url:
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.serve.app import create_app
    from mentor.serve.engine import Engine, load_engine
    from mentor.serve.runner import serve_in_thread
    from mentor.serve.state import Limits, Server

__all__ = ["Engine", "Limits", "Server", "create_app", "load_engine", "serve_in_thread"]

__getattr__ = lazy_exports(
    __name__,
    {
        "create_app": "mentor.serve.app",
        "Engine": "mentor.serve.engine",
        "load_engine": "mentor.serve.engine",
        "serve_in_thread": "mentor.serve.runner",
        "Limits": "mentor.serve.state",
        "Server": "mentor.serve.state",
    },
)
