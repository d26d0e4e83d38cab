"""Settings for collabsite, read from the environment and from `.env` in the project folder
(.env.example lists every variable; the environment wins).

Every default runs the embedded set-up: SQLite in the project folder and an in-process channel
layer, so `python manage.py runserver` needs no services. Production sets DATABASE_URL and
REDIS_URL to share rooms between processes.
"""

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from collabsite.secret_key import secret_key_check, secret_key_load

BASE_DIR = Path(__file__).resolve().parent.parent

BOOLEAN_WORDS = {*environ.Env.BOOLEAN_TRUE_STRINGS, "false", "off", "no", "n", "0"}


class Environment(environ.Env):
    """django-environ's reader, strict where a silent fallback would surprise: an empty variable
    (`NAME=` in .env) means its default, a boolean must say yes or no (a mistyped
    `DJANGO_SESSION_COOKIE_SECURE=ture` must not quietly mean false), and a value that does not
    parse names its variable."""

    def get_value(
        self,
        var: str,
        cast: Any = None,
        default: Any = environ.Env.NOTSET,
        parse_default: bool = False,
    ) -> Any:
        raw = self.ENVIRON.get(var, "")
        if not raw.strip() and default is not self.NOTSET:
            return default
        if cast is bool and raw.strip().lower() not in BOOLEAN_WORDS:
            raise ImproperlyConfigured(f"{var}={raw!r} is not a boolean: use true or false")
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as error:
            raise ImproperlyConfigured(f"{var}={raw!r}: {error}") from None


# `.env` in the project folder, or the file COLLAB_ENV_FILE names ("" reads none: the test run
# sets that, so a developer's .env never configures it). Variables already in the environment
# win over the file.
ENV_FILE = os.environ.get("COLLAB_ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)
elif ENV_FILE and "COLLAB_ENV_FILE" in os.environ:
    raise ImproperlyConfigured(f"COLLAB_ENV_FILE={ENV_FILE!r} is not a file")
env = Environment()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Production sets DJANGO_SECRET_KEY; otherwise every process of this folder shares one key, made
# on first run and kept in a file, so sessions survive restarts and every worker honours them.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or secret_key_load(
    path=Path(env.str("DJANGO_SECRET_KEY_FILE", default=str(BASE_DIR / ".secret_key")))
)
secret_key_check(key=SECRET_KEY, debug=DEBUG)
# Keys DJANGO_SECRET_KEY had before, still accepted (comma-separated): what they signed (sessions,
# the client secrets that open editors resume with) stays valid after a change of key.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", cast=str.strip, default=[])
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", cast=str.strip, default=["localhost", "127.0.0.1", "[::1]"]
)


