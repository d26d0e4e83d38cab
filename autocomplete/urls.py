"""Routes for autocomplete; included at the root with no prefix."""

from django.urls import re_path

from autocomplete import views

urlpatterns = [
    # Both /autocomplete and /autocomplete/ answer directly: no redirect (APPEND_SLASH is off).
    re_path(r"^autocomplete/?$", views.autocomplete, name="autocomplete"),
]
