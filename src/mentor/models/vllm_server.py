"""Starting ``vllm serve`` from its own virtualenv, and the few HTTP calls around it.

:class:`VLLMServer` runs the server as a child process in its own process group on a free
localhost port, its output in a log file (``$MENTOR_HOME/vllm-logs``), and waits for ``/health``;
leaving the block terminates the group (then kills it after a grace period). Where vLLM comes
from: :func:`vllm_command` (``--vllm-python``, ``$MENTOR_VLLM_PYTHON``, a ``vllm`` on PATH,
``./.venv-vllm``, which ``make vllm`` builds). :mod:`mentor.models.vllm` is the engine on top.

    with VLLMServer(folder, name="smollm2", settings=VLLMSettings()) as server:
        print(server.url)  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)

PYTHON_ENV = "MENTOR_VLLM_PYTHON"
LOCAL_VENV = Path(".venv-vllm/bin/python")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""


class VLLMError(RuntimeError):
    """vLLM cannot be used as asked: not installed, did not start, or an adapter that won't fit."""


class VLLMSettings(BaseModel):
    """Where vLLM comes from and how it is started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description="A running vLLM server's OpenAI root (http://host:8000/v1) to attach to; "
        "nothing is started or stopped then. None: start one.",
    )
    python: Path | None = Field(
        default=None,
        description="The python of the environment vLLM is installed in; None: "
        f"${PYTHON_ENV}, else a `vllm` executable on PATH, else ./{LOCAL_VENV} (make vllm).",
    )
    port: int = Field(default=0, ge=0, le=65535, description="Port to start on (0: a free one).")
    startup_timeout_s: float = Field(
        default=600.0, gt=0, description="Seconds the server may take to answer /health."
    )
    kv_cache_gb: int = Field(
        default=1,
        ge=1,
        description="GiB of memory for the KV cache on CPU (VLLM_CPU_KVCACHE_SPACE).",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        default="float32", description="Weights' dtype in vLLM (float32 matches mentor on CPU)."
    )
    max_lora_rank: int = Field(
        default=16, description=f"Largest adapter rank r the server takes (one of {LORA_RANKS})."
    )
    max_loras: int = Field(default=4, ge=1, description="Adapters that may run in one batch.")
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="Seconds one request may take."
    )
    max_retries: int = Field(
        default=2, ge=0, description="Retries of a request after a 5xx, a timeout or a drop."
    )
    extra_args: tuple[str, ...] = Field(
        default=(),
        description="More `vllm serve` arguments, as given (e.g. --max-model-len 4096 when the "
        "KV cache cannot hold the model's whole context).",
    )
    log_dir: Path | None = Field(
        default=None, description="Folder for the server's log; None: $MENTOR_HOME/vllm-logs."
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: int) -> int:
        if value not in LORA_RANKS:
            raise ValueError(f"vLLM takes a max_lora_rank of {LORA_RANKS}, got {value}")
        return value


def vllm_command(
    settings: VLLMSettings, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> list[str]:
    """The command that runs ``vllm serve``: the settings' python, ``$MENTOR_VLLM_PYTHON``, a
    ``vllm`` on PATH, or ``./.venv-vllm``'s python, first found."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    # The OpenAI server's module rather than the `vllm` CLI's: the CLI looks up its version under
    # the distribution name "vllm", and the CPU build is installed as "vllm-cpu".
    module = ["-m", "vllm.entrypoints.openai.api_server"]
    for origin, given in (
        ("--vllm-python", settings.python),
        (PYTHON_ENV, environ.get(PYTHON_ENV)),
    ):
        if given:
            python = Path(given).expanduser()
            if not python.is_file():
                raise VLLMError(f"{origin} {python}: no such file (the vLLM environment's python)")
            return [str(python), *module]
    if found := shutil.which("vllm", path=environ.get("PATH", "")):
        return [found, "serve"]
    if (cwd / LOCAL_VENV).is_file():
        return [str(cwd / LOCAL_VENV), *module]
    raise VLLMError(
        f"no vLLM found: looked at --vllm-python, ${PYTHON_ENV}, a `vllm` executable on PATH and "
        f"./{LOCAL_VENV}; run `make vllm` to build ./.venv-vllm (vLLM's CPU build), or give the "
        "python of an environment that has vLLM"
    )


