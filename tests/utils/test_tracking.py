"""The tracker plumbing: names parsed and checked, a failing tracker warned about once and left
out, finish's status, process 0 only, a missing package named with its extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from mentor.testing import RecordingTracker
from mentor.utils.trackers import BACKENDS, TrackerUnavailableError
from mentor.utils.tracking import (
    TRACKER_NAMES,
    Fanout,
    flatten,
    open_backends,
    parse_report_to,
    report_outputs,
    tracking,
)


def _console() -> Console:
    return Console(record=True, width=200)


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (None, []),
        ("mlflow", ["mlflow"]),
        (["mlflow,wandb", "tensorboard"], ["mlflow", "wandb", "tensorboard"]),
        (["MLflow", " mlflow ", "trackio"], ["mlflow", "trackio"]),
        ("none", []),
    ],
)
def test_report_to_accepts_repeats_and_commas(given: object, names: list[str]) -> None:
    assert parse_report_to(given) == names  # type: ignore[arg-type]


def test_an_unknown_tracker_is_named() -> None:
    with pytest.raises(ValueError, match=r"report_to: unknown tracker 'neptune'.*tensorboard"):
        parse_report_to("mlflow,neptune")


def test_the_registry_has_every_name() -> None:
    assert sorted(BACKENDS) == sorted(TRACKER_NAMES)


def test_calls_reach_every_tracker_and_finish_says_finished(tmp_path: Path) -> None:
    a, b = RecordingTracker(), RecordingTracker()
    with tracking(
        [], run_dir=tmp_path, name="r", config={"lr": 0.1}, console=_console(),
        trackers=[("a", a), ("b", b)],
    ) as tracker:  # fmt: skip
        tracker.log({"loss": 2.0}, 1)
        tracker.log({"loss": 1.0}, 2)
    for t in (a, b):
        assert t.config == {"lr": 0.1}
        assert t.logs == [(1, {"loss": 2.0}), (2, {"loss": 1.0})]
        assert t.status == "finished"


def test_an_exception_in_the_run_finishes_the_trackers_as_failed(tmp_path: Path) -> None:
    recorded = RecordingTracker()
    with (
        pytest.raises(KeyError),
        tracking([], run_dir=tmp_path, name="r", config={}, console=_console(),
                 trackers=[("a", recorded)]),
    ):  # fmt: skip
        raise KeyError("boom")
    assert recorded.status == "failed"


def test_a_failing_tracker_is_warned_about_once_and_the_others_go_on(tmp_path: Path) -> None:
    console = _console()
    broken, fine = RecordingTracker(fail_on=("log",)), RecordingTracker()
    with tracking(
        [], run_dir=tmp_path, name="r", config={}, console=console,
        trackers=[("broken", broken), ("fine", fine)],
    ) as tracker:  # fmt: skip
        for step in range(1, 4):
            tracker.log({"loss": 1.0}, step)
    text = console.export_text()
    assert text.count("tracker broken failed") == 1
    assert "RuntimeError: log failed on purpose" in text
    assert "the run goes on without it" in text
    assert broken.calls == ["start", "log"]  # left out after its first failure, finish too
    assert [s for s, _ in fine.logs] == [1, 2, 3]
    assert fine.status == "finished"


def test_only_process_0_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    recorded = RecordingTracker()
    with tracking(
        ["tensorboard"], run_dir=tmp_path, name="r", config={}, console=_console(),
        trackers=[("a", recorded)],
    ) as tracker:  # fmt: skip
        tracker.log({"loss": 1.0}, 1)
    assert recorded.calls == []
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize(
    ("name", "module", "package"),
    [
        ("wandb", "wandb", "wandb"),
        ("mlflow", "mlflow", "mlflow-skinny"),
        ("trackio", "trackio", "trackio"),
        ("tensorboard", "tensorboard", "tensorboard"),
    ],
)
def test_a_missing_package_is_named_with_its_extra(
    name: str, module: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(TrackerUnavailableError) as caught:
        open_backends([name], tmp_path, "r")
    assert str(caught.value) == (
        f"report_to: {name} needs the {package} package: pip install 'mentor[{name}]'"
    )


def test_artifacts_the_run_did_not_write_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    recorded = RecordingTracker()
    report_outputs(Fanout([recorded]), tmp_path, adapter)
    assert recorded.artifacts == [(tmp_path / "report.json", "report"), (adapter, "adapter")]


def test_flatten_dots_nested_keys() -> None:
    assert flatten({"a": 1, "train": {"lr": 0.1, "x": {"y": None}}}) == {
        "a": 1,
        "train.lr": 0.1,
        "train.x.y": None,
    }
