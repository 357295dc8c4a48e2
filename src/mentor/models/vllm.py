"""A vLLM server as a :class:`~mentor.models.engine.TextEngine`: mentor tokenizes, vLLM decodes.

vLLM batches every request in flight (continuous batching, paged KV cache) and serves many LoRA
adapters over one base. It lives in its own virtualenv (``make vllm`` builds ``.venv-vllm``: it
pins its own transformers and fastapi), so mentor talks to it over HTTP rather than importing it:

    mentor ─ encode_chat ─► token ids ─► POST /v1/completions (prompt = ids, model = base|adapter)
                                             │ streamed text, finish reason, usage
    Completion ◄─────────────────────────────┘

Prompts go as token ids, so the chat template (and mentor's guard against control tokens inside
contents, :mod:`mentor.models.chat`) is mentor's, byte for byte the same as :class:`HFEngine`'s.
Log-probabilities come back with tokens as ids (``return_tokens_as_token_ids``), so they are
mentor's :class:`TokenLogprobs` exactly as HFEngine builds them; vLLM's default
``logprobs_mode`` (``raw_logprobs``) is mentor's too: the model's log-softmax, before the logit
bias, penalties and temperature. JSON schemas go as vLLM's ``structured_outputs``, a
``logit_bias`` as OpenAI's field, and a prompt's own log-probabilities (:meth:`prompt_logprobs`)
as vLLM's ``prompt_logprobs``.
:func:`open_vllm` starts a server on a free localhost port (or attaches to one by URL), registers
the adapters, yields the engine and stops what it started:

    settings = VLLMSettings()  # the vLLM python: flag, $MENTOR_VLLM_PYTHON, PATH, .venv-vllm
    with open_vllm(folder, tokenizer, name="smollm2", adapters={"legal": Path("runs/a")},
                   settings=settings) as engine:
        engine.generate([Request(ids, SamplingConfig(), adapter="legal")], batch_size=32)

Starting the process (and where its log goes): :mod:`mentor.models.vllm_server`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentor.models.chat import encode_chat
from mentor.models.engine import (
    Completion,
    FinishReason,
    Request,
    TokenChoice,
    TokenLogprobs,
    token_choice,
)
from mentor.models.protocols import SamplingConfig
from mentor.models.remote import EndpointSettings, RemoteError, call_with_retries
from mentor.models.vllm_server import (
    LORA_RANKS,
    VLLMError,
    VLLMServer,
    VLLMSettings,
    error_message,
    http_json,
    served_models,
)
from mentor.utils.fs import read_json_object

if TYPE_CHECKING:
    from rich.console import Console
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}
"""vLLM's finish reasons to ours; any other (``error``) fails the request."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_IDENTITY = "mentor_adapter.json"
"""PEFT's adapter config and mentor's identity file (:mod:`mentor.train.adapters` writes both)."""


# ---- adapters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterFacts:
    """What vLLM needs to know about an adapter folder before loading it."""

    path: Path
    rank: int
    base_model: str | None
    """The base it was trained on, as recorded (a registry name, a folder or a hub id)."""


def check_adapter(folder: Path, base_folder: Path, max_lora_rank: int) -> AdapterFacts:
    """Refuse an adapter vLLM would run wrongly or not at all: not a LoRA folder, a rank above
    the server's ``max_lora_rank``, or trained on another base than ``base_folder``."""
    folder = Path(folder).expanduser().resolve()
    config = _read_json(folder / ADAPTER_CONFIG)
    identity = _read_json(folder / ADAPTER_IDENTITY) if (folder / ADAPTER_IDENTITY).exists() else {}
    if config.get("peft_type", "LORA") != "LORA" or not isinstance(config.get("r"), int):
        raise VLLMError(f"{folder}: not a LoRA adapter (peft_type LORA with an integer r)")
    rank = int(config["r"])
    if rank > max_lora_rank:
        raise VLLMError(
            f"{folder}: rank r={rank} is above the server's max_lora_rank {max_lora_rank}; "
            f"start it with a larger one (--vllm-max-lora-rank, one of {LORA_RANKS})"
        )
    recorded = identity.get("base_model") or config.get("base_model_name_or_path")
    if not recorded:
        log.warning("%s: records no base model; serving it on %s unchecked", folder, base_folder)
    elif not same_base(str(recorded), base_folder):
        raise VLLMError(
            f"{folder}: trained on {recorded}, but vLLM serves {base_folder}; serve the adapter's "
            "base (for a registry model: its folder in $MENTOR_HOME/models)"
        )
    return AdapterFacts(folder, rank, str(recorded) if recorded else None)


