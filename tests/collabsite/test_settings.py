"""Settings come from the environment and from `.env` in the project folder (collabsite/settings).

Each test starts processes in a fresh copy of the project, so nothing here reads or writes the
checkout's own `.env` or key file.
"""

from __future__ import annotations

import os
import re

import httpx
import pytest

from tests.collabsite.settings_probe import settings_of, start_refused, unconfigured_server
from tests.e2e.server import PROJECT_ROOT, LiveServer, project_copy

DEFAULTS = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "[::1]"],
    "REDIS_URL": "",
    "COLLAB_RATE_BURST": 500.0,
    "COLLAB_ALLOWED_ORIGINS": [],
}
# The environment of a process that should read the project folder's .env, as a user's would.
READS_DOT_ENV: dict[str, str] = {}


@pytest.fixture
def project(tmp_path):
    return project_copy(tmp_path)


def test_env_file_in_the_project_folder_is_read_and_typed(project):
    (project / ".env").write_text(
        "# a comment\n"
        "DJANGO_DEBUG=true\n"
        "DJANGO_ALLOWED_HOSTS=collab.example.com, 192.0.2.7\n"
        "REDIS_URL=redis://127.0.0.1:6379/3\n"
        "COLLAB_RATE_BURST=7.5\n"
        'COLLAB_ALLOWED_ORIGINS="https://ide.example.com"\n'
    )
    assert settings_of(project, READS_DOT_ENV, *DEFAULTS) == {
        "DEBUG": True,
        "ALLOWED_HOSTS": ["collab.example.com", "192.0.2.7"],
        "REDIS_URL": "redis://127.0.0.1:6379/3",
        "COLLAB_RATE_BURST": 7.5,
        "COLLAB_ALLOWED_ORIGINS": ["https://ide.example.com"],
    }


def test_real_environment_variables_win_over_the_env_file(project):
    (project / ".env").write_text(
        "DJANGO_DEBUG=true\nCOLLAB_RATE_BURST=7\nREDIS_URL=redis://127.0.0.1:6379/3\n"
    )
    real = {"DJANGO_DEBUG": "false", "COLLAB_RATE_BURST": "9", "REDIS_URL": ""}
    seen = settings_of(project, real, "DEBUG", "COLLAB_RATE_BURST", "REDIS_URL")
    # An exported empty REDIS_URL wins too: it means the default, in-process layer.
    assert seen == {"DEBUG": False, "COLLAB_RATE_BURST": 9.0, "REDIS_URL": ""}


def test_an_empty_value_means_the_default(project):
    (project / ".env").write_text("".join(f"{name}=\n" for name in ("DJANGO_DEBUG", "REDIS_URL")))
    empty = {"DJANGO_ALLOWED_HOSTS": "", "COLLAB_RATE_BURST": "", "COLLAB_ALLOWED_ORIGINS": " "}
    assert settings_of(project, empty, *DEFAULTS) == DEFAULTS


def test_the_test_run_and_the_servers_it_starts_read_no_env_file(project, tmp_path):
    # pyproject.toml's [tool.pytest_env] sets it before Django loads; servers inherit it.
    assert os.environ["COLLAB_ENV_FILE"] == ""
    assert LiveServer(tmp_path / "data").env["COLLAB_ENV_FILE"] == ""
    (project / ".env").write_text("DJANGO_DEBUG=true\nCOLLAB_RATE_BURST=7\n")
    assert settings_of(project, {"COLLAB_ENV_FILE": ""}, *DEFAULTS) == DEFAULTS


def test_collab_env_file_names_another_file_and_a_missing_one_is_an_error(project, tmp_path):
    other = tmp_path / "staging.env"
    other.write_text("COLLAB_RATE_BURST=42\n")
    (project / ".env").write_text("COLLAB_RATE_BURST=7\n")
    seen = settings_of(project, {"COLLAB_ENV_FILE": str(other)}, "COLLAB_RATE_BURST")
    assert seen == {"COLLAB_RATE_BURST": 42.0}
    error = start_refused(project, {"COLLAB_ENV_FILE": str(tmp_path / "missing.env")})
    assert "COLLAB_ENV_FILE" in error and "missing.env" in error and "not a file" in error


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_DEBUG", "ture"),
        ("DJANGO_SESSION_COOKIE_SECURE", "maybe"),
        ("COLLAB_RATE_BURST", "lots"),
        ("DJANGO_SECURE_HSTS_SECONDS", "1h"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
        ("COLLAB_SEND_BACKLOG_BYTES", "lots"),
        ("COLLAB_ROOM_HISTORY_MAX_BYTES", "16 megs"),
    ],
)
def test_a_value_that_does_not_parse_stops_the_start_and_names_its_variable(project, name, value):
    error = start_refused(project, {name: value})
    assert "ImproperlyConfigured" in error and f"{name}={value!r}" in error


