"""The command tree as a whole: every option documented, the registry and the CLI agree."""

from __future__ import annotations

import json
from typing import Any

import typer.main
from typer.testing import CliRunner

from mentor.cli import app
from mentor.models.registry import REGISTRY

runner = CliRunner()


def _commands(group: Any, prefix: str = "mentor") -> list[tuple[str, Any]]:
    """Every (path, command) under ``group``; typer ships its own click, so duck-type groups."""
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found.append((path, command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
    return found


def test_every_command_and_option_has_help() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {path for path, _ in commands} >= {
        "mentor models pull",
        "mentor models verify",
        "mentor models list",
        "mentor models path",
        "mentor models info",
        "mentor generate",
        "mentor doctor",
        "mentor data check",
        "mentor data split",
        "mentor data convert",
    }
    for path, command in commands:
        assert command.help, f"{path} has no help"
        for param in command.params:
            if param.name in ("help",):
                continue
            text = getattr(param, "help", None)
            assert text, f"{path}: {param.name} has no help text"


def test_models_list_shows_the_whole_registry() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0
    names = {row["name"] for row in json.loads(result.stdout)}
    assert set(REGISTRY) <= names


def test_doctor_reports_machine_and_advice() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["versions"]["torch"] != "missing"
    assert report["models"]["smollm2-135m-instruct"] == "not pulled"
    assert any("mentor models pull" in tip for tip in report["advice"])
