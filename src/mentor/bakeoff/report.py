"""The bakeoff's report: one self-contained HTML page and a short terminal summary.

``write_html`` writes a single file that opens anywhere offline: the styles are inline, the charts
are base64 PNGs (matplotlib, drawn on a bare ``Figure``, so no display and no pyplot state), and
there is no script. In order it shows what ran on what, the recommendation, one row per arm with
every quality measure and its 95% interval (a few words say what each arm is; the whole
description is under "What each arm is"), the trained arms that did not learn and why
(:mod:`mentor.bakeoff.diagnose`), one row per arm of speed and cost, scores by group, published
reference figures, three charts (quality against p95 latency and against yearly cost, each with
its Pareto frontier, and the training curves), how everything was measured, and a sample of each
arm's answers. The arms tables fit a 1,280-pixel window; any table wider than the window scrolls
by itself rather than widening the page.

``summary_table`` and ``print_summary`` are what ``mentor bakeoff`` prints at the end of a run:
under :data:`WIDE` terminal columns short headers with a legend (80 columns fit), from it every
interval and a status column. Arm names are never cut.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from mentor.bakeoff.diagnose import not_learned
from mentor.bakeoff.results import ArmResult, BakeoffResult, Estimate, Verdict
from mentor.utils.fs import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["pareto_front", "print_summary", "render_html", "summary_table", "write_html"]

SAMPLES = 10  # answers shown per arm
METRIC_MEANINGS = {
    "contains": "the normalised reference appears, as whole words, in the normalised answer",
    "exact_match": "the normalised answer equals the normalised reference",
    "token_f1": "token F1: the harmonic mean of the shares of answer and reference words they "
    "share",
    "rouge_l": "ROUGE-L: the F-measure of the longest common word subsequence of answer and "
    "reference",
    "accuracy": "the first label the answer names is the reference label",
    "macro_f1": "each label's F1 over the whole set, averaged over labels (rare labels count as "
    "much as common ones)",
}
COST_FORMULAS = (
    "training USD = hours spent training (with teacher answers and indexing) x training price "
    "per hour",
    "serving USD per 1k queries = mean seconds per answer x 1000 / 3600 x serving price per hour "
    "/ concurrency",
    "yearly USD = retrains a year x training USD + queries a year x serving USD per query",
    "USD per point = (yearly USD - the base's yearly USD) / points gained over the base; none "
    "when the arm gains nothing",
    "endpoint arms (incumbent, hosted): serving USD per 1k queries = 1000 x (mean prompt tokens x "
    "input price + mean completion tokens x output price) / 1e6, the tokens as the endpoint "
    "reported them in usage; latency is what the client waited, one question at a time",
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222;
  padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td:first-child, th:first-child, td.text, td.short { text-align: left; }
td.short, td:first-child { white-space: nowrap; }
.ci { color: #666; font-size: 0.85em; white-space: nowrap; }
.meta { color: #555; }
.verdict { border: 2px solid #2a7; border-radius: 6px; padding: 0.5em 1.2em; background: #f2fbf5; }
tr.recommended td { background: #e3f6e8; font-weight: 600; }
tr.failed td { color: #999; background: #f7f7f7; }
tr.reference td { font-style: italic; color: #555; }
.badge { font-size: 0.75em; color: #fff; background: #2a7; border-radius: 3px; padding: 0 0.3em; }
.badge.fallback { background: #888; }
.badge.incumbent { background: #36c; }
figure { display: inline-block; margin: 0 1em 1em 0; }
details { margin: 0.4em 0; }
td.text { max-width: 30em; white-space: pre-wrap; }
.scroll { max-width: 100%; overflow-x: auto; }
tr.unlearned td { background: #fdf3e1; }
.warning { border: 2px solid #d90; border-radius: 6px; padding: 0.5em 1.2em; background: #fff8ea;
  margin: 0 0 1.5em; }
dl { margin: 0.4em 0 1em; } dt { font-weight: 600; } dd { margin: 0 0 0.4em 1.5em; }
"""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, quality)`` points no other point beats: none is at most as costly
    and at least as good, and strictly better in one. Sorted by cost, so quality rises along them.

    Identical points are on the front together (neither beats the other); of points with equal
    cost only the best survives, and of points with equal quality only the cheapest."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    for i in order:
        cost, quality = points[i]
        if front:
            best_cost, best_quality = points[front[-1]]  # the best quality at this cost or less
            if quality < best_quality or (quality == best_quality and cost > best_cost):
                continue
        front.append(i)
    return front