def same_base(recorded: str, base_folder: Path) -> bool:
    """Whether ``recorded`` (a folder, a registry name or its upstream hub id) is ``base_folder``.

    A registry name means the folder mentor converted it to (a packaged GGUF becomes an HF folder
    in ``$MENTOR_HOME/models/NAME``): those are the weights the adapter was trained on."""
    from mentor.models.hub import model_dir
    from mentor.models.registry import REGISTRY

    base = Path(base_folder).expanduser().resolve()
    path = Path(recorded).expanduser()
    if path.exists():
        return path.resolve() == base
    names = [recorded, *(n for n, spec in REGISTRY.items() if spec.upstream == recorded)]
    return any((folder := model_dir(n)) is not None and folder == base for n in names)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, VLLMError, f"not an adapter folder (no {path.name})")


# ---- the request body --------------------------------------------------------------------------


def sampling_body(sampling: SamplingConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every :class:`SamplingConfig` field as ``/v1/completions`` fields: (OpenAI's, vLLM's own).

    All are sent, defaults too: vLLM would otherwise take the model's generation_config.json
    defaults (a temperature of its own), and mentor's engines must agree for the same config.
    Logprobs come back with each token as ``token_id:N`` (its text is mentor's to make)."""
    fields: dict[str, Any] = {
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "stop": list(sampling.stop),
    }
    extra: dict[str, Any] = {
        "repetition_penalty": sampling.repetition_penalty,
        "ignore_eos": sampling.ignore_eos,
    }
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    if sampling.logprobs is not None:
        fields["logprobs"] = sampling.logprobs
        extra["return_tokens_as_token_ids"] = True
    if sampling.logit_bias:
        fields["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias}
    if sampling.json_schema is not None:
        extra["structured_outputs"] = {"json": json.loads(sampling.json_schema)}
    return fields, extra


# ---- log-probabilities back --------------------------------------------------------------------

TOKEN_ID = "token_id:"
"""How vLLM names a token under ``return_tokens_as_token_ids``."""


def _token_id(name: str) -> int:
    if not name.startswith(TOKEN_ID) or not name[len(TOKEN_ID) :].isdigit():
        raise RemoteError(f"vLLM sent logprobs for token {name!r}, not {TOKEN_ID}N")
    return int(name[len(TOKEN_ID) :])


def _logprob(value: float | None) -> float:
    """vLLM sends -9999.0 for -inf (JSON has no infinity) and None where nothing was computed."""
    if value is None:
        return math.nan
    return -math.inf if value <= -9999.0 else float(value)


def chunk_logprobs(
    tokens: Sequence[str],
    token_logprobs: Sequence[float | None],
    top_logprobs: Sequence[Mapping[str, float] | None] | None,
    k: int,
    choose: Callable[[int, float], TokenChoice],
) -> list[TokenLogprobs]:
    """One streamed chunk's ``choice.logprobs`` (tokens named ``token_id:N``) as mentor's entries.

    vLLM's ``top_logprobs`` hold the chosen token and the ``k`` likeliest (``k`` + 1 entries when
    the chosen one is not among them); mentor's ``top`` holds the ``k`` likeliest, best first.
    ``choose(id, logprob)`` makes a :class:`TokenChoice` (:func:`token_choice`)."""
    out = []
    tops = list(top_logprobs) if top_logprobs is not None else [None] * len(tokens)
    for name, value, top in zip(tokens, token_logprobs, tops, strict=True):
        chosen = choose(_token_id(name), _logprob(value))
        ranked = sorted(((_token_id(t), _logprob(v)) for t, v in (top or {}).items()),
                        key=lambda pair: -pair[1])  # fmt: skip
        out.append(TokenLogprobs(chosen, tuple(choose(i, lp) for i, lp in ranked[:k])))
    return out


def prompt_entries(
    prompt: Sequence[int],
    scored: Sequence[Mapping[str, Mapping[str, Any]] | None],
    k: int,
    choose: Callable[[int, float], TokenChoice],
) -> list[TokenLogprobs]:
    """vLLM's ``prompt_logprobs`` (per position: None for the first, else {id: {logprob, rank,
    ...}} holding the prompt's token and the ``k`` likeliest) as mentor's entries, the first
    token NaN with no alternatives (as :meth:`HFEngine.prompt_logprobs` gives them)."""
    if len(scored) != len(prompt):
        raise RemoteError(f"vLLM scored {len(scored)} prompt tokens, not {len(prompt)}")
    out = [TokenLogprobs(choose(prompt[0], math.nan))]
    for token, position in zip(prompt[1:], scored[1:], strict=True):
        if position is None or str(token) not in position:
            raise RemoteError(f"vLLM sent no logprob for prompt token {token}")
        ranked = sorted(
            ((int(i), _logprob(entry["logprob"])) for i, entry in position.items()),
            key=lambda pair: -pair[1],
        )
        chosen = choose(token, _logprob(position[str(token)]["logprob"]))
        out.append(TokenLogprobs(chosen, tuple(choose(i, lp) for i, lp in ranked[:k])))
    return out


def finish_reason(value: str | None, model: str) -> FinishReason:
    if value in FINISH:
        return FINISH[value]
    raise RemoteError(f"vLLM ({model}) ended the request with finish_reason {value!r}")


# ---- the engine --------------------------------------------------------------------------------


class _ExpiredError(Exception):
    """The request's deadline passed (or it was cancelled) before it could be sent."""


class VLLMEngine:
    """:class:`~mentor.models.engine.TextEngine` over a vLLM server's ``/v1/completions``.

    ``served`` is the base's id on the server; a request's ``adapter`` is sent as the model."""

    max_running = 64
    """Requests a caller (the server's scheduler) should keep in flight; vLLM batches them."""
    reports_logprobs = True
    """Fills ``Completion.logprobs`` (vLLM's ``logprobs``, tokens as ids)."""
    constrains_json = True
    """Honours ``SamplingConfig.json_schema`` (vLLM's ``structured_outputs``)."""
    biases_logits = True
    """Honours ``SamplingConfig.logit_bias`` (OpenAI's ``logit_bias``, which vLLM applies)."""

    def __init__(
        self,
        url: str,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        served: str,
        base_folder: Path,
        context_length: int,
        settings: VLLMSettings,
        client: Any = None,
    ) -> None:
        import openai

        self.url, self.tokenizer, self.name, self.served = url, tokenizer, name, served
        self.base_folder, self.context_length, self.settings = base_folder, context_length, settings
        self.endpoint = EndpointSettings(
            base_url=url,
            model=served,
            api_key_env="",
            timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
            backoff_base_s=0.5,
            backoff_max_s=5.0,
        )
        self.client = client or openai.OpenAI(
            base_url=url, api_key="no-key", max_retries=0, timeout=settings.request_timeout_s
        )
        self.adapters: dict[str, AdapterFacts] = {}
        self._rng = random.Random()
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent mutable use

    def _choice(self, token: int, logprob: float) -> TokenChoice:
        with self._tokenizer_lock:
            return token_choice(self.tokenizer, token, logprob)

    # ---- prompts (mentor's, exactly as HFEngine's) --------------------------------------------

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()
    ) -> list[int]:
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the tokenizer has no chat template")
        return encode_chat(self.tokenizer, messages, tools=tools)

    def encode_text(self, text: str, *, special: bool = True) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=special)["input_ids"]]

    def supports_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    # ---- adapters -----------------------------------------------------------------------------

    def add_adapter(self, name: str, folder: Path, *, loaded: bool = False) -> AdapterFacts:
        """Check ``folder`` against the served base and register it as ``name`` (``loaded``: the
        server already has it, from ``--lora-modules``)."""
        if not name or name == self.served or name in self.adapters:
            raise VLLMError(f"adapter name {name!r} is taken or empty")
        facts = check_adapter(folder, self.base_folder, self.settings.max_lora_rank)
        if not loaded:
            body = {"lora_name": name, "lora_path": str(facts.path)}
            self._admin("load_lora_adapter", body, f"adapter {name} ({facts.path})")
        self.adapters[name] = facts
        return facts

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(name)
        self._admin("unload_lora_adapter", {"lora_name": name}, f"adapter {name}")
        del self.adapters[name]

    def _admin(self, route: str, body: dict[str, Any], what: str) -> None:
        try:
            status, answer = http_json("POST", f"{self.url}/{route}", body, timeout=120)
        except OSError as exc:
            raise VLLMError(f"{what}: vLLM at {self.url} did not answer ({exc})") from None
        if status == 404:
            raise VLLMError(
                f"{what}: {self.url} has no /{route}; start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if status >= 400:
            raise VLLMError(f"{what}: vLLM refused (HTTP {status}): {error_message(answer)}")

    # ---- decoding -----------------------------------------------------------------------------

    def stream(self, request: Request, result: Completion | None = None) -> Iterator[str]:
        """Stream the reply; a passed deadline or ``cancelled()`` closes the HTTP stream (vLLM
        then aborts the request) and ends with ``timeout``/``cancelled``."""
        result = result if result is not None else Completion()
        if not request.prompt:
            raise ValueError("a prompt must have at least one token")
        model = self._model_for(request.adapter)
        fields, extra = sampling_body(request.sampling)
        kwargs = fields | {
            "model": model,
            "prompt": list(request.prompt),
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": extra,
        }
        result.prompt_tokens = len(request.prompt)
        start = time.perf_counter()
        pieces: list[str] = []

        def before(attempt: int) -> None:
            if _stop_reason(request) is not None:
                raise _ExpiredError

        try:
            chunks, _ = call_with_retries(
                lambda: self.client.completions.create(**kwargs),
                self.endpoint.model_copy(update={"model": model}),
                rng=self._rng,
                before=before,
            )
        except _ExpiredError:
            result.finish_reason = _stop_reason(request)
            result.seconds = time.perf_counter() - start
            return
        received = iter(chunks)
        try:
            while True:
                try:
                    chunk = next(received)
                except StopIteration:
                    break
                except Exception as exc:  # the HTTP library's: the connection dropped
                    raise RemoteError(f"vLLM ({model}): the stream broke off ({exc})") from None
                if chunk.usage is not None:
                    result.completion_tokens = chunk.usage.completion_tokens
                    result.prompt_tokens = chunk.usage.prompt_tokens
                for choice in chunk.choices:
                    if choice.logprobs is not None and request.sampling.logprobs is not None:
                        result.logprobs += self._chunk_logprobs(choice, request.sampling)
                    if choice.text:
                        if result.first_token_s is None:
                            result.first_token_s = time.perf_counter() - start
                        pieces.append(choice.text)
                        result.completion_tokens += 1  # until the usage says exactly
                        yield choice.text
                    if choice.finish_reason is not None:
                        result.finish_reason = finish_reason(choice.finish_reason, model)
                if result.finish_reason is None and (reason := _stop_reason(request)):
                    result.finish_reason = reason
                    break
        finally:
            chunks.close()
            result.text = "".join(pieces)
            result.seconds = time.perf_counter() - start
        if result.finish_reason is None:
            raise RemoteError(f"vLLM ({model}): the stream ended without a finish reason")

    def _chunk_logprobs(self, choice: Any, sampling: SamplingConfig) -> list[TokenLogprobs]:
        """A chunk's logprobs, less the end-of-sequence token's (HFEngine reports none for it):
        a reply that stopped, not at a stop string, ended on one, in its last chunk."""
        assert sampling.logprobs is not None
        got = choice.logprobs
        entries = chunk_logprobs(got.tokens or [], got.token_logprobs or [], got.top_logprobs,
                                 sampling.logprobs, self._choice)  # fmt: skip
        ended_on_token = not isinstance(getattr(choice, "stop_reason", None), str)
        if choice.finish_reason == "stop" and ended_on_token and not sampling.ignore_eos:
            return entries[:-1]
        return entries

    def prompt_logprobs(
        self, prompt: Sequence[int], k: int, adapter: str | None = None
    ) -> list[TokenLogprobs]:
        """Each prompt token's log-probability given the tokens before it, with the ``k``
        likeliest alternatives (vLLM's ``prompt_logprobs``, one token generated and dropped);
        the first token NaN with none, as :meth:`HFEngine.prompt_logprobs` gives them."""
        if not prompt:
            raise ValueError("a prompt must have at least one token")
        model = self._model_for(adapter)
        kwargs: dict[str, Any] = {
            "model": model,
            "prompt": list(prompt),
            "max_tokens": 1,
            "temperature": 0.0,
            "extra_body": {"prompt_logprobs": k},
        }
        answer, _ = call_with_retries(
            lambda: self.client.completions.create(**kwargs),
            self.endpoint.model_copy(update={"model": model}),
            rng=self._rng,
        )
        (choice,) = answer.choices
        scored = getattr(choice, "prompt_logprobs", None)
        if not isinstance(scored, list):
            raise RemoteError(f"vLLM ({model}) sent no prompt_logprobs")
        return prompt_entries(prompt, scored, k, self._choice)

    def generate(self, requests: Sequence[Request], *, batch_size: int = 8) -> list[Completion]:
        """``batch_size`` requests in flight at once, which vLLM batches; in order. A failure
        cancels the requests still running and is raised."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [Completion() for _ in requests]
        failed = threading.Event()

        def run(index: int) -> None:
            request = requests[index]
            own = request.cancelled
            watched = replace(
                request, cancelled=lambda: failed.is_set() or (own is not None and own())
            )
            try:
                for _ in self.stream(watched, results[index]):
                    pass
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(batch_size, "vllm") as pool:
            futures = [pool.submit(run, i) for i in range(len(requests))]
            for future in futures:
                future.result()
        return results

    def _model_for(self, adapter: str | None) -> str:
        if adapter is None:
            return self.served
        if adapter not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise ValueError(
                f"adapter {adapter!r} is not registered with vLLM (registered: {known})"
            )
        return adapter

    def close(self) -> None:
        self.client.close()


def _stop_reason(request: Request) -> FinishReason | None:
    if request.cancelled is not None and request.cancelled():
        return "cancelled"
    if request.deadline is not None and time.monotonic() > request.deadline:
        return "timeout"
    return None


# ---- start or attach ---------------------------------------------------------------------------


@contextmanager
def open_vllm(
    model_folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    name: str,
    adapters: Mapping[str, Path] = {},
    settings: VLLMSettings | None = None,
    console: Console | None = None,
) -> Iterator[VLLMEngine]:
    """A :class:`VLLMEngine` serving ``model_folder`` as ``name`` with ``adapters`` registered.

    Without ``settings.url`` a server is started (and stopped when the block ends, also on an
    error); with it, the running server is used as it is, and only the adapters registered here
    are unregistered at the end. Adapters are checked against the base before anything starts."""
    settings = settings or VLLMSettings()
    folder = Path(model_folder).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise VLLMError(f"{folder}: not a model folder (no config.json)")
    for path in adapters.values():
        check_adapter(path, folder, settings.max_lora_rank)
    with ExitStack() as stack:
        if settings.url is None:
            server = VLLMServer(
                folder, name=name, adapters=adapters, settings=settings, console=console
            )
            stack.enter_context(server)
            url = server.url
        else:
            url = settings.url
        models = served_models(url)
        served, length = _pick_base(models, name, url, folder)
        engine = VLLMEngine(
            url,
            tokenizer,
            name=name,
            served=served,
            base_folder=folder,
            context_length=length,
            settings=settings,
        )
        stack.callback(engine.close)
        roots = {str(m.get("id")): str(m.get("root", "")) for m in models if m.get("parent")}
        for adapter, path in adapters.items():
            # A started server has them from --lora-modules; an attached one may have some.
            present = settings.url is None or adapter in roots
            if (
                present
                and settings.url is not None
                and Path(roots[adapter]).resolve() != Path(path).expanduser().resolve()
            ):
                raise VLLMError(
                    f"{url} already serves an adapter {adapter!r} from {roots[adapter]}, "
                    f"not {path}; choose another name"
                )
            engine.add_adapter(adapter, path, loaded=present)
            if not present:
                stack.callback(_quietly, engine.remove_adapter, adapter)
        yield engine


def _pick_base(
    models: Sequence[Mapping[str, Any]], name: str, url: str, folder: Path
) -> tuple[str, int]:
    """The served base's id and context length: ``name`` if served, else the only base."""
    bases = [m for m in models if not m.get("parent")]
    chosen = next((m for m in bases if m.get("id") == name), None)
    if chosen is None and len(bases) == 1:
        chosen = bases[0]
        log.info("%s serves %s; using it as %s", url, chosen.get("id"), name)
    if chosen is None:
        ids = ", ".join(str(m.get("id")) for m in bases) or "nothing"
        raise VLLMError(f"{url} serves {ids}, not {name}")
    root = Path(str(chosen.get("root", "")))
    if root.is_dir() and root.resolve() != folder:
        log.warning(
            "%s serves %s; the tokenizer and adapters are checked against %s", url, root, folder
        )
    return str(chosen.get("id")), int(chosen.get("max_model_len") or 2048)


def _quietly(action: Callable[[str], None], arg: str) -> None:
    try:
        action(arg)
    except (VLLMError, KeyError) as exc:
        log.warning("vLLM: could not undo %s(%s): %s", action.__name__, arg, exc)
