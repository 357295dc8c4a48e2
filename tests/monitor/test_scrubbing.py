"""The secret scrubber: one row per kind of secret, and ordinary text left alone."""

from __future__ import annotations

import pytest

from mentor.monitor.scrubbing import SECRET_PATTERNS, scrub

SECRETS = [
    # (kind, text, expected)
    ("openai key", "my key is sk-proj-abcdefghijklmnop1234 ok", "my key is [API_KEY] ok"),
    ("anthropic key", "sk-ant-api03-AbCdEf0123456789xyz", "[API_KEY]"),
    ("hugging face", "use hf_abcdefghijklmnopqrstuvwxyzABCDEF12", "use [API_KEY]"),
    ("github", "ghp_" + "a1B2" * 9, "[API_KEY]"),
    ("aws key id", "id AKIAIOSFODNN7EXAMPLE here", "id [API_KEY] here"),
    ("slack", "xoxb-123456789012-abcdefABCDEF", "[API_KEY]"),
    ("google", "AIza" + "B" * 35, "[API_KEY]"),
    ("bearer", "Authorization: Bearer abc.def-ghi123456", "Authorization: Bearer [REDACTED]"),
    ("basic", "auth: Basic dXNlcjpwYXNzd29yZA==", "auth: Basic [REDACTED]"),
    ("query pair", "curl -d api_key=XYZ123&x=1", "curl -d api_key=[REDACTED]&x=1"),
    ("password pair", "login with password: hunter2 now", "login with password: [REDACTED] now"),
    (
        "json pair",
        '{"password": "hunter2", "user": "bob"}',
        '{"password": "[REDACTED]", "user": "bob"}',
    ),
    ("client secret", "CLIENT_SECRET='s3cr3t!'", "CLIENT_SECRET='[REDACTED]'"),
    ("url credentials", "https://bob:s3cret@host.com/x", "https://[REDACTED]@host.com/x"),
    ("jwt", "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r", "t=[TOKEN]"),
    ("email", "mail jo.doe+x@example.co.uk please", "mail [EMAIL] please"),
    ("hex", "sha 3f786850e387550fdab836ed7e6dc881de23001b", "sha [HEX]"),
    ("base64", "blob dGhpcyBpcyBhIHNlY3JldCBrZXkgMTIzNDU2Nzg5MA== end", "blob [TOKEN] end"),
    (
        "private key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- done",
        "[PRIVATE_KEY] done",
    ),
]

ORDINARY = [
    "How do I reset my password?",
    "the password is required for admins",
    "max_tokens=512 prompt_tokens: 3",
    "Export a board to CSV from the board menu.",
    "/usr/lib/python3.11/site-packages/Foo/Bar2/baz.py",
    "https://example.com/docs/getting-started?page=2",
    "call sk-learn's fit() then predict()",
    "Order 1234567890 shipped on 2025-05-01.",
    "export_to_csv_from_the_board_menu_option_now",
    "",
]


@pytest.mark.parametrize(("kind", "text", "expected"), SECRETS, ids=[row[0] for row in SECRETS])
def test_scrub_replaces_secrets(kind: str, text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", ORDINARY)
def test_scrub_leaves_ordinary_text(text: str) -> None:
    assert scrub(text) == text


def test_emails_can_be_kept() -> None:
    text = "write to ann@example.org with key sk-abcdefghijklmnopqrstu"
    assert scrub(text, emails=False) == "write to ann@example.org with key [API_KEY]"


def test_every_pattern_has_a_row() -> None:
    names = {p.name for p in SECRET_PATTERNS}
    covered = {
        "private key",
        "url credentials",
        "authorization",
        "key=value",
        "provider key",
        "jwt",
        "email",
        "hex",
        "base64",
    }
    assert names == covered