# Text of the figures, shared by the page and the terminal.


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    size = abs(value)
    return f"{sign}${size:,.2f}" if size >= 0.01 or size == 0 else f"{sign}${size:.2g}"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _share(e: Estimate) -> tuple[str, str]:
    """A share and its interval, both in percent: ("61.2%", "[55.0, 67.3]")."""
    return f"{e.value:.1%}", f"[{100 * e.low:.1f}, {100 * e.high:.1f}]"


def _points(e: Estimate) -> tuple[str, str]:
    """A difference in points and its interval; ``*`` when the interval excludes zero."""
    mark = "*" if e.excludes_zero() else ""
    return f"{e.value:+.1f}{mark}", f"[{e.low:+.1f}, {e.high:+.1f}]"


def _recommended(result: BakeoffResult) -> str | None:
    return result.verdict.arm if result.verdict else None


def _has_updates(result: BakeoffResult) -> bool:
    return any(a.updates is not None for a in result.arms)


def _other_metrics(result: BakeoffResult) -> list[str]:
    return [m for m in result.metrics if m != result.primary]


def _error_line(arm: ArmResult, width: int = 120) -> str:
    lines = (arm.error or "unknown error").strip().splitlines() or ["unknown error"]
    return lines[0][:width]


# HTML pieces.


def _tr(cells: Sequence[str], cls: str | None = None, tag: str = "td") -> str:
    """A table row of cells that are already HTML."""
    attribute = f' class="{cls}"' if cls else ""
    return f"<tr{attribute}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(header: Sequence[str], rows: Sequence[str]) -> str:
    head = _tr([escape(h) for h in header], tag="th")
    table = "<table><thead>" + head + "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    return f'<div class="scroll">{table}</div>'  # a table wider than the window scrolls alone


def _cell(e: Estimate | None, parts: Callable[[Estimate], tuple[str, str]]) -> str:
    if e is None:
        return "-"
    value, interval = parts(e)
    return f'{escape(value)}<br><span class="ci">{escape(interval)}</span>'


