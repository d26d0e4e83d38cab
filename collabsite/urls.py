"""URL wiring only; each app owns its routes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from rooms import pages
from rooms import views as room_views


def page(route: str, view, name: str):
    """An HTML page at `route`, with and without its trailing slash (as the API answers)."""
    return re_path(rf"^{route}/?$", pages.html_page(view), name=name)


# Accounts: django.contrib.auth's own views and forms, with templates in the editor's look
# (rooms/templates/registration), plus sign-up, the account page and "My rooms" (rooms/pages.py).
accounts = [
    page("accounts/login", auth_views.LoginView.as_view(redirect_authenticated_user=True), "login"),
    page("accounts/logout", auth_views.LogoutView.as_view(), "logout"),
    page("accounts/password_change", auth_views.PasswordChangeView.as_view(), "password_change"),
    page(
        "accounts/password_change/done",
        auth_views.PasswordChangeDoneView.as_view(),
        "password_change_done",
    ),
    page("accounts/password_reset", auth_views.PasswordResetView.as_view(), "password_reset"),
    page(
        "accounts/password_reset/done",
        auth_views.PasswordResetDoneView.as_view(),
        "password_reset_done",
    ),
    page(
        r"accounts/reset/(?P<uidb64>[0-9A-Za-z_\-]+)/(?P<token>[^/]+)",
        auth_views.PasswordResetConfirmView.as_view(),
        "password_reset_confirm",
    ),
    page(
        "accounts/reset/done",
        auth_views.PasswordResetCompleteView.as_view(),
        "password_reset_complete",
    ),
    re_path(r"^accounts/signup/?$", pages.signup_page, name="signup"),
    re_path(r"^accounts/?$", pages.account_page, name="account"),
    re_path(r"^my-rooms/?$", pages.my_rooms_page, name="my-rooms"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    *accounts,
    path("", include("rooms.urls")),
    path("", include("autocomplete.urls")),
    # Last: unknown URLs get the JSON 404 even when DEBUG would render an HTML page.
    re_path(r"^", csrf_exempt(room_views.page_not_found)),
]

# Every error the API produces is JSON, including the ones Django raises itself.
handler400 = room_views.bad_request
handler403 = room_views.permission_denied
handler404 = room_views.page_not_found
handler500 = room_views.server_error
