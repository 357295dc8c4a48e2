"""The advisor: which method (RAG, fine-tuning, distillation, quantization, or a mix) fits a
situation, the branch of reasoning that led there, what it costs, a fallback and what to monitor.

- ``situation.py``: the typed :class:`Situation`, from flags, YAML or questions;
- ``rules.py``: the decision as small pure rules, one per layer, each with its reason;
- ``plan.py``: :func:`recommend` runs them and adds the fallback and the monitoring plan;
- ``costs.py``: the editable :class:`CostModel` and :func:`estimate`;
- ``report.py``: :func:`advise` (all of it as one :class:`Advice`), rich and JSON output;
- ``commands.py``: ``mentor advise``.

    from mentor.advisor import Situation, advise
    advice = advise(Situation(documents=True, freshness="weekly", labelled_examples=800))
    advice.recommendation.methods            # ('lora', 'rag')
    advice.costs.break_even_months           # months with cheap and with dear prices
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.advisor.costs import (
        CostEstimate,
        CostLine,
        CostModel,
        Money,
        estimate,
        load_cost_model,
    )
    from mentor.advisor.plan import Fallback, Recommendation, Watch, recommend
    from mentor.advisor.report import Advice, advise
    from mentor.advisor.rules import METHODS, RULES, Reason
    from mentor.advisor.situation import Situation, load_situation

__all__ = [
    "METHODS",
    "RULES",
    "Advice",
    "CostEstimate",
    "CostLine",
    "CostModel",
    "Fallback",
    "Money",
    "Reason",
    "Recommendation",
    "Situation",
    "Watch",
    "advise",
    "estimate",
    "load_cost_model",
    "load_situation",
    "recommend",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "CostEstimate": "mentor.advisor.costs",
        "CostLine": "mentor.advisor.costs",
        "CostModel": "mentor.advisor.costs",
        "Money": "mentor.advisor.costs",
        "estimate": "mentor.advisor.costs",
        "load_cost_model": "mentor.advisor.costs",
        "Fallback": "mentor.advisor.plan",
        "Recommendation": "mentor.advisor.plan",
        "Watch": "mentor.advisor.plan",
        "recommend": "mentor.advisor.plan",
        "Advice": "mentor.advisor.report",
        "advise": "mentor.advisor.report",
        "METHODS": "mentor.advisor.rules",
        "RULES": "mentor.advisor.rules",
        "Reason": "mentor.advisor.rules",
        "Situation": "mentor.advisor.situation",
        "load_situation": "mentor.advisor.situation",
    },
)
