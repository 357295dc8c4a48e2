"""The OpenAI request bodies the server accepts, validated field by field.

A bad field gets a 400 that names it (``messages.1.role``) in OpenAI's error shape, through the
handler in :mod:`mentor.serve.app`. Every field OpenAI defines for chat completions, completions
and embeddings is listed in :data:`OPENAI_FIELDS` with what happens to it here: ``honoured``, or
``refused`` unless it holds the value that changes nothing (``best_of: 1``, ``store: false``,
``suffix: ""``), in which case the request gets a 400 naming it rather than a reply
that pretends. Identifiers that change no reply (``user``, ``metadata``) count as honoured.

Fields OpenAI does not define are refused too (``extra="forbid"``: a 400 naming the field),
except inside messages, where clients echo back whole reply objects (``refusal``, ``annotations``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mentor.models.constrain import ANY_OBJECT

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
"""The seeds ``torch.Generator.manual_seed`` takes."""
MAX_CHOICES = 16
"""The most choices (``n``) one request may ask for."""
MAX_PROMPTS = 64
"""The most prompts one completions request may carry (lm-evaluation-harness batches them)."""
MAX_TOP_LOGPROBS = 20
"""OpenAI's cap on ``top_logprobs`` (chat); completions' ``logprobs`` gets the same here."""
MAX_LOGIT_BIAS = 300
"""OpenAI's cap on the entries of ``logit_bias``."""
BIAS_LIMIT = 100.0
"""A ``logit_bias`` value lies in [-100, 100] (OpenAI's range)."""

_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "functions": (None, []),
    "function_call": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
    "verbosity": (None,),
    "parallel_tool_calls": (None, True),
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "dimensions": (None,),
}
"""Fields not honoured here, with the values that ask for nothing they would change."""

_WHY = {
    "functions": "the legacy functions field is not supported; use tools",
    "function_call": "the legacy function_call field is not supported; use tool_choice",
    "parallel_tool_calls": "the model may call several tools at once; false is not supported",
    "best_of": "only best_of 1 is supported",
    "suffix": "suffix (insertion) is not supported",
    "dimensions": "this server returns the embedder's own dimensions only",
}

Handling = Literal["honoured", "refused"]


class BadBiasError(ValueError):
    """A ``logit_bias`` key that names no token id; the server answers 400 naming it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def _table(honoured: str, refused: str) -> dict[str, Handling]:
    return {
        **dict.fromkeys(honoured.split(), "honoured"),
        **dict.fromkeys(refused.split(), "refused"),
    }


OPENAI_FIELDS: dict[str, dict[str, Handling]] = {
    "chat": _table(
        """messages model frequency_penalty logprobs max_completion_tokens max_tokens metadata n
        presence_penalty response_format seed stop stream stream_options temperature tool_choice
        tools top_logprobs top_p user safety_identifier prompt_cache_key logit_bias""",
        """audio function_call functions modalities parallel_tool_calls prediction
        reasoning_effort service_tier store verbosity web_search_options""",
    ),
    "completions": _table(
        """model prompt echo frequency_penalty logprobs max_tokens n presence_penalty seed stop
        stream stream_options temperature top_p user logit_bias""",
        "best_of suffix",
    ),
    "embeddings": _table("input model encoding_format user", "dimensions"),
}
"""Every request field of OpenAI's chat completions, completions and embeddings APIs, and whether
this server honours it or refuses it (a 400 naming it unless it holds a neutral value)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator(*_NEUTRAL, check_fields=False)
    @classmethod
    def _not_honoured(cls, value: Any, info: ValidationInfo) -> Any:
        name = str(info.field_name)
        # by type too: 0 == False, yet logprobs 0 asks for log probabilities in completions
        if not any(type(value) is type(n) and value == n for n in _NEUTRAL[name]):
            raise ValueError(_WHY.get(name, f"{name} is not supported by this server"))
        return value


class _Part(BaseModel):
    """Inside messages: fields of reply objects that clients send back are ignored."""

    model_config = ConfigDict(extra="ignore")


class ContentPart(_Part):
    type: Literal["text"]
    text: str


