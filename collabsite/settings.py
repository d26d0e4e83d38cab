"""Settings for collabsite, read from the environment (see .env.example).

Every default runs the embedded set-up: SQLite in the project folder and an in-process channel
layer, so `python manage.py runserver` needs no services. Production sets DATABASE_URL and
REDIS_URL to share rooms between processes.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


# No session or signed cookie outlives a process in this app, so a per-process random key is a
# safe default; set DJANGO_SECRET_KEY when you add anything that signs data.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

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
    "channels",
    "autocomplete",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=None,  # persistent connections: the database thread is long-lived
    )
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
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_SQLITE_NAME") or None}

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # Our own in-process layer: a broadcast costs O(room size), not O(process connections).
    CHANNEL_LAYERS = {"default": {"BACKEND": "rooms.layers.RoomChannelLayer"}}

# A room's code may be 1,048,576 code points; as escaped JSON that can reach 12 bytes each.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024

# Daphne's own WebSocket cap must sit above the protocol's 1 MiB limit, so that the application
# answers `too_large` instead of the transport closing the socket.
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = 4 * 1024 * 1024

# Browser origins allowed to open a WebSocket; empty means ALLOWED_HOSTS (see rooms/origin.py).
COLLAB_ALLOWED_ORIGINS = env_list("COLLAB_ALLOWED_ORIGINS", "")
# Per-connection token bucket: a burst for paste-heavy moments, then a steady rate.
COLLAB_RATE_BURST = env_float("COLLAB_RATE_BURST", 500)
COLLAB_RATE_PER_S = env_float("COLLAB_RATE_PER_S", 100)

# Rooms one client address may create per minute (REST); 0 turns the limit off. When on, keep
# it generous (>= 1000): test suites and classrooms create rooms in bursts.
COLLAB_ROOM_CREATE_PER_MIN = env_float("COLLAB_ROOM_CREATE_PER_MIN", 0)
# A WebSocket that sends nothing for this long is closed (0: never). Clients that stay open
# idle should ping; collab-client.js pings after 20 s of silence.
COLLAB_IDLE_TIMEOUT_S = env_float("COLLAB_IDLE_TIMEOUT_S", 600)

# How long a user of a killed server process stays listed at most (seconds).
COLLAB_PRESENCE_TTL_S = env_float("COLLAB_PRESENCE_TTL_S", 15)
# With several processes, how often each checks its rooms' versions in the database, so a
# change whose notification the channel layer lost is still delivered (seconds).
COLLAB_VERSION_POLL_S = env_float("COLLAB_VERSION_POLL_S", 1.0)

# How long a completion waits for Jedi (seconds) before answering from keywords, builtins and
# the file's names, marked "incomplete"; Jedi's late answer is cached for the next request at
# the same place. Lower it on a slow machine to keep completions snappy.
AUTOCOMPLETE_BUDGET_S = env_float("AUTOCOMPLETE_BUDGET_S", 0.2)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Only needed for `collectstatic` in a deployment that serves files from a folder.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
# Serve from the app folders directly, so the server runs without a collectstatic step.
WHITENOISE_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CSRF_FAILURE_VIEW = "rooms.views.csrf_failure"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
