"""URL wiring only; each app owns its routes."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from rooms import views as room_views

urlpatterns = [
    path("admin/", admin.site.urls),
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
