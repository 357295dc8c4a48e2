"""Which engine generates: mentor's own decode loop (``builtin``) or a vLLM server (``vllm``).

Every command that generates picks one the same way (``--engine builtin|vllm``, or ``engine:`` in
a run's YAML) and gets a :class:`~mentor.models.engine.TextEngine` from :func:`open_engine`:

    with open_engine("smollm2-135m-instruct", settings=EngineSettings(kind="vllm")) as engine:
        answers = generate_answers(engine, prompts, batch_size=16)

- ``builtin`` wraps a model already in memory (``loaded``), or loads it, in
  :class:`~mentor.models.engine.HFEngine`: any device, any model mentor can load;
- ``vllm`` needs the model as a Hugging Face folder on disk (a registry name resolves to its
  converted folder in the cache) and a GPU; a LoRA adapter is served beside the base weights, not
  merged into them. vLLM cannot run a model only in memory, nor a folder quantized by mentor
  (its own int8/int4 format): an explicit ``--engine vllm`` is refused with the reason, and a
  command that compares several models (the bakeoff) falls back to ``builtin`` for those and says
  so (:func:`resolve_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mentor.models.engine import Completion, Request, TextEngine

if TYPE_CHECKING:
    from mentor.models.vllm_server import VLLMSettings

EngineChoice = Literal["builtin", "vllm"]
ENGINES: tuple[EngineChoice, ...] = ("builtin", "vllm")

QUANTIZED_MANIFEST = "mentor_quantized.json"
"""The manifest a mentor-quantized folder holds (``mentor.quantize.io.MANIFEST_FILE`` is this)."""

ADAPTER = "adapter"
"""The name a run's one LoRA adapter is registered under with vLLM."""


class EngineUnavailableError(ValueError):
    """The engine asked for cannot run this model."""


class EngineSettings(BaseModel):
    """The engine that generates, and how to reach vLLM when it is the one."""

    model_config = ConfigDict(extra="forbid")

    kind: EngineChoice = Field(
        default="builtin",
        description="builtin: mentor's own decode loop (any device); vllm: a vLLM server on a "
        "GPU, started for the run or attached to (vllm.url).",
    )
    vllm_url: str | None = Field(
        default=None,
        description="kind vllm: the URL of a vLLM server already running the model, to attach "
        "to instead of starting one.",
    )
    vllm_python: Path | None = Field(
        default=None,
        description="kind vllm: the Python of the environment vLLM is installed in.",
    )
    vllm: dict[str, Any] = Field(
        default_factory=dict,
        description="kind vllm: more settings of the server, by the names of "
        "mentor.models.vllm_server.VLLMSettings (port, startup_timeout_s, kv_cache_gb, "
        "max_lora_rank, extra_args); unset ones keep its defaults.",
    )

    def vllm_settings(self) -> VLLMSettings:
        """The vLLM settings checked as :class:`~mentor.models.vllm_server.VLLMSettings`;
        errors name the field."""
        from mentor.models.vllm_server import VLLMSettings

        given = dict(self.vllm)
        if self.vllm_url is not None:
            given["url"] = self.vllm_url
        if self.vllm_python is not None:
            given["python"] = str(self.vllm_python)
        try:
            return VLLMSettings.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"engine.vllm.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(problems) from None


def engine_settings(
    kind: str | None, *, vllm_url: str | None = None, vllm_python: Path | None = None
) -> EngineSettings:
    """The settings the ``--engine``, ``--vllm-url`` and ``--vllm-python`` flags ask for."""
    chosen = kind or "builtin"
    if chosen not in ENGINES:
        raise ValueError(f"--engine {chosen}: expected {' or '.join(ENGINES)}")
    if (vllm_url is not None or vllm_python is not None) and chosen != "vllm":
        raise ValueError("--vllm-url and --vllm-python need --engine vllm")
    return EngineSettings.model_validate(
        {"kind": chosen, "vllm_url": vllm_url, "vllm_python": vllm_python}
    )


