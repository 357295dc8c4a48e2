"""Rich tables and the one-line summary that ``mentor data check`` prints for a CheckReport.

Each table shows at most 50 rows (``--json`` has everything); texts are previews. Problems are not
rendered here: the command prints them first as plain ``file:line: message`` lines.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mentor.data.check import CheckReport
from mentor.data.dedup import DuplicateGroup
from mentor.data.io import LoadResult

MAX_ROWS = 50


def table(title: str, *columns: str) -> Table:
    """A left-titled table whose cells fold rather than being cut."""
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def _lines(lines: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f", … ({len(lines) - limit} more)" if len(lines) > limit else "")


def _capped(out: Table, total: int) -> Table:
    if total > MAX_ROWS:
        out.caption = f"{total - MAX_ROWS} more not shown (use --json for all)"
    return out


def duplicates_table(title: str, groups: list[DuplicateGroup]) -> Table:
    out = table(title, "kind", "lines", "similarity", "text")
    for g in groups[:MAX_ROWS]:
        out.add_row(g.kind, _lines(g.lines), f"{g.similarity:.2f}", g.text)
    return _capped(out, len(groups))


def leakage_table(report: CheckReport) -> Table:
    assert report.test is not None
    title = f"Leakage: examples of {report.test.path} also in {report.train.path}"
    out = table(title, "test line", "train line", "kind", "similarity", "text")
    for p in report.leakage[:MAX_ROWS]:
        out.add_row(str(p.test_line), str(p.train_line), p.kind, f"{p.similarity:.2f}", p.text)
    return _capped(out, len(report.leakage))


def conflicts_table(report: CheckReport) -> Table:
    out = table(
        "Conflicting labels (same text, different labels)", "file", "lines", "labels", "text"
    )
    for c in report.conflicts[:MAX_ROWS]:
        out.add_row(str(c.path), _lines(c.lines), ", ".join(c.labels), c.text)
    return _capped(out, len(report.conflicts))


def lengths_table(report: CheckReport, tokenizer: str | None) -> Table:
    unit = f"tokens, {tokenizer}" if tokenizer else "approximate tokens"
    columns = ("file", "records", "min", "mean", "p50", "p95", "max", "over limit")
    out = table(f"Lengths ({unit})", *columns)
    for role, s in report.lengths.items():
        path = report.test.path if role == "test" and report.test else report.train.path
        over = f"{s.over_limit} > {s.limit}" if s.limit is not None else "-"
        out.add_row(
            str(path), str(s.count), str(s.min), f"{s.mean:.1f}", f"{s.p50:.0f}", f"{s.p95:.0f}",
            str(s.max), over,
        )  # fmt: skip
    return out


def labels_table(report: CheckReport) -> Table:
    assert report.labels is not None
    balance = report.labels
    with_test = report.test is not None
    columns = ["label", "count", "share"] + (["test count"] if with_test else [])
    out = table(f"Labels (imbalance ratio {balance.imbalance_ratio:.2f})", *columns)
    for label in [*balance.counts, *balance.missing_in_train]:
        count = str(balance.counts[label]) if label in balance.counts else "0 (missing)"
        row = [label, count, f"{balance.shares.get(label, 0.0):.1%}"]
        if with_test:
            row.append(str(balance.test_counts.get(label, 0)))
        out.add_row(*row)
    return out


def print_tables(console: Console, report: CheckReport, tokenizer: str | None) -> None:
    """Print the tables that have something to show, findings first."""
    if report.duplicates:
        console.print(duplicates_table(f"Duplicates in {report.train.path}", report.duplicates))
    if report.test is not None and report.against_duplicates:
        title = f"Duplicates in {report.test.path}"
        console.print(duplicates_table(title, report.against_duplicates))
    if report.leakage:
        console.print(leakage_table(report))
    if report.conflicts:
        console.print(conflicts_table(report))
    if any(s.count for s in report.lengths.values()):
        console.print(lengths_table(report, tokenizer))
    if report.labels is not None and (report.labels.counts or report.labels.test_counts):
        console.print(labels_table(report))
    for found in report.overlong:
        console.print(f"[yellow]over-long:[/yellow] {found}", highlight=False, soft_wrap=True)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _kind(result: LoadResult) -> str:
    if result.schema is None:
        return "unknown schema"
    if result.format is not None and result.format != result.schema:
        return f"{result.format}, read as {result.schema}"
    return result.schema


def summary_line(report: CheckReport) -> str:
    """``OK|WARN|FAIL: ...``: FAIL on validation errors, WARN on duplicates, leakage, conflicts
    and over-long examples."""
    files = [f"{len(report.train.records)} records in {report.train.path}"]
    if report.test is not None:
        files.append(f"{len(report.test.records)} in {report.test.path}")
    errors = sum(p.severity == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    parts = [
        f"{', '.join(files)} ({_kind(report.train)})",
        f"{_n(errors, 'error')}, {_n(warnings, 'warning')}",
        _n(len(report.duplicates) + len(report.against_duplicates), "duplicate group"),
    ]
    if report.test is not None:
        parts.append(_n(len(report.leaked_test_lines), "leaked test example"))
    if report.labels is not None:
        parts.append(_n(len(report.conflicts), "label conflict"))
    if report.schema in ("chat", "qa"):
        parts.append(_n(sum(len(o.lines) for o in report.overlong), "over-long example"))
    verdict = "FAIL" if report.has_errors else ("WARN" if report.has_findings else "OK")
    return f"{verdict}: " + "; ".join(parts)


def format_line(result: LoadResult) -> str | None:
    """``format: sharegpt (read as chat)`` and why; ``None`` for mentor's own kinds read plainly."""
    if result.format is None or (result.format == result.schema and not result.format_note):
        return None
    line = f"format: {result.format}"
    if result.schema is not None and result.schema != result.format:
        line += f" (read as {result.schema})"
    return f"{line}; {result.format_note}" if result.format_note else line