def test_budgets_are_sizes_in_bytes_with_binary_units(project):
    seen = settings_of(
        project,
        {
            "COLLAB_SEND_BUFFER_BYTES": "1048576",
            "COLLAB_SEND_BACKLOG_BYTES": "256K",
            "COLLAB_RECENT_CHANGES_BYTES": "16M",
            "COLLAB_ROOM_HISTORY_MAX_BYTES": "2G",
            "COLLAB_CONNECTION_QUEUE_BYTES": "8 MiB",
        },
        "COLLAB_SEND_BUFFER_BYTES",
        "COLLAB_SEND_BACKLOG_BYTES",
        "COLLAB_RECENT_CHANGES_BYTES",
        "COLLAB_ROOM_HISTORY_MAX_BYTES",
        "COLLAB_CONNECTION_QUEUE_BYTES",
    )
    assert seen == {
        "COLLAB_SEND_BUFFER_BYTES": 1048576,
        "COLLAB_SEND_BACKLOG_BYTES": 256 * 1024,
        "COLLAB_RECENT_CHANGES_BYTES": 16 * 1024**2,
        "COLLAB_ROOM_HISTORY_MAX_BYTES": 2 * 1024**3,
        "COLLAB_CONNECTION_QUEUE_BYTES": 8 * 1024**2,
    }


def test_env_example_copied_to_env_gives_the_defaults(project):
    names = [
        "DEBUG",
        "ALLOWED_HOSTS",
        "DATABASES",
        "REDIS_URL",
        "COLLAB_ALLOWED_ORIGINS",
        "COLLAB_RATE_BURST",
        "COLLAB_RATE_PER_S",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "CSRF_TRUSTED_ORIGINS",
        "AXES_FAILURE_LIMIT",
        "AXES_COOLOFF_TIME",
        "LOGGING",
        "COLLAB_SEND_BUFFER_BYTES",
        "COLLAB_SEND_BACKLOG_BYTES",
        "COLLAB_RECENT_CHANGES_BYTES",
        "COLLAB_CONNECTION_QUEUE_BYTES",
        "COLLAB_ROOM_HISTORY_MAX_BYTES",
        "COLLAB_ROOM_TEXT_MAX_CODE_POINTS",
    ]
    without = settings_of(project, READS_DOT_ENV, *names)
    (project / ".env").write_text((PROJECT_ROOT / ".env.example").read_text())
    assert settings_of(project, READS_DOT_ENV, *names) == without


def test_env_example_lists_every_variable_the_settings_read():
    source = (PROJECT_ROOT / "collabsite" / "settings.py").read_text()
    read = set(re.findall(r'env\.\w+\(\s*"(\w+)"', source))
    listed = set(re.findall(r"^#? ?(\w+)=", (PROJECT_ROOT / ".env.example").read_text(), re.M))
    assert read, "the pattern finds the settings' variables"
    # TEST_SQLITE_NAME belongs to the test harness, not to a user's set-up.
    assert read - {"TEST_SQLITE_NAME"} <= listed, "missing from .env.example"
    assert listed <= read | {"COLLAB_ENV_FILE"}, ".env.example lists a variable nothing reads"


def test_runserver_started_in_a_folder_with_an_env_file_uses_it(project, tmp_path):
    (project / ".env").write_text("DJANGO_ALLOWED_HOSTS=collab.example.com\n")
    # No COLLAB_ENV_FILE, as in a user's shell: the project folder's .env is read.
    server = unconfigured_server(tmp_path / "data", project)
    with server:
        own = httpx.get(f"{server.http_url}/healthz", headers={"Host": "collab.example.com"})
        other = httpx.get(f"{server.http_url}/healthz")
    assert own.status_code == 200, own.text
    assert other.status_code == 400, "127.0.0.1 is not in the .env's DJANGO_ALLOWED_HOSTS"
