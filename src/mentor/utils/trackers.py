"""The four experiment trackers ``--report-to`` reaches, each a plain class satisfying
:class:`mentor.utils.tracking.Tracker`, each importing its package only when chosen.

=============  =====================  ==========================================================
name           extra                  where the run goes by default
=============  =====================  ==========================================================
tensorboard    mentor[tensorboard]    event files in ``RUN/tensorboard`` (``tensorboard --logdir``)
mlflow         mentor[mlflow]         ``MLFLOW_TRACKING_URI``, else ``RUN/mlflow.db`` (SQLite)
wandb          mentor[wandb]          W&B; ``WANDB_MODE=offline`` keeps it in ``RUN/wandb``
trackio        mentor[trackio]        trackio's local store (``TRACKIO_DIR``), unless a Space
=============  =====================  ==========================================================

TensorBoard keeps no files: a text artifact (report, table) is shown in its Text tab and a folder
is listed there by path. Project names: ``WANDB_PROJECT``, ``MLFLOW_EXPERIMENT_NAME``,
``TRACKIO_PROJECT``, else ``mentor``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mentor.utils.tracking import Status, Tracker, flatten

TEXT_SUFFIXES = (".md", ".json", ".csv", ".txt", ".yaml")


class TrackerUnavailableError(ValueError):
    """The tracker's package is not installed."""


def _need(module: str, tracker: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrackerUnavailableError(
            f"report_to: {tracker} needs the {package} package: pip install 'mentor[{tracker}]'"
        ) from None


def _project(variable: str) -> str:
    return os.environ.get(variable) or "mentor"


class TensorBoardTracker:
    """Scalars per step, the config and text artifacts as text, in ``RUN/tensorboard``."""

    def __init__(self, run_dir: Path, run_name: str) -> None:
        _need("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = run_dir / "tensorboard" / run_name
        self._writer_type = SummaryWriter
        self.writer: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.writer = self._writer_type(log_dir=str(self.logdir))
        text = json.dumps(dict(config), indent=2, default=str)
        self.writer.add_text("config", _code_block(text, "json"))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), global_step=step)

    def artifact(self, path: Path, kind: str) -> None:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            listing = "\n".join(
                f"- `{p.relative_to(path)}` ({p.stat().st_size:,} bytes)" for p in files
            )
            self.writer.add_text(f"{kind}/{path.name}", f"`{path.resolve()}`\n\n{listing}")
        elif path.suffix in TEXT_SUFFIXES:
            text = path.read_text()
            shown = text if path.suffix == ".md" else _code_block(text, path.suffix[1:])
            self.writer.add_text(f"{kind}/{path.name}", shown)
        else:
            self.writer.add_text(f"{kind}/{path.name}", f"`{path.resolve()}`")
        self.writer.flush()

    def finish(self, status: Status) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class MLflowTracker:
    """A run with the config as parameters (and ``config.json``), metrics per step, artifacts
    copied into the run's artifact store.

    Without ``MLFLOW_TRACKING_URI`` the store is local, in the run folder: ``RUN/mlflow.db`` (a
    SQLite database: MLflow 3 refuses its old ``mlruns`` file store unless told to) and
    ``RUN/mlartifacts``; ``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`` shows it."""

    PARAM_LIMIT = 500  # characters of a parameter's value every MLflow server takes

    def __init__(self, run_dir: Path, run_name: str) -> None:
        _need("mlflow", "mlflow", "mlflow-skinny")
        self.uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.artifacts: str | None = None
        if not self.uri:
            for module in ("sqlalchemy", "alembic"):  # the local store; mlflow-skinny lacks them
                _need(module, "mlflow", module)
            self.uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
            self.artifacts = (run_dir / "mlartifacts").resolve().as_uri()
        self.run_name = run_name
        self.client: Any = None
        self.run_id = ""

    def start(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        name = _project("MLFLOW_EXPERIMENT_NAME")
        found = self.client.get_experiment_by_name(name)
        experiment = (
            found.experiment_id
            if found
            else self.client.create_experiment(name, artifact_location=self.artifacts)
        )
        self.run_id = self.client.create_run(experiment, run_name=self.run_name).info.run_id
        params = [
            Param(key, str(value)[: self.PARAM_LIMIT]) for key, value in flatten(config).items()
        ]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 parameters
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_dict(self.run_id, dict(config), "config.json")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def artifact(self, path: Path, kind: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=f"{kind}/{path.name}")
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=kind)

    def finish(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "finished" else "FAILED")


class WandbTracker:
    """A W&B run (``dir`` the run folder), the config, metrics against a ``step`` axis (so the
    curves of several models in one bakeoff may each start at step 1), artifacts as W&B
    artifacts."""

    def __init__(self, run_dir: Path, run_name: str) -> None:
        self.wandb = _need("wandb", "wandb", "wandb")
        self.run_dir, self.run_name = run_dir, run_name
        self.run: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=_project("WANDB_PROJECT"),
            name=self.run_name,
            dir=str(self.run_dir),
            config=dict(config),
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, "step": step})

    def artifact(self, path: Path, kind: str) -> None:
        artifact = self.wandb.Artifact(_artifact_name(f"{self.run_name}-{path.name}"), type=kind)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, status: Status) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


class TrackioTracker:
    """A trackio run (local unless trackio is pointed at a Space), the config, metrics per step
    and artifacts."""

    def __init__(self, run_dir: Path, run_name: str) -> None:
        self.trackio = _need("trackio", "trackio", "trackio")
        self.run_name = run_name
        self.run: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.run = self.trackio.init(
            project=_project("TRACKIO_PROJECT"), name=self.run_name, config=dict(config)
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(metrics=dict(metrics), step=step)

    def artifact(self, path: Path, kind: str) -> None:
        name = _artifact_name(f"{self.run_name}-{path.name}")
        self.run.log_artifact(str(path), name=name, type=kind)

    def finish(self, status: Status) -> None:
        self.run.finish()


BACKENDS: dict[str, Callable[[Path, str], Tracker]] = {
    "trackio": TrackioTracker,
    "wandb": WandbTracker,
    "mlflow": MLflowTracker,
    "tensorboard": TensorBoardTracker,
}
"""Every tracker by its ``--report-to`` name (the same names as ``TRACKER_NAMES``)."""


def _code_block(text: str, language: str) -> str:
    return f"```{language}\n{text}\n```"


def _key(name: str) -> str:
    """A metric name MLflow takes (letters, digits, ``_-. /``)."""
    return re.sub(r"[^\w\-. /]", "_", name)


def _artifact_name(name: str) -> str:
    """An artifact name W&B and trackio take (letters, digits, ``-_.``)."""
    return re.sub(r"[^\w\-.]", "-", name)
