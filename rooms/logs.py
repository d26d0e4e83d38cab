"""Keeping secrets out of logs: private rooms' tokens may travel in `?token=`.

Imports nothing from Django, so logging configuration can load it before Django is set up
(uvicorn's workers configure logging first).
"""

import logging
import re

# Query values that must never reach a log: private rooms' tokens travel in `?token=`.
SECRET_QUERY_VALUE = re.compile(r"([?&](?:token|view_token)=)[^&#\s]*", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """`text` (a URL or a log line) with token values replaced by [redacted]."""
    return SECRET_QUERY_VALUE.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Logging filter for access logs (uvicorn's, or any) that print full URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact_secrets(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        record.msg = redact_secrets(str(record.msg))
        return True
