from django.urls import re_path

from rooms import pages, views
from rooms.history import views as history

# Each route answers with and without a trailing slash, without redirecting.
urlpatterns = [
    re_path(r"^rooms/create/?$", views.room_create_view, name="room-create"),
    re_path(r"^rooms/join/?$", views.room_join_view, name="room-join"),
    re_path(r"^rooms/?$", views.rooms_collection, name="rooms"),
    re_path(r"^rooms/(?P<room_id>[^/]+)/history/?$", views.room_history_view, name="room-history"),
    # Sharing (docs/protocol.md, "Accounts and sharing").
    re_path(r"^rooms/(?P<room_id>[^/]+)/members/?$", views.room_members_view, name="room-members"),
    re_path(
        r"^rooms/(?P<room_id>[^/]+)/members/(?P<username>[^/]+)/?$",
        views.room_member_view,
        name="room-member",
    ),
    re_path(r"^rooms/(?P<room_id>[^/]+)/link/?$", views.room_link_view, name="room-link"),
    re_path(
        r"^rooms/(?P<room_id>[^/]+)/link/rotate/?$",
        views.room_link_rotate_view,
        name="room-link-rotate",
    ),
    # History (docs/protocol.md, section 13).
    re_path(r"^rooms/(?P<room_id>[^/]+)/blame/?$", history.room_blame_view, name="room-blame"),
    re_path(
        r"^rooms/(?P<room_id>[^/]+)/authorship/?$",
        history.room_authorship_view,
        name="room-authorship",
    ),
    re_path(r"^rooms/(?P<room_id>[^/]+)/diff/?$", history.room_diff_view, name="room-diff"),
    re_path(r"^rooms/(?P<room_id>[^/]+)/times/?$", history.room_times_view, name="room-times"),
    re_path(
        r"^rooms/(?P<room_id>[^/]+)/restore/?$", history.room_restore_view, name="room-restore"
    ),
    re_path(r"^rooms/(?P<room_id>[^/]+)/?$", views.room_detail_view, name="room-detail"),
    # Operations (docs/deploying.md, "Health and metrics").
    re_path(r"^healthz/?$", views.healthz_view, name="healthz"),
    re_path(r"^metrics/?$", views.metrics_view, name="metrics"),
    # The editor page (rooms/pages.py).
    re_path(r"^$", pages.editor_page, name="editor"),
    re_path(r"^r/(?P<room_id>[^/]+)/?$", pages.editor_page, name="editor-room"),
]
