"""Keeping secrets out of logs: private rooms' tokens and clients' secrets travel in query strings.

Access logs print URLs as the client sent them, so a key may be spelled `token`, `%74oken` or
`to%6Ben`: the server decodes query keys before reading them (Django's QueryDict and the
WebSocket's parse_qs both percent-decode and turn `+` into a space). Redaction decodes each key
the same way, so every spelling the server accepts is caught.

Imports nothing from Django, so logging configuration can load it before Django is set up
(uvicorn's workers configure logging first).
"""

import logging
import re
from urllib.parse import unquote_plus

# Query parameters whose values must never reach a log (compared decoded, in any case).
SECRET_QUERY_KEYS = frozenset({"token", "view_token", "client_secret"})
REDACTED = "[redacted]"
# A URL's query string inside a log line: from its `?` to the next space, quote or fragment.
QUERY_STRING = re.compile(r"\?([^\s\"'#]*)")


def redact_secrets(text: str) -> str:
    """`text` (a URL or a log line) with the values of secret query parameters replaced."""
    return QUERY_STRING.sub(lambda match: "?" + _query_redacted(match.group(1)), text)


def _query_redacted(query: str) -> str:
    return "&".join(_pair_redacted(pair) for pair in query.split("&"))


def _pair_redacted(pair: str) -> str:
    key, has_value, _ = pair.partition("=")
    if has_value and _is_secret_key(key):  # as the server reads it: the value ends at `&`
        return f"{key}={REDACTED}"
    # `;` separates nothing for the server, but a secret-named key after one still carries a
    # secret the client meant to send: hide it, to the end of the pair.
    parts = pair.split(";")
    for index, part in enumerate(parts[1:], start=1):
        key, has_value, _ = part.partition("=")
        if has_value and _is_secret_key(key):
            return ";".join([*parts[:index], f"{key}={REDACTED}"])
    return pair


def _is_secret_key(raw_key: str) -> bool:
    return unquote_plus(raw_key, errors="replace").lower() in SECRET_QUERY_KEYS


class RedactSecretsFilter(logging.Filter):
    """Logging filter for access logs (uvicorn's, or any) that print full URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact_secrets(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        record.msg = redact_secrets(str(record.msg))
        return True
