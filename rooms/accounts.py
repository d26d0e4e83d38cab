"""Who is asking: the account behind a REST request (its session, or a personal API token) and
the room link token it carries; personal API tokens themselves; an account's display name.

Accounts are django.contrib.auth's users. A REST request is signed in by its session cookie
(browsers) or by `Authorization: Bearer pat_...` (scripts). A write that relies on the session
must carry the CSRF token, as Django's own forms do; API token and anonymous calls carry no
cookie that another site could ride on, so they need none. What an account may do in a room is
decided in rooms/access.py. See docs/protocol.md, "Accounts and sharing".
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from rooms.models import ApiToken
from rooms.protocol import MAX_NAME_LENGTH, json_error

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

# Personal API tokens are "pat_" and 43 URL-safe characters (256 random bits): 47 in all. Room
# link tokens are exactly 43 characters, so no link token is ever taken for an API token, and
# the prefix lets secret scanners and people recognise one.
API_TOKEN_PREFIX = "pat_"
API_TOKEN_LENGTH = len(API_TOKEN_PREFIX) + 43
# A token's last use is written at most this often: a script polling every second would
# otherwise turn each of its reads into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Refused(Exception):
    """The request cannot go on: `response` is the JSON answer (401 or 403)."""

    def __init__(self, response: JsonResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def unauthorized(message: str) -> JsonResponse:
    response = json_error(401, message)
    response["WWW-Authenticate"] = 'Bearer realm="collabsite"'
    return response


@dataclass(frozen=True, slots=True)
class Identity:
    user: AbstractBaseUser | None  # None: not signed in
    via: Literal["session", "api_token"] | None
    room_token: str | None  # a room link token, if the request carries one


def display_name(user: AbstractBaseUser) -> str:
    """The name presence shows for an account: its full name, else its user name."""
    full = getattr(user, "get_full_name", lambda: "")().strip()
    return (full or user.get_username())[:MAX_NAME_LENGTH]


def is_api_token(value: str) -> bool:
    return len(value) == API_TOKEN_LENGTH and value.startswith(API_TOKEN_PREFIX)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def request_identity(request: HttpRequest) -> Identity:
    """Who sent this request. Raises Refused: 401 for an API token that is wrong or revoked,
    403 for a write signed in by the session without a valid CSRF token."""
    bearer = _bearer(request)
    room_token = request.GET.get("token") or None
    if bearer is not None and is_api_token(bearer):
        user = api_token_user(bearer)
        if user is None:
            raise Refused(unauthorized("this API token is not valid (revoked, or never issued)"))
        return Identity(user, "api_token", room_token)
    room_token = bearer or room_token
    user = request.user if request.user.is_authenticated else None
    if user is not None and request.method not in SAFE_METHODS:
        refusal = _csrf_refusal(request)
        if refusal is not None:
            raise Refused(refusal)
    return Identity(user, "session" if user else None, room_token)


def request_account(request: HttpRequest) -> Identity:
    """request_identity() for endpoints that need an account: 401 when signed out."""
    identity = request_identity(request)
    if identity.user is None:
        raise Refused(unauthorized("sign in first, or send a personal API token"))
    return identity


def _csrf_refusal(request: HttpRequest) -> JsonResponse | None:
    """Django's own CSRF check, for the API views, which are exempt from the middleware so
    that calls without a session never need a token."""
    check = CsrfViewMiddleware(lambda _request: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})


# -- tokens ----------------------------------------------------------------------------------


def token_new() -> str:
    """A room link token: 43 URL-safe characters, 256 random bits."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token. Tokens are random, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`. The token itself is returned only here: the database keeps
    its hash."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken.objects.create(
        user=user, name=name, token_hash=token_hash(token), hint=token[: len(API_TOKEN_PREFIX) + 4]
    )
    return record, token


def api_token_revoke(*, user: AbstractBaseUser, token_id: int) -> bool:
    """Revoke one of `user`'s tokens; False when it has no such token."""
    deleted, _ = ApiToken.objects.filter(user_id=user.pk, id=token_id).delete()
    return deleted > 0


def api_token_user(token: str) -> AbstractBaseUser | None:
    """The active account an API token belongs to, or None."""
    record = (
        ApiToken.objects.select_related("user").filter(token_hash=token_hash(token)).first()
        if is_api_token(token)
        else None
    )
    if record is None or not record.user.is_active:
        return None
    now = timezone.now()
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(id=record.id).update(last_used_at=now)
    return record.user
