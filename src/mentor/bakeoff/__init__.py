"""The bakeoff: every way of teaching a model the user's domain, measured side by side on the
user's own held-out questions, and a recommendation that reads the measurements together with the
advisor's decision framework.

- ``config.py``: the typed :class:`BakeoffConfig` (data, models, training, arms, prices, facts);
- ``data.py``: the question sets; ``datasets.py``: public sets prepared into them (PubMedQA);
- ``stages.py``: what is built once and kept: indexes, adapters, tuned and distilled models;
- ``arms.py``: one arm loaded, answering, timed; ``scoring.py``: answers scored with
  :mod:`mentor.evaluate`'s metrics and bootstrap, grounding, groups and money;
- ``recommend.py``: the verdict; ``report.py``: HTML, JSON and the terminal summary;
- ``runner.py``: all of it in order, resumable; ``commands.py``: ``mentor bakeoff``;
- ``tracking.py``: the curves, scores table and reports ``--report-to`` trackers get.

    from mentor.bakeoff import load_bakeoff_config, run_bakeoff
    config = load_bakeoff_config(Path("examples/bakeoff/tidepool.yaml"), profile="quick")
    result = run_bakeoff(config, console=Console(), profile="quick")
    result.verdict.paragraph
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.bakeoff.config import BakeoffConfig, load_bakeoff_config
    from mentor.bakeoff.results import ArmResult, BakeoffResult, load_result
    from mentor.bakeoff.runner import run_bakeoff

__all__ = [
    "ArmResult",
    "BakeoffConfig",
    "BakeoffResult",
    "load_bakeoff_config",
    "load_result",
    "run_bakeoff",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "BakeoffConfig": "mentor.bakeoff.config",
        "load_bakeoff_config": "mentor.bakeoff.config",
        "ArmResult": "mentor.bakeoff.results",
        "BakeoffResult": "mentor.bakeoff.results",
        "load_result": "mentor.bakeoff.results",
        "run_bakeoff": "mentor.bakeoff.runner",
    },
)
