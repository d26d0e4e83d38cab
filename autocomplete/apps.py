"""App config for autocomplete: warms Jedi up at server start-up, off the request path."""

import os
import sys
from collections.abc import Mapping, Sequence

from django.apps import AppConfig
from django.conf import settings

# Entry points that run management commands rather than serve requests.
_MANAGE_SCRIPTS = {"manage.py", "django-admin", "django-admin.py", "__main__.py"}


def should_warm_up(argv: Sequence[str], environ: Mapping[str, str], under_pytest: bool) -> bool:
    """Whether this process will serve completions soon enough to pay Jedi's start-up now.

    Servers (daphne, uvicorn, gunicorn, `runserver`'s serving child) warm up; tests and other
    management commands (migrate, makemigrations, shell, ...) do not, and warm up lazily on
    their first completion instead. settings.AUTOCOMPLETE_WARM_UP (bool) overrides.
    """
    forced = getattr(settings, "AUTOCOMPLETE_WARM_UP", None)
    if forced is not None:
        return bool(forced)
    if under_pytest:
        return False
    script = os.path.basename(argv[0]) if argv else ""
    if script in _MANAGE_SCRIPTS:
        if len(argv) < 2 or argv[1] not in ("runserver", "serve"):
            return False
        if argv[1] == "serve":
            # With several workers the launcher only routes connections (rooms/workers.py);
            # its workers, started with --worker-channel, serve.
            return "--worker-channel" in argv or _serve_workers(argv) == 1
        # With the autoreloader, the parent only watches files; the child (RUN_MAIN) serves.
        return "--noreload" in argv or environ.get("RUN_MAIN") == "true"
    return True


def _serve_workers(argv: Sequence[str]) -> int:
    """The --workers N of a `serve` command line (1 when absent or unreadable)."""
    for index, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--workers=") else None
        if arg == "--workers" and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None:
            return int(value) if value.isdigit() else 1
    return 1


class AutocompleteConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "autocomplete"

    def ready(self) -> None:
        if should_warm_up(sys.argv, os.environ, under_pytest="pytest" in sys.modules):
            from autocomplete import completion

            # Queued on the Jedi thread; start-up does not wait for it.
            completion.start_warm_up()
