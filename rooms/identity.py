"""Who a connection is: its user id, its client id, and the secret that binds a client id in a
room (docs/protocol.md, "Client ids and their secrets").

A client id names one editor instance across reconnects, and the server trusts it for
deduplication: a (client, seq) it has committed is never applied again. Client ids are public
(every `op` broadcast carries one; the default one is the user id that presence lists show), so
a client id is bound in a room by a secret only the server can make: `init` carries
`client_secret`, and a later connection that names the client id must present it.

- The secret is an HMAC of the room and client id under the server's SECRET_KEY: checking it
  needs no database read, and every process with the same key agrees.
- A client id the client chose is bound by its first connection: a row in `ClientBinding`
  (rooms/store.py claims it, atomically, so of two first connections only one gets in).
- A server-assigned user id (the default client id) is bound from birth: its last characters
  are a checksum of the others, so the server recognizes one of its ids without any record,
  and connections without `client=` write nothing.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Literal

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from rooms import store
from rooms.protocol import CLIENT_ID_RE

# User ids are 12 characters (9 bytes): 6 random bytes, unique enough among one room's users
# (the birthday bound is about 16 million ids per room), and a 3-byte checksum. The checksum is
# not keyed on purpose: it must keep recognizing ids after SECRET_KEY changes, and computing it
# gains an attacker nothing (an id recognized as the server's needs its secret, which is keyed).
USER_ID_RANDOM_BYTES = 6
USER_ID_CHECK_BYTES = 3
USER_ID_LENGTH = 12
_USER_ID_PERSON = b"collab-user-id"  # blake2b personalization: this checksum and no other
_SECRET_SALT = "rooms.identity.client_secret"

Admission = Literal["claimed", "admitted"]


def user_id_new() -> str:
    """A fresh user id, which is also the connection's default client id."""
    nonce = secrets.token_bytes(USER_ID_RANDOM_BYTES)
    return base64.urlsafe_b64encode(nonce + _user_id_check(nonce)).decode("ascii")


def user_id_issued(value: str) -> bool:
    """Whether `value` has the shape of a user id this server assigns."""
    if len(value) != USER_ID_LENGTH:
        return False
    try:
        raw = base64.urlsafe_b64decode(value)
    except ValueError:
        return False
    nonce, check = raw[:USER_ID_RANDOM_BYTES], raw[USER_ID_RANDOM_BYTES:]
    return check == _user_id_check(nonce)


def _user_id_check(nonce: bytes) -> bytes:
    return hashlib.blake2b(nonce, digest_size=USER_ID_CHECK_BYTES, person=_USER_ID_PERSON).digest()


def client_secret(room_id: str, client: str) -> str:
    """The secret of `client` in `room_id` (43 characters), under the current SECRET_KEY."""
    return _secret(room_id, client, settings.SECRET_KEY)


def _secret(room_id: str, client: str, key: str) -> str:
    # Room and client ids never contain "/", so the message is unambiguous.
    digest = salted_hmac(_SECRET_SALT, f"{room_id}/{client}", secret=key, algorithm="sha256")
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


def client_secret_valid(room_id: str, client: str, presented: str) -> bool:
    """Whether `presented` is the secret of `client` in `room_id`: under the current key or one
    of SECRET_KEY_FALLBACKS, so rotating the key does not lock out connected editors."""
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return any(constant_time_compare(presented, _secret(room_id, client, key)) for key in keys)


async def client_admit(
    *, room_id: str, client: str | None, secret: str | None, claim: bool
) -> Admission | None:
    """Whether a connection naming `client` (None: none, it gets its user id) with `secret` may
    use that client id in the room: "claimed" when this call bound it to the connection,
    "admitted" when it needed no binding or the secret opened it, None when it is refused.

    A client id that is not bound yet is bound only when `claim` is true (nothing but init is
    left to send), so that a connection refused for another reason leaves it free.
    """
    if client is None or not CLIENT_ID_RE.fullmatch(client):
        return "admitted"  # the default client id, or a malformed one the query check refuses
    if secret is not None and client_secret_valid(room_id, client, secret):
        return "admitted"
    if user_id_issued(client):
        return None
    if claim:
        return "claimed" if await store.client_claim(room_id, client) else None
    return None if await store.client_bound(room_id, client) else "admitted"


async def client_release(*, room_id: str, client: str) -> None:
    """Undo a claim whose connection failed before its init (and secret) went out."""
    await store.client_release(room_id, client)
