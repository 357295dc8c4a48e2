"""Reading and writing dataset files (JSONL, BEIR qrels TSV, CSV, Parquet, Arrow, a folder of
them, a Hugging Face dataset ``hf:ORG/NAME[:split]``) with every bad line or row reported.

Records in another tool's shape (ShareGPT, Alpaca, TRL prompt/completion) are converted to
mentor's kinds on the way in (:mod:`mentor.data.formats`); :attr:`LoadResult.format` names the
shape found. Problems in a Parquet or Arrow file name the row (``file:row N``, counted from 1).

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
import os
import types
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mentor.data.formats import CONVERTS_TO, TEXT_NOTE, file_format, to_kind
from mentor.data.schemas import QrelRow, detect_schema, get_schema, json_type
from mentor.utils.fs import atomic_path

Severity = Literal["error", "warning"]
Unit = Literal["line", "row"]
HUB_PREFIX = "hf:"
"""What starts a Hugging Face dataset id given where a path is expected."""
TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
DATA_SUFFIXES: tuple[str, ...] = (*TABLE_SUFFIXES, ".jsonl", ".csv")
"""The files a folder given as data is read from."""
_MAX_ERRORS_PER_LINE = 5
_DETECT_SAMPLE = 1000
_QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class Problem:
    """Something wrong with one line (or table row) of a file (``line`` 0: the file as a whole)."""

    path: Path
    line: int
    message: str
    severity: Severity = "error"
    unit: Unit = "line"

    def __str__(self) -> str:
        where = f"{self.path}" if not self.line else f"{self.path}:{self.line}"
        if self.line and self.unit == "row":
            where = f"{self.path}:row {self.line}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
            "unit": self.unit,
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
    ``format`` is the shape the records came in (``"sharegpt"``, ``"alpaca"``, or ``schema`` for
    mentor's own), ``format_note`` why, when records could be read more than one way.
    """

    path: Path
    schema: str | None
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    blank_lines: int = 0
    lines: int = 0
    unit: Unit = "line"
    format: str | None = None
    format_note: str = ""

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
        self.problems.append(Problem(self.path, line, message, unit=self.unit))

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


def _validate(
    result: LoadResult, model: type[BaseModel], line: int, obj: dict[str, Any], prefix: str = ""
) -> None:
    try:
        result.records.append(Record(line, model.model_validate(obj)))
    except ValidationError as exc:
        result._error(line, prefix + format_validation_error(exc))


