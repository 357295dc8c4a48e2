"""Reading and writing dataset files (JSONL, BEIR qrels TSV, CSV) with every bad line reported.

Readers never stop at the first problem and never drop a line silently: each line that cannot be
used becomes a :class:`Problem` (``path:line: what is wrong``), each blank line a warning, and the
good lines are returned as validated :class:`Record` objects that remember their line number.
Writers go through :func:`mentor.utils.fs.atomic_path`, so an interrupted write leaves the old
file in place.
"""

from __future__ import annotations

import csv
import io
import json
import types
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mentor.data.schemas import QrelRow, detect_schema, get_schema, json_type
from mentor.utils.fs import atomic_path

Severity = Literal["error", "warning"]
_MAX_ERRORS_PER_LINE = 5
_DETECT_SAMPLE = 1000
_QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class Problem:
    """Something wrong with one line of a file (``line`` 0 means the file as a whole)."""

    path: Path
    line: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class Record:
    """One validated record and the 1-based line of the file it came from."""

    line: int
    data: BaseModel


@dataclass
class LoadResult:
    """What a reader found: the good records, every problem, and the schema it validated against.

    ``schema`` is ``None`` only when it was not given and could not be detected (an error says so).
    """

    path: Path
    schema: str | None
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    blank_lines: int = 0
    lines: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def bad_lines(self) -> int:
        """How many distinct lines have at least one error."""
        return len({p.line for p in self.errors})

    @property
    def ok(self) -> bool:
        return not self.errors

    def _error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def _finish(self) -> LoadResult:
        """Flag a file without a single record or error, and order the problems by line."""
        if not self.records and not self.errors:
            self._error(0, "no records: the file is empty or blank")
        self.problems.sort(key=lambda p: p.line)
        return self


def format_validation_error(error: ValidationError) -> str:
    """Pydantic errors as one readable message: ``field 'messages.1.role': must be one of ...``."""
    parts = []
    errors = error.errors()
    for err in errors[:_MAX_ERRORS_PER_LINE]:
        loc = ".".join(str(x) for x in err["loc"])
        text = _error_text(err["type"], err["msg"], err.get("input"), err.get("ctx") or {})
        parts.append(f"field '{loc}': {text}" if loc else text)
    if len(errors) > _MAX_ERRORS_PER_LINE:
        parts.append(f"and {len(errors) - _MAX_ERRORS_PER_LINE} more")
    return "; ".join(parts)


def _error_text(kind: str, msg: str, value: Any, ctx: Mapping[str, Any]) -> str:
    got = json_type(value)
    if isinstance(value, str):
        got = repr(value if len(value) <= 40 else value[:37] + "...")
    if kind == "missing":
        return "missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "string_type":
        return f"expected a string, got {got}"
    if kind == "list_type":
        return f"expected an array, got {got}"
    if kind in ("dict_type", "model_type"):
        return f"expected an object, got {got}"
    if kind.startswith("int_"):
        return f"expected an integer, got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    return msg


class DuplicateKeyError(ValueError):
    """A JSON object that names the same key twice; ``json.loads`` alone would keep the last."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key {key!r}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(key)
        obj[key] = value
    return obj


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses an object with a repeated key (:class:`DuplicateKeyError`).

    Use it for every JSON a user wrote: with plain ``json.loads`` the last value of a repeated
    key wins without a word, and the first one is silently dropped.
    """
    return json.loads(text, object_pairs_hook=_unique_keys)


def _decoded_lines(path: Path, result: LoadResult) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of each non-blank line; report bad UTF-8 and blank lines."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            result.lines = number
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                text = raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError as exc:
                result._error(number, _utf8_message(raw, exc))
                continue
            if not text.strip():
                result.blank_lines += 1
                result.problems.append(Problem(path, number, "blank line (ignored)", "warning"))
                continue
            yield number, text