def vllm_problem(source: str | Path | None) -> str | None:
    """Why vLLM cannot run the model ``source`` names (None: it can).

    ``source`` None means the model exists only in memory (nothing vLLM could load)."""
    from mentor.models.loading import resolve_model_path

    if source is None:
        return "the model exists only in memory, not as a folder vLLM could load"
    folder = resolve_model_path(source)
    if (folder / QUANTIZED_MANIFEST).exists():
        return (
            f"{folder} is quantized by mentor (its own int8/int4 format), which only the builtin "
            "engine runs"
        )
    return None


def resolve_engine(
    settings: EngineSettings, source: str | Path | None, *, fallback: bool
) -> tuple[EngineChoice, str | None]:
    """The engine that will run ``source`` and, when it is not the one asked for, why.

    ``fallback``: where vLLM cannot run the model, use ``builtin`` (a command that compares models
    and should not stop at one) instead of raising :class:`EngineUnavailableError`."""
    if settings.kind == "builtin":
        return "builtin", None
    problem = vllm_problem(source)
    if problem is None:
        return "vllm", None
    if fallback:
        return "builtin", f"vllm cannot run it ({problem}): answered by the builtin engine"
    raise EngineUnavailableError(f"--engine vllm: {problem}; use --engine builtin")


class WithAdapter:
    """A :class:`TextEngine` whose requests run with ``adapter`` unless they name another."""

    def __init__(self, engine: TextEngine, adapter: str) -> None:
        self.engine = engine
        self.adapter = adapter
        self.name = engine.name
        self.context_length = engine.context_length

    def _with(self, request: Request) -> Request:
        return request if request.adapter else replace(request, adapter=self.adapter)

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        return self.engine.encode_chat(messages, tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        return self.engine.encode_text(text, special=special)

    def supports_tools(self) -> bool:
        return self.engine.supports_tools()

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        return self.engine.stream(self._with(request), result)

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        return self.engine.generate([self._with(r) for r in requests], batch_size=batch_size)


@contextmanager
def open_engine(
    source: str | Path | None,
    *,
    settings: EngineSettings,
    loaded: tuple[Any, Any] | None = None,
    adapter: Path | None = None,
    device: str = "auto",
    name: str | None = None,
) -> Iterator[TextEngine]:
    """The engine ``settings`` picks, running the model ``source`` names, for the block.

    ``source``: a registry name, folder or ``hf:`` id (None: the model is only in ``loaded``).
    ``loaded``: (model, tokenizer) already in memory; the builtin engine runs it as it is.
    ``adapter``: a LoRA adapter every request runs with. The builtin engine runs ``loaded``, which
    must already carry it (the caller applies it: adapters belong to the training layer); vLLM
    serves it beside the base weights of ``source``. vLLM refuses what it cannot run
    (:func:`resolve_engine`, without fallback)."""
    label = name or (str(source) if source is not None else "model")
    if settings.kind == "builtin":
        from mentor.models.engine import HFEngine

        if loaded is None:
            if source is None:
                raise ValueError("open_engine: name a model (source) or pass it loaded")
            if adapter is not None:
                raise ValueError(
                    "the builtin engine applies no adapter itself: pass the model with the "
                    "adapter applied as `loaded`"
                )
            from mentor.models.loading import load_causal_lm, load_tokenizer

            loaded = (load_causal_lm(source, device=device), load_tokenizer(source))
        yield HFEngine(loaded[0], loaded[1], name=label)
        return
    resolve_engine(settings, source, fallback=False)
    assert source is not None  # resolve_engine refused a model only in memory
    from mentor.models.loading import load_tokenizer, resolve_model_path
    from mentor.models.vllm import open_vllm

    folder = resolve_model_path(source)
    tokenizer = loaded[1] if loaded is not None else load_tokenizer(folder)
    adapters = {ADAPTER: adapter} if adapter is not None else {}
    with open_vllm(
        folder, tokenizer, name=label, adapters=adapters, settings=settings.vllm_settings()
    ) as engine:
        yield WithAdapter(engine, ADAPTER) if adapter is not None else engine
