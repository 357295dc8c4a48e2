"""Remove things that look like secrets from text before the request log stores it.

``scrub`` runs a table of patterns, most specific first: private-key blocks, credentials in
URLs, ``Bearer``/``Basic`` tokens, ``api_key=...``/``password: ...`` pairs (plain or quoted,
as in JSON), provider keys (OpenAI ``sk-...``, Hugging Face ``hf_...``, GitHub, AWS, Slack,
Google), JWTs, e-mail addresses (optional), then long hex strings and long random-looking
base64 tokens. Each match becomes a ``[LABEL]`` placeholder, so a reader of the log sees that
something was there and what kind of thing it was, never the thing itself.

It is a safety net, not a guarantee: the log never stores headers, and a deployment that must
keep no user text at all turns text logging off (``LogSettings.log_text=False``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SECRET_PATTERNS", "SecretPattern", "scrub"]


@dataclass(frozen=True)
class SecretPattern:
    """One kind of secret: what it is called and how to find and replace it."""

    name: str
    """Short name, used in tests and docs."""
    pattern: re.Pattern[str]
    """What a match looks like."""
    replace: str | Callable[[re.Match[str]], str]
    """The replacement: a template (``\\1`` keeps group 1) or a function of the match."""


_KEY_NAMES = (
    r"api[_-]?key|apikey|x-api-key|access[_-]?token|auth[_-]?token|refresh[_-]?token|"
    r"client[_-]?secret|secret[_-]?key|secret|password|passwd|pwd|passphrase|token"
)


def _random_token(match: re.Match[str]) -> str:
    token = match.group(0)
    # A path such as /usr/lib/python3/Site-packages has every character class too, but in
    # short pieces; a key is one long unbroken run.
    longest = max(len(piece) for piece in re.split(r"[/+]", token))
    looks_random = (
        longest >= 24
        and re.search(r"\d", token) is not None
        and re.search(r"[a-z]", token) is not None
        and re.search(r"[A-Z]", token) is not None
    )
    return "[TOKEN]" if looks_random else token


SECRET_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern(
        "private key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        "[PRIVATE_KEY]",
    ),
    SecretPattern(
        "url credentials",
        re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/:@]+:[^\s/@]+@"),
        r"\1[REDACTED]@",
    ),
    SecretPattern(
        "authorization",
        re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        r"\1 [REDACTED]",
    ),
    SecretPattern(
        "key=value",
        re.compile(
            # The lookahead (a quote or a key name's first letter) lets the engine skip most
            # positions before trying the alternation: 4x faster on ordinary text.
            rf"""(?=["'acprstx])(["']?)\b({_KEY_NAMES})\1(\s*[:=]\s*)(["']?)[^\s"',;&}}]+\4""",
            re.IGNORECASE,
        ),
        r"\1\2\1\3\4[REDACTED]\4",
    ),
    SecretPattern(
        "provider key",
        re.compile(
            r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic, Stripe-style keys
            r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"  # GitHub
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
            r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
            r"|\bAIza[0-9A-Za-z_-]{35}"  # Google
        ),
        "[API_KEY]",
    ),
    SecretPattern(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
        "[TOKEN]",
    ),
    SecretPattern(
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        "[EMAIL]",
    ),
    SecretPattern("hex", re.compile(r"\b[0-9a-fA-F]{32,}\b"), "[HEX]"),
    SecretPattern(
        "base64",
        re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])"),
        _random_token,
    ),
)


def scrub(text: str, *, emails: bool = True) -> str:
    """``text`` with every secret-looking span replaced by a ``[LABEL]`` placeholder.

    ``emails=False`` keeps e-mail addresses (for logs where they are needed and allowed)."""
    for secret in SECRET_PATTERNS:
        if secret.name == "email" and not emails:
            continue
        text = secret.pattern.sub(secret.replace, text)
    return text