# ---- the process --------------------------------------------------------------------------------


class VLLMServer:
    """A ``vllm serve`` process on 127.0.0.1: started on enter, stopped on exit (even on errors).

    The process runs in its own process group, so stopping it stops its engine workers too."""

    def __init__(
        self,
        model_folder: Path,
        *,
        name: str,
        adapters: Mapping[str, Path] = {},
        settings: VLLMSettings,
        environ: Mapping[str, str] | None = None,
        console: Console | None = None,
    ) -> None:
        self.folder = Path(model_folder)
        self.name, self.adapters, self.settings = name, dict(adapters), settings
        self.environ = dict(os.environ if environ is None else environ)
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path()
        self.url = ""

    def command(self, port: int) -> list[str]:
        s = self.settings
        cmd = [
            *vllm_command(s, self.environ),
            "--model", str(self.folder),
            "--served-model-name", self.name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--dtype", s.dtype,
            "--enforce-eager",  # no graph capture or torch.compile: they only slow a CPU start
            "--enable-lora",
            "--max-lora-rank", str(s.max_lora_rank),
            "--max-loras", str(s.max_loras),
            "--disable-uvicorn-access-log",
        ]  # fmt: skip
        if self.adapters:
            cmd += ["--lora-modules", *(f"{n}={p}" for n, p in self.adapters.items())]
        return cmd + list(s.extra_args)

    def start(self) -> str:
        """Start the process and wait for ``/health``; returns the ``/v1`` root."""
        port = self.settings.port or free_port()
        cmd = self.command(port)
        env = self.environ | {
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_gb),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",  # POST /v1/load_lora_adapter
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        from mentor.utils.fs import mentor_home

        folder = self.settings.log_dir or mentor_home() / "vllm-logs"
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = (
            folder / f"{self.name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}-{port}.log"
        )
        log.info("starting vLLM: %s (log: %s)", " ".join(cmd), self.log_path)
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        base = f"http://127.0.0.1:{port}"
        try:
            self._wait_healthy(base)
        except BaseException:
            self.stop()
            raise
        self.url = f"{base}/v1"
        return self.url

    def _wait_healthy(self, base: str) -> None:
        assert self.process is not None
        started = time.monotonic()
        status = (
            self.console.status(f"starting vLLM for {self.name}")
            if self.console is not None
            else nullcontext()
        )
        with status as shown:
            while True:
                waited = time.monotonic() - started
                if (code := self.process.poll()) is not None:
                    raise VLLMError(f"vLLM exited with status {code} while starting{self._tail()}")
                if waited > self.settings.startup_timeout_s:
                    raise VLLMError(
                        f"vLLM did not answer /health within {self.settings.startup_timeout_s:g} s"
                        f"{self._tail()}"
                    )
                try:
                    if http_json("GET", f"{base}/health", timeout=5)[0] == 200:
                        log.info("vLLM ready in %.0f s", waited)
                        return
                except OSError:
                    pass  # not listening yet
                if shown is not None:
                    shown.update(f"starting vLLM for {self.name} ({waited:.0f} s)")
                time.sleep(0.5)

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (log: {self.log_path})"
        quoted = "\n".join(f"    {line}" for line in text)
        return f"; the last lines of its log, {self.log_path}:\n{quoted}"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str, url: str, body: Mapping[str, Any] | None = None, *, timeout: float = 30.0
) -> tuple[int, Any]:
    """One request with a JSON body: (status, the parsed answer, or its text). ``OSError`` when
    nothing answers. The standard library's, so the engine needs no HTTP package of its own."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def served_models(url: str) -> list[dict[str, Any]]:
    """``GET /v1/models``: what the server serves (adapters have a ``parent``)."""
    try:
        status, body = http_json("GET", f"{url}/models")
        if status != 200:
            raise ValueError(f"HTTP {status}: {error_message(body)}")
        return list(body["data"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise VLLMError(f"{url}/models: no model list from the vLLM server ({exc})") from None


def error_message(body: Any) -> str:
    """The text of an OpenAI-style (``{"error": {"message"}}``) or FastAPI error body."""
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict):
        return str(inner.get("message") or inner.get("detail") or inner)
    return str(inner)[:500]
