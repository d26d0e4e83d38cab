"""HTTPS settings from the environment take effect on a real server (docs/deploying.md#https).

One server runs with every HTTPS variable set, as behind a TLS-terminating proxy; one with none,
as the embedded set-up: each promise is checked on both, so each setting is seen to act.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.admin import ADMIN_PASSWORD, LOGIN_PATH, admin_create, login_form, login_post
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

SITE = "https://collab.example.com"
HTTPS_ENV = {
    "DJANGO_SESSION_COOKIE_SECURE": "true",
    "DJANGO_CSRF_COOKIE_SECURE": "true",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto=https",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "3600",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_CSRF_TRUSTED_ORIGINS": SITE,
}
# What the proxy adds to every request it forwards over HTTPS.
VIA_TLS_PROXY = {"X-Forwarded-Proto": "https"}


def started(data_dir, env: dict[str, str]) -> LiveServer:
    server = LiveServer(data_dir, env)
    server.start()
    admin_create(server)
    return server


@pytest.fixture(scope="module")
def https_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = started(tmp_path_factory.mktemp("https"), HTTPS_ENV)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = started(tmp_path_factory.mktemp("plain"), {name: "" for name in HTTPS_ENV})
    yield server
    server.stop()


def browser(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=10)


def set_cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header of cookie `name`."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers
    return headers[0]


def test_plain_http_is_redirected_to_https(https_server, plain_server):
    with browser(https_server) as http:
        answer = http.get(LOGIN_PATH)
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://127.0.0.1:{https_server.port}{LOGIN_PATH}"
    with browser(plain_server) as http:
        assert http.get(LOGIN_PATH).status_code == 200


def test_the_proxy_header_marks_requests_secure_and_they_get_hsts(https_server, plain_server):
    with browser(https_server) as http:
        answer = http.get(LOGIN_PATH, headers=VIA_TLS_PROXY)
    assert answer.status_code == 200, "a request the proxy forwarded over HTTPS is not redirected"
    assert answer.headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    with browser(plain_server) as http:
        answer = http.get(LOGIN_PATH, headers=VIA_TLS_PROXY)
    assert answer.status_code == 200
    assert "strict-transport-security" not in answer.headers


def test_csrf_and_session_cookies_are_secure(https_server, plain_server):
    for server, origin, secure in ((https_server, SITE, True), (plain_server, None, False)):
        headers = {"Origin": origin, **VIA_TLS_PROXY} if origin else {}
        with browser(server) as http:
            page = http.get(LOGIN_PATH, headers=headers)
        with browser(server) as http:
            answer = login_post(http, ADMIN_PASSWORD, **headers)
        assert answer.status_code == 302, answer.text
        assert ("; Secure" in set_cookie(page, "csrftoken")) is secure
        assert ("; Secure" in set_cookie(answer, "sessionid")) is secure


def test_only_trusted_origins_may_post_the_sign_in_form(https_server, plain_server):
    def origin_may_post(server: LiveServer, origin: str) -> bool:
        with browser(server) as http:
            answer = login_post(http, ADMIN_PASSWORD, Origin=origin, **VIA_TLS_PROXY)
        assert answer.status_code in (302, 403), answer.text
        return answer.status_code == 302

    assert origin_may_post(https_server, SITE)
    assert not origin_may_post(https_server, "https://elsewhere.example.com")
    assert not origin_may_post(plain_server, SITE)
    with browser(plain_server) as http:
        assert login_form(http)  # the plain server's form itself is fine