_BYTE_SIZE = re.compile(r"(\d+)\s*(?:([KMG])(?:i?B)?)?", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def byte_size(value: str) -> int:
    """A size in bytes: an integer, optionally with K, M or G (binary: 1 K = 1,024 bytes)."""
    match = _BYTE_SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError("give a size in bytes, like 16777216 or 16M")
    return int(match.group(1)) * _BYTE_UNITS[(match.group(2) or "").upper()]


def proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER from `Header-Name=value` (e.g. `X-Forwarded-Proto=https`)."""
    if not value:
        return None
    name, _, expected = (part.strip() for part in value.partition("="))
    if not re.fullmatch(r"[A-Za-z0-9-]+", name) or not expected:
        raise ImproperlyConfigured(
            f"DJANGO_SECURE_PROXY_SSL_HEADER={value!r}: write it as Header-Name=value, "
            "e.g. X-Forwarded-Proto=https"
        )
    return "HTTP_" + name.upper().replace("-", "_"), expected


# HTTPS, for a server behind TLS (docs/deploying.md#https). All off by default: the embedded
# set-up serves plain HTTP, where a Secure cookie would never come back.
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)
# Only behind a proxy that sets this header itself on every request (and drops a client's own).
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default=""))
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Origins (scheme://host[:port]) whose forms may post here, besides the server's own host.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", cast=str.strip, default=[])

INSTALLED_APPS = [
    # rooms' runserver (daphne's, tuned) must win over daphne's, which wins over Django's.
    "rooms",
    "daphne",  # so `manage.py runserver` serves HTTP and WebSocket through daphne
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "channels",
    "autocomplete",
]

MIDDLEWARE = [
    # First, so that every answer (redirects of the middleware below included) names the
    # process that gave it (X-Collab-Process): where a proxy or `serve` routed the request.
    "rooms.affinity.process_header_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees the outcome of every sign-in and turns a lockout into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out sign-in before any password is checked, for the
# admin's login and every other view that calls django.contrib.auth.authenticate().
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# After this many failed sign-ins for one user name from one address, that pair is locked out.
# Locking by the pair keeps an attacker from locking a real user out from elsewhere; behind a
# proxy every client shares the proxy's address, so the lock then applies to the user name.
AXES_FAILURE_LIMIT = env.int("COLLAB_LOGIN_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = timedelta(seconds=env.float("COLLAB_LOGIN_COOLOFF_S", default=900.0))
# Attempts during a lockout (right password or not) are refused but do not extend it, so the
# wait the answer announces holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
cooloff_s = AXES_COOLOFF_TIME.total_seconds()
AXES_COOLOFF_MESSAGE = (
    "Too many failed sign-ins: this account is locked for "
    + (f"{cooloff_s / 60:g} minutes" if cooloff_s % 60 == 0 else f"{cooloff_s:g} seconds")
    + " from the last failed attempt."
)
# The lockout answer as a page in the editor's look (still 429, with the message above).
AXES_LOCKOUT_CALLABLE = "rooms.pages.sign_in_locked_out"

ROOT_URLCONF = "collabsite.urls"
# The API answers `/path` and `/path/` itself; a redirect would turn a POST into a GET.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "collabsite.asgi.application"
WSGI_APPLICATION = "collabsite.wsgi.application"

DATABASES = {
    "default": {
        **env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        "CONN_MAX_AGE": None,  # persistent connections: the database thread is long-lived
    }
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two processes never deadlock on upgrade;
        # WAL lets readers run beside the writer; NORMAL sync survives a killed process
        # (the data is in the OS page cache), which is the durability promise we make.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_SQLITE_NAME", default="") or None}

# Memory and storage budgets (docs/deploying.md, "Memory and storage budgets"). Each bounds what
# one client or one room can make the server hold; the defaults sit far above normal use.
# Bytes written to a socket and not yet taken by the kernel before the server stops writing to
# it; a frame is never split, so a socket holds at most this plus one frame.
COLLAB_SEND_BUFFER_BYTES = env.get_value("COLLAB_SEND_BUFFER_BYTES", byte_size, 256 * 1024)
# What a connection that stopped reading may still be owed (text mode: the whole text of every
# version it missed) before it is closed with 4413 and resumes instead of catching up.
COLLAB_SEND_BACKLOG_BYTES = env.get_value("COLLAB_SEND_BACKLOG_BYTES", byte_size, 16 * 1024**2)
# A live room's recent changes in memory (besides the count, 1,000): keystrokes never reach it.
COLLAB_RECENT_CHANGES_BYTES = env.get_value("COLLAB_RECENT_CHANGES_BYTES", byte_size, 16 * 1024**2)
# Messages waiting in a connection's channel-layer queue (in-process layer), besides the count.
COLLAB_CONNECTION_QUEUE_BYTES = env.get_value(
    "COLLAB_CONNECTION_QUEUE_BYTES", byte_size, 8 * 1024**2
)
# A room's stored history (its op log and the copies of its text); edits past it are refused
# with `too_large`.
COLLAB_ROOM_HISTORY_MAX_BYTES = env.get_value("COLLAB_ROOM_HISTORY_MAX_BYTES", byte_size, 1024**3)
# A room's text, in code points (the protocol's default: 1,048,576).
COLLAB_ROOM_TEXT_MAX_CODE_POINTS = env.int("COLLAB_ROOM_TEXT_MAX_CODE_POINTS", default=1_048_576)

REDIS_URL = env.str("REDIS_URL", default="")
# A pooled connection that Redis closed (it restarted) fails the next command sent on it: that
# command is retried once, at once, on a new connection, so the first request after Redis is
# back succeeds. Used by the channel layer and by presence (rooms/presence.py).
REDIS_CONNECTION_OPTIONS = {
    "retry": RedisRetry(NoBackoff(), 1),
    "retry_on_error": [RedisConnectionError],
}
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_CONNECTION_OPTIONS}]},
        }
    }
else:
    # Our own in-process layer: a broadcast costs O(room size), not O(process connections).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "rooms.layers.RoomChannelLayer",
            "CONFIG": {"capacity_bytes": COLLAB_CONNECTION_QUEUE_BYTES},
        }
    }

# A room's code may be 1,048,576 code points; as escaped JSON that can reach 12 bytes each.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024

# Daphne's own WebSocket cap must sit above the protocol's 1 MiB limit, so that the application
# answers `too_large` instead of the transport closing the socket.
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = 4 * 1024 * 1024

# Browser origins allowed to open a WebSocket; empty means ALLOWED_HOSTS (see rooms/origin.py).
COLLAB_ALLOWED_ORIGINS = env.list("COLLAB_ALLOWED_ORIGINS", cast=str.strip, default=[])
# Per-connection token bucket: a burst for paste-heavy moments, then a steady rate.
COLLAB_RATE_BURST = env.float("COLLAB_RATE_BURST", default=500.0)
COLLAB_RATE_PER_S = env.float("COLLAB_RATE_PER_S", default=100.0)

# Rooms one client address may create per minute (REST); 0 turns the limit off. When on, keep
# it generous (>= 1000): test suites and classrooms create rooms in bursts.
COLLAB_ROOM_CREATE_PER_MIN = env.float("COLLAB_ROOM_CREATE_PER_MIN", default=0.0)
# A WebSocket that sends nothing for this long is closed (0: never). Clients that stay open
# idle should ping; collab-client.js pings after 20 s of silence.
COLLAB_IDLE_TIMEOUT_S = env.float("COLLAB_IDLE_TIMEOUT_S", default=600.0)

# How long a user of a killed server process stays listed at most (seconds).
COLLAB_PRESENCE_TTL_S = env.float("COLLAB_PRESENCE_TTL_S", default=15.0)
# Up to this many users in a room, `join` and `leave` carry the whole users list; above it,
# presence changes go out as `presence` deltas, so a join costs each member one user's bytes
# instead of the whole list (docs/protocol.md section 8).
COLLAB_PRESENCE_FULL_LIST_MAX = env.int("COLLAB_PRESENCE_FULL_LIST_MAX", default=50)
# Connections one room accepts at once, over all processes (0: no limit); the next one is
# closed with 4429. Beyond about this many, a room's fan-out cost outgrows one process.
COLLAB_ROOM_MAX_CONNECTIONS = env.int("COLLAB_ROOM_MAX_CONNECTIONS", default=1000)
# With several processes, how often each checks its rooms' versions in the database, so a
# change whose notification the channel layer lost is still delivered (seconds). A safety net
# only (changes travel by Redis pub/sub), so it is slow: one query per process per interval
# while it has rooms open, none otherwise.
COLLAB_VERSION_POLL_S = env.float("COLLAB_VERSION_POLL_S", default=5.0)

# How long a completion waits for Jedi (seconds) before answering from keywords, builtins and
# the file's names, marked "incomplete"; Jedi's late answer is cached for the next request at
# the same place. Lower it on a slow machine to keep completions snappy.
AUTOCOMPLETE_BUDGET_S = env.float("AUTOCOMPLETE_BUDGET_S", default=0.2)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Accounts are django.contrib.auth's: its sign-in page, and where people land after signing in
# (unless the sign-in page was given a `next`) and out.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/my-rooms/"
LOGOUT_REDIRECT_URL = "/"

# Password reset e-mails: printed on the server's console by default; EMAIL_URL names an SMTP
# server instead (django-environ's form: smtp+tls://user:password@smtp.example.com:587).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="collabsite <noreply@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Only needed for `collectstatic` in a deployment that serves files from a folder.
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None
# Serve from the app folders directly, so the server runs without a collectstatic step.
WHITENOISE_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CSRF_FAILURE_VIEW = "rooms.views.csrf_failure"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # django-axes announces itself at every start, in every management command; its lockout
    # warnings come from its handlers' loggers and stay.
    "loggers": {"axes.apps": {"level": "WARNING"}},
}
