from django.contrib import admin

from rooms import presence, store
from rooms.models import Op, Room


class OpInline(admin.TabularInline):
    model = Op
    fields = ("version", "op", "user", "client", "seq", "ts")
    readonly_fields = fields
    extra = 0
    ordering = ("-version",)
    show_change_link = True
    max_num = 0  # the log is append-only; admins read it, never edit it

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-version")


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False  # rooms are created through the API, which issues ids and tokens

    list_display = ("id", "name", "private", "version", "users_online", "updated_at")
    list_filter = ("private",)
    search_fields = ("id", "name", "code")
    # Token hashes are never shown: `private` says all an admin needs.
    # Read-only: every change to a room's text goes through rooms/document.py (versions, op
    # log, broadcast); an edit here would bypass all three.
    readonly_fields = (
        "id",
        "name",
        "private",
        "version",
        "created_at",
        "updated_at",
        "users_online",
        "latest_code",
    )
    fields = (
        "id",
        "name",
        "private",
        "version",
        "users_online",
        "created_at",
        "updated_at",
        "latest_code",
    )
    inlines = [OpInline]

    @admin.display(description="code")
    def latest_code(self, room: Room) -> str:
        return store.room_code(room)  # `code` itself may be up to SNAPSHOT_EVERY ops behind

    @admin.display(description="users online")
    def users_online(self, room: Room) -> int:
        # The admin runs in a worker thread; the registry lives on the event loop.
        from asgiref.sync import async_to_sync

        return len(async_to_sync(presence.presence.users)(room.id))


@admin.register(Op)
class OpAdmin(admin.ModelAdmin):
    list_display = ("room", "version", "user", "client", "seq", "ts")
    list_filter = ()
    search_fields = ("room__id", "client", "user")
    readonly_fields = ("room", "version", "op", "user", "client", "seq", "ts")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
