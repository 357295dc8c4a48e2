"""``mentor data ...``: check, split, convert and document dataset files from the command line.

A thin layer over :mod:`mentor.data`: every command parses its options, calls the library and
prints the outcome. ``check`` writes each problem as a plain ``file:line: message`` line (easy to
grep or to jump to from an editor) before its tables; errors about the command itself go to
stderr. Exit codes: 0 fine, 1 the data has errors (or, with ``--strict``, duplicates or leakage),
2 the command was used wrongly.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from mentor.data.check import CheckReport, check_dataset
from mentor.data.convert import convert_file
from mentor.data.dedup import DuplicateGroup
from mentor.data.io import Problem, read_records, write_jsonl
from mentor.data.schemas import schema_docs
from mentor.data.split import field_value, split_records
from mentor.data.stats import TokenCounter

SchemaName = Literal["chat", "qa", "classification", "corpus", "query", "qrels"]
JsonlSchemaName = Literal["chat", "qa", "classification", "corpus", "query"]
SourceName = Literal["csv", "chat", "qa", "classification", "corpus", "query"]
_MAX_ROWS = 50

app = typer.Typer(
    name="data",
    help="Check, split and convert dataset files (JSONL, CSV, BEIR). "
    "Run `mentor data schemas` for the formats.",
    no_args_is_help=True,
)

ExistingFile = Annotated[
    Path, typer.Argument(help="Dataset file.", exists=True, dir_okay=False, readable=True)
]
SchemaOption = Annotated[
    SchemaName | None,
    typer.Option(help="Record kind of the file; detected from its keys when omitted."),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    Console(stderr=True).print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def _print_problems(console: Console, problems: list[Problem]) -> None:
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)


def _token_counter(name: str | None) -> TokenCounter | None:
    """Count with the named tokenizer (loaded by mentor.models), or None for the approximation."""
    if name is None:
        return None
    try:
        models = importlib.import_module("mentor.models")
        tokenizer = models.load_tokenizer(name)
    except Exception as exc:  # any loading failure is a usage problem here
        _fail(f"cannot load tokenizer {name!r}: {exc}")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _lines(lines: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f", … ({len(lines) - limit} more)" if len(lines) > limit else "")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _more(table: Table, total: int) -> Table:
    if total > _MAX_ROWS:
        table.caption = f"{total - _MAX_ROWS} more not shown (use --json for all)"
    return table


def _duplicates_table(title: str, groups: list[DuplicateGroup]) -> Table:
    table = _table(title, "kind", "lines", "similarity", "text")
    for g in groups[:_MAX_ROWS]:
        table.add_row(g.kind, _lines(g.lines), f"{g.similarity:.2f}", g.text)
    return _more(table, len(groups))


def _print_tables(console: Console, report: CheckReport, tokenizer: str | None) -> None:
    train, test = report.train, report.test
    if report.duplicates:
        console.print(_duplicates_table(f"Duplicates in {train.path}", report.duplicates))
    if test is not None and report.against_duplicates:
        console.print(_duplicates_table(f"Duplicates in {test.path}", report.against_duplicates))
    if test is not None and report.leakage:
        table = _table(
            f"Leakage: examples of {test.path} also in {train.path}",
            "test line",
            "train line",
            "kind",
            "similarity",
            "text",
        )
        for p in report.leakage[:_MAX_ROWS]:
            table.add_row(
                str(p.test_line), str(p.train_line), p.kind, f"{p.similarity:.2f}", p.text
            )
        console.print(_more(table, len(report.leakage)))
    if report.conflicts:
        table = _table(
            "Conflicting labels (same text, different labels)", "file", "lines", "labels", "text"
        )
        for c in report.conflicts[:_MAX_ROWS]:
            table.add_row(str(c.path), _lines(c.lines), ", ".join(c.labels), c.text)
        console.print(_more(table, len(report.conflicts)))
    if report.lengths:
        unit = f"tokens, {tokenizer}" if tokenizer else "approximate tokens"
        table = _table(
            f"Lengths ({unit})", "file", "records", "min", "mean", "p50", "p95", "max", "over limit"
        )
        for role, s in report.lengths.items():
            path = train.path if role == "train" or test is None else test.path
            over = f"{s.over_limit} > {s.limit}" if s.limit is not None else "-"
            table.add_row(
                str(path),
                str(s.count),
                str(s.min),
                f"{s.mean:.1f}",
                f"{s.p50:.0f}",
                f"{s.p95:.0f}",
                str(s.max),
                over,
            )
        console.print(table)
    if report.labels is not None:
        balance = report.labels
        columns = ["label", "count", "share"] + (["test count"] if test is not None else [])
        title = f"Labels (imbalance ratio {balance.imbalance_ratio:.2f})"
        table = _table(title, *columns)
        for label in [*balance.counts, *balance.missing_in_train]:
            missing = label in balance.missing_in_train
            count = "0 (missing)" if missing else str(balance.counts[label])
            row = [label, count, f"{balance.shares.get(label, 0.0):.1%}"]
            if test is not None:
                row.append(str(balance.test_counts.get(label, 0)))
            table.add_row(*row)
        console.print(table)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _summary(report: CheckReport) -> str:
    files = [f"{len(report.train.records)} records in {report.train.path}"]
    if report.test is not None:
        files.append(f"{len(report.test.records)} in {report.test.path}")
    errors = sum(p.severity == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    dup_groups = len(report.duplicates) + len(report.against_duplicates)
    parts = [
        f"{', '.join(files)} ({report.schema or 'unknown schema'})",
        f"{_n(errors, 'error')}, {_n(warnings, 'warning')}",
        _n(dup_groups, "duplicate group"),
    ]
    if report.test is not None:
        parts.append(_n(len(report.leaked_test_lines), "leaked test example"))
    if report.labels is not None:
        parts.append(_n(len(report.conflicts), "label conflict"))
    verdict = "FAIL" if report.has_errors else ("WARN" if report.has_findings else "OK")
    return f"{verdict}: " + "; ".join(parts)


@app.command()
def check(
    path: ExistingFile,
    against: Annotated[
        Path | None,
        typer.Option(
            help="Test or evaluation file to compare with PATH: its examples that also appear "
            "(exactly or nearly) in PATH are reported as leakage. Read with PATH's schema.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    schema: SchemaOption = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Hugging Face tokenizer name or local path to count tokens with. Without it, "
            "lengths are an approximation from words and punctuation."
        ),
    ] = None,
    near_threshold: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Jaccard similarity of word/character shingles from which two texts count as "
            "near duplicates (0.01-1; 1 reports exact duplicates only).",
        ),
    ] = 0.8,
    max_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Report how many examples are longer than this many tokens."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON instead of tables.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="Also exit with status 1 when there are duplicates, leakage or conflicting labels "
            "(validation errors always do)."
        ),
    ] = False,
) -> None:
    """Validate a dataset and report duplicates, train/test leakage, lengths and label balance.

    Every bad line is printed as `file:line: what is wrong`. Exit status 1 when a file has
    validation errors (with --strict also on duplicates, leakage or conflicting labels).
    """
    counter = _token_counter(tokenizer)
    try:
        report = check_dataset(path, against, schema, counter, near_threshold, max_tokens)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        console = Console()
        _print_problems(console, report.problems)
        _print_tables(console, report, tokenizer)
        console.print(_summary(report), markup=False, highlight=False, soft_wrap=True)
    if report.has_errors or (strict and report.has_findings):
        raise typer.Exit(1)


def _parse_ratios(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}") from None


@app.command()
def split(
    path: ExistingFile,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder to write the parts into, as train.jsonl, validation.jsonl and test.jsonl "
            "(train.jsonl and test.jsonl for two ratios); created if missing.",
            file_okay=False,
        ),
    ],
    ratios: Annotated[
        str,
        typer.Option(
            help="Two or three shares summing to 1, separated by commas: train,test or "
            "train,validation,test."
        ),
    ] = "0.8,0.1,0.1",
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed always gives the same split.")
    ] = 0,
    stratify: Annotated[
        str | None,
        typer.Option(help="Field whose values keep their share in every part, e.g. `label`."),
    ] = None,
    group_duplicates: Annotated[
        bool,
        typer.Option(
            help="Keep records whose key text is identical after normalisation in the same part, "
            "so the split cannot leak duplicates across parts. On by default.",
        ),
    ] = True,
    schema: SchemaOption = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            help="Split the valid records even if some lines are bad (they are still listed). "
            "Without it, bad lines stop the command with status 1."
        ),
    ] = False,
) -> None:
    """Split a dataset into train/validation/test files, deterministically from a seed."""
    try:
        loaded = read_records(path, schema)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    err = Console(stderr=True)
    _print_problems(err, loaded.problems)
    if loaded.errors and not skip_bad:
        _fail(
            f"{loaded.bad_lines} bad lines in {path}; nothing written (--skip-bad splits the "
            f"{len(loaded.records)} valid records anyway)",
            1,
        )
    if not loaded.records:
        _fail(f"no valid records in {path}", 1)
    try:
        parts = split_records(
            loaded.records,
            _parse_ratios(ratios),
            seed,
            stratify,
            group_duplicates,
            schema=loaded.schema,
        )
    except ValueError as exc:
        _fail(str(exc))
    table = _table(f"Split of {path} (seed {seed})", "part", "records", "share", "file")
    if stratify:
        table.add_column(f"{stratify} counts", overflow="fold")
    for name, records in parts.items():
        target = out / f"{name}.jsonl"
        write_jsonl(target, records)
        row = [name, str(len(records)), f"{len(records) / len(loaded.records):.1%}", str(target)]
        if stratify:
            counts: dict[str, int] = {}
            for r in records:
                value = field_value(r.data, stratify)
                counts[value] = counts.get(value, 0) + 1
            row.append(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        table.add_row(*row)
    Console().print(table)
    if loaded.errors:
        err.print(f"skipped {loaded.bad_lines} bad lines", markup=False, highlight=False)


def _parse_map(items: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items or []:
        for pair in item.split(","):
            if not pair.strip():
                continue
            field, sep, column = pair.partition("=")
            if not sep or not field.strip() or not column.strip():
                raise typer.BadParameter(f"expected field=column, got {pair!r}", param_hint="--map")
            mapping[field.strip()] = column.strip()
    return mapping


@app.command()
def convert(
    src: ExistingFile,
    dst: Annotated[Path, typer.Argument(help="JSONL file to write (replaced atomically).")],
    to: Annotated[JsonlSchemaName, typer.Option("--to", help="Record kind to write.")],
    source: Annotated[
        SourceName | None,
        typer.Option(
            "--from",
            help="Kind of the input: csv, or a JSONL kind. Default: csv for a .csv file, else "
            "detected from the keys. Conversions: csv to any kind, qa to chat, classification "
            "to chat, any kind to itself (validates and normalises).",
        ),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="CSV only: field=column pairs, comma-separated or repeated, for columns not named "
            "like the field, e.g. `--map label=category`.",
        ),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(help="System prompt to start every chat conversation with (to chat only)."),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            help="Classification to chat only: text put before each input in the user turn, e.g. "
            "`Classify the intent of this message.`"
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            help="Write the records of the good lines even if some lines are bad (the bad ones "
            "are still listed and counted) and exit 0. Without it, bad lines mean nothing is "
            "written and exit status 1."
        ),
    ] = False,
) -> None:
    """Convert a dataset: CSV to JSONL, qa or classification to chat."""
    try:
        result = convert_file(
            src, dst, to, source, _parse_map(mapping), system, instruction, skip_bad
        )
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    err = Console(stderr=True)
    _print_problems(err, result.problems)
    good = len(result.source.records)
    if result.source.schema is None:
        _fail(f"cannot tell the kind of {src}; pass --from", 1)
    if not result.wrote_file:
        _fail(
            f"{result.bad} bad lines in {src}; nothing written (--skip-bad writes the {good} "
            "good records anyway)",
            1,
        )
    message = f"wrote {result.written} {to} records to {dst}"
    if result.bad:
        message += f"; skipped {result.bad} bad lines of {src}"
    Console().print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
def schemas() -> None:
    """Print the documented dataset formats (markdown; rendered when printing to a terminal)."""
    console = Console()
    if console.is_terminal:
        console.print(Markdown(schema_docs()))
    else:
        typer.echo(schema_docs(), nl=False)
