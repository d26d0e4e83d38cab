"""The Django admin's sign-in, as a browser does it, against a real server (tests/e2e/server.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from tests.e2e.server import LiveServer

ADMIN_USER = "admin"
ADMIN_PASSWORD = "a long password nobody guesses 7"
LOGIN_PATH = "/admin/login/"
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def admin_create(server: LiveServer) -> None:
    """A superuser ADMIN_USER / ADMIN_PASSWORD in the server's database."""
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            ADMIN_USER,
            "--email",
            "admin@example.com",
        ],
        cwd=server.project_root,
        env={**server.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        check=True,
        capture_output=True,
        timeout=60,
    )


def login_form(browser: httpx.Client, **headers: str) -> str:
    """Open the sign-in page (which sets the CSRF cookie); the form's CSRF token."""
    page = browser.get(LOGIN_PATH, headers=headers)
    assert page.status_code == 200, page.text
    return CSRF_FIELD.search(page.text).group(1)


def login_post(browser: httpx.Client, password: str, **headers: str) -> httpx.Response:
    """Submit the sign-in form as ADMIN_USER with `password`."""
    token = login_form(browser, **headers)
    # Every cookie goes back, Secure ones too: behind the TLS proxy the browser speaks HTTPS,
    # while this client talks plain HTTP to the server itself.
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
    return browser.post(
        f"{LOGIN_PATH}?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": password},
        headers={**headers, "Cookie": cookies},
    )


def signed_in(server: LiveServer, cookies: dict[str, str], **headers: str) -> bool:
    """Whether these cookies open the admin's index (a signed-in, staff session)."""
    answer = httpx.get(f"{server.http_url}/admin/", cookies=cookies, headers=headers, timeout=10)
    return answer.status_code == 200 and "Site administration" in answer.text
