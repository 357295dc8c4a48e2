"""What every ``mentor`` command shares: one way to stop with an error.

raise fail(f"{path}: no such file")            # prints "error: ..." on stderr, exit code 1
raise fail("no valid records", code=2)          # a usage error
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from mentor.utils.tracking import REPORT_TO_HELP

_stderr = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on standard error and return the exit to raise.

    The message is printed as plain text (no rich markup), so paths and field names with brackets
    come out as written."""
    _stderr.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


OverlongOpt = Annotated[
    str | None,
    typer.Option(
        help="An example longer than --max-length: error (default: stop before training and "
        "name each one with the answer tokens a cut would lose), truncate (keep the first "
        "max-length tokens, report how many were cut) or drop (leave it out, report it)."
    ),
]
"""``--overlong``, shared by the commands that train on chats (finetune, distill)."""

StrategyOpt = Annotated[
    str | None,
    typer.Option(
        help="Under torchrun: ddp (each process holds the whole model) or fsdp (each holds 1/N "
        "of the weights, gradients and optimizer state) [ddp]."
    ),
]
"""``--strategy``, shared by the commands that train with the trainer (finetune, distill)."""


GradientCheckpointingOpt = Annotated[
    bool | None,
    typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute each block's activations in backward: far less memory, about a third "
        "more compute, the same result. Default: on when a step's memory estimate exceeds the "
        "device's free memory.",
    ),
]
"""``--gradient-checkpointing``, shared by the commands that train (finetune, distill)."""


def checkpointing_setting(flag: bool | None) -> str | None:
    """The flag as ``train.gradient_checkpointing``: on, off, or None (the config's, auto)."""
    return None if flag is None else ("on" if flag else "off")


ReportToOpt = Annotated[list[str] | None, typer.Option("--report-to", help=REPORT_TO_HELP)]
"""``--report-to``, shared by the commands that report to trackers (finetune, distill, bakeoff)."""
