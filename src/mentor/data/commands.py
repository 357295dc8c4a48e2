"""``mentor data ...``: check, split, convert and document dataset files from the command line.

A thin layer over :mod:`mentor.data`: every command parses its options, calls the library and
prints the outcome. ``check`` writes each problem as a plain ``file:line: message`` line (easy to
grep or to jump to from an editor) before its tables; errors about the command itself go to
stderr. Exit codes: 0 fine, 1 the data has errors (or, with ``--strict``, duplicates, leakage or
over-long examples), 2 the command was used wrongly.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markdown import Markdown

from mentor.data.check import check_dataset
from mentor.data.convert import convert_file
from mentor.data.formats import formats_docs
from mentor.data.io import HUB_PREFIX, Problem, read_records, write_jsonl
from mentor.data.render import format_line, print_tables, summary_line, table
from mentor.data.schemas import schema_docs
from mentor.data.split import field_value, split_records
from mentor.data.stats import TokenCounter
from mentor.utils.cli import fail

SchemaName = Literal["chat", "qa", "classification", "corpus", "query", "text", "qrels"]
JsonlSchemaName = Literal["chat", "qa", "classification", "corpus", "query", "text"]
SourceName = Literal["csv", "chat", "qa", "classification", "corpus", "query", "text"]

app = typer.Typer(
    name="data",
    help="Check, split and convert dataset files (JSONL, CSV, BEIR). "
    "Run `mentor data schemas` for the formats.",
    no_args_is_help=True,
)

MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="CSV input only: field=column pairs, comma-separated or repeated, for columns not "
        "named like the field, e.g. `--map label=category`.",
    ),
]


def _existing_or_hub(value: Path) -> Path:
    if not str(value).startswith(HUB_PREFIX) and not value.exists():
        raise typer.BadParameter(f"{value}: no such file or folder")
    return value


_SOURCES_HELP = (
    " Also Parquet or Arrow, a folder of data files, or a Hugging Face dataset "
    "hf:ORG/NAME[:split]; ShareGPT, Alpaca, TRL prompt/completion and text records are read too."
)


def _input_source(help_text: str) -> Any:
    return typer.Argument(help=help_text + _SOURCES_HELP, callback=_existing_or_hub)


SchemaOption = Annotated[
    SchemaName | None,
    typer.Option(help="Record kind of the file; detected from its keys when omitted."),
]


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
        raise fail(f"cannot load tokenizer {name!r}: {exc}", code=2) from None

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


@app.command(
    help="Validate a dataset and report duplicates, train/test leakage, token lengths and label "
    "balance. Every bad line is printed as `file:line: what is wrong`. Exit status 1 when a file "
    "has validation errors (with --strict also on duplicates, leakage, conflicting labels or "
    "examples longer than --max-tokens), "
    "2 on a usage error."
)
def check(
    path: Annotated[
        Path,
        _input_source(
            "Dataset to check: JSONL, a CSV whose columns are named like the fields, or a "
            "BEIR qrels .tsv."
        ),
    ],
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
    mapping: MapOption = None,
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
        typer.Option(
            min=1,
            help="Report the examples longer than this many tokens; chat and qa examples are "
            "also named with the answer tokens a cut to this length would lose (default for "
            "them: 1024, mentor finetune's --max-length). Give --tokenizer for exact counts.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON instead of tables.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Also exit with status 1 when there are duplicates, leakage, conflicting labels "
            "or over-long examples (validation errors always do).",
        ),
    ] = False,
) -> None:
    """Validate a dataset; report duplicates, train/test leakage, lengths and label balance."""
    counter = _token_counter(tokenizer)
    try:
        report = check_dataset(
            path, against, schema, counter, near_threshold, max_tokens, _parse_map(mapping)
        )
    except (ValueError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        console = Console()
        detected = format_line(report.train)
        if detected:
            console.print(detected, markup=False, highlight=False, soft_wrap=True)
        _print_problems(console, report.problems)
        print_tables(console, report, tokenizer)
        console.print(summary_line(report), markup=False, highlight=False, soft_wrap=True)
    if report.has_errors or (strict and report.has_findings):
        raise typer.Exit(1)


def _parse_ratios(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}") from None


@app.command(
    help="Split a dataset into train/validation/test JSONL files, deterministically from a seed, "
    "optionally stratified by a field; duplicates stay in one part. Exit status 1 when the input "
    "has bad lines (unless --skip-bad)."
)
def split(
    path: Annotated[
        Path, _input_source("Dataset to split: JSONL, or a CSV with field-named columns.")
    ],
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
    mapping: MapOption = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Split the valid records even if some lines are bad (they are still listed). "
            "Without it, bad lines stop the command with status 1.",
        ),
    ] = False,
) -> None:
    """Split a dataset into train/validation/test files, deterministically from a seed."""
    try:
        loaded = read_records(path, schema, _parse_map(mapping))
    except (ValueError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    err = Console(stderr=True)
    _print_problems(err, loaded.problems)
    if loaded.errors and not skip_bad:
        raise fail(
            f"{loaded.bad_lines} bad lines in {path}; nothing written (--skip-bad splits the "
            f"{len(loaded.records)} valid records anyway)",
            1,
        )
    if not loaded.records:
        raise fail(f"no valid records in {path}", 1)
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
        raise fail(str(exc), code=2) from None
    parts_table = table(f"Split of {path} (seed {seed})", "part", "records", "share", "file")
    if stratify:
        parts_table.add_column(f"{stratify} counts", overflow="fold")
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
        parts_table.add_row(*row)
    Console().print(parts_table)
    if loaded.errors:
        err.print(
            f"skipped {loaded.bad_lines} bad lines", markup=False, highlight=False, soft_wrap=True
        )


@app.command(
    help="Convert a dataset: CSV to JSONL of any kind, qa or classification to chat, ShareGPT, "
    "Alpaca or TRL prompt/completion (JSONL, Parquet, Arrow, hf:ORG/NAME) to chat. Every bad "
    "input line is listed; with any, nothing is written and the exit status is 1 (unless "
    "--skip-bad)."
)
def convert(
    src: Annotated[Path, _input_source("Input: CSV, or JSONL of a known kind.")],
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
    mapping: MapOption = None,
    system: Annotated[
        str | None,
        typer.Option(help="System prompt to start every chat conversation with (to chat only)."),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            help="To chat only: text that opens every user turn, before the input text or "
            "question, e.g. `Classify the intent of this message.`"
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Write the records of the good lines even if some lines are bad (the bad ones "
            "are still listed and counted) and exit 0. Without it, bad lines mean nothing is "
            "written and exit status 1.",
        ),
    ] = False,
) -> None:
    """Convert a dataset: CSV to JSONL, qa or classification to chat."""
    try:
        result = convert_file(
            src, dst, to, source, _parse_map(mapping), system, instruction, skip_bad
        )
    except (ValueError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    err = Console(stderr=True)
    _print_problems(err, result.problems)
    good = len(result.source.records)
    if result.source.schema is None:
        raise fail(f"cannot tell the kind of {src}; pass --from", 1)
    if not result.wrote_file:
        raise fail(
            f"{result.bad} bad lines in {src}; nothing written (--skip-bad writes the {good} "
            "good records anyway)",
            1,
        )
    message = f"wrote {result.written} {to} records to {dst}"
    shape = result.source.format
    if shape is not None and shape != to:
        message += f" (from {shape} records)"
    if result.bad:
        message += f"; skipped {result.bad} bad lines of {src}"
    Console().print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
def schemas() -> None:
    """Print the documented dataset formats (markdown; rendered when printing to a terminal)."""
    console = Console()
    docs = schema_docs() + formats_docs()
    if console.is_terminal:
        console.print(Markdown(docs))
    else:
        typer.echo(docs, nl=False)
