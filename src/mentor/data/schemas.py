"""The record kinds mentor reads and writes, as pydantic models whose descriptions are the docs.

Every dataset file is JSON Lines (one JSON object per line) in one of these kinds:

* ``chat`` - OpenAI-style conversations (``messages``), what fine-tuning consumes;
* ``qa`` - question/answer pairs, optionally grounded in a ``context`` or in corpus ``doc_ids``;
* ``classification`` - a ``text`` and its ``label``;
* ``corpus`` and ``query`` - BEIR ``corpus.jsonl`` / ``queries.jsonl`` rows, what RAG indexes;
* ``text`` - plain text, trained on whole (continued pre-training);
* ``qrels`` - BEIR relevance judgements, a tab-separated file (one :class:`QrelRow` per line).

Fields a record carries beyond the documented ones are kept as they are. :data:`SCHEMAS` is the
one registry of kinds; :func:`detect_schema` guesses a kind from an object's keys and
:func:`schema_docs` renders this module as markdown (``mentor data schemas``).
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type (``dict`` -> ``"object"``), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number"}
    return names.get(type(value), type(value).__name__)


def _int_to_str(value: object) -> object:
    """Accept integers where a string id or label is expected (``7`` becomes ``"7"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string or integer, got {json_type(value)}")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
"""A string with at least one non-whitespace character."""

Identifier = Annotated[str, BeforeValidator(_int_to_str), AfterValidator(_non_empty)]
"""A non-empty string id; integers are accepted and turned into strings."""


class _Record(BaseModel):
    """Base of every record kind: unknown fields are allowed and kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def join_text_parts(value: object) -> object:
    """Content as a list of parts (the ``openai`` client's and LangChain's form) as one string.

    ``[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]`` becomes ``"a\nb"`` (parts
    joined by a newline, as vLLM does); a part of another type (an image, audio) is refused,
    since no model mentor trains reads it. Anything but a list is returned as it is.
    """
    if not isinstance(value, list):
        return value
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            what = f"type {kind!r}" if kind is not None else json_type(part)
            raise ValueError(f"part {i}: only text parts are read, got {what}")
        texts.append(part["text"])
    return "\n".join(texts)


class ChatMessage(_Record):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant", "tool"] = Field(
        description="Who speaks: one of system, user, assistant, tool."
    )
    content: Annotated[NonEmptyStr, BeforeValidator(join_text_parts)] = Field(
        description="What is said; must not be empty. A list of text parts "
        '(`[{"type": "text", "text": "..."}]`) is joined into one string by newlines; '
        "other part types are refused."
    )

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: object) -> object:
        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return value


class ChatRecord(_Record):
    """A conversation in the OpenAI chat format; what supervised fine-tuning trains on."""

    messages: list[ChatMessage] = Field(
        description="The turns in order, each an object with `role` and `content`; at least one "
        "`user` and one `assistant` turn."
    )

    @field_validator("messages")
    @classmethod
    def _has_user_and_assistant(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        roles = {m.role for m in value}
        missing = [r for r in ("user", "assistant") if r not in roles]
        if missing:
            raise ValueError(f"needs at least one {' and one '.join(missing)} message")
        return value


class QARecord(_Record):
    """A question with its reference answer; what RAG and distillation are evaluated on."""

    question: NonEmptyStr = Field(description="The question, as a user would ask it.")
    answer: NonEmptyStr = Field(description="The reference answer.")
    context: str | None = Field(
        default=None, description="Optional passage the answer is grounded in."
    )
    doc_ids: list[Identifier] | None = Field(
        default=None, description="Optional ids of the corpus documents that hold the answer."
    )
    id: Identifier | None = Field(default=None, description="Optional id of this example.")


class ClassificationRecord(_Record):
    """A text and the label it belongs to."""

    text: NonEmptyStr = Field(description="The text to classify.")
    label: Identifier = Field(
        description="The class, a string or an integer (integers are stored as strings)."
    )


class CorpusRecord(_Record):
    """One document of a BEIR corpus (`corpus.jsonl`); what RAG retrieves from."""

    id: Identifier = Field(alias="_id", description="Unique document id (JSON key `_id`).")
    title: str = Field(default="", description="Document title; may be empty.")
    text: NonEmptyStr = Field(description="Document body.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Optional free-form metadata object."
    )


class QueryRecord(_Record):
    """One query of a BEIR query file (`queries.jsonl`)."""

    id: Identifier = Field(alias="_id", description="Unique query id (JSON key `_id`).")
    text: NonEmptyStr = Field(description="The query text.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Optional free-form metadata object."
    )


class TextRecord(_Record):
    """Plain text a causal LM is trained on whole (continued pre-training, e.g. TinyStories)."""

    text: NonEmptyStr = Field(description="The text; every token of it is trained on.")


class QrelRow(_Record):
    """One BEIR relevance judgement: a line `query-id<TAB>corpus-id<TAB>score` of a qrels TSV."""

    query_id: Identifier = Field(description="Id of a query in `queries.jsonl`.")
    doc_id: Identifier = Field(description="Id of a document in `corpus.jsonl`.")
    score: int = Field(description="Graded relevance, an integer (0 = not relevant).")


SCHEMAS: dict[str, type[BaseModel]] = {
    "chat": ChatRecord,
    "qa": QARecord,
    "classification": ClassificationRecord,
    "corpus": CorpusRecord,
    "query": QueryRecord,
    "text": TextRecord,
    "qrels": QrelRow,
}
"""Every record kind by name; the names are what ``--schema`` accepts."""

JSONL_SCHEMAS: tuple[str, ...] = ("chat", "qa", "classification", "corpus", "query", "text")
"""The kinds stored as JSON Lines (``qrels`` is a TSV)."""

EXAMPLES: dict[str, str] = {
    "chat": '{"messages": [{"role": "system", "content": "You are Tidepool support."}, '
    '{"role": "user", "content": "How do I archive a board?"}, '
    '{"role": "assistant", "content": "Open the board menu and choose Archive."}]}',
    "qa": '{"id": "q1", "question": "How do I archive a board?", '
    '"answer": "Open the board menu and choose Archive.", "doc_ids": ["kb-12"]}',
    "classification": '{"text": "I was charged twice this month", "label": "billing"}',
    "corpus": '{"_id": "kb-12", "title": "Archiving boards", '
    '"text": "Archived boards are read-only and can be restored."}',
    "query": '{"_id": "q1", "text": "how to archive a board"}',
    "text": '{"text": "Archived boards are read-only. Open the board menu to restore one."}',
    "qrels": "query-id\tcorpus-id\tscore\nq1\tkb-12\t1",
}


def schema_name(model: BaseModel | type[BaseModel]) -> str:
    """The registry name of a record model (``QARecord`` -> ``"qa"``)."""
    cls = model if isinstance(model, type) else type(model)
    for name, registered in SCHEMAS.items():
        if issubclass(cls, registered):
            return name
    raise KeyError(f"{cls.__name__} is not a registered record kind")


def get_schema(name: str) -> type[BaseModel]:
    """The model for a schema name; ``ValueError`` naming the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMAS)}") from None


