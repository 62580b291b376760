"""What a client session reports: its connection states, why it ended, what became of each
update, who joined or left, a lost session, and the connection's counters (see
:class:`rtecs.Realtime`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from rtecs.protocol import ErrorCode, ModelId, Welcome

__all__ = ["ClientSession", "ConnectionState", "ConnectionStats", "DisconnectReason", "Presence",
           "SessionLost", "UpdateOutcome", "UpdateStatus"]


class ConnectionState(enum.Enum):
    """Where a :class:`Realtime` session stands (see :attr:`Realtime.connection_state`).

    ``RESUMED`` and ``RESYNCED`` are passing states: each is followed at once by
    ``CONNECTED``, so :attr:`Realtime.state` reads ``CONNECTED`` once a tick returns, while
    a subscriber of :attr:`Realtime.connection_state` learns how the client got back.
    """

    CONNECTING = "connecting"      # hello sent, waiting for the first welcome
    CONNECTED = "connected"        # in the room: updates flow
    RECONNECTING = "reconnecting"  # the link was lost; trying again with backoff
    RESUMED = "resumed"            # back in the same session: nothing was lost
    RESYNCED = "resynced"          # a fresh snapshot was applied (a new epoch of the same
                                   # session, or a new session: see Realtime.session_lost)
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
    AUTH_FAILED = "auth_failed"              # the join token was refused (missing, forged,
                                             # expired, another room's): get a new one
    TOO_MANY_SESSIONS = "too_many_sessions"  # this network address holds all the sessions
                                             # it may (the server's --max-sessions-per-address)


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
    ErrorCode.AUTH_FAILED: DisconnectReason.AUTH_FAILED,
    ErrorCode.TOO_MANY_SESSIONS: DisconnectReason.TOO_MANY_SESSIONS,
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


class SessionLost(NamedTuple):
    """The previous session could not be taken up again: this client joined the room anew
    (see :attr:`Realtime.session_lost`). Its unanswered writes were rolled back, and the
    server ends what belonged to the old session (``destroy_when_owner_leaves`` models)."""

    old_client_id: int   # the client id of the session that was lost
    new_client_id: int   # the client id of the new session
    reason: str          # why the old one ended, as far as this client knows


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one client's connection, since it was made (see :attr:`Realtime.stats`)."""

    frames_sent: int = 0         # every frame sent to the server
    bytes_sent: int = 0          # their sizes
    frames_received: int = 0     # every frame received from the server
    bytes_received: int = 0      # their sizes
    updates_sent: int = 0        # UPDATE frames, resends included
    updates_resent: int = 0      # of which sent again after a resync
    batches_applied: int = 0     # BATCH frames handed on in stream order
    welcomes: int = 0            # WELCOMEs applied (joins and resyncs)
    resyncs_asked: int = 0       # RESYNC requests sent (holes in the stream)
    sessions_lost: int = 0       # new sessions that replaced a lost one
    resumes: int = 0             # sessions taken up again on a fresh transport (RESUMED)
    reconnect_attempts: int = 0  # fresh transports after a lost link
    redirects: int = 0           # REDIRECTs followed
    malformed_frames: int = 0    # server frames that failed to decode


class ClientSession:
    """The session this client holds in its room (DESIGN §8), as its welcome opened it.

    What a ``RESUME`` must show (``session_id``, ``secret``, the stream's ``incarnation``) and
    what it must resend: the encoded frames of the updates the stream has not answered yet,
    by sequence number within ``epoch``. Frames are dropped as their answers arrive
    (:meth:`answered`); a resync opens a new epoch, whose renumbered updates are recorded
    again as they are sent.
    """

    __slots__ = ("client_id", "epoch", "incarnation", "secret", "session_id", "unanswered")

    def __init__(self, welcome: Welcome) -> None:
        self.session_id = welcome.session_id
        self.secret = welcome.session_secret
        self.client_id = welcome.client_id
        self.epoch = welcome.epoch
        self.incarnation = welcome.incarnation
        self.unanswered: dict[int, bytes] = {}
        """seq → the UPDATE frame as sent, oldest first."""

    @property
    def resumable(self) -> bool:
        """Whether this client can show a resume secret for this session: the server gave
        one (a server that cannot resume sessions sends none), and no answer said it is
        spent (``session_unknown``)."""
        return bool(self.session_id and self.secret)

    def sent(self, seq: int, frame: bytes) -> None:
        self.unanswered[seq] = frame

    def answered(self, seq: int) -> None:
        """The stream answered update ``seq``, hence every one before it."""
        unanswered = self.unanswered
        while unanswered:
            first = next(iter(unanswered))
            if first > seq:
                break
            del unanswered[first]

    def new_epoch(self, welcome: Welcome) -> None:
        """A resync welcome: its snapshot settles what was applied; numbering starts again."""
        self.epoch = welcome.epoch
        self.incarnation = welcome.incarnation
        if welcome.session_secret:
            self.secret = welcome.session_secret
        self.unanswered.clear()
