"""One chat or completion request, from validated body to the pieces the client receives.

This is the part that runs on the worker thread. A chat turn may take several rounds of
generation: when the server serves an index it searches the documents first (``always``) and/or
whenever the model calls ``search_documents`` (the tool loop), and each round's prompt carries
the earlier rounds' calls and results. A call to one of the client's own tools ends the turn
with standard ``tool_calls`` for the client to run.

The worker yields :class:`Piece` (text for the client, as it is made) and finally one
:class:`Finished`; :mod:`mentor.serve.app` turns them into a JSON reply or server-sent events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mentor.models.engine import Completion, StopCutter, TokenLogprobs
from mentor.models.protocols import SamplingConfig
from mentor.rag.answer import confidence
from mentor.rag.retrieve import Reranker, SearchConfig, Searcher
from mentor.serve.engine import Engine
from mentor.serve.scheduler import Job
from mentor.serve.tools import (
    CALL_OPEN,
    RAG_SYSTEM,
    SEARCH_SPEC,
    SEARCH_TOOL,
    SearchRound,
    ToolCall,
    hermes_messages,
    parse_tool_calls,
    template_messages,
    tool_names,
)


class PromptTooLongError(ValueError):
    """The prompt and the requested reply do not fit the model's context."""


class EmptyPromptError(ValueError):
    """The prompt encodes to no tokens: there is nothing to continue."""


@dataclass(frozen=True)
class Piece:
    text: str
    logprobs: tuple[TokenLogprobs, ...] = ()
    """The tokens picked since the previous piece (when the request asked for logprobs)."""


@dataclass
class Finished:
    """How the turn ended, with the usage summed over its rounds."""

    finish_reason: Literal["stop", "length", "tool_calls", "timeout", "cancelled"]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    searches: list[SearchRound] = field(default_factory=list)
    text: str = ""
    """Everything the client was sent, for the request log."""
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    """The last tokens' log-probabilities, not yet sent with a piece."""


@dataclass(frozen=True)
class Retrieval:
    """The index a server searches for ``search_documents``."""

    searcher: Searcher
    search: SearchConfig
    threshold: float | None
    """Below this retrieval confidence a search returns no passages (None: never)."""
    mode: Literal["always", "model"] = "always"
    """always: search with the user's message before the model answers, and again whenever the
    model calls the tool; model: only when the model calls it."""
    max_rounds: int = 3
    reranker: Reranker | None = None
    """The index's kept reranker (:func:`mentor.rag.rerank_gate.chosen_reranker`), if any."""

    def run(self, query: str, first_number: int) -> SearchRound:
        hits = self.searcher.search(query, self.search, reranker=self.reranker).hits
        refused = bool(hits) and self.threshold is not None and confidence(hits) < self.threshold
        return SearchRound(query, [] if refused else hits, first_number, refused=refused)


class _ToolWatch:
    """Shows the model's text to the client up to its first ``<tool_call>``; keeps it all."""

    def __init__(self, watching: bool) -> None:
        self._cut = StopCutter((CALL_OPEN,) if watching else ())
        self.text = ""

    def feed(self, piece: str) -> str:
        self.text += piece
        return "" if self._cut.stopped else self._cut.feed(piece)

    def flush(self) -> str:
        return "" if self._cut.stopped else self._cut.flush()


def _fit(
    engine: Engine, prompt: list[int], sampling: SamplingConfig, fit_context: bool
) -> SamplingConfig:
    """``sampling`` for this prompt, its length shortened to the room left when ``fit_context``;
    PromptTooLongError if the two do not fit the context, EmptyPromptError for no prompt."""
    if not prompt:
        raise EmptyPromptError("the prompt encodes to no tokens; send some text")
    room = engine.context_length - len(prompt)
    if room < 1:
        raise PromptTooLongError(
            f"the prompt is {len(prompt)} tokens; this model's context is "
            f"{engine.context_length} tokens"
        )
    if sampling.max_new_tokens > room and fit_context:
        return replace(sampling, max_new_tokens=room)
    if sampling.max_new_tokens > room:
        asked = sampling.max_new_tokens
        raise PromptTooLongError(
            f"the prompt ({len(prompt)} tokens) plus max_tokens ({asked}) exceeds the context "
            f"of {engine.context_length} tokens; lower max_tokens to {room} or less"
        )
    return sampling