def _utf8_message(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"


def _detect_file_schema(objects: list[tuple[int, dict[str, Any]]]) -> str | None:
    votes = Counter(detect_schema(obj) for _, obj in objects[:_DETECT_SAMPLE])
    votes.pop(None, None)
    return votes.most_common(1)[0][0] if votes else None


def _validate(result: LoadResult, model: type[BaseModel], line: int, obj: dict[str, Any]) -> None:
    try:
        result.records.append(Record(line, model.model_validate(obj)))
    except ValidationError as exc:
        result._error(line, format_validation_error(exc))


def read_records(
    path: Path | str, schema: str | None = None, mapping: Mapping[str, str] | None = None
) -> LoadResult:
    """Read and validate a dataset file against ``schema`` (detected from the keys when ``None``).

    ``.jsonl`` (or any other suffix) is read as JSON Lines; ``.tsv`` or ``schema="qrels"`` as a
    BEIR qrels file; ``.csv`` with :func:`read_csv_records` (``mapping``: field -> column).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if schema == "qrels" or (schema is None and suffix == ".tsv"):
        return read_qrels(path)
    if suffix == ".csv":
        return read_csv_records(path, schema, mapping)
    if mapping:
        raise ValueError("a column mapping applies to CSV files only")
    if schema is not None:
        get_schema(schema)  # fail early on an unknown name
    result = LoadResult(path=path, schema=schema)
    objects: list[tuple[int, dict[str, Any]]] = []
    for number, text in _decoded_lines(path, result):
        try:
            obj = loads_json(text)
        except json.JSONDecodeError as exc:
            result._error(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        except DuplicateKeyError as exc:
            result._error(number, str(exc))
            continue
        if not isinstance(obj, dict):
            result._error(number, f"expected a JSON object, got {json_type(obj)}")
            continue
        objects.append((number, obj))
    if result.schema is None:
        result.schema = _detect_file_schema(objects)
    if result.schema is None:
        if objects:
            result._error(
                0,
                f"cannot tell the schema from the keys; {len(objects)} lines not "
                "validated (pass --schema, see `mentor data schemas`)",
            )
        return result._finish()
    model = get_schema(result.schema)
    for number, obj in objects:
        _validate(result, model, number, obj)
    return result._finish()


def read_qrels(path: Path | str) -> LoadResult:
    """Read a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, optional header line)."""
    path = Path(path)
    result = LoadResult(path=path, schema="qrels")
    first = True
    for number, text in _decoded_lines(path, result):
        cells = [c.strip() for c in text.split("\t")]
        if first and tuple(c.lower().replace("_", "-") for c in cells) == _QRELS_HEADER:
            first = False
            continue
        first = False
        if len(cells) != 3:
            result._error(
                number,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cells)}",
            )
            continue
        _validate(
            result, QrelRow, number, dict(zip(("query_id", "doc_id", "score"), cells, strict=True))
        )
    return result._finish()


def _field_kind(info: FieldInfo) -> Literal["list", "object", "scalar"]:
    annotation = info.annotation
    if get_origin(annotation) is Union or isinstance(annotation, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    origin = get_origin(annotation)
    if origin is list:
        return "list"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "object"
    return "scalar"


def _cell_value(cell: str, info: FieldInfo) -> Any:
    """A CSV cell as a field value: JSON for objects and ``[...]`` lists, else comma-split lists."""
    kind = _field_kind(info)
    if kind == "list" and not cell.lstrip().startswith("["):
        return [part.strip() for part in cell.split(",") if part.strip()]
    if kind in ("list", "object"):
        try:
            return json.loads(cell)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from None
    return cell


def _csv_columns(
    header: list[str], model: type[BaseModel], mapping: Mapping[str, str]
) -> tuple[dict[str, int], list[str]]:
    """Map each field key to a column index; return the mapping and any header problems."""
    keys = {info.alias or name: info for name, info in model.model_fields.items()}
    problems = [
        f"--map names unknown field '{f}' (fields: {', '.join(keys)})"
        for f in mapping
        if f not in keys
    ]
    lowered = {c.strip().lower(): i for i, c in enumerate(header)}
    columns: dict[str, int] = {}
    for key in keys:
        wanted = mapping.get(key, key)
        index = lowered.get(wanted.strip().lower())
        if index is not None:
            columns[key] = index
        elif key in mapping:
            problems.append(
                f"column '{wanted}' (for field '{key}') is not in the header "
                f"(columns: {', '.join(header)})"
            )
        elif keys[key].is_required():
            problems.append(
                f"no column for required field '{key}' (columns: {', '.join(header)}); "
                f"map one with --map {key}=COLUMN"
            )
    return columns, problems


def read_csv_records(
    path: Path | str, schema: str | None = None, mapping: Mapping[str, str] | None = None
) -> LoadResult:
    """Read a CSV file as records of ``schema``; ``mapping`` maps our field -> CSV column.

    Fields whose name equals a column (case-insensitively) are mapped automatically; columns not
    used by any field are kept as extra fields. Problems carry the CSV line the row starts on.
    """
    path = Path(path)
    mapping = dict(mapping or {})
    result = LoadResult(path=path, schema=schema)
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    bad_utf8 = _bad_utf8_lines(data, result)
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    header = next(reader, None)
    if header is None:
        result._error(0, "empty file: expected a header row")
        return result._finish()
    if result.schema is None:
        result.schema = detect_schema(dict.fromkeys([*header, *mapping]))
    if result.schema is None:
        result._error(
            1,
            f"cannot tell the schema from the columns ({', '.join(header)}); pass "
            "--schema or --map",
        )
        return result._finish()
    model = get_schema(result.schema)
    columns, header_problems = _csv_columns(header, model, mapping)
    if header_problems:
        for message in header_problems:
            result._error(1, message)
        return result._finish()
    extras = {i: c for i, c in enumerate(header) if i not in columns.values() and c}
    infos = {info.alias or name: info for name, info in model.model_fields.items()}
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result._error(start, f"unreadable CSV: {exc}")
            continue
        if bad_utf8 & set(range(start, reader.line_num + 1)):
            continue  # already reported as bad UTF-8
        if not any(cell.strip() for cell in row):
            result.blank_lines += 1
            result.problems.append(Problem(path, start, "blank row (ignored)", "warning"))
            continue
        if len(row) != len(header):
            result._error(start, f"expected {len(header)} columns, got {len(row)}")
            continue
        obj: dict[str, Any] = {c: row[i] for i, c in extras.items() if c not in infos}
        cell_errors: list[str] = []
        for key, index in columns.items():
            if not row[index].strip() and not infos[key].is_required():
                continue  # an empty optional cell means the field is absent
            try:
                obj[key] = _cell_value(row[index], infos[key])
            except ValueError as exc:
                cell_errors.append(f"field '{key}': {exc}")
        if cell_errors:
            result._error(start, "; ".join(cell_errors))
            continue
        _validate(result, model, start, obj)
    return result._finish()


def _bad_utf8_lines(data: bytes, result: LoadResult) -> set[int]:
    bad: set[int] = set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.add(number)
            result._error(number, _utf8_message(raw, exc))
    return bad


def dump_record(record: BaseModel) -> dict[str, Any]:
    """A record as the JSON object written to disk: aliases (``_id``), empty optionals left out."""
    data = record.model_dump(mode="json", by_alias=True)
    for name, info in type(record).model_fields.items():
        key = info.alias or name
        if data.get(key, ...) is None and info.default is None:
            del data[key]
    return data


def write_jsonl(path: Path | str, records: Iterable[BaseModel | Record | Mapping[str, Any]]) -> int:
    """Write records as JSON Lines atomically; return how many were written."""
    count = 0
    with atomic_path(Path(path)) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for item in records:
            obj = item.data if isinstance(item, Record) else item
            row = dump_record(obj) if isinstance(obj, BaseModel) else dict(obj)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
