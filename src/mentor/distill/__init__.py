"""Knowledge distillation: a small student learns a large teacher's soft outputs (logit KD) or
its generated answers (sequence KD), with the retention measured in a teacher-student report.

- ``losses.py``: ``alpha x CE + (1 - alpha) x tau^2 x D`` with forward/reverse KL or JSD, chunked;
- ``teacher_cache.py``: the teacher's top-k log-probabilities, computed once and cached on disk;
- ``sequence.py``: the :class:`Teacher` protocol (a local model or a hosted endpoint) and the
  resumable dataset of its answers;
- ``students.py``: a student from every k-th teacher layer or a smaller config;
- ``recipe.py``: :func:`run_distill`; ``report.py``: the teacher-student report;
- ``classify.py``: classifier distillation from soft labels; ``commands.py``: ``mentor distill``.

    from mentor.distill import load_config, run_distill
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.distill.config import DistillConfig, KDSettings, load_config
    from mentor.distill.losses import chunked_kd_loss, divergence, kd_loss
    from mentor.distill.recipe import DistillReport, run_distill
    from mentor.distill.sequence import (
        GenerationSettings,
        HostedTeacher,
        LocalTeacher,
        Teacher,
        generate_dataset,
    )

__all__ = [
    "DistillConfig",
    "DistillReport",
    "GenerationSettings",
    "HostedTeacher",
    "KDSettings",
    "LocalTeacher",
    "Teacher",
    "chunked_kd_loss",
    "divergence",
    "generate_dataset",
    "kd_loss",
    "load_config",
    "run_distill",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "DistillConfig": "mentor.distill.config",
        "KDSettings": "mentor.distill.config",
        "load_config": "mentor.distill.config",
        "chunked_kd_loss": "mentor.distill.losses",
        "divergence": "mentor.distill.losses",
        "kd_loss": "mentor.distill.losses",
        "DistillReport": "mentor.distill.recipe",
        "run_distill": "mentor.distill.recipe",
        "GenerationSettings": "mentor.distill.sequence",
        "HostedTeacher": "mentor.distill.sequence",
        "LocalTeacher": "mentor.distill.sequence",
        "Teacher": "mentor.distill.sequence",
        "generate_dataset": "mentor.distill.sequence",
    },
)
