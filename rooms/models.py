"""The room's durable state: the op log; a copy of the text (Room.code at Room.code_version)
that at most `rooms.document.SNAPSHOT_EVERY` changes of the log go past; the same copies kept
for every version that is a multiple of SNAPSHOT_EVERY, with the authorship of the text then
(Snapshot), so any version is at most that many ops away from one; the names authors edited
under (Author); the client ids bound in the room (rooms/identity.py); who may enter a room (its
owner, members and link access) with the record of every change to that; personal API tokens.

rooms/document.py writes rooms, ops and copies, rooms/identity.py client bindings (rooms/store.py
holds the SQL of both), rooms/sharing.py access; rooms/access.py decides what access allows. See
docs/protocol.md for what versions, ops, authorship, client ids and roles mean.
"""

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    """What a member may do in a room (rooms/access.py decides what each role gives)."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class LinkAccess(models.TextChoices):
    """What a private room's links (its edit and view tokens) give to whoever holds them."""

    EDIT = "edit", "can edit"
    VIEW = "view", "can view"
    NONE = "none", "no access"


class Room(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=64, blank=True, default="")
    code = models.TextField(blank=True, default="")
    # The text at version 0, so replaying the op log from the start rebuilds `code`.
    initial_code = models.TextField(blank=True, default="", editable=False)
    # Number of changes applied so far (the head).
    version = models.PositiveBigIntegerField(default=0)
    # The version `code` is the text at. The changes after it, up to `version`, are in the op
    # log: rewriting the whole text on every keystroke was most of a commit's cost.
    # rooms.store.room_code gives the text at the head.
    code_version = models.PositiveBigIntegerField(default=0, editable=False)
    # What the room's history holds, counted by every commit (rooms.changes.committed_bytes):
    # its op-log rows and its stored copies of the text. Edits past
    # COLLAB_ROOM_HISTORY_MAX_BYTES are refused.
    history_bytes = models.PositiveBigIntegerField(default=0, editable=False)
    # Private rooms keep only SHA-256 hashes of their tokens (see rooms/access.py).
    private = models.BooleanField(default=False)
    edit_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    view_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The account that created the room (None: created without signing in). Its owner, with
    # the members whose role is "owner", decides who else may enter (rooms/sharing.py).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_rooms",
    )
    link_access = models.CharField(
        max_length=4, choices=LinkAccess.choices, default=LinkAccess.EDIT
    )
    # Raised by every change of who may enter (owner, members, link access, tokens): each
    # process compares it with the copy its live room holds, so none keeps stale access.
    access_version = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


class Op(models.Model):
    """One accepted change. `version` is the room's version after it (1, 2, ...)."""

    # No index of its own: the (room, version) constraint below starts with the room, so it
    # serves every lookup by room, and each commit updates one B-tree fewer.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="ops", db_index=False)
    version = models.PositiveBigIntegerField()
    op = models.JSONField()
    user = models.CharField(max_length=64)
    client = models.CharField(max_length=64)
    # Null for text-mode changes, which have no client-side sequence number.
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    ts = models.BigIntegerField(help_text="epoch milliseconds")

    class Meta:
        ordering = ["room", "version"]
        constraints = [
            # The arbiter between writers: two commits can never claim the same version.
            models.UniqueConstraint(fields=["room", "version"], name="op_unique_room_version"),
            models.UniqueConstraint(fields=["room", "client", "seq"], name="op_unique_client_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}@{self.version}"


class ClientBinding(models.Model):
    """A client id taken in a room: its first connection claimed it, and every later one must
    present its secret (rooms/identity.py). Server-assigned ids need no row."""

    # No index of its own: the (room, client) constraint starts with the room.
    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="client_bindings", db_index=False
    )
    client = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "client"], name="client_binding_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}/{self.client}"


class RoomMember(models.Model):
    """An account invited into a room with a role. The room's creator (`Room.owner`) is no row
    here; a member whose role is "owner" shares its rights."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships"
    )
    role = models.CharField(max_length=6, choices=Role.choices)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "added_at"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="room_member_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room_id} ({self.role})"


class AccessChange(models.Model):
    """Who changed a room's access, when and how: one row per change, never edited."""

    class Action(models.TextChoices):
        OWNER_CHANGED = "owner_changed", "owner changed"
        MEMBER_ADDED = "member_added", "member added"
        ROLE_CHANGED = "role_changed", "role changed"
        MEMBER_REMOVED = "member_removed", "member removed"
        LINK_ACCESS_CHANGED = "link_changed", "link access changed"
        LINK_ROTATED = "link_rotated", "link rotated"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="access_changes")
    at = models.DateTimeField(auto_now_add=True)
    # The names are copied so the record still reads right after an account is renamed or
    # deleted.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=16, help_text="session, api_token or admin")
    action = models.CharField(max_length=16, choices=Action.choices)
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject_name = models.CharField(max_length=150, blank=True)
    # A role, a link access or (owner changes) a user name; empty where there is none.
    before = models.CharField(max_length=150, blank=True)
    after = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.room_id}: {self.action} by {self.actor_name or '?'}"


class ApiToken(models.Model):
    """A personal API token: scripts act as its account (`Authorization: Bearer pat_...`).

    Only a SHA-256 hash is kept, like room tokens (rooms/accounts.py); `hint` is the start of
    the token, so its owner can tell tokens apart on the account page.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=64)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"


class Snapshot(models.Model):
    """The text of a room at `version` and who wrote it: written in the same transaction as the
    change of that version, for every version that is a multiple of SNAPSHOT_EVERY. The text at
    any version is the latest snapshot at or before it with the ops after it applied (version
    0 needs none: it is Room.initial_code, nobody's)."""

    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="snapshots", db_index=False
    )
    version = models.PositiveBigIntegerField()
    ts = models.BigIntegerField(help_text="epoch milliseconds of the change of this version")
    code = models.TextField()
    # rooms.history.authorship.Authorship.encode() as JSON: kept as text, written and read only
    # by that module.
    authorship = models.TextField()

    class Meta:
        ordering = ["room", "version"]
        constraints = [
            # Also the index of every lookup: by room, then by version.
            models.UniqueConstraint(fields=["room", "version"], name="snapshot_unique_room_version")
        ]

    def __str__(self) -> str:
        return f"{self.room_id}@{self.version}"


class Author(models.Model):
    """The display name an author (a client id, see rooms/history/authorship.py) last edited
    this room under: blame shows it."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="authors", db_index=False)
    client = models.CharField(max_length=64)
    name = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "client"], name="author_unique_room_client")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.client}) in {self.room_id}"
