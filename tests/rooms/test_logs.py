"""Redaction reads query keys the way the server does (rooms/logs.py)."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

from rooms.logs import SECRET_QUERY_KEYS, redact_secrets

SECRET = "S3CRETvalue"


def spellings(key: str, rng: random.Random) -> list[str]:
    """`key` with random characters percent-encoded, in either case of hex digit."""
    found = []
    for _ in range(20):
        spelled = "".join(
            (f"%{ord(c):02x}" if rng.random() < 0.5 else f"%{ord(c):02X}")
            if rng.random() < 0.4
            else c
            for c in key
        )
        found.append(spelled)
    return found


def test_a_key_is_redacted_exactly_when_it_decodes_to_a_secret_name():
    rng = random.Random(13)
    keys = [*SECRET_QUERY_KEYS, "tokens", "token_", "view token", "name", "client"]
    for key in keys:
        for spelled in [*spellings(key, rng), key.replace(" ", "+"), key.upper()]:
            line = f'127.0.0.1 - "GET /rooms/r?a=1&{spelled}={SECRET}&b=2 HTTP/1.1" 200'
            decoded_key = parse_qsl(f"{spelled}={SECRET}")[0][0]  # as the server decodes it
            if decoded_key.lower() in SECRET_QUERY_KEYS:
                assert SECRET not in redact_secrets(line), spelled
                assert redact_secrets(line).endswith('&b=2 HTTP/1.1" 200'), "the rest stays"
            else:
                assert redact_secrets(line) == line, spelled


def test_every_value_of_a_repeated_key_is_redacted():
    assert (
        redact_secrets("/ws/r?token=one&%74oken=two") == "/ws/r?token=[redacted]&%74oken=[redacted]"
    )


def test_a_secret_after_a_semicolon_is_hidden_though_the_server_does_not_split_there():
    assert parse_qsl("mode=text;token=x") == [("mode", "text;token=x")]
    assert (
        redact_secrets("/ws/r?mode=text;token=S3CRET&x=1") == "/ws/r?mode=text;token=[redacted]&x=1"
    )


def test_text_without_a_query_is_unchanged():
    for text in ("why? because", "GET /rooms/abc HTTP/1.1", "/r?", "/r?token", "/r?a=b"):
        assert redact_secrets(text) == text
