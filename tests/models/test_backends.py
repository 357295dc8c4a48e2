"""``open_engine``: the builtin engine or vLLM (faked: ``mentor.testing.FakeVLLM``), picked the
same way by every command; what vLLM cannot run is refused with the reason, or falls back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.models.backends import (
    ADAPTER,
    QUANTIZED_MANIFEST,
    EngineSettings,
    EngineUnavailableError,
    engine_settings,
    open_engine,
    resolve_engine,
)
from mentor.models.engine import HFEngine, Request
from mentor.models.generation import EngineGenerator
from mentor.models.loading import load_causal_lm, load_tokenizer
from mentor.models.protocols import SamplingConfig, complete
from mentor.testing import FakeVLLM, save_tiny_llama

VLLM = EngineSettings(kind="vllm", vllm_url="http://gpu:8000")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("backends") / "tiny")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeVLLM:
    vllm = FakeVLLM()
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", vllm.module())
    return vllm


def test_the_flags_make_the_settings_and_bad_ones_name_the_flag() -> None:
    assert engine_settings(None).kind == "builtin"
    chosen = engine_settings("vllm", vllm_url="http://gpu:8000", vllm_python=Path("/v/bin/python"))
    assert (chosen.kind, chosen.vllm_url, chosen.vllm_python) == (
        "vllm",
        "http://gpu:8000",
        Path("/v/bin/python"),
    )
    with pytest.raises(ValueError, match="--engine tgi: expected builtin or vllm"):
        engine_settings("tgi")
    with pytest.raises(ValueError, match="--vllm-url and --vllm-python need --engine vllm"):
        engine_settings("builtin", vllm_url="http://gpu:8000")


def test_builtin_runs_the_model_in_memory_and_loads_one_by_name(tiny_folder: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_folder, device="cpu"), load_tokenizer(tiny_folder)
    with open_engine(None, settings=EngineSettings(), loaded=(model, tokenizer)) as engine:
        assert isinstance(engine, HFEngine) and engine.model is model
    with open_engine(tiny_folder, settings=EngineSettings(), device="cpu") as engine:
        assert isinstance(engine, HFEngine)
        reply = complete(
            EngineGenerator(engine),
            [{"role": "user", "content": "Hi"}],
            SamplingConfig(max_new_tokens=4),
        )
        assert isinstance(reply, str)
    with (
        pytest.raises(ValueError, match="applies no adapter itself"),
        open_engine(tiny_folder, settings=EngineSettings(), adapter=tiny_folder),
    ):
        pass


def test_vllm_gets_the_folder_the_settings_and_the_adapter_every_request_runs_with(
    tiny_folder: Path, fake: FakeVLLM, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with open_engine(tiny_folder, settings=VLLM, adapter=adapter, name="tiny") as engine:
        prompt = engine.encode_chat([{"role": "user", "content": "Hi"}])
        engine.generate([Request(prompt), Request(prompt, adapter="other")])
        list(engine.stream(Request(prompt)))
    opened = fake.opened[0]
    assert opened.folder == tiny_folder and opened.name == "tiny"
    assert opened.adapters == {ADAPTER: adapter}
    assert opened.settings.url == "http://gpu:8000"
    assert opened.request_adapters == [ADAPTER, "other", ADAPTER]
    with open_engine(tiny_folder, settings=VLLM) as engine:  # no adapter: the base model
        engine.generate([Request(engine.encode_text("Hi"))])
    assert fake.opened[1].adapters == {} and fake.opened[1].request_adapters == [None]


def test_vllm_refuses_a_mentor_quantized_folder_and_a_model_only_in_memory(
    tiny_folder: Path, tmp_path: Path, fake: FakeVLLM
) -> None:
    quantized = tmp_path / "int8"
    quantized.mkdir()
    (quantized / "config.json").write_text((tiny_folder / "config.json").read_text())
    (quantized / QUANTIZED_MANIFEST).write_text(json.dumps({"method": "int8"}))
    with (
        pytest.raises(EngineUnavailableError, match=r"quantized by mentor.*use --engine builtin"),
        open_engine(quantized, settings=VLLM),
    ):
        pass
    with pytest.raises(EngineUnavailableError, match="only in memory"):
        resolve_engine(VLLM, None, fallback=False)
    choice, why = resolve_engine(VLLM, quantized, fallback=True)
    assert choice == "builtin" and why is not None and "answered by the builtin engine" in why
    assert resolve_engine(VLLM, tiny_folder, fallback=True) == ("vllm", None)
    assert resolve_engine(EngineSettings(), None, fallback=False) == ("builtin", None)
    assert fake.opened == []


def test_quantize_writes_the_manifest_the_engines_look_for() -> None:
    from mentor.quantize.io import MANIFEST_FILE

    assert MANIFEST_FILE == QUANTIZED_MANIFEST


runner = CliRunner()


def test_mentor_generate_passes_the_engine_flags_to_vllm(
    tiny_folder: Path, fake: FakeVLLM, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    args = ["generate", str(tiny_folder), "Hi", "--max-new-tokens", "3"]
    done = runner.invoke(
        app, [*args, "--engine", "vllm", "--vllm-url", "http://gpu:8000", "--adapter", str(adapter)]
    )
    assert done.exit_code == 0, done.output
    assert "nothing scripted" in done.stdout  # the fake engine answered, not the model
    opened = fake.opened[0]
    assert opened.folder == tiny_folder and opened.adapters == {ADAPTER: adapter}
    assert opened.settings.url == "http://gpu:8000" and opened.request_adapters == [ADAPTER]
    wrong = runner.invoke(app, [*args, "--engine", "tgi"])
    assert wrong.exit_code == 1 and "--engine tgi: expected builtin or vllm" in wrong.output
    builtin = runner.invoke(app, [*args, "--engine", "builtin"])
    assert builtin.exit_code == 0, builtin.output
    assert len(fake.opened) == 1  # builtin never opens vLLM
