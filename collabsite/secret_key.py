"""The signing key: one per installation, kept in a file when the environment does not set one.

Django signs sessions (the admin's sign-in) and other values with SECRET_KEY. A key made per
process would sign out everyone at each restart and make the workers of `manage.py serve` reject
each other's sessions, so the embedded set-up makes one key on first run and every later process
started from the same folder reads it. Production sets DJANGO_SECRET_KEY (docs/deploying.md).

Imports nothing from Django's configured state: settings.py calls it while it loads.
"""

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# 50 random bytes, URL-safe: 67 characters, above the 50 Django's deployment check asks for.
KEY_BYTES = 50
# Shorter keys are too easy to guess to sign sessions with.
MIN_KEY_LENGTH = 32
# Values that come from examples and tutorials, never from a generator.
PLACEHOLDERS = {"change-me", "changeme", "change_me", "secret", "secret-key", "your-secret-key"}
HOW_TO_MAKE_ONE = (
    "make one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`, or unset "
    "DJANGO_SECRET_KEY to use the key kept in the project folder"
)


def secret_key_load(*, path: Path) -> str:
    """The key kept at `path`, made there (readable by its owner only) on first use.

    Processes starting together (workers, a second server) all end with the same key: each
    writes a candidate whole under a temporary name and links it into place, the first link
    wins, and nobody reads a half-written file.
    """
    if not path.exists():
        try:
            _key_file_create(path=path)
        except OSError as error:
            raise ImproperlyConfigured(
                f"cannot keep a secret key at {path} ({error.strerror}): set DJANGO_SECRET_KEY, "
                "or DJANGO_SECRET_KEY_FILE to a writable place"
            ) from None
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(
            f"{path} holds no usable secret key (fewer than {MIN_KEY_LENGTH} characters): "
            "delete it to have a new one made (everyone is signed out), or set DJANGO_SECRET_KEY"
        )
    return key


def _key_file_create(*, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600: the key is never readable by others.
    handle, candidate = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        # If another process linked its key first, everyone uses that one.
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)
    finally:
        os.unlink(candidate)


def secret_key_check(*, key: str, debug: bool) -> None:
    """Refuse to serve with a key that anyone could know, unless DEBUG (a developer's machine)."""
    if debug:
        return
    if key.strip().lower() in PLACEHOLDERS or key.startswith("django-insecure-"):
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY is a placeholder: {HOW_TO_MAKE_ONE}")
    if len(key) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is shorter than {MIN_KEY_LENGTH} characters: {HOW_TO_MAKE_ONE}"
        )
