"""``run_bakeoff`` end to end on tiny random models built in code: an index, a LoRA adapter, a
sequence-distilled student, an int8 arm, and a training entry that fails (logit distillation
from a teacher with another tokenizer). Every other arm is measured and reported; a second run
reuses every finished arm and tries the failed one again.

The models are random, so every score is near zero: this checks the plumbing (what is built,
measured, stored, reused and reported), not the quality."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mentor.bakeoff import runner
from mentor.bakeoff.arms import answer_engine
from mentor.bakeoff.config import ArmSpec, BakeoffConfig
from mentor.bakeoff.results import ArmResult, BakeoffResult, load_result
from mentor.evaluate import text
from mentor.models.backends import EngineSettings
from mentor.testing import (
    FakeVLLM,
    RecordingTracker,
    save_tiny_llama,
    tiny_sentence_transformer_folder,
)
from mentor.utils.tracking import Fanout, Tracker

COLOURS = ["red", "green", "blue", "amber", "violet", "teal"]
DONE = ["closed-book", "rag", "lora", "lora+rag", "distilled", "lora-int8"]
FAILS = "kd"  # logit distillation needs one tokenizer; the teacher has another


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _workspace(root: Path) -> dict[str, Any]:
    """Models, six documents, the question sets and a knowledge update; the config's dict."""
    # untied heads: a tied tiny model repeats its last prompt token (a newline) and so answers
    # nothing, which sequence distillation rightly refuses to learn from
    tiny = {"tie_word_embeddings": False, "max_position_embeddings": 2048}
    save_tiny_llama(root / "llm", seed=0, **tiny)
    save_tiny_llama(root / "teacher", seed=3, vocab_size=300, **tiny)
    tiny_sentence_transformer_folder(root / "embedder")
    docs = root / "docs"
    docs.mkdir()
    for i, colour in enumerate(COLOURS):
        text = f"# Box {i}\n\nBox {i} is painted {colour}. It was made in {2010 + i}.\n"
        (docs / f"box-{i}.md").write_text(text)
    updates = root / "updates"
    updates.mkdir()
    for i in range(3):
        text = f"# Box {i}\n\nBox {i} was repainted {COLOURS[-1 - i]} in 2024.\n"
        (updates / f"box-{i}.md").write_text(text)

    def qa(prefix: str, i: int, question: str, answer: str, **extra: Any) -> dict[str, Any]:
        return {"id": f"{prefix}{i}", "question": question, "answer": answer,
                "doc_ids": [f"box-{i % 6}"], **extra}  # fmt: skip

    train = [qa("tr", i, f"What colour is box {i}?", COLOURS[i]) for i in range(6)]
    train += [qa("tr", i + 6, f"When was box {i} made?", str(2010 + i)) for i in range(6)]
    validation = [qa("va", i, f"Which colour does box {i} have?", COLOURS[i]) for i in range(4)]
    test = [qa("te", i, f"Box {i} has which colour?", COLOURS[i], seen=i < 3) for i in range(6)]
    fresh = [qa("up", i, f"What colour is box {i} now?", COLOURS[-1 - i]) for i in range(3)]
    retrieval = {"mode": "hybrid", "k": 2, "chunk_tokens": 32}
    small = {"epochs": 1, "max_steps": 2, "batch_size": 4, "r": 4, "lr": 1e-3}
    return {
        "name": "tiny boxes",
        "data": {
            "docs": str(docs),
            "train": str(_jsonl(root / "qa" / "train.jsonl", train)),
            "validation": str(_jsonl(root / "qa" / "validation.jsonl", validation)),
            "test": str(_jsonl(root / "qa" / "test.jsonl", test)),
            "group_by": "seen",
            "updates": {
                "docs": str(updates),
                "questions": str(_jsonl(updates / "questions.jsonl", fresh)),
            },
        },
        "models": {
            "base": str(root / "llm"),
            "embedder": str(root / "embedder"),
            "teacher": str(root / "teacher"),
        },
        "answer": {"max_new_tokens": 6, "batch_size": 4, "latency_queries": 2, "bootstrap": 200},
        "primary": "contains",
        "training": {
            "lora": {"method": "lora", **small},
            "distilled": {
                "method": "distill",
                "distill": "sequence",
                "teacher_retrieval": True,
                "teacher_limit": 6,
                **small,
            },
            FAILS: {"method": "distill", "distill": "logits", **small},
        },
        "arms": [
            {"name": "closed-book"},
            {"name": "rag", "retrieval": retrieval},
            {"name": "lora", "model": "lora"},
            {"name": "lora+rag", "model": "lora", "retrieval": retrieval},
            {"name": "distilled", "model": "distilled"},
            {"name": FAILS, "model": FAILS},
            {"name": "lora-int8", "model": "lora", "quantize": "int8"},
        ],
        "situation": {"freshness": "monthly", "hardware": "cpu_server"},
        "out": str(root / "run"),
    }