class FunctionCall(_Part):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Part):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Part):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates take it (``developer`` is the new name of system)."""
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out


_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def schema_problem(schema: Any, where: str = "parameters") -> str | None:
    """What makes ``schema`` no valid JSON schema, in the parts tool specs use; None if nothing."""
    if not isinstance(schema, dict):
        return f"{where}: a schema is a JSON object"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if not all(isinstance(k, str) and k in _JSON_TYPES for k in kinds):
        return f"{where}.type: {kind!r} is no JSON schema type"
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return f"{where}.properties: expected an object of schemas"
    for name, sub in properties.items():
        if problem := schema_problem(sub, f"{where}.properties.{name}"):
            return problem
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return f"{where}.required: expected a list of property names"
    if "items" in schema and (problem := schema_problem(schema["items"], f"{where}.items")):
        return problem
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{where}.enum: expected a list"
    return None


class FunctionSpec(_Part):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value and (problem := schema_problem(value)):
            raise ValueError(f"not a valid JSON schema ({problem})")
        return value


class Tool(_Part):
    type: Literal["function"]
    function: FunctionSpec


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = Field(default=None, description="Always enforced here.")

    @field_validator("json_schema")
    @classmethod
    def _enforceable(cls, value: dict[str, Any]) -> dict[str, Any]:
        from mentor.models.constrain import schema_error

        if value and (problem := schema_problem(value, "schema")):
            raise ValueError(f"not a valid JSON schema ({problem})")
        if problem := schema_error(json.dumps(value)):
            raise ValueError(problem)
        return value


class ResponseFormat(BaseModel):
    """``text``, ``json_object`` (any JSON object) or ``json_schema``: the reply is constrained
    token by token (:mod:`mentor.models.constrain`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @field_validator("json_schema")
    @classmethod
    def _only_for_json_schema(
        cls, value: JsonSchemaFormat | None, info: ValidationInfo
    ) -> JsonSchemaFormat | None:
        if value is not None and info.data.get("type") != "json_schema":
            raise ValueError("only with type json_schema")
        return value

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def schema_text(self) -> str | None:
        """The JSON schema to enforce, as JSON text (None: free text)."""
        if self.type == "text":
            return None
        if self.type == "json_object" or self.json_schema is None:
            return ANY_OBJECT
        return json.dumps(self.json_schema.json_schema)


class StreamOptions(_Part):
    include_usage: bool = False


class _Sampling(_Request):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, le=10.0, description="vLLM's extension: divides repeated logits."
    )
    n: int = Field(
        default=1, ge=1, le=MAX_CHOICES, description="Independent samples (choices) to return."
    )
    ignore_eos: bool = Field(
        default=False, description="vLLM's extension: generate max_tokens whatever the model says."
    )
    user: str | None = None
    logit_bias: (
        dict[str, Annotated[float, Field(ge=-BIAS_LIMIT, le=BIAS_LIMIT, allow_inf_nan=False)]]
        | None
    ) = Field(
        default=None,
        max_length=MAX_LOGIT_BIAS,
        description="Token id (as a string) -> bias in [-100, 100] added to its logit before "
        "each pick; log probabilities stay the model's own.",
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def biases(self) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as (token id, bias) pairs; a key that is no token id raises
        :class:`BadBiasError` naming it (the vocabulary is the engine's to check)."""
        pairs = []
        for key, bias in (self.logit_bias or {}).items():
            if not key.isascii() or not key.isdigit():
                raise BadBiasError(key, f"{key!r} is not a token id (a non-negative integer)")
            pairs.append((int(key), bias))
        return tuple(pairs)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto"] | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    logprobs: bool | None = Field(
        default=None, description="Return each generated token's log-probability."
    )
    top_logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Most likely alternatives per token (needs logprobs: true).",
    )
    response_format: ResponseFormat | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    web_search_options: Any = None
    verbosity: str | None = None
    parallel_tool_calls: bool | None = None
    service_tier: str | None = None
    store: bool | None = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            offered = {t.function.name for t in info.data.get("tools") or []}
            function = value.get("function")
            named = function.get("name") if isinstance(function, dict) else None
            if named not in offered:
                raise ValueError(f"names function {named!r}, which is not in tools")
            raise ValueError("forcing one function is not supported; use auto or none")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return value

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def top(self) -> int | None:
        """Alternatives per token to record (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def json_schema(self) -> str | None:
        return self.response_format.schema_text() if self.response_format else None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, texts, one prompt's token ids or several prompts' (each prompt gets "
        "n choices, in order)."
    )
    max_tokens: int | None = Field(default=16, ge=0, description="0 only with echo.")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        strict=True,
        description="Return each token's log-probability and this many most likely ones.",
    )
    echo: bool = Field(default=False, validate_default=True)  # checked with max_tokens 0
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        items: list[Any] = [value] if isinstance(value, str) else list(value)
        if all(isinstance(i, int) for i in items) and items:
            items = [items]
        if not items:
            raise ValueError("no prompt")
        if len(items) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if any(not item for item in items):
            raise ValueError("a prompt is empty")
        return value

    @field_validator("echo")
    @classmethod
    def _nothing_to_write(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and info.data.get("max_tokens") == 0:
            raise ValueError("max_tokens 0 (write nothing) needs echo: true")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text or token ids."""
        items: list[Any] = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        return [items] if all(isinstance(i, int) for i in items) else items

    def text(self) -> str:
        """The first prompt as text, for the request log (token ids as their numbers)."""
        first = self.prompts()[0]
        return first if isinstance(first, str) else " ".join(map(str, first))

    def top(self) -> int | None:
        return self.logprobs

    def json_schema(self) -> str | None:
        return None  # OpenAI's completions take no response_format


class EmbeddingRequest(_Request):
    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(
        min_length=1,
        description="A text, texts, one text's token ids, or several texts' token ids (the "
        "embedder's own vocabulary).",
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """One entry per vector to return: a text or a list of token ids."""
        if isinstance(self.input, str):
            return [self.input]
        items: list[Any] = list(self.input)
        if all(isinstance(i, int) for i in items):
            return [items]
        return items


class RetrieveRequest(_Request):
    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        default=None, description="Default: the index's tuned setting (`mentor rag tune`)."
    )
    filters: dict[str, str] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape, for the OpenAPI document."""

    error: ErrorDetail


RESERVED_ADAPTER_NAMES = ("base",)
"""Adapter names a client may not take (nor the model's own name)."""


def _not_reserved(value: str) -> str:
    if value.lower() in RESERVED_ADAPTER_NAMES:
        raise ValueError(f"{value!r} is a reserved name")
    return value


_ADAPTER_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class AdapterRequest(_Request):
    name: str = Field(pattern=_ADAPTER_NAME)
    path: str = Field(min_length=1, max_length=4096)

    _name = field_validator("name")(_not_reserved)


class LoadLoRARequest(_Request):
    """vLLM's ``POST /v1/load_lora_adapter`` body."""

    lora_name: str = Field(pattern=_ADAPTER_NAME)
    lora_path: str = Field(min_length=1, max_length=4096)
    load_inplace: bool = Field(default=False, description="vLLM's: replace a loaded adapter.")

    _name = field_validator("lora_name")(_not_reserved)


class UnloadLoRARequest(_Request):
    """vLLM's ``POST /v1/unload_lora_adapter`` body."""

    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = Field(default=None, description="vLLM's; ignored (names suffice).")