def read_records(
    path: Path | str, schema: str | None = None, mapping: Mapping[str, str] | None = None
) -> LoadResult:
    """Read and validate a dataset against ``schema`` (detected from the keys when ``None``).

    ``path`` is a file, a folder of data files (:data:`DATA_SUFFIXES`, read in name order; a
    ``datasets`` ``save_to_disk`` folder is one) or a Hugging Face dataset id ``hf:ORG/NAME``
    with an optional ``:split`` (default ``train``). By suffix: ``.parquet`` and ``.arrow``
    are tables, ``.tsv`` (or ``schema="qrels"``) a BEIR qrels file, ``.csv`` is read with
    :func:`read_csv_records` (``mapping``: field -> column), a ``.json`` file holding an array
    as its records, anything else as JSON Lines.
    """
    if str(path).startswith(HUB_PREFIX):
        return _read_hub(str(path), schema)
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
    if path.is_dir():
        return _read_folder(path, schema)
    if suffix in TABLE_SUFFIXES:
        result = LoadResult(path=path, schema=schema, unit="row")
        try:
            rows = _table_rows(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            result._error(0, f"cannot read as {suffix[1:]}: {exc}")
            return result._finish()
        return _validate_objects(result, list(enumerate(rows, start=1)))
    if suffix == ".json" and _starts_with(path, b"["):
        return _read_json_array(path, schema)
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
    return _validate_objects(result, objects)


def _starts_with(path: Path, prefix: bytes) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(prefix)


def _read_json_array(path: Path, schema: str | None) -> LoadResult:
    """A ``.json`` file holding one array of records (``alpaca_data.json``, ShareGPT dumps);
    problems name the entry as ``row N``, counted from 1."""
    result = LoadResult(path=path, schema=schema, unit="row")
    try:
        items = loads_json(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except (json.JSONDecodeError, DuplicateKeyError, UnicodeDecodeError) as exc:
        result._error(0, f"invalid JSON: {exc}")
        return result._finish()
    objects = []
    for number, obj in enumerate(items, start=1):
        if isinstance(obj, dict):
            objects.append((number, obj))
        else:
            result._error(number, f"expected a JSON object, got {json_type(obj)}")
    result.lines = len(items)
    return _validate_objects(result, objects)


def _validate_objects(result: LoadResult, objects: list[tuple[int, dict[str, Any]]]) -> LoadResult:
    """Detect the shape of parsed objects, convert a foreign one, validate against the schema."""
    result.lines = result.lines or len(objects)
    found = file_format([obj for _, obj in objects[:_DETECT_SAMPLE]])
    if result.schema is None:
        result.schema = found.kind
        result.format, result.format_note = found.name, found.note
    elif found.foreign and result.schema in CONVERTS_TO:
        result.format, result.format_note = found.name, found.note
    else:
        result.format = result.schema
    if result.schema == "preference":
        result.schema = None
        result._error(0, found.note)
        return result._finish()
    if result.schema is None:
        if objects:
            what = "rows" if result.unit == "row" else "lines"
            result._error(
                0,
                f"cannot tell the schema from the keys; {len(objects)} {what} not "
                "validated (pass --schema, see `mentor data schemas`)",
            )
        return result._finish()
    model = get_schema(result.schema)
    prefix = f"read as {result.schema}: " if result.format != result.schema else ""
    for number, obj in objects:
        if found.name is not None and found.foreign and result.format == found.name:
            try:
                obj = to_kind(found.name, obj, result.schema)
            except ValueError as exc:
                result._error(number, f"{found.name}: {exc}")
                continue
        _validate(result, model, number, obj, prefix)
    return result._finish()


def _table_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file or an Arrow file (IPC file or stream, as ``datasets`` writes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            table = pa.ipc.open_stream(source).read_all()
    rows = table.to_pylist()
    return rows


def _folder_files(folder: Path) -> list[Path]:
    """The data files of a folder, in name order; a ``save_to_disk`` DatasetDict gives ``train``."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if "train" not in splits:
            raise ValueError(
                f"{folder}: a dataset with splits {', '.join(splits)}; give one folder"
            )
        folder = folder / "train"
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not p.name.startswith("cache-")
    )
    if not files:
        raise ValueError(f"{folder}: no data files ({', '.join(DATA_SUFFIXES)}) in the folder")
    suffixes = sorted({p.suffix.lower() for p in files})
    if len(suffixes) > 1:
        raise ValueError(f"{folder}: data files of several types ({', '.join(suffixes)}); keep one")
    return files


def _read_folder(folder: Path, schema: str | None) -> LoadResult:
    """Every data file of a folder as one dataset, each read with the first file's schema."""
    files = _folder_files(folder)
    first = read_records(files[0], schema)
    merged = LoadResult(folder, first.schema, unit=first.unit, format=first.format)
    merged.format_note = first.format_note
    for part in [first, *(read_records(f, first.schema) for f in files[1:])]:
        merged.records += part.records
        merged.problems += part.problems
        merged.blank_lines += part.blank_lines
        merged.lines += part.lines
    return merged


def parse_hub_id(text: str) -> tuple[str, str]:
    """``hf:ORG/NAME[:split]`` as ``(ORG/NAME, split)``; the split defaults to ``train`` and may
    carry ``datasets``' slice syntax (``train[:1000]``)."""
    rest = text.removeprefix(HUB_PREFIX)
    name, sep, split = rest.partition(":")
    if not name.strip() or any(c.isspace() for c in name) or name.startswith("/"):
        raise ValueError(f"{text!r}: expected a Hugging Face dataset id, hf:ORG/NAME[:split]")
    if sep and not split.strip():
        raise ValueError(f"{text!r}: empty split after ':' (for example hf:{name}:train)")
    return name, split or "train"


def _read_hub(text: str, schema: str | None) -> LoadResult:
    """A Hugging Face dataset split through ``datasets`` (downloaded once, then from its cache)."""
    name, split = parse_hub_id(text)
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        raise ValueError(
            f"{text}: reading a Hugging Face dataset needs the `datasets` library: "
            "pip install 'mentor[hf]'"
        ) from None
    try:
        table = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many kinds: all mean "could not load it"
        offline = any(os.environ.get(v, "") not in ("", "0") for v in _OFFLINE_VARS)
        hint = (
            f" ({' or '.join(_OFFLINE_VARS)} is set: only a dataset already in the local "
            "cache can be loaded)"
            if offline
            else ""
        )
        raise ValueError(
            f"cannot load Hugging Face dataset {name!r}, split {split!r}: {exc}{hint}"
        ) from None
    if schema is not None:
        get_schema(schema)
    result = LoadResult(path=Path(text), schema=schema, unit="row")
    return _validate_objects(result, list(enumerate(table.to_list(), start=1)))


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


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
        if result.schema is None and not mapping and file_format([dict.fromkeys(header)]).foreign:
            return _validate_objects(result, _csv_objects(reader, header, result, bad_utf8))
    result.format = result.schema
    if result.schema == "text" and len(header) > 1 and not mapping:
        result.format_note = TEXT_NOTE
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
    for start, row in _csv_rows(reader, result, bad_utf8):
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


def _csv_objects(
    reader: Any, header: list[str], result: LoadResult, bad_utf8: set[int]
) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a CSV in another tool's shape (Alpaca, prompt/completion) as plain objects."""
    objects = []
    names = [c.strip() for c in header]
    for start, row in _csv_rows(reader, result, bad_utf8):
        if len(row) != len(names):
            result._error(start, f"expected {len(names)} columns, got {len(row)}")
            continue
        objects.append((start, dict(zip(names, row, strict=True))))
    return objects


def _csv_rows(
    reader: Any, result: LoadResult, bad_utf8: set[int]
) -> Iterator[tuple[int, list[str]]]:
    """``(line the row starts on, cells)`` of each non-blank row; unreadable rows reported, rows
    on a line already reported as bad UTF-8 skipped."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            result._error(start, f"unreadable CSV: {exc}")
            continue
        if bad_utf8 & set(range(start, reader.line_num + 1)):
            continue
        if not any(cell.strip() for cell in row):
            result.blank_lines += 1
            result.problems.append(Problem(result.path, start, "blank row (ignored)", "warning"))
            continue
        yield start, row


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
