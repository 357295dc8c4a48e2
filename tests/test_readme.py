"""The README's command lines parse: every ``mentor ...`` line shown in a ```bash block is passed
through the CLI's parser (no command runs), so a documented option or command that does not exist
fails here. ``torchrun``/``accelerate launch`` lines are checked from their ``-m mentor.cli`` on.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from mentor.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists after ``mentor`` of every mentor command line in ``text``'s bash blocks.

    Continuation lines are joined and comments stripped; a line with a command substitution
    (``$(...)``, backticks) is left out, as what it runs cannot be known here.
    """
    found: list[list[str]] = []
    for block in _BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if "$(" in line.split("#")[0] or "`" in line.split("#")[0]:
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == ["mentor"]:
                found.append(words[1:])
            elif "-m" in words and words[words.index("-m") + 1 :][:1] == ["mentor.cli"]:
                found.append(words[words.index("-m") + 2 :])
    return found


def parse(args: list[str]) -> None:
    """Resolve the sub-command and parse its arguments as click would, without running it.

    ``make_context`` converts and checks every parameter (unknown options, missing arguments,
    bad choices) and never calls the command's callback; any error it raises fails the test.
    """
    command: Any = typer.main.get_command(app)
    name = "mentor"
    rest = list(args)
    while hasattr(command, "commands"):  # typer ships its own click: duck-type the groups
        if not rest or rest[0].startswith("-"):
            pytest.fail(f"mentor {' '.join(args)}: no sub-command of {name!r} given")
        sub = command.commands.get(rest[0])
        if sub is None:
            pytest.fail(f"mentor {' '.join(args)}: {name!r} has no command {rest[0]!r}")
        name, command, rest = rest[0], sub, rest[1:]
    try:
        command.make_context(name, rest, resilient_parsing=False)
    except Exception as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"mentor {' '.join(args)}: {message}")


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_shows_commands() -> None:
    # the extraction itself: a README rewrite that hides every command must not pass silently
    assert len(COMMANDS) >= 40
    assert ["doctor"] in COMMANDS
    assert any(c[:1] == ["finetune"] and "--resume" in c for c in COMMANDS)


def test_the_extraction_joins_lines_strips_comments_and_skips_substitutions() -> None:
    text = (
        "```bash\nmentor a --b 1 \\\n    --c 'x y'   # or --d\nmentor e $(cat f)\n"
        "torchrun --nproc_per_node 8 -m mentor.cli g --h\npip install x\n```\n"
        "```python\nmentor no\n```\n"
    )
    assert readme_commands(text) == [["a", "--b", "1", "--c", "x y"], ["g", "--h"]]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_a_readme_command_parses(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(README.parent)  # the example files it names, relative to the repository
    parse(args)


def test_a_wrong_option_fails_the_parse() -> None:
    with pytest.raises(pytest.fail.Exception, match="--kind"):
        parse(["finetune", "--model", "minilm-l6", "--data", "labels.csv", "--kind", "classify"])
    with pytest.raises(pytest.fail.Exception, match="no command"):
        parse(["rag", "serach", "x"])
