from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import save_tiny_llama

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("cli") / "tiny-llama")


def test_pull_verify_path_info_of_a_local_model(tiny_folder: Path) -> None:
    pulled = runner.invoke(app, ["models", "pull", "tiny", "--from", str(tiny_folder)])
    assert pulled.exit_code == 0, pulled.output
    assert runner.invoke(app, ["models", "verify", "tiny"]).exit_code == 0
    path = Path(runner.invoke(app, ["models", "path", "tiny"]).stdout.strip())
    assert (path / "mentor.json").exists()
    about = json.loads(runner.invoke(app, ["models", "info", "tiny", "--json"]).stdout)
    assert about["architecture"] == "LlamaForCausalLM" and about["params"] > 0
    assert about["provenance"]["source"] == "local"
    table = runner.invoke(app, ["models", "info", "tiny"])
    assert "parameters" in table.stdout and "context length" in table.stdout


def test_verify_names_the_damaged_file_and_pull_repairs_it(tiny_folder: Path) -> None:
    runner.invoke(app, ["models", "pull", "tiny", "--from", str(tiny_folder)])
    path = Path(runner.invoke(app, ["models", "path", "tiny"]).stdout.strip())
    (path / "config.json").write_text((path / "config.json").read_text() + " ")
    failed = runner.invoke(app, ["models", "verify", "tiny"])
    assert failed.exit_code == 1
    assert "config.json" in failed.output and "FAILED" in failed.output
    assert runner.invoke(app, ["models", "pull", "tiny"]).exit_code == 0  # rebuilt from its folder
    assert runner.invoke(app, ["models", "verify", "tiny"]).exit_code == 0


def test_errors_are_clear_and_exit_non_zero() -> None:
    unknown = runner.invoke(app, ["models", "pull", "gpt-17"])
    assert unknown.exit_code == 1 and "known models" in unknown.output
    missing = runner.invoke(app, ["models", "path", "smollm2-135m-instruct"])
    assert missing.exit_code == 1 and "mentor models pull" in missing.output
    assert runner.invoke(app, ["models", "verify"]).exit_code == 1  # nothing pulled yet


def test_generate_streams_from_a_folder(tiny_folder: Path) -> None:
    result = runner.invoke(
        app,
        ["generate", str(tiny_folder), "Hello there", "--max-new-tokens", "5", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("\n")