LABEL_NAMES: tuple[str, ...] = ("label", "category", "intent", "class")
"""Keys that make a record with a ``text`` classification data rather than plain text (the
label columns ``mentor finetune`` maps in a CSV)."""


def detect_schema(obj: dict[str, Any]) -> str | None:
    """Guess the record kind of one JSON object from its keys; ``None`` when nothing fits."""
    keys = set(obj)
    if "messages" in keys:
        return "chat"
    if keys & {"question", "answer"}:
        return "qa"
    if "_id" in keys:
        return "corpus" if "title" in keys else "query"
    if keys & {"query_id", "doc_id"}:
        return "qrels"
    if "text" in keys and not keys & set(LABEL_NAMES):
        return "text"
    if keys & {"text", "label"}:
        return "classification"
    return None


def _is_identifier(metadata: Sequence[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is _int_to_str for m in metadata)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0]) if not _is_identifier(args[1:]) else "str \\| int"
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object (see below)"
    return getattr(annotation, "__name__", str(annotation))


def _field_table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        key = info.alias or name
        type_name = _type_name(info.annotation)
        if _is_identifier(info.metadata):
            type_name = type_name.replace("str", "str \\| int", 1)
        required = "yes" if info.is_required() else "no"
        rows.append(f"| `{key}` | {type_name} | {required} | {info.description or ''} |")
    return rows


def schema_docs() -> str:
    """Markdown documentation of every record kind, rendered from the models above."""
    out = [
        "# mentor dataset schemas",
        "",
        "Dataset files are JSON Lines: one JSON object per line, UTF-8. Fields beyond the ones "
        "listed are kept as they are. `mentor data check` validates a file and reports every bad "
        "line as `file:line: what is wrong`.",
    ]
    for name, model in SCHEMAS.items():
        out += ["", f"## `{name}` - {model.__name__}", "", (model.__doc__ or "").strip(), ""]
        out += _field_table(model)
        if model is ChatRecord:
            out += ["", "Each message:", "", *_field_table(ChatMessage)]
        if name == "qrels":
            out += [
                "",
                "A tab-separated file, one judgement per line; an optional first line "
                "`query-id<TAB>corpus-id<TAB>score` is a header.",
            ]
        out += ["", "Example:", "", "```", EXAMPLES[name], "```"]
    out += [
        "",
        "## CSV",
        "",
        "Any kind can be imported from CSV with `mentor data convert in.csv out.jsonl --to KIND` "
        "(`check` and `split` read CSV too). Columns named like a field are used as that field; "
        "`--map field=column,...` maps other names (for example `--map label=category`); other "
        "columns are kept as extra fields. List fields (`doc_ids`) take a JSON array or "
        "comma-separated values; object fields take JSON. Errors name the line a row starts on.",
    ]
    return "\n".join(out) + "\n"


def example_json(name: str) -> dict[str, Any]:
    """The documented example of a JSONL kind, parsed (used by tests to keep the docs honest)."""
    parsed: dict[str, Any] = json.loads(EXAMPLES[name])
    return parsed
