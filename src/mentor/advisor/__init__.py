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

from mentor.advisor.costs import CostEstimate, CostLine, CostModel, Money, estimate, load_cost_model
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
