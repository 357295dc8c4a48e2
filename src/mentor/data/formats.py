"""Other tools' record formats, recognised by their keys and turned into mentor's kinds.

Public SFT sets come in a handful of shapes; each is read as a mentor kind (:data:`FORMATS`):

* ShareGPT (``conversations`` of ``from``/``value`` turns, roles human/gpt/system) -> ``chat``;
* Alpaca (``instruction``, optional ``input``, ``output``) -> ``chat``, the input after the
  instruction, separated by a blank line;
* TRL prompt/completion -> ``chat``: strings become one user and one assistant turn; TRL's
  conversational form (``prompt`` and ``completion`` as message lists) is joined into one list;
* plain ``text`` -> ``text``; mentor's own kinds (OpenAI/TRL ``messages`` too) as they are.

:func:`detect_format` names the shape of one object; :func:`file_format` takes a vote over a
file and says, in :attr:`Detection.note`, what was chosen and why when records could be read more
than one way. :func:`to_kind` converts one object, with a ``ValueError`` naming the field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mentor.data.schemas import detect_schema, json_type

SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}
"""ShareGPT speakers (``from``) and the chat role each becomes."""


def _sharegpt(obj: dict[str, Any]) -> dict[str, Any]:
    turns = obj.get("conversations")
    if turns is None:
        raise ValueError("field 'conversations': missing")
    if not isinstance(turns, list):
        raise ValueError(f"field 'conversations': expected an array, got {json_type(turns)}")
    messages = []
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        messages.append({"role": "system", "content": obj["system"]})  # Axolotl's variant
    for i, turn in enumerate(turns):
        where = f"field 'conversations.{i}"
        if not isinstance(turn, dict):
            raise ValueError(f"{where}': expected an object, got {json_type(turn)}")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in SHAREGPT_ROLES:
            known = ", ".join(SHAREGPT_ROLES)
            shown = "missing" if speaker is None else f"unknown speaker {speaker!r}"
            raise ValueError(f"{where}.from': {shown} (known: {known})")
        messages.append(
            {"role": SHAREGPT_ROLES[speaker], "content": turn.get("value", turn.get("content"))}
        )
    rest = {k: v for k, v in obj.items() if k not in ("conversations", "system")}
    return {**rest, "messages": messages}


def _alpaca(obj: dict[str, Any]) -> dict[str, Any]:
    instruction, given, output = obj.get("instruction"), obj.get("input"), obj.get("output")
    for name, value in (("instruction", instruction), ("output", output)):
        if not isinstance(value, str):
            raise ValueError(f"field '{name}': expected a string, got {json_type(value)}")
    if given is not None and not isinstance(given, str):
        raise ValueError(f"field 'input': expected a string, got {json_type(given)}")
    user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
    # ``text`` in tatsu-lab/alpaca is the three fields rendered in Alpaca's prompt: a copy.
    rest = {k: v for k, v in obj.items() if k not in ("instruction", "input", "output", "text")}
    return {
        **rest,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}],
    }


def _prompt_completion(obj: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    for name, value in (("prompt", prompt), ("completion", completion)):
        if value is None:
            raise ValueError(f"field '{name}': missing")
    rest = {k: v for k, v in obj.items() if k not in ("prompt", "completion")}
    if isinstance(prompt, list) and isinstance(completion, list):
        return {**rest, "messages": [*prompt, *completion]}
    if isinstance(prompt, list) or isinstance(completion, list):
        raise ValueError(
            "fields 'prompt' and 'completion': both strings or both message lists, got "
            f"{json_type(prompt)} and {json_type(completion)}"
        )
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return {**rest, "messages": turns}


@dataclass(frozen=True)
class Format:
    """A record shape from another tool: the keys that mark it and the mentor kind it becomes."""

    name: str
    keys: str
    kind: str
    example: str
    """A public Hugging Face dataset in this shape."""
    convert: Callable[[dict[str, Any]], dict[str, Any]]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "sharegpt",
            "conversations: [{from, value}]",
            "chat",
            "anon8231489123/ShareGPT_Vicuna_unfiltered",
            _sharegpt,
        ),
        Format("alpaca", "instruction, input, output", "chat", "tatsu-lab/alpaca", _alpaca),
        Format(
            "prompt-completion",
            "prompt, completion (strings or message lists)",
            "chat",
            "trl-lib/tldr",
            _prompt_completion,
        ),
    )
}
"""Every foreign shape by name; mentor's own kinds (``chat``, ``text``, ...) need no converting."""


