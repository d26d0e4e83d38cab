"""The HTML pages: the editor at `/`, `/r/<room_id>` and `/?room=<room_id>` (its API:
docs/protocol.md), and the account pages: sign-up, the account page (personal API tokens) and
"My rooms". Sign-in, sign-out and passwords are django.contrib.auth's own views (wired in
collabsite/urls.py); every page's template is in the editor's look (templates/registration,
templates/rooms).

The editor is a template plus static files (rooms/static/rooms/editor.js, editor.css, the
CodeMirror bundle built by frontend/build.mjs, share.js for the share dialog, and
page-errors.js, which shows what went wrong when they fail to load or run); everything it does
happens in the browser through the REST and WebSocket API. A private room's token travels in
the link's fragment, which browsers never send to a server, so it appears in no request line or
log here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from axes.helpers import get_lockout_message
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from rooms import access, accounts, document
from rooms.models import ApiToken
from rooms.protocol import is_valid_room_id
from rooms.views import only

# Everything the pages load comes from this server: no CDN, no inline script. Inline styles stay
# allowed because CodeMirror writes its theme into <style> elements at run time.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def html_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The headers every HTML page carries: the content security policy above, and a referrer
    only for this site's own requests, so no room link or password reset link leaks to another
    site. Not "no-referrer": with it, browsers send `Origin: null` on the page's own form
    posts, which Django's CSRF check rightly refuses."""

    @wraps(view)
    def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response["Referrer-Policy"] = "same-origin"
        return response

    return page


# -- the editor ------------------------------------------------------------------------------


@only("GET")
@html_page
def editor_page(request: HttpRequest, room_id: str | None = None) -> HttpResponse:
    room_id = room_id if room_id is not None else request.GET.get("room", "")
    valid = not room_id or is_valid_room_id(room_id)
    config: dict[str, Any] = {"roomId": room_id if valid else "", "badRoomId": not valid}
    user = request.user
    if user.is_authenticated:
        # The page's REST calls ride on the session, so its writes carry the CSRF token.
        room = document.room_get(room_id) if room_id and valid else None
        role = access.room_role(room, user) if room is not None else None
        config.update(
            account={"username": user.get_username(), "name": accounts.display_name(user)},
            csrfToken=get_token(request),
            role=role,
            manage=access.may_manage(role) and room is not None and room.private,
        )
    return render(request, "rooms/editor.html", {"page": config}, status=200 if valid else 400)


# -- accounts --------------------------------------------------------------------------------


class SignUpForm(UserCreationForm):
    email = forms.EmailField(
        help_text="To reset your password. Room owners can also invite you by it.",
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail address exists already.")
        return email


def next_page(request: HttpRequest) -> str:
    """Where to go after signing up: `next` when it stays on this site, else "My rooms"."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return settings.LOGIN_REDIRECT_URL


@html_page
def signup_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(next_page(request))
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(next_page(request))
    return render(
        request,
        "registration/signup.html",
        {"form": form, "next": request.POST.get("next") or request.GET.get("next", "")},
    )


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="What the token is for, e.g. “CI bot”.")


@html_page
@login_required
def account_page(request: HttpRequest) -> HttpResponse:
    """The account: its details, and personal API tokens made and revoked."""
    form = ApiTokenForm(request.POST if request.POST.get("action") == "create" else None)
    new_token = None
    if request.method == "POST":
        if request.POST.get("action") == "create" and form.is_valid():
            _, new_token = accounts.api_token_create(
                user=request.user, name=form.cleaned_data["name"]
            )
            form = ApiTokenForm()
        elif request.POST.get("action") == "revoke":
            token_id = request.POST.get("token_id", "")
            if token_id.isdigit():
                accounts.api_token_revoke(user=request.user, token_id=int(token_id))
            return redirect("account")
    return render(
        request,
        "rooms/account.html",
        {
            "form": form,
            "new_token": new_token,
            "tokens": ApiToken.objects.filter(user=request.user),
            "name": accounts.display_name(request.user),
        },
    )


@html_page
def sign_in_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' answer to a locked-out sign-in (AXES_LOCKOUT_CALLABLE), in the pages' look:
    429 with its message (settings.AXES_COOLOFF_MESSAGE)."""
    return render(
        request,
        "registration/locked_out.html",
        {"message": get_lockout_message()},
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )


@html_page
@login_required
def my_rooms_page(request: HttpRequest) -> HttpResponse:
    return render(request, "rooms/my_rooms.html", {"rooms": access.rooms_of(request.user)})
