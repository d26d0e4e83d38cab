"""The room's durable state: the op log, a snapshot of the text (Room.code at
Room.code_version) that at most `rooms.document.SNAPSHOT_EVERY` changes of the log go past, and
the client ids bound in the room (rooms/identity.py).

rooms/document.py writes rooms and ops, rooms/identity.py client bindings (rooms/store.py holds
the SQL of both); see docs/protocol.md for what versions, ops and client ids mean.
"""

from django.db import models


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
    # Private rooms keep only SHA-256 hashes of their tokens (see rooms/access.py).
    private = models.BooleanField(default=False)
    edit_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    view_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
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
