"""``mentor doctor``: what this machine offers mentor, and what to do about anything missing."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mentor.models.hub import list_models, models_root
from mentor.models.registry import DEFAULT_MODELS
from mentor.utils.fs import dir_size, human_bytes, mentor_home

_PACKAGES = (
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "safetensors",
    "gguf",
    "accelerate",
    "numpy",
)


@dataclass
class Report:
    versions: dict[str, str]
    cpu: str
    cores: int
    bf16_flags: list[str]
    torch_threads: int
    cuda: list[str]
    mps: bool
    home: str
    cache_bytes: int
    free_bytes: int
    models: dict[str, str]
    offline: bool
    advice: list[str] = field(default_factory=list)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo").read().splitlines():  # noqa: SIM115, PTH123
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect() -> Report:
    import torch

    from mentor.models.loading import cpu_bf16_flags

    home = mentor_home()
    probe = home if home.exists() else home.parent if home.parent.exists() else home.anchor
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append(f"{props.name}, {props.total_memory / 2**30:.0f} GiB")
    versions = {"python": platform.python_version(), "mentor": _version("mentor")}
    versions |= {name: _version(name) for name in _PACKAGES}
    report = Report(
        versions=versions,
        cpu=_cpu_name(),
        cores=os.cpu_count() or 1,
        bf16_flags=list(cpu_bf16_flags()),
        torch_threads=torch.get_num_threads(),
        cuda=cuda,
        mps=bool(torch.backends.mps.is_available()),
        home=str(home),
        cache_bytes=dir_size(home),
        free_bytes=shutil.disk_usage(probe).free,
        models={m.name: m.status for m in list_models()},
        offline=os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"),
    )
    report.advice = advise(report)
    return report


def advise(r: Report) -> list[str]:
    """What to do about anything missing or slow, one line each."""
    tips = []
    missing = [name for name, v in r.versions.items() if v == "missing" and name != "mentor"]
    if missing:
        tips.append(f"install the missing packages: pip install {' '.join(missing)}")
    not_pulled = [m for m in DEFAULT_MODELS if r.models.get(m) != "pulled"]
    if not_pulled:
        tips.append(
            f"pull the default models (offline, ~180 MB): mentor models pull {' '.join(not_pulled)}"
        )
    damaged = [m for m, s in r.models.items() if s == "damaged"]
    if damaged:
        tips.append(f"damaged models, repair with: mentor models pull {' '.join(damaged)}")
    if not r.cuda and not r.bf16_flags:
        tips.append("no GPU and no bf16 CPU support: training runs in fp32, expect it to be slow")
    if r.free_bytes < 5 * 10**9:
        tips.append(
            f"only {human_bytes(r.free_bytes)} free: the optional Qwen models need ~6 GB; "
            "set MENTOR_HOME to a larger disk"
        )
    return tips


def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Versions, CPU features (bf16/AMX), CUDA, pulled models, cache size and free disk."""
    report = collect()
    if as_json:
        print(json.dumps(asdict(report), indent=2))
        return
    console = Console()
    table = Table(show_header=False, title="mentor doctor")
    for name, version in report.versions.items():
        table.add_row(name, version if version != "missing" else "[red]missing[/red]")
    table.add_row("cpu", f"{report.cpu} ({report.cores} cores, torch uses {report.torch_threads})")
    table.add_row("bf16 on cpu", ", ".join(report.bf16_flags) or "[yellow]no (fp32 only)[/]")
    table.add_row("cuda", "; ".join(report.cuda) or "none")
    table.add_row("mps", "yes" if report.mps else "no")
    table.add_row("MENTOR_HOME", report.home)
    table.add_row("cache", f"{human_bytes(report.cache_bytes)} in {models_root().parent}")
    table.add_row("free disk", human_bytes(report.free_bytes))
    table.add_row("hub", "offline (HF_HUB_OFFLINE)" if report.offline else "online if reachable")
    for name, status in report.models.items():
        colour = {"pulled": "green", "damaged": "red"}.get(status, "yellow")
        table.add_row(f"model {name}", f"[{colour}]{status}[/]")
    console.print(table)
    for tip in report.advice:
        console.print(f"[yellow]->[/yellow] {tip}")
    if not report.advice:
        console.print("[green]all set[/green]")
