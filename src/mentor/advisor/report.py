"""The advice as one object: the situation, the recommendation and its costs, shown as rich
panels or as JSON (``mentor advise --json``).

    from mentor.advisor import Situation, advise
    advice = advise(Situation(documents=True, freshness="daily"))
    advice.recommendation.methods   # ('rag',)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from mentor.advisor.costs import CostEstimate, CostModel, estimate
from mentor.advisor.plan import Recommendation, recommend
from mentor.advisor.rules import METHODS
from mentor.advisor.situation import Situation


@dataclass(frozen=True)
class Advice:
    """Everything ``mentor advise`` reports."""

    situation: Situation
    recommendation: Recommendation
    costs: CostEstimate

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: the situation's fields, then the two result dataclasses."""
        return {
            "situation": self.situation.model_dump(),
            "recommendation": asdict(self.recommendation),
            "costs": asdict(self.costs),
        }


def advise(situation: Situation, costs: CostModel | None = None) -> Advice:
    """Run the rules on ``situation`` and price the result (default cost model unless given)."""
    recommendation = recommend(situation)
    model = costs if costs is not None else CostModel()
    return Advice(situation, recommendation, estimate(situation, recommendation, model))


def usd(amount: float) -> str:
    """Dollars, with enough digits to tell small per-query prices apart."""
    if amount == 0:
        return "$0"
    if amount < 0.0001:
        return "<$0.0001"
    if amount < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.0f}" if amount >= 100 else f"${amount:,.2f}"


def break_even_text(months: tuple[float | None, float | None]) -> str:
    """The break-even at cheap and at dear prices, in words: "3.2-14.0 months",
    "at once with cheap prices, never with dear ones", "never"."""

    def one(m: float | None) -> str:
        if m is None:
            return "never"
        return "at once" if m < 0.05 else f"after {m:.1f} months"

    cheap, dear = months
    if cheap is None and dear is None:
        return "never"
    if cheap is not None and dear is not None and cheap >= 0.05 and dear >= 0.05:
        low, high = sorted((cheap, dear))
        return (
            f"{low:.1f} months"
            if round(low, 1) == round(high, 1)
            else f"{low:.1f}-{high:.1f} months"
        )
    if one(cheap) == one(dear):
        return one(cheap)
    return f"{one(cheap)} with cheap prices, {one(dear)} with dear ones"


def _recommendation_panel(rec: Recommendation) -> Panel:
    lines = [f"[bold]{rec.summary}[/bold]", ""]
    lines += [f"• {m}: {METHODS[m]}" for m in rec.methods]
    lines += ["", f"hosting: {rec.hosting}    model: {rec.model_size}"]
    return Panel("\n".join(lines), title="Recommendation", border_style="green")


def _reasoning_panel(rec: Recommendation) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right")
    grid.add_column()
    for i, reason in enumerate(rec.reasons, 1):
        head = f"[bold]{reason.rule}[/bold]  [dim]{reason.condition}[/dim]"
        grid.add_row(f"{i}.", f"{head}\n{reason.because}")
    return Panel(grid, title="Reasoning (the branch taken)")


def _cost_table(costs: CostEstimate) -> Table:
    table = Table(title="Cost estimate (USD; cheap – dear prices)", expand=True)
    table.add_column("item [dim](basis)[/dim]", ratio=4)
    table.add_column("when", ratio=1)
    table.add_column("low", justify="right", ratio=1)
    table.add_column("high", justify="right", ratio=1)
    for line in costs.lines:
        item = f"{line.item}\n[dim]{line.basis}[/dim]"
        table.add_row(item, line.kind, usd(line.low), usd(line.high))
    table.add_section()
    table.add_row("[bold]one-time[/bold]", "", usd(costs.one_time.low), usd(costs.one_time.high))
    table.add_row("[bold]yearly[/bold]", "", usd(costs.yearly.low), usd(costs.yearly.high))
    if costs.per_query is not None:
        low, high = costs.per_query.low * 1000, costs.per_query.high * 1000
        table.add_row("per 1k queries", "", usd(low), usd(high))
    table.add_section()
    once, year = costs.baseline_one_time, costs.baseline_yearly
    table.add_row(f"baseline: {costs.baseline}", "one-time", usd(once.low), usd(once.high))
    table.add_row("", "yearly", usd(year.low), usd(year.high))
    return table


def _monitoring_table(rec: Recommendation) -> Table:
    table = Table(title="Monitoring plan", expand=True, show_lines=True)
    table.add_column("watch", ratio=3)
    table.add_column("threshold", ratio=2)
    table.add_column("then", ratio=2)
    for watch in rec.monitoring:
        table.add_row(watch.signal, watch.threshold, watch.action)
    return table


def render(advice: Advice, console: Console) -> None:
    """The advice as panels and tables: recommendation, reasoning, costs, fallback, monitoring."""
    rec, costs = advice.recommendation, advice.costs
    console.print(_recommendation_panel(rec))
    console.print(_reasoning_panel(rec))
    console.print(_cost_table(costs))
    console.print(f"break-even against the baseline: {break_even_text(costs.break_even_months)}")
    for note in costs.notes:
        console.print(f"[dim]note:[/dim] {note}", highlight=False)
    fallback = f"[bold]{rec.fallback.method}[/bold] ({rec.fallback.rule}): {rec.fallback.why}"
    console.print(Panel(fallback, title="Fallback", border_style="blue"))
    console.print(_monitoring_table(rec))
    if rec.warnings:
        body = Group(*(f"• {warning}" for warning in rec.warnings))
        console.print(Panel(body, title="Warnings", border_style="yellow"))
