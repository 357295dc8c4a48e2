"""The bakeoff's config: the shipped YAML files and their profiles load, overrides apply in order,
paths are relative to the file, and every mistake is reported with the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from typer.testing import CliRunner

from mentor.bakeoff.commands import parse_sets
from mentor.bakeoff.config import BakeoffConfig, Metric, load_bakeoff_config
from mentor.cli import app
from mentor.evaluate.labels import LABEL_METRICS
from mentor.evaluate.text import TEXT_METRICS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bakeoff"
TIDEPOOL = EXAMPLES / "tidepool.yaml"
QUICK_ARMS = ["closed-book", "rag", "lora", "lora+rag", "distilled", "rag-int8"]


def _write(folder: Path, raw: dict[str, Any], name: str = "bakeoff.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _minimal(**extra: Any) -> dict[str, Any]:
    return {
        "data": {"docs": "docs", "train": "qa/train.jsonl", "test": "qa/test.jsonl"},
        "training": {"lora": {"method": "lora"}},
        "arms": [{"name": "closed-book"}, {"name": "lora", "model": "lora"}],
        **extra,
    }


# --- the shipped files -----------------------------------------------------------------------


def test_tidepool_loads_with_every_arm_and_its_paths_next_to_it() -> None:
    config = load_bakeoff_config(TIDEPOOL)
    assert len(config.arms) == 12 and config.arms[0].name == "closed-book"
    assert config.primary == "contains"
    folder = EXAMPLES / "tidepool"
    assert config.data.docs == folder / "docs" and config.data.docs.is_dir()
    assert config.data.test == folder / "questions" / "test.jsonl" and config.data.test.is_file()
    assert config.data.updates is not None
    assert config.data.updates.questions == folder / "updates" / "questions.jsonl"
    assert config.data.updates.questions.is_file()
    assert list(config.trained()) == ["lora", "full", "distilled"]


def _setting(config: BakeoffConfig, dotted: str) -> Any:
    value: Any = config
    for key in dotted.split("."):
        value = value[key] if isinstance(value, dict) else getattr(value, key)
    return value


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_tidepool_profiles_apply_every_setting_they_name(profile: str) -> None:
    raw = yaml.safe_load(TIDEPOOL.read_text())
    plain = load_bakeoff_config(TIDEPOOL)
    config = load_bakeoff_config(TIDEPOOL, profile=profile)
    named = raw["profiles"][profile]
    for dotted, value in named.items():
        if dotted == "arms":
            assert [a.name for a in config.arms] == value
        elif dotted == "out":
            assert config.out == Path(value)
        else:
            assert _setting(config, dotted) == value, dotted
    # what the profile does not name keeps the file's value
    assert config.primary == plain.primary and config.situation == plain.situation
    assert config.training["lora"].lr == plain.training["lora"].lr


def test_tidepool_quick_profile_keeps_the_listed_arms_in_order() -> None:
    config = load_bakeoff_config(TIDEPOOL, profile="quick")
    assert [a.name for a in config.arms] == QUICK_ARMS
    assert list(config.trained()) == ["lora", "distilled"]  # full-ft is not in the quick arms
    assert config.out == Path("runs/bakeoff/tidepool-quick")


def test_tidepool_full_profile_names_a_teacher_and_keeps_every_arm() -> None:
    config = load_bakeoff_config(TIDEPOOL, profile="full")
    assert config.models.teacher == "qwen2.5-coder-0.5b-instruct"
    assert len(config.arms) == 12
    assert config.answer.test_limit is None


def test_the_files_profiles_are_kept_for_the_report_to_point_to(tmp_path: Path) -> None:
    raw = yaml.safe_load(TIDEPOOL.read_text())
    config = load_bakeoff_config(TIDEPOOL, profile="quick")
    assert config.profiles == raw["profiles"]
    assert config.models.teacher is None  # kept, not applied: only the chosen one applies
    assert load_bakeoff_config(_write(tmp_path, _minimal())).profiles == {}


def test_pubmedqa_loads_with_its_source_next_to_it() -> None:
    config = load_bakeoff_config(EXAMPLES / "pubmedqa.yaml", profile="quick")
    assert config.data.prepare == "pubmedqa" and config.primary == "macro_f1"
    assert config.data.labels == ["yes", "no", "maybe"]
    assert config.data.source is not None and config.data.source.is_absolute()
    assert config.data.source.name == "pqal_train.json"
    assert [a.name for a in config.arms] == ["closed-book", "rag", "lora", "lora+rag"]


# --- profiles and overrides ------------------------------------------------------------------


def test_unknown_profile_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no profile 'fast' \(profiles: quick, full\)"):
        load_bakeoff_config(TIDEPOOL, profile="fast")


def test_a_profile_naming_an_unknown_arm(tmp_path: Path) -> None:
    path = _write(tmp_path, _minimal(profiles={"quick": {"arms": ["closed-book", "rag"]}}))
    with pytest.raises(ValueError, match=r"profiles\.quick\.arms: no arm named rag"):
        load_bakeoff_config(path, profile="quick")


def test_overrides_apply_after_the_profile() -> None:
    config = load_bakeoff_config(
        TIDEPOOL,
        profile="quick",
        overrides={
            "answer.test_limit": 5,
            "situation.freshness": "daily",
            "training.lora.max_steps": 2,
            "out": "elsewhere",
            "device": None,  # None: not given, the file's value stays
        },
    )
    assert config.answer.test_limit == 5  # the profile said 30
    assert config.situation.freshness == "daily"
    assert config.training["lora"].max_steps == 2 and config.training["lora"].epochs == 3
    assert config.out == Path("elsewhere")
    assert config.device == "cpu"


def test_overrides_from_the_command_line_parse_as_yaml() -> None:
    sets = parse_sets(
        [
            "answer.test_limit=20",
            "situation.freshness=weekly",
            "situation.citations_required=true",
            "costs.serve_usd_per_hour=0.5",
            "data.labels=[yes, 'no']",
            "name=a = b",
        ]
    )
    assert sets == {
        "answer.test_limit": 20,
        "situation.freshness": "weekly",
        "situation.citations_required": True,
        "costs.serve_usd_per_hour": 0.5,
        "data.labels": [True, "no"],  # YAML reads a bare yes as true: quote labels
        "name": "a = b",
    }
    config = load_bakeoff_config(TIDEPOOL, overrides=parse_sets(["answer.test_limit=7"]))
    assert config.answer.test_limit == 7


@pytest.mark.parametrize("item", ["answer.test_limit", "=5", " =5"])
def test_parse_sets_refuses_an_item_without_a_key_and_value(item: str) -> None:
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_sets([item])


def test_an_override_into_a_setting_that_is_not_a_section() -> None:
    with pytest.raises(ValueError, match=r"tidepool\.yaml: name\.x: name is not a section"):
        load_bakeoff_config(TIDEPOOL, overrides={"name.x": 1})


def test_a_bad_override_value_names_the_file_and_field() -> None:
    with pytest.raises(ValueError, match=r"tidepool\.yaml: situation\.freshness: Input should"):
        load_bakeoff_config(TIDEPOOL, overrides={"situation.freshness": "hourly"})
    with pytest.raises(ValueError, match=r"answer\.test_limit: Input should be greater"):
        load_bakeoff_config(TIDEPOOL, overrides={"answer.test_limit": 0})


# --- paths -----------------------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _minimal()
    raw["data"]["updates"] = {"docs": "updates", "questions": "updates/q.jsonl"}
    raw["data"]["validation"] = "/abs/validation.jsonl"
    path = _write(tmp_path / "project", raw)
    monkeypatch.chdir(tmp_path)  # anywhere but the file's folder
    config = load_bakeoff_config(Path("project/bakeoff.yaml"))
    root = (tmp_path / "project").resolve()
    assert config.data.docs == root / "docs"
    assert config.data.train == root / "qa" / "train.jsonl"
    assert config.data.test == root / "qa" / "test.jsonl"
    assert config.data.validation == Path("/abs/validation.jsonl")  # absolute: kept
    assert config.data.updates is not None
    assert config.data.updates.docs == root / "updates"
    assert config.data.updates.questions == root / "updates" / "q.jsonl"
    assert config.out == Path("runs/bakeoff")  # the run folder is where mentor runs
    assert path.exists()


def test_paths_a_profile_sets_are_relative_to_the_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _minimal(profiles={"small": {"data.test": "qa/small.jsonl"}})
    path = _write(tmp_path / "project", raw)
    monkeypatch.chdir(tmp_path)
    config = load_bakeoff_config(path, profile="small")
    assert config.data.test == (tmp_path / "project" / "qa" / "small.jsonl").resolve()
    # a path typed on the command line is relative to where the command runs
    config = load_bakeoff_config(path, overrides={"data.test": "mine.jsonl"})
    assert config.data.test == Path("mine.jsonl")


def test_the_metric_names_are_the_evaluate_layers() -> None:
    assert get_args(Metric) == (*TEXT_METRICS, *LABEL_METRICS)
    assert BakeoffConfig.model_fields["primary"].default == "token_f1"


# --- mistakes --------------------------------------------------------------------------------


def test_an_arm_of_an_unknown_training_entry_names_the_field() -> None:
    arms = [{"name": "closed-book"}, {"name": "tuned", "model": "qlora"}]
    with pytest.raises(ValueError) as caught:
        load_bakeoff_config(TIDEPOOL, overrides={"arms": arms})
    message = str(caught.value)
    assert message.startswith(f"{TIDEPOOL}: arms.tuned.model: 'qlora' is not one of base, lora")
    assert "distilled" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"arms": [{"name": "a"}, {"name": "a"}]}, r"arms: names repeat \(a, a\)"),
        ({"arms": []}, "arms: name at least one arm"),
        ({"data": {"test": "t.jsonl"}, "arms": [{"name": "r", "retrieval": {}}]},
         r"arms\.r: retrieval needs data\.docs"),
        ({"data": {"test": "t.jsonl"}}, r"training\.lora: needs data\.train"),
        ({"data": {"docs": "d", "train": "t.jsonl"}}, r"data\.test: name the held-out questions"),
        ({"primary": "accuracy"}, r"primary: accuracy needs data\.labels"),
        ({"primary": "f1"}, r"primary: Input should be 'exact_match', 'token_f1'"),
        ({"data": {"prepare": "pubmedqa"}}, r"data\.source: prepare needs the raw file"),
        ({"data": {"train": "t.jsonl", "test": "t.jsonl"},
          "training": {"lora": {"method": "distill"}}},
         r"training\.lora: teacher_retrieval needs data\.docs"),
        ({"arms": [{"name": "a", "quantize": "int2"}]}, r"arms\.0\.quantize: Input should be"),
        ({"colour": "blue"}, r"colour: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_inconsistent_configs_are_refused_naming_the_field(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    path = _write(tmp_path, {**_minimal(), **change})
    with pytest.raises(ValueError, match=expected) as caught:
        load_bakeoff_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert ": : " not in str(caught.value)


def test_a_logit_distillation_needs_no_documents(tmp_path: Path) -> None:
    raw = _minimal(training={"kd": {"method": "distill", "distill": "logits"}})
    raw["data"] = {"train": "t.jsonl", "test": "t.jsonl"}
    raw["arms"] = [{"name": "closed-book"}, {"name": "kd", "model": "kd"}]
    config = load_bakeoff_config(_write(tmp_path, raw))
    assert list(config.trained()) == ["kd"]


def test_an_unused_training_entry_needs_no_training_data(tmp_path: Path) -> None:
    raw = _minimal()
    raw["data"] = {"docs": "docs", "test": "t.jsonl"}
    raw["arms"] = [{"name": "closed-book"}, {"name": "rag", "retrieval": {"k": 2}}]
    config = load_bakeoff_config(_write(tmp_path, raw))
    assert config.trained() == {} and config.training["lora"].method == "lora"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("data: [unclosed", "not valid YAML"), ("- a list\n- of things\n", "expected a mapping")],
)
def test_files_that_are_not_a_config(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected):
        load_bakeoff_config(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such config file"):
        load_bakeoff_config(tmp_path / "nowhere.yaml")


def test_the_config_round_trips_through_json() -> None:
    config = load_bakeoff_config(TIDEPOOL, profile="quick")
    again = BakeoffConfig.model_validate_json(config.model_dump_json())
    assert again == config


# --- the command, up to the run --------------------------------------------------------------


def test_the_command_reports_config_mistakes_without_running() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bakeoff", str(TIDEPOOL), "--arms", "rag,nope"])
    assert result.exit_code == 1 and "--arms: no arm named nope" in result.output
    result = runner.invoke(app, ["bakeoff", str(TIDEPOOL), "--profile", "fast"])
    assert result.exit_code == 1 and "no profile 'fast'" in result.output
    result = runner.invoke(app, ["bakeoff", str(TIDEPOOL), "--set", "answer.test_limit"])
    assert result.exit_code == 1 and "expected KEY=VALUE" in result.output


def test_a_hugging_face_dataset_id_is_not_made_a_path(tmp_path: Path) -> None:
    raw = _minimal()
    raw["data"]["train"] = "hf:tatsu-lab/alpaca:train[:200]"
    config = load_bakeoff_config(_write(tmp_path / "project", raw))
    assert str(config.data.train) == "hf:tatsu-lab/alpaca:train[:200]"
    assert config.data.test == (tmp_path / "project" / "qa" / "test.jsonl").resolve()
