"""The account pages (rooms/pages.py, django.contrib.auth's views in collabsite/urls.py): sign up,
sign in at LOGIN_URL with `username` and `password`, sign out, change and reset the password,
the account page's API tokens, and "My rooms"."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from rooms import document
from rooms.models import ApiToken, RoomMember
from tests.rooms.support_accounts import PASSWORD, user_new

pytestmark = pytest.mark.django_db


def csrf_of(client: Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def post_form(client: Client, path: str, data: dict):
    return client.post(path, {**data, "csrfmiddlewaretoken": csrf_of(client, path)})


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def signed_in(client: Client) -> str | None:
    user = client.get("/").context["user"]
    return user.get_username() if user.is_authenticated else None


def test_sign_up_makes_an_account_signs_it_in_and_opens_my_rooms(browser):
    response = post_form(
        browser,
        "/accounts/signup/",
        {
            "username": "alice",
            "email": "alice@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 302 and response["Location"] == settings.LOGIN_REDIRECT_URL
    assert signed_in(browser) == "alice"
    assert get_user_model().objects.get(username="alice").email == "alice@example.com"


def test_sign_up_goes_back_to_next_but_never_off_site(browser):
    form = {"email": "x@example.com", "password1": PASSWORD, "password2": PASSWORD}
    back = post_form(
        browser, "/accounts/signup?next=/r/abc", {**form, "username": "a", "next": "/r/abc"}
    )
    assert back["Location"] == "/r/abc"
    other = Client(enforce_csrf_checks=True)
    away = post_form(
        other,
        "/accounts/signup/",
        {**form, "username": "b", "email": "b@example.com", "next": "https://evil.example/"},
    )
    assert away["Location"] == settings.LOGIN_REDIRECT_URL


def test_sign_up_refuses_a_taken_user_name_or_e_mail_and_a_weak_password(browser):
    user_new("alice", email="alice@example.com")
    for username, email, password in [
        ("alice", "new@example.com", PASSWORD),
        ("alice2", "ALICE@example.com", PASSWORD),
        ("carol", "carol@example.com", "123"),
    ]:
        response = post_form(
            browser,
            "/accounts/signup/",
            {"username": username, "email": email, "password1": password, "password2": password},
        )
        assert response.status_code == 200 and 'class="field-error"' in response.content.decode()
    assert get_user_model().objects.count() == 1


def test_sign_in_is_djangos_login_view_at_login_url_with_username_and_password(browser):
    user_new("alice")
    page = browser.get(settings.LOGIN_URL).content.decode()
    assert 'name="username"' in page and 'name="password"' in page
    wrong = post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and signed_in(browser) is None
    right = post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": PASSWORD})
    assert right.status_code == 302 and signed_in(browser) == "alice"
    # Without its trailing slash too, like every other path.
    assert Client().get(settings.LOGIN_URL.rstrip("/")).status_code == 200


def test_sign_out_is_a_post_and_ends_the_session(browser):
    user_new("alice")
    post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": PASSWORD})
    token = csrf_of(browser, "/accounts/")
    assert browser.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert signed_in(browser) is None


def test_changing_the_password(browser):
    user_new("alice")
    post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": PASSWORD})
    new = "another long passphrase"
    response = post_form(
        browser,
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert get_user_model().objects.get(username="alice").check_password(new)


def test_resetting_a_forgotten_password_by_e_mail(browser, mailoutbox):
    user_new("alice", email="alice@example.com")
    sent = post_form(browser, "/accounts/password_reset/", {"email": "alice@example.com"})
    assert sent.status_code == 302
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["alice@example.com"]
    link = re.search(r"http://testserver(/accounts/reset/\S+)", mailoutbox[0].body).group(1)
    form_page = browser.get(link, follow=True)
    assert 'name="new_password1"' in form_page.content.decode()
    new = "a brand new passphrase"
    path = form_page.redirect_chain[-1][0]
    done = post_form(browser, path, {"new_password1": new, "new_password2": new})
    assert done.status_code == 302
    assert get_user_model().objects.get(username="alice").check_password(new)
    # The link works once.
    assert "no longer works" in browser.get(link, follow=True).content.decode()


def test_account_page_makes_a_token_shows_it_once_and_revokes_it(browser):
    user_new("alice")
    post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": PASSWORD})
    made = post_form(browser, "/accounts/", {"action": "create", "name": "ci bot"})
    token = re.search(r'<code id="new-token">(pat_[^<]+)</code>', made.content.decode()).group(1)
    assert Client().get("/rooms", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    listed = browser.get("/accounts/").content.decode()
    assert "ci bot" in listed and token not in listed
    record = ApiToken.objects.get()
    revoked = post_form(browser, "/accounts/", {"action": "revoke", "token_id": str(record.id)})
    assert revoked.status_code == 302
    assert Client().get("/rooms", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_my_rooms_lists_owned_and_shared_rooms_and_needs_signing_in(browser):
    alice, bob = user_new("alice"), user_new("bob")
    mine, _ = document.room_create_private(name="mine", owner=alice)
    shared, _ = document.room_create_private(name="shared", owner=bob)
    RoomMember.objects.create(room=shared, user=alice, role="viewer")
    document.room_create_private(name="not mine", owner=bob)
    to_sign_in = browser.get("/my-rooms/")
    assert to_sign_in.status_code == 302 and to_sign_in["Location"].startswith(settings.LOGIN_URL)
    post_form(browser, settings.LOGIN_URL, {"username": "alice", "password": PASSWORD})
    page = browser.get("/my-rooms").content.decode()
    assert f"/r/{mine.id}" in page and f"/r/{shared.id}" in page and "not mine" not in page


@pytest.mark.parametrize(
    "path", ["/accounts/login/", "/accounts/signup/", "/accounts/password_reset/"]
)
def test_account_pages_carry_the_editors_security_headers(path):
    response = Client().get(path)
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "same-origin"


def test_the_editor_page_tells_a_signed_in_owner_it_may_share(browser):
    alice = user_new("alice")
    room, _ = document.room_create_private(owner=alice)
    anonymous = Client().get(f"/r/{room.id}").context["page"]
    assert set(anonymous) == {"roomId", "badRoomId"}
    browser.force_login(alice)
    page = browser.get(f"/r/{room.id}").context["page"]
    assert page["role"] == "owner" and page["manage"] and page["csrfToken"]
    assert page["account"] == {"username": "alice", "name": "alice"}


def test_sign_in_at_login_url_is_locked_after_repeated_failures(settings):
    user_new("alice")
    browser = Client()  # the lock, not CSRF, is under test here

    def sign_in(password: str):
        return browser.post(
            settings.LOGIN_URL, {"username": "alice", "password": password}, REMOTE_ADDR="192.0.2.1"
        )

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in("wrong").status_code == 200
    locked = sign_in("wrong")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed sign-ins" in page and 'class="topbar"' in page  # the pages' look
    assert sign_in(PASSWORD).status_code == 429  # the right password too, while locked
    assert signed_in(browser) is None
