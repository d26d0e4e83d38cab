"""The Django admin: rooms (text and op log read-only; owner, members and link access editable
through rooms/sharing.py, so every change is recorded and reaches open connections), who changed
a room's access when, and users with their personal API tokens."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from rooms import access, presence, sharing, store
from rooms.models import AccessChange, ApiToken, Op, Room, RoomMember


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


class MemberFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        owner_id = self.instance.owner_id
        for form in self.forms:
            user = form.cleaned_data.get("user")
            if user is not None and user.pk == owner_id and not form.cleaned_data.get("DELETE"):
                raise ValidationError(f"{user} owns this room: the owner is not listed as a member")


class RoomMemberInline(admin.TabularInline):
    model = RoomMember
    formset = MemberFormSet
    fields = ("user", "role", "may", "added_at")
    readonly_fields = ("may", "added_at")
    autocomplete_fields = ("user",)
    extra = 0

    @admin.display(description="may")
    def may(self, member: RoomMember) -> str:
        if member.pk is None:
            return "-"
        return access.room_access(member.room, role=member.role) or "-"


class AccessChangeInline(admin.TabularInline):
    model = AccessChange
    fields = ("at", "actor_name", "via", "action", "subject_name", "before", "after")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "access changes (newest first)"


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False  # rooms are created through the API, which issues ids and tokens

    list_display = (
        "id",
        "name",
        "private",
        "owner",
        "link_access",
        "version",
        "users_online",
        "updated_at",
    )
    list_filter = ("private", "link_access")
    search_fields = ("id", "name", "code", "owner__username")
    autocomplete_fields = ("owner",)
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
        "owner",
        "link_access",
        "version",
        "users_online",
        "created_at",
        "updated_at",
        "latest_code",
    )

    def get_inlines(self, request, obj):
        # A public room is open to anyone with its id: members would mean nothing.
        if obj is not None and obj.private:
            return [RoomMemberInline, AccessChangeInline, OpInline]
        return [AccessChangeInline, OpInline]

    @admin.display(description="code")
    def latest_code(self, room: Room) -> str:
        return store.room_code(room)  # `code` itself may be up to SNAPSHOT_EVERY ops behind

    @admin.display(description="users online")
    def users_online(self, room: Room) -> int:
        # The admin runs in a worker thread; the registry lives on the event loop.
        return len(async_to_sync(presence.presence.users)(room.id))

    # Owner, link access and members change through rooms/sharing.py: recorded, and applied to
    # the room's open connections (a removed member is disconnected) once the admin's
    # transaction commits.

    def save_model(self, request, obj: Room, form, change: bool) -> None:
        actor = sharing.Actor(request.user, "admin")
        if "owner" in form.changed_data:
            sharing.owner_set(room=obj, owner=form.cleaned_data["owner"], actor=actor)
        if "link_access" in form.changed_data and obj.private:
            sharing.link_access_set(room=obj, access=form.cleaned_data["link_access"], actor=actor)

    def save_formset(self, request, form, formset, change: bool) -> None:
        if formset.model is not RoomMember:
            return super().save_formset(request, form, formset, change)
        room, actor = form.instance, sharing.Actor(request.user, "admin")
        formset.save(commit=False)
        for member in formset.deleted_objects:
            sharing.member_remove(room=room, username=member.user.get_username(), actor=actor)
        for member, changed in formset.changed_objects:
            if "user" in changed:
                before = RoomMember.objects.select_related("user").get(pk=member.pk).user
                sharing.member_remove(room=room, username=before.get_username(), actor=actor)
                sharing.member_invite(
                    room=room, invitee=member.user.get_username(), role=member.role, actor=actor
                )
            elif "role" in changed:
                sharing.member_role_set(
                    room=room, username=member.user.get_username(), role=member.role, actor=actor
                )
        for member in formset.new_objects:
            sharing.member_invite(
                room=room, invitee=member.user.get_username(), role=member.role, actor=actor
            )


@admin.register(AccessChange)
class AccessChangeAdmin(admin.ModelAdmin):
    """Who changed a room's access, when: a record, never edited."""

    list_display = ("at", "room", "action", "actor_name", "via", "subject_name", "before", "after")
    list_filter = ("action", "via")
    search_fields = ("room__id", "actor_name", "subject_name")
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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


class ApiTokenInline(admin.TabularInline):
    """An account's personal API tokens: listed (hashes never shown), revoked by deleting."""

    model = ApiToken
    fields = ("name", "hint", "created_at", "last_used_at")
    readonly_fields = fields
    extra = 0
    max_num = 0


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class AccountAdmin(UserAdmin):
    inlines = [ApiTokenInline]
