"""``mentor bakeoff``: measure every arm of a config on your data and recommend one.

mentor bakeoff examples/bakeoff/tidepool.yaml --profile quick
mentor bakeoff examples/bakeoff/pubmedqa.yaml --profile full --out runs/pubmedqa
mentor bakeoff my.yaml --arms closed-book,rag --set answer.test_limit=20
mentor bakeoff examples/bakeoff/tidepool.yaml --engine vllm --set answer.batch_size=32
mentor bakeoff examples/bakeoff/tidepool.yaml --report-to mlflow,tensorboard
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from mentor.models.flags import EngineOpt, VLLMPythonOpt, VLLMUrlOpt, engine_overrides
from mentor.utils.cli import ReportToOpt, fail

err = Console(stderr=True)


def parse_sets(items: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values are read as YAML (numbers, booleans, lists)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. answer.test_limit=20")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def bakeoff_cmd(
    config: Annotated[Path, typer.Argument(help="The bakeoff YAML: data, models, training, arms.")],
    profile: Annotated[
        str | None,
        typer.Option(help="A named set of overrides in the file's profiles (quick, full)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: the config's out).")
    ] = None,
    arms: Annotated[
        str | None, typer.Option(help="Comma-separated arm names to run, in order (default: all).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: KEY=VALUE with a dotted key; repeatable."),
    ] = None,
    engine: EngineOpt = None,
    vllm_url: VLLMUrlOpt = None,
    vllm_python: VLLMPythonOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Run the arms side by side on held-out questions; write report.html and report.json.

    Finished arms are reused on a rerun; a failing arm is reported and the others go on."""
    from mentor.bakeoff.config import load_bakeoff_config
    from mentor.bakeoff.runner import run_bakeoff
    from mentor.utils.logs import quiet_libraries
    from mentor.utils.tracking import run_name, tracking

    try:
        overrides = parse_sets(sets or [])
        if out is not None:
            overrides["out"] = str(out)
        overrides.update(engine_overrides(engine, vllm_url, vllm_python))
        if report_to:
            overrides["report_to"] = report_to
        settings = load_bakeoff_config(config, profile=profile, overrides=overrides)
        if arms:
            wanted = [a.strip() for a in arms.split(",") if a.strip()]
            known = {a.name: a for a in settings.arms}
            missing = [a for a in wanted if a not in known]
            if missing:
                raise ValueError(f"--arms: no arm named {', '.join(missing)} in {config}")
            settings.arms = [known[a] for a in wanted]
    except ValueError as exc:
        raise fail(str(exc)) from None
    quiet_libraries()
    console = Console()
    try:
        with tracking(
            settings.report_to,
            run_dir=settings.out,
            name=run_name("bakeoff", settings.out),
            config=json.loads(settings.model_dump_json()),
            console=err,
        ) as tracker:
            run_bakeoff(settings, console=console, profile=profile, tracker=tracker)
    except ValueError as exc:
        raise fail(str(exc)) from None
