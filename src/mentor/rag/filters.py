"""The filter language of retrieval, the same for every store: which chunks a search may return.

A filter is a mapping of field -> value (``SearchConfig.filters``); a chunk passes when it
matches every pair. The fields are those of :data:`FILTER_FIELDS`. ``page`` takes a page number
and matches chunks that start on that page (chunks without pages never match). Every other field
matches its whole value, case-sensitively; a value with ``*`` (any run of characters, none
included) or ``?`` (one character) is a glob, and every other character stands for itself::

    {"doc_id": "docs/billing.md"}              one document
    {"source": "*.pdf", "page": "3"}           page 3 of every PDF

:func:`matches` is the reference meaning; a :class:`mentor.rag.store.VectorStore` translates a
filter into its own query language (``LanceStore`` into LanceDB SQL) and must select the same
chunks. Everything here is plain Python, so a store or a fake can use it without LanceDB or torch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from mentor.rag.records import Chunk

FILTER_FIELDS = ("doc_id", "source", "title", "heading", "page")
"""The chunk fields a filter may name."""
WILDCARDS = "*?"

Filters = Mapping[str, str]


def check_filters(filters: Filters) -> None:
    """Raise ``ValueError`` for a field not in :data:`FILTER_FIELDS` or a page that is no number."""
    for key, value in filters.items():
        if key not in FILTER_FIELDS:
            raise ValueError(f"filter field {key!r}: expected one of {', '.join(FILTER_FIELDS)}")
        if key == "page" and not re.fullmatch(r"\s*[1-9][0-9]*\s*", value):
            raise ValueError(f"filter page={value!r}: expected a page number (1, 2, ...)")


def is_glob(value: str) -> bool:
    return any(ch in value for ch in WILDCARDS)


@functools.lru_cache(maxsize=256)
def _pattern(value: str) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value)
    return re.compile("".join(parts), re.DOTALL)


def matches(chunk: Chunk, filters: Filters) -> bool:
    """Whether ``chunk`` passes every filter (which :func:`check_filters` has accepted)."""
    for key, value in filters.items():
        if key == "page":
            if chunk.page != int(value):
                return False
        elif not _pattern(value).fullmatch(getattr(chunk, key)):
            return False
    return True
