"""Metrics shared by every method, so each is scored the same way on the user's own data."""

from mentor.evaluate.text import exact_match, normalize_answer, rouge_l, token_f1

__all__ = ["exact_match", "normalize_answer", "rouge_l", "token_f1"]
