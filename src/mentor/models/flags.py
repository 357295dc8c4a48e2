"""The ``--engine``, ``--vllm-url`` and ``--vllm-python`` flags, defined once for every command
that generates (``mentor generate``, ``rag ask``, ``finetune``, ``distill``, ``bakeoff``, ...).

    def ask_cmd(..., engine: EngineOpt = None, vllm_url: VLLMUrlOpt = None,
                vllm_python: VLLMPythonOpt = None) -> None:
        settings = settings_from_flags(engine, vllm_url, vllm_python)

:func:`settings_from_flags` turns them into the settings
:func:`~mentor.models.backends.open_engine` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mentor.utils.cli import fail

if TYPE_CHECKING:
    from mentor.models.backends import EngineSettings

EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="What generates: builtin (mentor's own decode loop, any device) [default] or vllm "
        "(a vLLM server from its own environment, see make vllm; started for the run unless "
        "--vllm-url names one).",
    ),
]
VLLMUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-url",
        help="With --engine vllm: the URL of a vLLM server already running this model, to "
        "attach to instead of starting one.",
    ),
]
VLLMPythonOpt = Annotated[
    Path | None,
    typer.Option(
        "--vllm-python",
        help="With --engine vllm: the Python of the environment vLLM is installed in (it "
        "rarely fits beside mentor's own torch).",
    ),
]


def engine_overrides(
    engine: str | None, vllm_url: str | None, vllm_python: Path | None
) -> dict[str, Any]:
    """The flags as dotted overrides of a run YAML's ``engine`` section (None: the file's own)."""
    return {
        "engine.kind": engine,
        "engine.vllm_url": vllm_url,
        "engine.vllm_python": str(vllm_python) if vllm_python is not None else None,
    }


def settings_from_flags(
    engine: str | None, vllm_url: str | None, vllm_python: Path | None
) -> EngineSettings:
    """The engine settings the three flags ask for; a bad combination stops the command."""
    from mentor.models.backends import engine_settings

    try:
        return engine_settings(engine, vllm_url=vllm_url, vllm_python=vllm_python)
    except ValueError as exc:
        raise fail(str(exc)) from None
