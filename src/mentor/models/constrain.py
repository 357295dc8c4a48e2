"""Constrained decoding: the tokens a reply may take next so that it stays valid JSON.

OpenAI's ``response_format`` (``json_object``, ``json_schema``) asks for a reply that parses,
and matches a schema. Asking the model nicely is not enough for a small model, so at each step
the engine masks every token that would break the JSON before it picks one. The walk over the
JSON grammar and the tokenizer's prefix tree is lm-format-enforcer's (the library vLLM offers as
one of its guided-decoding backends): a character-level parser of the schema, advanced with the
text of each token. Its own ``transformers`` glue does not import under transformers 5, so the
tokenizer table is built here, the way that glue builds it.

    allowed = JsonConstraint.build(tokenizer, '{"type": "object"}', stop_ids=[eos])
    next_ids = allowed(prompt + generated)  # ids the next token may be
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ANY_OBJECT = '{"type": "object"}'
"""The schema of ``response_format: {"type": "json_object"}``: any JSON object."""
MAX_WHITESPACE = 2
"""Whitespace characters allowed in a row: a weak model otherwise pads JSON with blanks until
it runs out of tokens (the library's default is 12)."""

_TABLES: dict[int, Any] = {}  # id(tokenizer) -> lm-format-enforcer's tokenizer data
_TABLES_LOCK = threading.Lock()


def _tokenizer_table(tokenizer: PreTrainedTokenizerBase, stop_ids: Sequence[int]) -> Any:
    """Every regular token's text as it reads after another token (its leading space kept),
    built once per tokenizer: a few seconds for a 50k vocabulary."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    with _TABLES_LOCK:
        if id(tokenizer) in _TABLES:
            return _TABLES[id(tokenizer)]
        size = len(tokenizer)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for i in range(size):
            if i in special:
                continue
            after_zero = tokenizer.decode([zero, i])[1:]
            alone = tokenizer.decode([i])
            regular.append((i, after_zero, len(after_zero) > len(alone)))

        def decode(ids: list[int]) -> str:
            return str(tokenizer.decode(ids)).rstrip("\ufffd")  # a partial character waits

        table = TokenEnforcerTokenizerData(regular, decode, list(stop_ids), False, size)
        _TABLES[id(tokenizer)] = table
        return table


def schema_error(schema: str) -> str | None:
    """Why lm-format-enforcer cannot enforce ``schema`` (JSON text); None if it can."""
    from lmformatenforcer import JsonSchemaParser

    try:
        JsonSchemaParser(json.loads(schema))
    except Exception as exc:  # the library's own pydantic errors, among others
        return f"the JSON schema cannot be enforced: {str(exc).splitlines()[0]}"
    return None


class JsonConstraint:
    """The ids the next token may take for the reply to stay a prefix of JSON matching a schema
    (an end-of-sequence id only once the JSON is complete)."""

    def __init__(self, enforcer: Any) -> None:
        self._enforcer = enforcer

    @classmethod
    def build(
        cls, tokenizer: PreTrainedTokenizerBase, schema: str, *, stop_ids: Sequence[int]
    ) -> JsonConstraint:
        """``schema`` is JSON text (a JSON schema); ValueError if the library cannot take it."""
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

        if problem := schema_error(schema):
            raise ValueError(problem)
        table = _tokenizer_table(tokenizer, stop_ids)
        parser = JsonSchemaParser(json.loads(schema))
        enforcer = TokenEnforcer(table, parser)
        # the enforcer gives its parser a config of its own (the tokenizer's alphabet): ours on top
        parser.config = CharacterLevelParserConfig(
            alphabet=table.tokenizer_alphabet, max_consecutive_whitespaces=MAX_WHITESPACE
        )
        return cls(enforcer)

    def __call__(self, sequence: Sequence[int]) -> list[int]:
        """Allowed next ids after ``sequence`` (the prompt, then the tokens generated so far;
        the first call's sequence is taken as the prompt)."""
        return list(self._enforcer.get_allowed_tokens(list(sequence)).allowed_tokens)
