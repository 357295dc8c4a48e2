"""``mentor serve``: the OpenAI-compatible server over a model, its adapters and an index;
``mentor generate``: one reply from a model (and an adapter) in the terminal.

    mentor serve --model smollm2-135m-instruct --adapter legal=runs/a --adapter hr=runs/b \\
        --rag idx --log requests.db

Clients use any OpenAI SDK with ``base_url=http://127.0.0.1:8000/v1`` and the printed key.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from mentor.models.flags import EngineOpt, VLLMPythonOpt, VLLMUrlOpt, settings_from_flags
from mentor.utils.cli import fail

if TYPE_CHECKING:
    from mentor.serve.engine import Engine

console = Console(stderr=True)
LOCAL_HOSTS = ("localhost",)


def is_local(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_adapters(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(f"--adapter {item!r}: write NAME=FOLDER, e.g. --adapter legal=runs/a")
        out.append((name, Path(path).expanduser()))
    return out


def resolve_keys(keys: list[str], no_auth: bool, host: str) -> tuple[str, ...]:
    """The accepted API keys: --api-key values, else $MENTOR_API_KEY, else a fresh one."""
    if no_auth:
        if not is_local(host):
            raise fail(
                f"--no-auth serves without a key, so it only binds to this machine; {host} "
                "is reachable from others. Keep auth on (the default) or use --host 127.0.0.1"
            )
        return ()
    found = [k for k in keys if k] or [
        k.strip() for k in os.environ.get("MENTOR_API_KEY", "").split(",") if k.strip()
    ]
    if found:
        return tuple(found)
    key = f"mentor-{secrets.token_urlsafe(24)}"
    console.print(f"API key for this run (set MENTOR_API_KEY to choose one): [bold]{key}[/bold]")
    return (key,)


def resolve_admin_keys(variable: str | None) -> tuple[str, ...]:
    """The admin keys in ``$variable`` (comma-separated); none when no variable is named."""
    if variable is None:
        return ()
    found = tuple(k.strip() for k in os.environ.get(variable, "").split(",") if k.strip())
    if not found:
        raise fail(f"--admin-key-env {variable}: ${variable} is empty or not set")
    return found


def serve_cmd(
    model: Annotated[
        str, typer.Option(help="Registry name, model folder, or a folder from mentor quantize.")
    ] = "smollm2-135m-instruct",
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FOLDER: a LoRA adapter served as MODEL:NAME (repeatable)."),
    ] = None,
    rag: Annotated[
        Path | None,
        typer.Option(help="A mentor index: enables /v1/retrieve and the search_documents tool."),
    ] = None,
    rag_search: Annotated[
        str,
        typer.Option(
            help="always: search with each user message before answering (and whenever the "
            "model calls the tool); model: only when the model calls search_documents."
        ),
    ] = "always",
    top_k: Annotated[int, typer.Option(help="Passages per search.", min=1, max=50)] = 4,
    embedder: Annotated[
        str | None,
        typer.Option(help="Embedder for /v1/embeddings (default: the index's, if --rag)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The model id clients send (default: MODEL's name).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(help="Accepted key (repeatable); default $MENTOR_API_KEY or a new one."),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API key (local work only: binds to localhost).")
    ] = False,
    admin_key_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the admin key(s), comma-separated: only they may "
            "add or remove adapters (POST/DELETE /v1/adapters). Without it those routes are off."
        ),
    ] = None,
    allow_adapter_loading: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder POST /v1/adapters may load adapters from (repeatable); nothing "
            "outside it. Without it, loading at run time is off."
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Cap on a request's max_tokens.", min=1)] = 1024,
    timeout: Annotated[
        float, typer.Option(help="Seconds a generation may run before it is stopped.", min=1)
    ] = 120.0,
    max_queue: Annotated[
        int, typer.Option(help="Requests that may wait; beyond it, 503.", min=1)
    ] = 256,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes.", min=1024)] = (
        1_000_000
    ),
    log: Annotated[
        Path | None, typer.Option(help="SQLite request log for mentor monitor report.")
    ] = None,
    log_sample: Annotated[
        float, typer.Option(help="Share of requests logged (errors always).", min=0, max=1)
    ] = 1.0,
    log_text: Annotated[
        bool, typer.Option("--log-text/--no-log-text", help="Log queries and replies (scrubbed).")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    max_running: Annotated[
        int,
        typer.Option(
            help="Requests decoded together in one batch (continuous batching); more wait in "
            "the queue. 1 answers one request at a time.",
            min=1,
        ),
    ] = 32,
    kv_cache_gb: Annotated[
        float | None,
        typer.Option(
            help="KV-cache memory the running requests may reserve (prompt + max_tokens each); "
            "default 2 GiB on a CPU, a third of the free memory on a GPU.",
            min=0.01,
        ),
    ] = None,
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
) -> None:
    """Serve MODEL (and its adapters, and an index) over an OpenAI-compatible API."""
    from contextlib import ExitStack

    from mentor.models.vllm_server import VLLMError
    from mentor.serve.engine import load_engine, open_vllm_engine
    from mentor.train.adapters import AdapterError

    if rag_search not in ("always", "model"):
        raise fail(f"--rag-search {rag_search!r}: use always or model")
    keys = resolve_keys(api_key or [], no_auth, host)
    admin_keys = resolve_admin_keys(admin_key_env)
    roots = tuple(p.expanduser().resolve() for p in allow_adapter_loading or [])
    if missing := [str(p) for p in roots if not p.is_dir()]:
        raise fail(f"--allow-adapter-loading {', '.join(missing)}: no such folder")
    chosen = settings_from_flags(engine, vllm_url, vllm_python)
    stack = ExitStack()  # what serving needs stopped at the end: a vLLM server
    try:
        if chosen.kind == "vllm":
            served = stack.enter_context(
                open_vllm_engine(model, name=name, adapters=parse_adapters(adapter or []),
                                 settings=chosen.vllm_settings(), max_running=max_running,
                                 console=console)
            )  # fmt: skip
        else:
            with console.status(f"loading {model}"):
                served = load_engine(model, name=name, adapters=parse_adapters(adapter or []),
                                     device=device, max_running=max_running,
                                     kv_cache_gb=kv_cache_gb)  # fmt: skip
    except (AdapterError, VLLMError, ValueError, OSError) as exc:
        stack.close()
        raise fail(str(exc)) from None
    with stack:
        _serve(served, model, rag=rag, rag_search=rag_search, top_k=top_k, device=device,
               embedder=embedder, log=log, log_sample=log_sample, log_text=log_text,
               limits_args=(max_tokens, timeout, max_queue, max_body), keys=keys,
               admin_keys=admin_keys, roots=roots, host=host, port=port)  # fmt: skip


def _serve(engine: Engine, model: str, *, rag: Path | None, rag_search: str, top_k: int,
           device: str, embedder: str | None, log: Path | None, log_sample: float,
           log_text: bool, limits_args: tuple[int, float, int, int],
           keys: tuple[str, ...], admin_keys: tuple[str, ...], roots: tuple[Path, ...],
           host: str, port: int) -> None:  # fmt: skip
    """The server over ``engine``: retrieval, embeddings, the request log, uvicorn until ^C."""
    import uvicorn

    from mentor.serve.app import create_app
    from mentor.serve.chat import Retrieval
    from mentor.serve.state import Limits, Server

    max_tokens, timeout, max_queue, max_body = limits_args
    retrieval, embed = None, None
    if rag is not None:
        from dataclasses import replace

        from mentor.rag.calibrate import load_threshold
        from mentor.rag.rerank_gate import chosen_reranker
        from mentor.rag.retrieve import open_retriever
        from mentor.rag.tune import resolve_search

        try:
            retriever = open_retriever(rag, device=device)
        except FileNotFoundError:
            hint = f"mentor rag index PATH --index {rag}"
            raise fail(f"{rag}: no index here; build one with: {hint}") from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        mode: Literal["always", "model"] = "always" if rag_search == "always" else "model"
        search = resolve_search(rag, {"k": top_k})  # the index's tuned setting, if any
        # BM25 alone gives no similarity to compare with a calibrated threshold (as in ask).
        threshold = None if search.mode == "bm25" else load_threshold(rag)
        try:  # the index's kept reranker, by the rule search and ask follow
            scorer, depth = chosen_reranker(rag, None, None, device)
        except ValueError as exc:
            raise fail(str(exc)) from None
        search = replace(search, rerank_depth=depth or search.rerank_depth)
        retrieval = Retrieval(retriever, search, threshold, mode, reranker=scorer)
        embed = retriever.embedder
    if embedder is not None:
        from mentor.models.loading import load_embedder

        embed = load_embedder(embedder, device=device)
    request_log = None
    if log is not None:
        from mentor.monitor.log import LogSettings, RequestLog

        request_log = RequestLog(LogSettings(path=log, sample_rate=log_sample, log_text=log_text))
    limits = Limits(max_tokens=max_tokens, timeout_s=timeout, max_queue=max_queue,
                    max_body_bytes=max_body)  # fmt: skip
    server = Server(engine, limits, keys, retrieval, embed, request_log, admin_keys, roots)
    console.print(
        f"serving {', '.join(engine.model_ids())} on http://{host}:{port}/v1"
        + (f" with {rag}" if rag else "")
    )
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
    finally:
        server.scheduler.close()
        if request_log is not None:
            request_log.close()


def generate_cmd(
    model: Annotated[str, typer.Argument(help="Registry name, pulled name or model folder.")],
    prompt: Annotated[str, typer.Argument(help="The user's message.")],
    system: Annotated[
        str | None, typer.Option(help="A system message to put before the prompt.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.", min=1)] = 256,
    temperature: Annotated[
        float, typer.Option(help="0 decodes greedily; above 0 samples.", min=0.0)
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option(help="Nucleus mass when sampling.", min=0.0, max=1.0)
    ] = 0.95,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for repeatable runs.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter folder (ours or PEFT's) to apply.")
    ] = None,
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
) -> None:
    """Stream a reply from MODEL to PROMPT, using the model's own chat template."""
    from contextlib import ExitStack

    from mentor.models.backends import open_engine
    from mentor.models.generation import EngineGenerator
    from mentor.models.hub import NotPulledError, PullError
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.models.protocols import ChatMessage, SamplingConfig
    from mentor.models.registry import UnknownModelError
    from mentor.models.sources import SourceError

    settings = settings_from_flags(engine, vllm_url, vllm_python)
    stack = ExitStack()
    try:
        with console.status(f"loading {model} ({settings.kind} engine)"):
            loaded = None
            if settings.kind == "builtin":  # mentor applies the adapter; vLLM serves it beside
                loaded = (load_causal_lm(model, device=device), load_tokenizer(model))
                if adapter is not None:
                    from mentor.train.adapters import load_adapter

                    load_adapter(loaded[0], adapter)
            text_engine = stack.enter_context(
                open_engine(model, settings=settings, loaded=loaded, adapter=adapter, device=device)
            )
    except (UnknownModelError, NotPulledError, PullError, SourceError, ValueError) as exc:
        raise fail(str(exc)) from None
    messages: list[ChatMessage] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    config = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    with stack:
        for piece in EngineGenerator(text_engine).stream(messages, config):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
