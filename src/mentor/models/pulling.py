"""Pulling models behind a rich progress display, for commands and long jobs that pull first.

pull_with_progress(["smollm2-135m-instruct", "minilm-l6"], Console())
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import TaskID

from mentor.models.hub import pull
from mentor.utils.progress import progress_bar


def pull_with_progress(
    names: list[str], out: Console, *, source: Path | None = None, force: bool = False
) -> None:
    """Pull ``names`` one after another behind a rich progress display."""
    with progress_bar(out) as bar:
        for name in names:
            task = bar.add_task(f"{name}: starting", total=None)

            def report(
                what: str, done: int, total: int, task_id: TaskID = task, model: str = name
            ) -> None:
                bar.update(task_id, description=f"{model}: {what}", completed=done, total=total)

            result = pull(
                name,
                source=source,
                force=force,
                progress=report,
                log=lambda msg: bar.console.print(msg, highlight=False),
            )
            done = f"{result.name}: {result.action} ({result.seconds:.1f} s)"
            bar.update(task, description=done, completed=1, total=1)
