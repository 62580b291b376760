"""What a client session reports: its connection states, why it ended, what became of each
update, and who joined or left (see :class:`rtecs.Realtime`)."""

from __future__ import annotations

import enum
from typing import NamedTuple

from rtecs.protocol import ErrorCode, ModelId

__all__ = ["ConnectionState", "DisconnectReason", "Presence", "UpdateOutcome", "UpdateStatus"]


class ConnectionState(enum.Enum):
    """Where a :class:`Realtime` session stands (see :attr:`Realtime.connection_state`)."""

    CONNECTING = "connecting"      # hello sent, waiting for the first welcome
    CONNECTED = "connected"        # in the room: updates flow
    RECONNECTING = "reconnecting"  # the session was lost; trying again with backoff
    DISCONNECTED = "disconnected"  # for good: see Realtime.disconnect_reason


class DisconnectReason(enum.Enum):
    """Why a session ended (see :attr:`Realtime.disconnect_reason`)."""

    CLOSED = "closed"                        # close() was called
    SERVER_GONE = "server_gone"              # the server said goodbye or stopped answering
    TIMEOUT = "timeout"                      # no answer within the heartbeat timeout
    KICKED = "kicked"                        # the server ended the session (any other code)
    PROTOCOL_MISMATCH = "protocol_mismatch"  # protocol version or malformed frames
    SCHEMA_CONFLICT = "schema_conflict"      # this client's models contradict the room's
    ROOM_FULL = "room_full"                  # the room has its maximum of clients
    OVER_LIMIT = "over_limit"                # an update, the datastore or the send rate
    REDIRECT_LOOP = "redirect_loop"          # redirected too often in a row (or unfollowable)
    ROOM_CORRUPT = "room_corrupt"            # the server cannot load the room's saved state


_REASON_OF_CODE = {
    ErrorCode.VERSION: DisconnectReason.PROTOCOL_MISMATCH,
    ErrorCode.PROTOCOL: DisconnectReason.PROTOCOL_MISMATCH,
    ErrorCode.SCHEMA: DisconnectReason.SCHEMA_CONFLICT,
    ErrorCode.ROOM_FULL: DisconnectReason.ROOM_FULL,
    ErrorCode.OVER_LIMIT: DisconnectReason.OVER_LIMIT,
    ErrorCode.RATE_LIMIT: DisconnectReason.OVER_LIMIT,
    ErrorCode.KICKED: DisconnectReason.KICKED,
    ErrorCode.SHUTDOWN: DisconnectReason.SERVER_GONE,
    ErrorCode.ROOM_CORRUPT: DisconnectReason.ROOM_CORRUPT,
}
#: Error codes after which a client reconnects (with backoff) instead of giving up.
_RECONNECT_CODES = (ErrorCode.NOT_JOINED, ErrorCode.SHUTDOWN, ErrorCode.UNAVAILABLE)


class UpdateStatus(enum.Enum):
    """What became of an update (see :class:`UpdateOutcome`)."""

    SENT = "sent"                # on its way; the answer comes through the stream
    CONFIRMED = "confirmed"      # accepted as sent
    TRANSFORMED = "transformed"  # accepted, some values changed by the server
    REJECTED = "rejected"        # some or all changes refused (and rolled back)


class UpdateOutcome(NamedTuple):
    """What became of one update this client sent (for diagnostics and overlays)."""

    seq: int                                      # the update's sequence number
    status: UpdateStatus                          # what became of it
    changes: int                                  # properties carried (sent) or accepted
    rejected: tuple[tuple[ModelId, int], ...] = ()  # (model id, key) the server refused


class Presence(NamedTuple):
    """A client joined (``joined``) or left the room."""

    client_id: int   # the client that joined or left
    joined: bool     # True: it joined; False: it left