def _run(config: BakeoffConfig, tracker: Tracker | None = None) -> tuple[BakeoffResult, str]:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    result = runner.run_bakeoff(config, console=console, profile="test", tracker=tracker)
    return result, out.getvalue()


@pytest.fixture(scope="module")
def first(
    tmp_path_factory: pytest.TempPathFactory, test_device: str
) -> tuple[BakeoffConfig, BakeoffResult, str]:
    """One bakeoff on the test device (``pytest --device``), shared by the tests below; what it
    reported to a tracker is in ``TRACKED``."""
    root = tmp_path_factory.mktemp("bakeoff")
    config = BakeoffConfig.model_validate({**_workspace(root), "device": test_device})
    result, output = _run(config, Fanout([TRACKED]))
    return config, result, output


TRACKED = RecordingTracker()


@pytest.mark.e2e
def test_every_arm_is_measured_and_the_failing_one_is_reported(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    config, result, output = first
    assert [a.name for a in result.arms] == [a.name for a in config.arms]
    assert result.base == "closed-book" and result.primary == "contains"
    assert result.data == {
        "documents": 6, "train": 12, "validation": 4, "test": 6, "updates": 3,
    }  # fmt: skip
    failed = result.arm(FAILS)
    assert failed.status == "failed" and not failed.ok
    assert failed.error is not None and f"training {FAILS} failed" in failed.error
    assert failed.quality == {} and failed.methods == ["distillation"]
    assert any(f"training {FAILS} failed" in note for note in result.notes)
    assert f"{FAILS} failed" in output
    for name in DONE:
        arm = result.arm(name)
        assert arm.ok, (name, arm.error)
        quality = arm.quality["contains"]
        assert 0.0 <= quality.low <= quality.value <= quality.high <= 1.0
        assert set(arm.quality) == {"contains", "exact_match", "token_f1", "rouge_l"}
        assert arm.questions == 6 and len(arm.answers) == 6
        assert {a.id for a in arm.answers} == {f"te{i}" for i in range(6)}
        assert set(arm.groups) == {"seen=true", "seen=false"}
        assert arm.groups["seen=true"]["n"] == 3
        assert arm.updates is not None  # every arm also answered the update questions
        assert arm.latency_ms["p95"] > 0 and arm.latency_ms["queries"] == 2
        assert arm.model_memory_mb > 0 and arm.seconds > 0
        assert arm.costs is not None and arm.costs.yearly_usd > 0
        assert arm.vs_base is not None
        assert arm.grounding is not None  # passages, or the gold documents closed-book


def test_the_arms_are_what_their_config_says(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    _, result, _ = first
    methods = {a.name: a.methods for a in result.arms}
    assert methods == {
        "closed-book": ["prompting"],
        "rag": ["rag"],
        "lora": ["lora"],
        "lora+rag": ["lora", "rag"],
        "distilled": ["distillation"],
        FAILS: ["distillation"],
        "lora-int8": ["lora", "quantization"],
    }
    rag, lora, closed = result.arm("rag"), result.arm("lora"), result.arm("closed-book")
    assert all(a.sources and len(a.sources) <= 2 for a in rag.answers)  # k = 2 passages
    assert all(a.sources == [] for a in closed.answers)
    assert rag.index_s > 0 and closed.index_s == 0 and closed.training_s == 0
    assert lora.training_s > 0 and [p["step"] for p in lora.curve] == [1.0, 2.0]
    assert result.arm("lora+rag").training_s == pytest.approx(lora.training_s)  # built once
    assert result.arm("distilled").training_s > 0
    assert "int8" in result.arm("lora-int8").description
    assert result.arm("lora").vs_base is not None
    assert closed.vs_base is not None and closed.vs_base.value == 0.0


@pytest.mark.e2e
def test_the_report_and_the_verdict_are_written(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    config, result, output = first
    verdict = result.verdict
    assert verdict is not None and verdict.paragraph
    assert verdict.excluded[FAILS].startswith("failed: ")
    assert FAILS not in verdict.eligible
    assert set(verdict.eligible) == set(DONE) and verdict.arm in DONE
    # 6 documents, 12 labelled questions (too few to tune), a teacher, a CPU server
    assert verdict.advisor_methods == ["rag"]
    # random models score 0 everywhere: every arm ties, and the framework's method wins the tie
    assert verdict.arm == "rag"
    assert verdict.monitoring
    out = config.out
    for name in ("report.json", "report.html"):
        assert (out / name).stat().st_size > 0
    assert sorted(p.name for p in (out / "arms").iterdir()) == sorted(
        f"{runner.slug(a.name)}.json" for a in config.arms
    )
    stored = load_result(out / "report.json")
    assert [a.name for a in stored.arms] == [a.name for a in result.arms]
    assert stored.verdict is not None and stored.verdict.arm == verdict.arm
    assert stored.arm("rag").quality == result.arm("rag").quality
    html = (out / "report.html").read_text()
    assert "tiny boxes" in html and "different tokenizers" in html
    assert "report.html" in output


def test_the_tracker_gets_each_training_step_as_it_happens_then_the_scores(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    """Every model trained in the run reports its steps live under its training name, before
    any arm is scored; nothing is sent twice at the end."""
    logs = TRACKED.logs
    scored = next(i for i, (_, m) in enumerate(logs) if any(k.startswith("score/") for k in m))
    for model in ("lora", "distilled"):
        steps = [s for s, m in logs[:scored] if f"{model}/loss" in m]
        assert steps == [1, 2], model  # max_steps 2, live
        assert not any(f"{model}/loss" in m for _, m in logs[scored:])
    assert any(path.name == "report.html" for path, _ in TRACKED.artifacts)


def test_a_second_run_reuses_the_finished_arms_and_retries_the_failed_one(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, before, _ = first
    measured = _measuring(monkeypatch)
    tracked = RecordingTracker()
    after, output = _run(config, Fanout([tracked]))
    assert measured == [FAILS]  # only the failed arm is measured again
    # the reused models' curves reach the tracker once, at the end
    assert [s for s, m in tracked.logs if "lora/loss" in m] == [1, 2]
    for name in DONE:
        assert f"{name}: measured in an earlier run, reused" in output
        assert after.arm(name).quality == before.arm(name).quality
        assert after.arm(name).answers == before.arm(name).answers
    assert "trained model reused" in output  # the adapter and the student are not retrained
    assert after.arm(FAILS).status == "failed"
    assert after.verdict is not None and before.verdict is not None
    assert after.verdict.arm == before.verdict.arm


def _measuring(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the arms ``Bakeoff.measure`` is called for from now on."""
    measured: list[str] = []
    original = runner.Bakeoff.measure

    def counting(self: runner.Bakeoff, arm: ArmSpec) -> ArmResult:
        measured.append(arm.name)
        return original(self, arm)

    monkeypatch.setattr(runner.Bakeoff, "measure", counting)
    return measured


def test_a_changed_group_field_is_not_served_from_the_stored_arm(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = first[0].model_copy(deep=True)
    config.arms = [a for a in config.arms if a.name == "closed-book"]
    config.data.group_by = None
    _measuring(monkeypatch)
    after, _ = _run(config)
    assert after.arm("closed-book").groups == {}


def test_changed_update_documents_measure_the_retrieval_arms_again(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = first[0].model_copy(deep=True)
    config.arms = [a for a in config.arms if a.name in ("closed-book", "rag")]
    assert config.data.updates is not None
    changed = config.data.updates.docs / "box-0.md"
    changed.write_text("# Box 0\n\nBox 0 was repainted gold in 2025.\n")
    measured = _measuring(monkeypatch)
    _run(config)
    assert "rag" in measured


def test_an_arm_stored_under_other_metric_names_is_measured_again(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result stored before a metric was renamed (the bakeoff's "f1" is now "token_f1") is not
    served: the registry's names are part of an arm's fingerprint."""
    config = first[0].model_copy(deep=True)
    config.arms = [a for a in config.arms if a.name == "closed-book"]
    renamed = {**text.TEXT_METRICS, "whole_words": text.contains}
    monkeypatch.setattr(text, "TEXT_METRICS", renamed)
    monkeypatch.setattr(runner, "TEXT_METRICS", renamed)
    measured = _measuring(monkeypatch)
    after, _ = _run(config)
    assert measured == ["closed-book"]
    assert "whole_words" in after.arm("closed-book").quality


def test_vllm_answers_the_arms_it_can_run_and_the_report_says_which_engine_did_what(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``engine.kind: vllm`` the scored answers come from vLLM (faked), batched, the adapter
    served beside the base; latency stays on the builtin engine; the int8 arm, which vLLM cannot
    run, keeps its builtin result (same fingerprint). A rerun reuses the vLLM results as such."""
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", fake.module())
    config = first[0].model_copy(deep=True)
    config.arms = [a for a in config.arms if a.name in ("closed-book", "lora", "lora-int8")]
    _run(config)  # on the builtin engine, up to date with what the tests above changed
    config.engine = EngineSettings(kind="vllm", vllm_url="http://gpu:8000")
    measured = _measuring(monkeypatch)
    result, output = _run(config)
    assert measured == ["closed-book", "lora"]  # the engine is part of what an arm measured
    base, lora, int8 = (result.arm(n) for n in ("closed-book", "lora", "lora-int8"))
    assert [a.answer_engine for a in (base, lora, int8)] == ["vllm", "vllm", "builtin"]
    assert base.engines == "answers: vllm (batched 4), latency: builtin, one at a time"
    assert base.latency_ms["queries"] == 2
    # every test and update question went to vLLM, the lora arm's with its adapter
    questions = len(result.arm("closed-book").answers) + 3
    assert [o.folder for o in fake.opened] == [Path(config.models.base)] * 2
    assert fake.opened[0].adapters == {} and fake.opened[0].request_adapters == [None] * questions
    trained = result.arm("lora")
    assert fake.opened[1].adapters == {"adapter": Path(config.out / "models/lora/run/adapter")}
    assert fake.opened[1].request_adapters == ["adapter"] * questions
    assert all(a.answer == "nothing scripted" for a in trained.answers)
    assert "engines, closed-book: answers: vllm (batched 4), latency: builtin" in output
    assert "engines, lora-int8: answers: builtin (batched 4)" in output
    html = (config.out / "report.html").read_text()
    assert "answers: vllm (batched 4), latency: builtin, one at a time" in html
    again, _ = _run(config)
    assert measured == ["closed-book", "lora"]  # nothing measured twice
    assert again.arm("lora").engines == lora.engines
    stored = json.loads((config.out / "arms" / "lora.json").read_text())
    assert stored["arm"]["answer_engine"] == "vllm"


def test_the_arm_fingerprint_changes_with_the_engine_only_where_it_answers(
    first: tuple[BakeoffConfig, BakeoffResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", FakeVLLM().module())
    config = first[0]
    bakeoff = runner.Bakeoff(config, Console(file=io.StringIO()), profile=None)
    on_vllm = runner.Bakeoff(
        config.model_copy(update={"engine": EngineSettings(kind="vllm")}),
        Console(file=io.StringIO()),
        profile=None,
    )
    arm, int8 = ArmSpec(name="closed-book"), ArmSpec(name="b8", quantize="int8")
    assert bakeoff.arm_fingerprint(arm) != on_vllm.arm_fingerprint(arm)
    assert bakeoff.arm_fingerprint(int8) == on_vllm.arm_fingerprint(int8)
    choice, why = answer_engine(int8, None, on_vllm.config)
    assert choice == "builtin" and why is not None and "quantized to int8 by mentor" in why


@pytest.mark.e2e
def test_on_a_laptop_the_verdict_names_the_gguf_file_of_its_arm(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    """``export: auto`` on a laptop: the chosen arm (retrieval on the float base) is written at
    f16 with a Modelfile, the paragraph names the file, report.json keeps it, and a rerun keeps
    the file it wrote."""
    from gguf import GGUFReader

    config = first[0].model_copy(deep=True)
    config.arms = [a for a in config.arms if a.name in ("closed-book", "rag", "lora-int8")]
    config.situation.hardware = "laptop"
    result, output = _run(config)
    verdict = result.verdict
    assert verdict is not None and verdict.arm == "rag"
    exported = verdict.export
    assert exported is not None and exported.error is None and exported.path is not None
    path = Path(exported.path)
    assert path == config.out / "export" / "rag" / "rag.f16.gguf"
    assert exported.gguf_type == "f16" and exported.retrieval and exported.exact == 0
    assert f"To run it on the laptop: {path} (f16," in verdict.paragraph
    assert exported.modelfile == str(path.with_name("Modelfile"))
    assert Path(exported.modelfile).read_text().startswith(f"FROM ./{path.name}\n")
    reader = GGUFReader(str(path))
    assert {t.tensor_type.name for t in reader.tensors} <= {"F16", "F32"}
    assert f"rag: wrote {path}" in output
    stored = load_result(config.out / "report.json")
    assert stored.verdict is not None and stored.verdict.export == exported
    written = path.stat().st_mtime_ns
    again, output = _run(config)
    assert again.verdict is not None and again.verdict.export == exported
    assert path.stat().st_mtime_ns == written and "wrote" not in output


def test_a_quantized_arm_is_exported_with_the_codes_it_was_measured_with(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    """The int8 arm's folder (LoRA merged before quantizing) goes to Q8_0, and the sentence says
    the SmoothQuant weights were quantized again; an arm whose quantized folder is gone gets a
    sentence saying why, not an exception."""
    from gguf import GGUFReader

    config = first[0].model_copy(deep=True)
    config.training = {"lora": config.training["lora"]}
    bakeoff = runner.Bakeoff(config, Console(file=io.StringIO()), profile=None)
    bakeoff.train_all()  # the stored adapter: what the quantized folder's name is made from
    stored = first[1].verdict
    assert stored is not None
    chosen = dataclasses.replace(
        stored, arm="lora-int8", methods=["lora", "quantization"], export=None
    )
    int8 = next(a for a in config.arms if a.name == "lora-int8")
    assert bakeoff.quant_folder(int8).is_dir()
    named = bakeoff.export(chosen)  # cpu_server: auto exports because the arm is quantized
    exported = named.export
    assert exported is not None and exported.path is not None, named.paragraph
    assert exported.gguf_type == "q8_0" and exported.quantized == "int8"
    assert not exported.retrieval
    types = {t.tensor_type.name for t in GGUFReader(exported.path).tensors}
    assert "Q8_0" in types
    # the bakeoff's int8 is SmoothQuant's: the factors are folded in and quantized again
    assert exported.exact == 0
    assert "the measured int8 weights quantized again" in named.paragraph
    assert "To run it outside mentor: " in named.paragraph

    shutil.rmtree(bakeoff.quant_folder(int8))
    Path(exported.path).unlink()
    missing = bakeoff.export(chosen)
    assert missing.export is not None and missing.export.path is None
    assert "No GGUF file was written for lora-int8: " in missing.paragraph


def test_the_index_is_tuned_as_rag_index_tunes_it(
    first: tuple[BakeoffConfig, BakeoffResult, str],
) -> None:
    config, _, _ = first
    # the fast profile by default, the base model writing the synthetic questions
    reports = sorted((config.out / "indexes").glob("*/index/autotune.json"))
    assert {r.parts[-3].split("-")[0] for r in reports} == {"docs", "updated"}
    for report in reports:
        tuned = json.loads(report.read_text())
        assert tuned["profile"] == "fast" and tuned["finished"]
        assert {s["name"] for s in tuned["steps"] if s["status"] != "skipped"} >= {"questions"}