def _with_rules(messages: list[dict[str, Any]], rules: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{rules}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": rules}, *messages]


def chat_turn(
    engine: Engine,
    messages: list[dict[str, Any]],
    sampling: SamplingConfig,
    *,
    fit_context: bool = False,
    adapter: str | None,
    client_tools: list[dict[str, Any]],
    retrieval: Retrieval | None,
    timeout_s: float | None,
    tool_choice: str | None = None,
) -> Callable[[Job], Iterator[Piece | Finished]]:
    """The worker's job for one chat completion."""

    def work(job: Job) -> Iterator[Piece | Finished]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        use_tools = tool_choice != "none"
        offered = [*client_tools] if use_tools else []
        convo = list(messages)
        searches: list[SearchRound] = []
        if retrieval is not None and use_tools:
            offered.append(SEARCH_SPEC)
            convo = _with_rules(convo, RAG_SYSTEM)
            last = convo[-1]
            if retrieval.mode == "always" and last["role"] == "user":
                convo += _search_messages(
                    retrieval, [ToolCall(SEARCH_TOOL, _query(last))], searches
                )
        names = tool_names(offered)
        done = Finished("stop")
        for round_ in range(1 + (retrieval.max_rounds if retrieval else 0)):
            if offered and not engine.supports_tools():
                prompt = engine.encode_chat(hermes_messages(convo, offered))
            elif offered:
                prompt = engine.encode_chat(template_messages(convo), offered)
            else:
                prompt = engine.encode_chat(template_messages(convo))
            fitted = _fit(engine, prompt, sampling, fit_context)
            generated = Completion(prompt_tokens=len(prompt))
            watch = _ToolWatch(bool(names))
            stream = engine.stream(
                prompt,
                fitted,
                adapter=adapter,
                result=generated,
                deadline=deadline,
                cancelled=job.cancelled.is_set,
            )
            sent = 0
            for text in stream:
                shown = watch.feed(text)
                if shown:
                    done.text += shown
                    new = tuple(generated.logprobs[sent:])  # the decode thread may add more
                    sent += len(new)
                    yield Piece(shown, new)
            shown = watch.flush()
            if shown:
                done.text += shown
                new = tuple(generated.logprobs[sent:])
                sent += len(new)
                yield Piece(shown, new)
            # what is left is held text (a cut stop string, a tool call): sent with the end
            done.logprobs = generated.logprobs[sent:]
            done.prompt_tokens += generated.prompt_tokens
            done.completion_tokens += generated.completion_tokens
            if done.first_token_s is None:
                done.first_token_s = generated.first_token_s
            done.finish_reason = generated.finish_reason or "stop"
            _, calls = parse_tool_calls(watch.text, names) if names else ("", [])
            if not calls or done.finish_reason in ("timeout", "cancelled"):
                break
            ours = [c for c in calls if c.name == SEARCH_TOOL and retrieval is not None]
            theirs = [c for c in calls if c not in ours]
            if theirs:
                done.tool_calls, done.finish_reason = theirs, "tool_calls"
                break
            if retrieval is None or round_ == retrieval.max_rounds:
                break
            convo += _search_messages(retrieval, ours, searches)
        done.searches = searches
        yield done

    return work


def _query(message: dict[str, Any]) -> str:
    return json.dumps({"query": str(message.get("content") or "")}, ensure_ascii=False)


def _search_messages(
    retrieval: Retrieval, calls: list[ToolCall], searches: list[SearchRound]
) -> list[dict[str, Any]]:
    """Run the searches; return the assistant's calls and the tool results as messages."""
    out: list[dict[str, Any]] = [
        {"role": "assistant", "content": "", "tool_calls": [c.to_openai() for c in calls]}
    ]
    for call in calls:
        query = call.argument("query")
        number = 1 + sum(len(s.hits) for s in searches)
        if not isinstance(query, str) or not query.strip():
            result = 'search_documents needs {"query": "..."}'
        else:
            found = retrieval.run(query, number)
            searches.append(found)
            result = found.render()
        out.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return out


def completion_turn(
    engine: Engine,
    prompt: str | list[int],
    sampling: SamplingConfig,
    *,
    fit_context: bool = False,
    adapter: str | None,
    timeout_s: float | None,
    echo: bool = False,
) -> Callable[[Job], Iterator[Piece | Finished]]:
    """The worker's job for one plain text completion (no chat template); ``prompt`` is text or
    token ids. With ``echo`` the reply starts with the prompt, and with logprobs asked, with the
    prompt tokens' log-probabilities (what loglikelihood evaluation reads); ``max_new_tokens`` 0
    then generates nothing."""

    def work(job: Job) -> Iterator[Piece | Finished]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ids = engine.encode_text(prompt) if isinstance(prompt, str) else list(prompt)
        done = Finished("length", prompt_tokens=len(ids))
        if echo and ids:  # the prompt comes first, as the reply's first piece
            scored: tuple[TokenLogprobs, ...] = ()
            if sampling.logprobs is not None:
                scored = tuple(engine.prompt_logprobs(ids, sampling.logprobs, adapter=adapter))
            yield Piece(prompt if isinstance(prompt, str) else engine.decode(ids), scored)
        if sampling.max_new_tokens == 0 and ids:  # echo only: score the prompt, write nothing
            yield done
            return
        fitted = _fit(engine, ids, sampling, fit_context)
        generated = Completion(prompt_tokens=len(ids))
        done.finish_reason = "stop"
        sent = 0
        for text in engine.stream(
            ids,
            fitted,
            adapter=adapter,
            result=generated,
            deadline=deadline,
            cancelled=job.cancelled.is_set,
        ):
            done.text += text
            new = tuple(generated.logprobs[sent:])  # the decode thread may add more
            sent += len(new)
            yield Piece(text, new)
        done.logprobs = generated.logprobs[sent:]
        done.finish_reason = generated.finish_reason or "stop"
        done.completion_tokens = generated.completion_tokens
        done.first_token_s = generated.first_token_s
        yield done

    return work
