"""One signing key per installation (collabsite/secret_key.py): made on first run, kept in a file
only its owner reads, shared by every process started from the folder, kept across restarts.
"""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.collabsite.settings_probe import settings_of, start_refused, unconfigured_server
from tests.e2e.admin import ADMIN_PASSWORD, admin_create, login_post, signed_in
from tests.e2e.server import LiveServer, project_copy


@pytest.fixture
def project(tmp_path):
    return project_copy(tmp_path / "project")


def test_the_key_is_made_on_first_run_kept_for_its_owner_and_reused(project):
    key_file = project / ".secret_key"
    assert not key_file.exists()
    first = settings_of(project, {}, "SECRET_KEY")["SECRET_KEY"]
    assert key_file.read_text().strip() == first and len(first) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings_of(project, {}, "SECRET_KEY")["SECRET_KEY"] == first, "a restart keeps it"


def test_processes_starting_together_agree_on_one_key(project):
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: settings_of(project, {}, "SECRET_KEY"), range(8)))
    assert len({seen["SECRET_KEY"] for seen in keys}) == 1
    leftovers = [path.name for path in project.iterdir() if path.name.startswith(".secret_key.")]
    assert leftovers == [], "no candidate file is left behind"


def test_django_secret_key_wins_and_no_file_is_made(project):
    key = "k" * 20 + "0123456789abcdefghij"
    assert settings_of(project, {"DJANGO_SECRET_KEY": key}, "SECRET_KEY") == {"SECRET_KEY": key}
    assert not (project / ".secret_key").exists()


def test_django_secret_key_file_moves_the_kept_key(project, tmp_path):
    key_file = tmp_path / "keys" / "collab.key"
    seen = settings_of(project, {"DJANGO_SECRET_KEY_FILE": str(key_file)}, "SECRET_KEY")
    assert key_file.read_text().strip() == seen["SECRET_KEY"]
    assert not (project / ".secret_key").exists()


@pytest.mark.parametrize("key", ["change-me", "django-insecure-" + "x" * 40, "short-but-random-Q7"])
def test_a_placeholder_or_short_key_is_refused_unless_debug(project, key):
    error = start_refused(project, {"DJANGO_SECRET_KEY": key})
    assert "ImproperlyConfigured" in error and "DJANGO_SECRET_KEY" in error
    assert "secrets.token_urlsafe" in error, "the error says how to make a good one"
    seen = settings_of(project, {"DJANGO_SECRET_KEY": key, "DJANGO_DEBUG": "true"}, "SECRET_KEY")
    assert seen == {"SECRET_KEY": key}


def test_an_unusable_key_file_or_place_is_a_clear_error(project, tmp_path):
    (project / ".secret_key").write_text("\n")
    error = start_refused(project, {})
    assert ".secret_key holds no usable secret key" in error
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    error = start_refused(project, {"DJANGO_SECRET_KEY_FILE": str(not_a_folder / "key")})
    assert "cannot keep a secret key" in error and "DJANGO_SECRET_KEY" in error


# -- real servers: a sign-in is a session signed with the key ------------------------------------


def admin_sign_in(server: LiveServer) -> dict[str, str]:
    """The cookies of a session signed in to the admin on `server`."""
    with httpx.Client(base_url=server.http_url, timeout=10) as browser:
        answer = login_post(browser, ADMIN_PASSWORD)
        assert answer.status_code == 302 and answer.headers["location"] == "/admin/", answer.text
        return dict(browser.cookies)


def test_a_sign_in_holds_on_every_server_of_the_folder_and_across_a_restart(project, tmp_path):
    # Two servers started from one fresh folder on one database; the environment sets no key.
    first = unconfigured_server(tmp_path / "data", project)
    second = unconfigured_server(tmp_path / "data", project)
    with first:
        admin_create(first)
        with second:
            cookies = admin_sign_in(first)
            assert signed_in(first, cookies)
            assert signed_in(second, cookies), "the other process honours the session"
            first.restart()
            assert signed_in(first, cookies), "the session survives a restart"
            assert not signed_in(second, {**cookies, "sessionid": "forged"})