def _shapes(keys: set[str]) -> list[str]:
    """Every shape an object's keys fit, most specific first (the order ties are broken in)."""
    found = []
    if "messages" in keys:
        found.append("chat")
    if "conversations" in keys:
        found.append("sharegpt")
    if {"prompt", "completion"} <= keys:
        found.append("prompt-completion")
    if {"instruction", "output"} <= keys:
        found.append("alpaca")
    if {"chosen", "rejected"} <= keys:
        found.append("preference")
    kind = detect_schema({k: None for k in keys - {"messages"}})
    if kind is not None:
        found.append(kind)
    return found


TEXT_NOTE = (
    "records have a text and no label: read as plain text, trained on whole; for classification "
    "name the label (a `label` field, or --map label=COLUMN for a CSV)"
)
"""Said when text records carry other fields, one of which may be a label under another name."""


def detect_format(obj: dict[str, Any]) -> str | None:
    """The shape of one object: a :data:`FORMATS` name, ``"preference"`` or a mentor kind."""
    found = _shapes(set(obj))
    return found[0] if found else None


def kind_of(name: str) -> str:
    """The mentor kind a detected shape is read as (a mentor kind is its own)."""
    return FORMATS[name].kind if name in FORMATS else name


@dataclass(frozen=True)
class Detection:
    """What a file's records were read as: ``name`` (a format or a kind) and why, when unclear."""

    name: str | None
    note: str = ""

    @property
    def kind(self) -> str | None:
        return kind_of(self.name) if self.name else None

    @property
    def foreign(self) -> bool:
        return self.name in FORMATS


def file_format(objects: Sequence[dict[str, Any]]) -> Detection:
    """The shape most of ``objects`` have, with a note when records fit several shapes or differ."""
    votes: Counter[str] = Counter()
    overlaps: Counter[tuple[str, ...]] = Counter()
    for obj in objects:
        found = _shapes(set(obj))
        if found:
            votes[found[0]] += 1
        if len(found) > 1:
            overlaps[tuple(found)] += 1
    if not votes:
        return Detection(None)
    name = votes.most_common(1)[0][0]
    notes = []
    for shapes, n in overlaps.items():
        if shapes[0] == name:
            others = " or ".join(shapes[1:])
            notes.append(
                f"records also fitting {others}: {n}; read as {name}, which comes first in the "
                "order messages, conversations, prompt/completion, instruction/output, mentor's "
                "kinds"
            )
    if len(votes) > 1:
        tally = ", ".join(f"{k} {v}" for k, v in votes.most_common())
        notes.append(f"records differ ({tally}); read all as {name}, the most common")
    if name == "text" and any(set(obj) - {"text"} for obj in objects):
        notes.append(TEXT_NOTE)
    if name == "preference":
        notes.append(
            "chosen/rejected pairs are preference data (DPO), which mentor does not train on"
        )
    return Detection(name, "; ".join(notes))


def _chat_to_qa(obj: dict[str, Any]) -> dict[str, Any]:
    """A converted single-exchange conversation as a qa record (what the bakeoff scores on)."""
    messages = obj["messages"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles != ["user", "assistant"]:
        got = " > ".join(map(str, roles))
        raise ValueError(f"a qa record is one user turn and one assistant turn, got {got}")
    rest = {k: v for k, v in obj.items() if k != "messages"}
    return {**rest, "question": messages[0]["content"], "answer": messages[1]["content"]}


CONVERTS_TO: tuple[str, ...] = ("chat", "qa")
"""The kinds a foreign shape can be read as: chat, and qa for single exchanges (the bakeoff)."""


def to_kind(name: str, obj: dict[str, Any], kind: str = "chat") -> dict[str, Any]:
    """One object of shape ``name`` as an object of ``kind`` (one of :data:`CONVERTS_TO`), with
    a ``ValueError`` naming the field when it cannot be."""
    if name not in FORMATS:
        return obj
    chat = FORMATS[name].convert(obj)
    return _chat_to_qa(chat) if kind == "qa" else chat


def formats_docs() -> str:
    """Markdown for ``mentor data schemas``: the other tools' shapes read, from :data:`FORMATS`."""
    rows = [f"| {f.name} | {f.keys} | {f.kind} | {f.example} |" for f in FORMATS.values()]
    return "\n".join(
        [
            "",
            "## Other tools' formats",
            "",
            "Read from JSONL, CSV, Parquet, Arrow, a folder of them or `hf:ORG/NAME[:split]`, "
            "detected from the keys and converted on the way in (`mentor data check` names the "
            "format found). Message content may be a list of text parts; they are joined.",
            "",
            "| format | keys | read as | public example |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