def _items(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _header_section(result: BakeoffResult) -> str:
    title = result.name + (f" ({result.profile} profile)" if result.profile else "")
    when = f"Started {result.started or 'at an unrecorded time'}, took {_duration(result.seconds)}."
    machine = ", ".join(f"{k} {v}" for k, v in result.machine.items()) or "not recorded"
    data = ", ".join(f"{k} {v}" for k, v in result.data.items()) or "not recorded"
    return (
        f"<h1>Bakeoff: {escape(title)}</h1>"
        f'<p class="meta">{escape(when)}<br>Machine: {escape(machine)}<br>'
        f"Data: {escape(data)}<br>Arms ranked by {escape(result.primary)} against the base arm "
        f"{escape(result.base)}.</p>"
    )


def _agreement(verdict: Verdict) -> str:
    if verdict.agrees:
        return "Measurement and the advisor's framework agree."
    return (
        "Measurement and the advisor's framework disagree: the measured choice uses "
        f"{', '.join(verdict.methods) or 'no method'}, the framework suggests "
        f"{', '.join(verdict.advisor_methods) or 'no method'}."
    )


def _verdict_section(verdict: Verdict | None) -> str:
    if verdict is None:
        return '<section class="verdict"><h2>Recommendation</h2><p>None was made.</p></section>'
    watches = [
        _tr([escape(w.signal), escape(w.threshold), escape(w.action)]) for w in verdict.monitoring
    ]
    excluded = [f"{arm}: {why}" for arm, why in verdict.excluded.items()]
    eligible = ", ".join(verdict.eligible) or "none"
    parts = [
        f"<h2>Recommendation: {escape(verdict.arm or 'no arm')}</h2>",
        f"<p><strong>{escape(verdict.paragraph)}</strong></p>",
        f"<p>Methods: {escape(', '.join(verdict.methods) or '-')}.</p>",
        "<h3>Why</h3>" + _items(verdict.reasons) if verdict.reasons else "",
        f"<p>Fallback: {escape(verdict.fallback)}</p>",
        "<h3>What to watch</h3>" + _table(["signal", "threshold", "action"], watches)
        if watches
        else "",
        f"<p>The advisor's framework: {escape(', '.join(verdict.advisor_methods) or '-')}. "
        f"{escape(verdict.advisor_summary)}</p>",
        f"<p>{escape(_agreement(verdict))}</p>",
        f"<p>Arms that met the constraints, best first: {escape(eligible)}.</p>",
        "<h3>Not eligible</h3>" + _items(excluded) if excluded else "",
    ]
    return '<section class="verdict">' + "".join(parts) + "</section>"


def _quality_header(result: BakeoffResult) -> list[str]:
    return [
        "arm",
        "what it is",
        "status",
        f"{result.primary} [95% CI]",
        *_other_metrics(result),
        "vs base, points [95% CI]",
        *(["after the update"] if _has_updates(result) else []),
        "supported",
        "invents numbers",
    ]


COST_HEADER = [
    "arm",
    "p50 ms",
    "p95 ms",
    "peak memory MB",
    "artifact MB",
    "training",
    "training USD",
    "USD / 1k queries",
    "USD / point",
]


def _quality_cells(result: BakeoffResult, arm: ArmResult) -> list[str]:
    """The cells after name, description and status of an arm that ran."""
    grounding = arm.grounding
    return [
        _cell(arm.quality.get(result.primary), _share),
        *(_cell(arm.quality.get(m), _share) for m in _other_metrics(result)),
        _cell(arm.vs_base, _points),
        *([_cell(arm.updates, _share)] if _has_updates(result) else []),
        _pct(grounding.supported_share if grounding else None),
        _pct(grounding.invented_share if grounding else None),
    ]


def _cost_cells(arm: ArmResult) -> list[str]:
    costs = arm.costs
    training = escape(_duration(arm.training_s))
    if arm.index_s > 0:
        training += f'<br><span class="ci">index {escape(_duration(arm.index_s))}</span>'
    return [
        _num(arm.latency_ms.get("p50"), ".0f"),
        _num(arm.latency_ms.get("p95"), ".0f"),
        _num(arm.peak_memory_mb, ".0f"),
        _num(arm.artifact_mb, ".1f"),
        training,
        escape(_usd(costs.training_usd if costs else None)),
        escape(_usd(costs.serve_usd_per_1k if costs else None)),
        escape(_usd(costs.usd_per_point if costs else None)),
    ]


def _arm_name(result: BakeoffResult, arm: ArmResult) -> str:
    verdict = result.verdict
    name = escape(arm.name)
    if arm.incumbent is not None:
        name += f' <span class="badge incumbent">incumbent {escape(arm.incumbent)}</span>'
    if verdict is not None and arm.name == verdict.arm:
        return f'★ {name} <span class="badge">recommended</span>'
    if verdict is not None and arm.name == verdict.fallback_arm:
        return name + ' <span class="badge fallback">fallback</span>'
    return name


def _short_description(arm: ArmResult) -> str:
    """The arm's methods in a few words; the whole description is its title and below the
    table."""
    short = " + ".join(arm.methods) or arm.model
    return f'<span title="{escape(arm.description)}">{escape(short)}</span>'


def _row_class(result: BakeoffResult, arm: ArmResult, unlearned: set[str]) -> str | None:
    if not arm.ok:
        return "failed"
    if arm.name == _recommended(result):
        return "recommended"
    return "unlearned" if arm.name in unlearned else None


def _quality_row(result: BakeoffResult, arm: ArmResult, unlearned: set[str], columns: int) -> str:
    cls = _row_class(result, arm, unlearned)
    attribute = f' class="{cls}"' if cls else ""
    name, short = _arm_name(result, arm), _short_description(arm)
    head = f'<tr{attribute}><td>{name}</td><td class="short">{short}</td>'
    if not arm.ok:
        error = escape(arm.error or "unknown error")
        return f'{head}<td>failed</td><td class="text" colspan="{columns - 3}">{error}</td></tr>'
    status = (
        '<a href="#not-learned">did&nbsp;not&nbsp;learn</a>' if arm.name in unlearned else "done"
    )
    cells = "".join(f"<td>{c}</td>" for c in _quality_cells(result, arm))
    return f"{head}<td>{status}</td>{cells}</tr>"


def _cost_row(result: BakeoffResult, arm: ArmResult, unlearned: set[str]) -> str:
    cls = _row_class(result, arm, unlearned)
    attribute = f' class="{cls}"' if cls else ""
    head = f"<tr{attribute}><td>{_arm_name(result, arm)}</td>"
    if not arm.ok:
        return f'{head}<td class="text" colspan="{len(COST_HEADER) - 1}">failed</td></tr>'
    return head + "".join(f"<td>{c}</td>" for c in _cost_cells(arm)) + "</tr>"


def _not_learned_block(result: BakeoffResult) -> str:
    findings = not_learned(result)
    if not findings:
        return ""
    items = "".join(f"<li>{escape(f.text)}</li>" for f in findings)
    return (
        '<div class="warning" id="not-learned"><strong>Trained without learning.</strong> '
        f"These arms are in the comparison as measured; read their figures with this:<ul>{items}"
        "</ul></div>"
    )


def _arms_list(result: BakeoffResult) -> str:
    entries = "".join(
        f"<dt>{escape(a.name)}</dt><dd>{escape(a.description)}"
        + (f"<br>{escape(a.engines)}" if a.ok else "")
        + (f"<br>{escape(usage_line(a))}" if a.usage else "")
        + "</dd>"
        for a in result.arms
    )
    return f'<details class="arms"><summary>What each arm is</summary><dl>{entries}</dl></details>'


def _arms_section(result: BakeoffResult) -> str:
    unlearned = {f.arm for f in not_learned(result)}
    header = _quality_header(result)
    quality = [_quality_row(result, arm, unlearned, len(header)) for arm in result.arms]
    costs = [_cost_row(result, arm, unlearned) for arm in result.arms]
    return (
        "<h2>Arms</h2>"
        '<p class="meta">Scores in percent with their 95% interval; "vs base" in points, * where '
        "the interval excludes zero. Supported: answers with at least 80% of their content words "
        "in their evidence; invents numbers: answers stating a number their evidence lacks.</p>"
        + _table(header, quality)
        + _arms_list(result)
        + _not_learned_block(result)
        + "<h3>Speed and cost</h3>"
        + _table(COST_HEADER, costs)
    )


def _group_cell(scores: dict[str, float] | None, metric: str) -> str:
    if not scores or metric not in scores:
        return "-"
    count = f" (n {scores['n']:.0f})" if "n" in scores else ""
    return escape(f"{scores[metric]:.1%}{count}")


def _groups_section(result: BakeoffResult) -> str:
    arms = [a for a in result.arms if a.ok and a.groups]
    if not arms:
        return ""
    groups = list(dict.fromkeys(g for a in arms for g in a.groups))
    rows = [
        _tr([escape(a.name), *(_group_cell(a.groups.get(g), result.primary) for g in groups)])
        for a in arms
    ]
    return (
        f'<h2>By group</h2><p class="meta">{escape(result.primary)} on each group of held-out '
        "questions (n: questions in it).</p>" + _table(["arm", *groups], rows)
    )


def _references_section(result: BakeoffResult) -> str:
    if not result.references:
        return ""
    rows: list[tuple[float, str]] = [
        (
            r.value,
            _tr([escape(r.name), escape(r.metric), _pct(r.value), escape(r.source)], "reference"),
        )
        for r in result.references
    ]
    for arm in result.arms:
        estimate = arm.quality.get(result.primary)
        if arm.ok and estimate is not None:
            where = f"this run, {arm.questions} held-out questions"
            cells = [
                escape(arm.name),
                escape(result.primary),
                _cell(estimate, _share),
                escape(where),
            ]
            rows.append((estimate.value, _tr(cells)))
    rows.sort(key=lambda row: -row[0])
    return (
        '<h2>Against published figures</h2><p class="meta">Published figures (in italics) were '
        "measured on their authors' split, so read them as a scale, not a paired comparison.</p>"
        + _table(["", "metric", "score", "source"], [row for _, row in rows])
    )


# Charts.


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(png: str, caption: str) -> str:
    return (
        f'<figure><img src="data:image/png;base64,{png}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _tradeoff_points(
    result: BakeoffResult, x: Callable[[ArmResult], float | None]
) -> list[tuple[str, float, Estimate]]:
    """(arm, x, primary estimate) of every arm that ran and has both."""
    points = []
    for arm in result.arms:
        value, estimate = x(arm), arm.quality.get(result.primary)
        if arm.ok and value is not None and estimate is not None:
            points.append((arm.name, value, estimate))
    return points


def _tradeoff_png(
    points: Sequence[tuple[str, float, Estimate]], xlabel: str, ylabel: str, recommended: str | None
) -> str:
    """Quality (with its interval) against a cost, each arm labelled, and the Pareto frontier."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for name, x, e in points:
        star = name == recommended
        ax.errorbar(
            x,
            100 * e.value,
            yerr=[[100 * max(0.0, e.value - e.low)], [100 * max(0.0, e.high - e.value)]],
            fmt="*" if star else "o",
            markersize=13 if star else 6,
            capsize=3,
            color="tab:red" if star else "tab:blue",
            label="recommended" if star else None,
        )
        ax.annotate(name, (x, 100 * e.value), xytext=(5, 5), textcoords="offset points", fontsize=8)
    front = pareto_front([(x, e.value) for _, x, e in points])
    ax.step(
        [points[i][1] for i in front],
        [100 * points[i][2].value for i in front],
        where="post",
        color="tab:green",
        linestyle="--",
        label="Pareto frontier",
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _curves_by_model(arms: Sequence[ArmResult]) -> dict[str, list[dict[str, float]]]:
    """Each trained model's curve once, though several arms (lora, lora+rag) share the model."""
    curves: dict[str, list[dict[str, float]]] = {}
    for arm in arms:
        if arm.ok and arm.curve:
            curves.setdefault(arm.model, arm.curve)
    return curves


def _curves_png(curves: dict[str, list[dict[str, float]]]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for i, (model, curve) in enumerate(curves.items()):
        for key, style, what in (("loss", "-", "training"), ("val_loss", "--", "validation")):
            steps = [p["step"] for p in curve if key in p]
            if steps:
                values = [p[key] for p in curve if key in p]
                ax.plot(steps, values, style, color=f"C{i}", marker=".", label=f"{model} {what}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _charts_section(result: BakeoffResult) -> str:
    ylabel = f"{result.primary} (%)"
    recommended = _recommended(result)
    figures = []
    latency = _tradeoff_points(result, lambda a: a.latency_ms.get("p95"))
    if latency:
        png = _tradeoff_png(latency, "p95 latency (ms)", ylabel, recommended)
        figures.append(_figure(png, f"{result.primary} against p95 latency: up and left is better"))
    cost = _tradeoff_points(result, lambda a: a.costs.yearly_usd if a.costs else None)
    if cost:
        png = _tradeoff_png(cost, "yearly cost (USD)", ylabel, recommended)
        figures.append(_figure(png, f"{result.primary} against yearly cost: up and left is better"))
    curves = _curves_by_model(result.arms)
    if curves:
        figures.append(_figure(_curves_png(curves), "Training curves, one per trained model"))
    return "<h2>Charts</h2>" + "".join(figures) if figures else ""


# How it was measured, and the answers.


def _method_section(result: BakeoffResult) -> str:
    metrics = [result.primary, *_other_metrics(result)]
    meanings = [
        f"{m}{' (primary: ranks the arms)' if m == result.primary else ''}: "
        f"{METRIC_MEANINGS.get(m, 'see the mentor documentation')}"
        for m in metrics
    ]
    grounding = next((a.grounding.method for a in result.arms if a.grounding), None)
    parts = [
        "<h2>How it was measured</h2>",
        "<h3>Scores</h3>" + _items(meanings),
        "<p>Every interval is a 95% percentile bootstrap over the held-out questions. A difference "
        "from the base resamples the questions once for both arms (paired), so it is narrower "
        "than the two intervals suggest. Latency is measured answering questions one at a time, "
        "end to end; memory is the peak resident memory while answering.</p>",
        f"<h3>Grounding</h3><p>{escape(grounding)}</p>" if grounding else "",
        "<h3>Engines</h3>" + _items(engine_lines(result)),
        "<h3>Costs</h3>" + _items(COST_FORMULAS),
        "<h3>Notes</h3>" + _items(result.notes) if result.notes else "",
    ]
    return "".join(parts)


def _answers_section(result: BakeoffResult) -> str:
    header = ["question", "reference", "answer", result.primary, "support"]
    blocks = []
    for arm in result.arms:
        shown = arm.answers[:SAMPLES]
        if not shown:
            continue
        rows = [
            "<tr>"
            + "".join(
                f'<td class="text">{escape(t)}</td>' for t in (a.question, a.reference, a.answer)
            )
            + f"<td>{_num(a.scores.get(result.primary), '.2f')}</td><td>{_pct(a.support)}</td></tr>"
            for a in shown
        ]
        summary = f"{arm.name}: {len(shown)} of {len(arm.answers)} answers"
        blocks.append(
            f"<details><summary>{escape(summary)}</summary>{_table(header, rows)}</details>"
        )
    return "<h2>Sample answers</h2>" + "".join(blocks) if blocks else ""


def render_html(result: BakeoffResult) -> str:
    """The whole page, as text."""
    body = "".join(
        [
            _header_section(result),
            _verdict_section(result.verdict),
            _arms_section(result),
            _groups_section(result),
            _references_section(result),
            _charts_section(result),
            _method_section(result),
            _answers_section(result),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Bakeoff: {escape(result.name)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_html(result: BakeoffResult, path: Path) -> Path:
    """Write the report page to ``path`` (atomically) and return it."""
    atomic_write_text(path, render_html(result))
    return path


# The terminal.


WIDE = 100  # terminal columns from which the summary shows every interval and a status column


def _short_interval(e: Estimate | None) -> str:
    """A share on one line and its interval below it, in percent: "61.2%\n55.0–67.3"."""
    if e is None:
        return "-"
    return f"{e.value:.1%}\n{100 * e.low:.1f}–{100 * e.high:.1f}"


def _stacked(e: Estimate | None, parts: Callable[[Estimate], tuple[str, str]]) -> str:
    """A figure with its interval on the line below."""
    return "-" if e is None else "\n".join(parts(e))


def _marked(e: Estimate | None) -> str:
    """A difference in points with ``*`` when its interval excludes zero, without the interval."""
    return "-" if e is None else _points(e)[0]


def _summary_columns(result: BakeoffResult, wide: bool) -> list[str]:
    updates = _has_updates(result)
    if wide:
        return [
            "arm",
            f"{result.primary}\n[95% CI]",
            "vs base\npoints",
            *(["after\nupdate"] if updates else []),
            "p95\nms",
            "memory\nMB",
            "training\ns",
            "USD /\n1k q",
            "status",
        ]
    return [
        "arm",
        "score",
        "Δ\npts",
        *(["upd"] if updates else []),
        "p95\nms",
        "MB",
        "train\ns",
        "$/1k\nq",
    ]


def _legend(result: BakeoffResult, wide: bool) -> str:
    marks = "★ recommended; ✗ failed; ! did not learn (see below)"
    if not wide and any(a.incumbent for a in result.arms):
        marks += "; † what you run today (incumbent)"
    if wide:
        return f"{marks}; * the difference's 95% interval excludes zero"
    parts = [
        f"score: {result.primary}, 95% CI below",
        f"Δ pts: points over {result.base}, * where its 95% interval excludes zero",
        *(["upd: score on updated documents"] if _has_updates(result) else []),
        "MB: peak memory",
        "train s: seconds of training",
        "$/1k q: USD per 1,000 queries",
        marks,
    ]
    return "; ".join(parts)


def _summary_cells(result: BakeoffResult, arm: ArmResult, wide: bool, status: str) -> list[str]:
    updates = _has_updates(result)
    primary, update = arm.quality.get(result.primary), arm.updates
    if wide:
        figures = [_stacked(primary, _share), _stacked(arm.vs_base, _points)]
        figures += [_stacked(update, _share)] if updates else []
    else:
        figures = [_short_interval(primary), _marked(arm.vs_base)]
        figures += [_pct(update.value if update else None)] if updates else []
    cells = [
        *figures,
        _num(arm.latency_ms.get("p95"), ".0f"),
        _num(arm.peak_memory_mb, ".0f"),
        _num(arm.training_s, ".0f"),
        _usd(arm.costs.serve_usd_per_1k if arm.costs else None),
    ]
    return [*cells, status] if wide else cells


def summary_table(result: BakeoffResult, width: int = 120) -> Table:
    """One row per arm, sized for a terminal ``width`` columns wide: every interval and a status
    column where that fits unwrapped (never under :data:`WIDE` columns), otherwise short headers
    with a legend. Arm names are never cut; the recommended arm is starred, failed ones crossed,
    ones that did not learn marked."""
    measure = Console(width=10_000).measure
    if width >= WIDE:
        wide = _summary(result, wide=True)
        if measure(wide).maximum <= width:
            return wide
    narrow = _summary(result, wide=False)
    if measure(narrow).minimum <= width:
        return narrow
    return _summary(result, wide=False, fold=True)  # too narrow for whole figures: fold them


def _summary(result: BakeoffResult, *, wide: bool, fold: bool = False) -> Table:
    columns = _summary_columns(result, wide)
    table = Table(
        title=f"bakeoff {result.name}: {result.primary} on the held-out questions",
        caption=_legend(result, wide),
        box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
        pad_edge=wide,
        caption_justify="center" if wide else "left",
    )
    names = _summary_names(result, wide)
    recommended = _recommended(result)
    unlearned = {d.arm for d in not_learned(result)}
    rows: list[tuple[str, list[str], str | None]] = []
    for arm in result.arms:
        if not arm.ok:
            cells = ["-"] * (len(columns) - 2) + ["failed" if wide else "-"]
            rows.append((names[arm.name], cells, "dim"))
            continue
        status = "did not learn" if arm.name in unlearned else "done"
        style = "bold" if arm.name == recommended else None
        rows.append((names[arm.name], _summary_cells(result, arm, wide, status), style))
    for i, column in enumerate(columns):
        # every figure whole on its lines: no column is squeezed below its longest line
        texts = [column] + [name if i == 0 else cells[i - 1] for name, cells, _ in rows]
        longest = max(len(line) for text in texts for line in text.split("\n"))
        if column in ("arm", "status"):
            table.add_column(column, justify="left", no_wrap=True, min_width=longest)
        elif fold:
            table.add_column(column, justify="right", overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True, min_width=longest)
    for name, cells, style in rows:
        table.add_row(markup_escape(name), *(markup_escape(c) for c in cells), style=style)
    return table


def _summary_names(result: BakeoffResult, wide: bool = True) -> dict[str, str]:
    """Each arm's name with its mark: ★ recommended, ✗ failed, ! did not learn; an incumbent
    says so (a † in a narrow table)."""
    recommended = _recommended(result)
    unlearned = {d.arm for d in not_learned(result)}
    names = {}
    for arm in result.arms:
        mark = "★ " if arm.name == recommended else ""
        mark = "✗ " if not arm.ok else "! " if arm.name in unlearned else mark
        incumbent = (" (incumbent)" if wide else " †") if arm.incumbent else ""
        names[arm.name] = mark + arm.name + incumbent
    return names


def usage_line(arm: ArmResult) -> str:
    """An endpoint arm's reported tokens and prices, the inputs of its serving cost."""
    u = arm.usage
    return (
        f"endpoint usage: {u['prompt_tokens']:.1f} prompt + {u['completion_tokens']:.1f} "
        f"completion tokens per question, at ${u['input_usd_per_million']:g} / "
        f"${u['output_usd_per_million']:g} per million"
    )


def engine_lines(result: BakeoffResult) -> list[str]:
    """Which engine wrote each arm's answers and which measured its latency: one line for all
    arms when they agree, else one per arm."""
    done = [a for a in result.arms if a.ok]
    lines = {a.engines for a in done}
    if len(lines) == 1:
        return [f"every arm: {lines.pop()}"]
    return [f"{a.name}: {a.engines}" for a in done]


def print_summary(result: BakeoffResult, console: Console, html_path: Path | None = None) -> None:
    """The table, which engines answered, the recommendation with its fallback and what to
    watch, and where the page is."""
    console.print(summary_table(result, console.width))
    for line in engine_lines(result):
        console.print(f"engines, {line}", markup=False, highlight=False)
    for arm in result.arms:
        if not arm.ok:
            console.print(f"✗ {arm.name} failed: {_error_line(arm)}", markup=False)
    for finding in not_learned(result):
        console.print(f"! {finding.text}", markup=False)
    for arm in result.arms:
        if arm.ok and arm.usage:
            console.print(f"{arm.name}: {usage_line(arm)}", markup=False, highlight=False)
    verdict = result.verdict
    if verdict is not None:
        console.print(verdict.paragraph, markup=False)
        console.print(f"fallback: {verdict.fallback}", markup=False)
        for watch in verdict.monitoring:
            line = f"watch {watch.signal} ({watch.threshold}): {watch.action}"
            console.print(line, markup=False)
    if html_path is not None:
        console.print(f"report: {html_path}", markup=False)
