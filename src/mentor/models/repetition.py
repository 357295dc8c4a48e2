"""The loop guard: stop a reply the moment it starts copying a stretch of itself.

Small models decoding greedily fall into loops: the same sentence again and again until the
token limit. :class:`LoopGuard` watches the reply's token ids and reports a loop once its last
``ngram`` tokens repeat, exactly, an earlier stretch of the same reply (a repeated ``ngram``-gram,
overlapping or not; only the reply counts, so quoting the prompt is not a loop). The copy is
then dropped: the reply ends with the text it had before the repetition began.

So that a streamed reply never shows the copy it later drops, the guard also says how many
trailing tokens are a copy in progress (:attr:`LoopGuard.held`): the engine holds their text
back, as it holds back a possible stop string, and releases it as soon as the copy breaks.
Usually that is a token or two (common words recur); a loop holds at most ``ngram - 1``.

    guard = LoopGuard(ngram=LOOP_NGRAM)
    for token in reply:
        if guard.add(token):       # the last ngram tokens repeat an earlier stretch
            reply = reply[: guard.keep]
            break

The length was chosen by measurement (``bench/rag_trust.py``): on the Tidepool test questions
answered by SmolLM2-135M, see the README's "Answers a newcomer can trust".
"""

from __future__ import annotations

from collections.abc import Sequence

LOOP_NGRAM = 16
"""Reply tokens that, once copied from earlier in the same reply, end it (the default)."""


class LoopGuard:
    """Incremental loop detection over a reply's token ids (O(ngram) sets probed per token)."""

    def __init__(self, ngram: int = LOOP_NGRAM) -> None:
        if ngram < 2:
            raise ValueError(f"loop_ngram must be at least 2, got {ngram}")
        self.ngram = ngram
        self.tokens: list[int] = []
        # seen[k - 1]: every k-gram of the reply that ends before the newest token
        self._seen: list[set[tuple[int, ...]]] = [set() for _ in range(ngram)]
        self.held = 0
        """Trailing tokens that repeat an earlier stretch (a loop in the making)."""
        self.looped = False

    def add(self, token: int) -> bool:
        """Take the next token; True when the reply now ends in a copied ``ngram``-gram."""
        if self.looped:
            raise RuntimeError("the reply already looped; start a new guard")
        self.tokens.append(token)
        tail = self.tokens[-self.ngram :]
        held = 0
        # Suffix matches nest: if the k-token tail occurred before, so did the (k-1)-token one.
        for k in range(1, len(tail) + 1):
            if tuple(tail[-k:]) not in self._seen[k - 1]:
                break
            held = k
        for k in range(1, len(tail) + 1):
            self._seen[k - 1].add(tuple(tail[-k:]))
        self.held = held
        self.looped = held >= self.ngram
        return self.looped

    @property
    def keep(self) -> int:
        """Tokens of the reply to keep: all but the copy in progress."""
        return len(self.tokens) - self.held


def find_loop(tokens: Sequence[int], ngram: int = LOOP_NGRAM) -> tuple[int, int] | None:
    """(tokens read when the loop was seen, tokens to keep) for a whole reply, or None when it
    never repeats ``ngram`` tokens of itself: what the engine does to it, token by token."""
    guard = LoopGuard(ngram)
    for token in tokens:
        if guard.add(token):
            return len(guard.tokens), guard.keep
    return None
