"""The messages of the wire format as typed records, with the constants, limits and ids they
use. The frames themselves are documented in :mod:`rtecs.protocol`; the codec is
:mod:`rtecs.protocol._codec`. Re-exported by :mod:`rtecs.protocol`."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from rtecs.protocol._values import _INT64_MIN, _UINT64_MAX, Value

PROTOCOL_VERSION = 3

OWNER = 0
CREATE = -1
DESTROY = -2

#: Model flag: while owned, the server refuses anyone else's ownership request.
PREVENT_OWNERSHIP_TAKEOVER = 1
#: Model flag: the server destroys the model when its owner's session ends.
DESTROY_WHEN_OWNER_LEAVES = 2
#: Model flag: the server destroys the model when the room's last client leaves (it does
#: not persist).
DESTROY_WHEN_LAST_CLIENT_LEAVES = 4
#: Every model flag.
ALL_FLAGS = 7

#: The ints MessagePack carries: every int value on the wire and in storage lies in
#: ``[INT_MIN, INT_MAX]`` (int64 below zero, uint64 above); writes outside are refused.
INT_MIN: int = _INT64_MIN
INT_MAX: int = _UINT64_MAX

ModelId: TypeAlias = "int | tuple[int, ...]"
Changes: TypeAlias = "Sequence[Sequence[Any]]"




@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied before and while decoding. Configurable per server and client."""

    max_update_bytes: int = 125 * 1024
    """Largest UPDATE frame (the server announces its value in the welcome)."""
    max_datastore_bytes: int = 10 * 1024 * 1024
    """Largest room, estimated from its values (announced in the welcome)."""
    max_hello_bytes: int = 1024 * 1024
    """Largest HELLO frame (the schema travels in it)."""
    max_changes_per_update: int = 4096
    """Most changes one UPDATE may carry (announced in the welcome): the server's work is
    per change, so this bounds how long one update can hold a room up."""
    max_depth: int = 64
    """Deepest nesting of models, in levels (the room model is level 1): a model created,
    or declared, deeper is refused (announced in the welcome)."""

    @property
    def max_frame_bytes(self) -> int:
        """Largest server frame a client accepts: a full snapshot plus headroom."""
        return self.max_datastore_bytes + 1024 * 1024

    @property
    def max_value_bytes(self) -> int:
        """Largest str or bytes value one property may hold: what an update carrying that
        value alone leaves of :attr:`max_update_bytes` (writes over it are refused at once)."""
        return max(0, self.max_update_bytes - UPDATE_OVERHEAD)

    def announced(self) -> dict[str, int]:
        """The limits a server announces in its welcome (see ``WELCOME`` above)."""
        return {"update_bytes": self.max_update_bytes,
                "datastore_bytes": self.max_datastore_bytes,
                "changes_per_update": self.max_changes_per_update, "depth": self.max_depth}

    def with_announced(self, announced: Mapping[str, int]) -> Limits:
        """These limits with the values a welcome announced (unknown names ignored)."""
        return dataclasses.replace(
            self, max_update_bytes=announced.get("update_bytes", self.max_update_bytes),
            max_datastore_bytes=announced.get("datastore_bytes", self.max_datastore_bytes),
            max_changes_per_update=announced.get("changes_per_update",
                                                 self.max_changes_per_update),
            max_depth=announced.get("depth", self.max_depth))


#: Bytes of an update frame around one property value: kind, seq, epoch, the run's model id
#: and key (generously: a nested model id of several levels).
UPDATE_OVERHEAD = 128


DEFAULT_LIMITS = Limits()


class ErrorCode(enum.StrEnum):
    PROTOCOL = "protocol"            # malformed frame
    VERSION = "version"              # protocol version mismatch
    SCHEMA = "schema"                # schema contradicts the room's
    ROOM_FULL = "room_full"
    OVER_LIMIT = "over_limit"        # update or datastore over its size limit
    RATE_LIMIT = "rate_limit"        # too many messages
    SEQUENCE = "sequence"            # a gap in update sequence numbers: resync
    BAD_UPDATE = "bad_update"        # unknown model ids, wrong value types
    NOT_JOINED = "not_joined"        # an update or ping before hello
    KICKED = "kicked"
    SHUTDOWN = "shutdown"            # the server is stopping: reconnect
    UNAVAILABLE = "unavailable"      # the room cannot be served here now (storage unreachable,
                                     # the room moved to another instance): reconnect
    ROOM_CORRUPT = "room_corrupt"    # the room's stored state cannot be loaded
    SESSION_UNKNOWN = "session_unknown"  # RESUME of a session this server does not hold
                                         # (ended, its grace ran out, or a wrong secret):
                                         # join again with HELLO
    AUTH_FAILED = "auth_failed"      # the join token (or an authenticate plugin) refused
                                     # the hello: missing, malformed, forged, expired or
                                     # for another room (fatal; a new token is needed)
    TOO_MANY_SESSIONS = "too_many_sessions"  # the hello's network address holds the most
                                             # live sessions the server allows one (fatal)


class Hello(NamedTuple):
    version: int
    room: str
    root_type: str
    schema: Mapping[str, Mapping[int, tuple[str, str, bool]]]
    token: str | None = None


class Update(NamedTuple):
    seq: int
    changes: Changes
    epoch: int = 1


class Resume(NamedTuple):
    """Take up a session again over a fresh connection (see ``RESUME`` in the module docs)."""

    room: str
    session_id: bytes
    session_secret: bytes
    epoch: int
    room_seq: int
    incarnation: int


class Ping(NamedTuple):
    client_time: float
    epoch: int = 0  # the epoch of the last welcome the client applied (0: none yet)


class Bye(NamedTuple):
    pass


class Resync(NamedTuple):
    pass


SchemaSpec: TypeAlias = "Mapping[str, Mapping[int, tuple[str, str, bool]]]"


class Schema(NamedTuple):
    """Model types a client first uses after joining (see ``SCHEMA`` in the module docs)."""

    schema: SchemaSpec


_NO_LIMITS: Mapping[str, int] = {}


class SnapshotRecord(NamedTuple):
    """One model as a snapshot (and a room's checkpoint) lists it (see ``WELCOME``)."""

    model_id: Any            # ModelId: an int, or a tuple of ints for a declared child
    type_name: str           # the model's type (its class name, or a collection's type)
    owner: int               # -1: unowned
    flags: int               # its lifetime and ownership flags (ALL_FLAGS)
    props: Mapping[int, Value]  # property id → value; properties never written are absent
    parent: Any = None       # ModelId of the parent of a dynamic model created under one
    key: int | str | None = None  # its key in a keyed collection


NO_SESSION = b""


class Welcome(NamedTuple):
    client_id: int
    room_seq: int
    server_time: float
    snapshot: Sequence[SnapshotRecord]
    clients: Sequence[int]
    epoch: int = 1
    last_applied: int = 0
    limits: Mapping[str, int] = _NO_LIMITS
    session_id: bytes = NO_SESSION
    session_secret: bytes = NO_SESSION
    incarnation: int = 0


class Resumed(NamedTuple):
    """The answer to a ``RESUME`` that found its session (see the module docs)."""

    client_id: int
    epoch: int
    last_applied: int
    room_seq: int
    server_time: float
    incarnation: int
    session_secret: bytes
    limits: Mapping[str, int] = _NO_LIMITS


class UpdateEntry(NamedTuple):
    sender: int
    seq: int
    changes: Changes
    rejected: Sequence[tuple[ModelId, int]]


class JoinEntry(NamedTuple):
    client_id: int


class LeaveEntry(NamedTuple):
    client_id: int


class Batch(NamedTuple):
    room_seq: int
    server_time: float
    entries: Sequence[UpdateEntry | JoinEntry | LeaveEntry]


class Pong(NamedTuple):
    client_time: float
    server_time: float
    room_seq: int = 0


class Error(NamedTuple):
    code: str
    message: str
    fatal: bool


class Redirect(NamedTuple):
    endpoint: str
    room: str


ClientMessage: TypeAlias = "Hello | Resume | Update | Ping | Bye | Resync | Schema"
ServerMessage: TypeAlias = "Welcome | Resumed | Batch | Pong | Error | Redirect"


# ----------------------------------------------------------------------------- ids

def dynamic_model_id(client_id: int, counter: int) -> int:
    """The id of the ``counter``-th model created by ``client_id`` (both ≥ 1).

    A pairing function (Szudzik's), so ids stay small while both numbers are small:
    client 5's 100th model is 10005, which MessagePack writes in three bytes.
    """
    a, b = client_id, counter
    return a * a + a + b if a >= b else a + b * b


def split_dynamic_model_id(model_id: int) -> tuple[int, int]:
    """Inverse of :func:`dynamic_model_id`: ``(client_id, counter)``."""
    r = math.isqrt(model_id)
    rest = model_id - r * r
    return (r, rest - r) if rest >= r else (rest, r)


def is_model_id(value: object) -> bool:
    """True if ``value`` has the shape of a model id (see the module docs)."""
    if type(value) is int:
        return value >= 0
    if type(value) is tuple and len(value) >= 2:
        first = value[0]
        if type(first) is not int or first < 0:
            return False
        return all(type(k) is int and k >= 1 for k in value[1:])
    return False


#: Kinds of collection type (see *Collections* in the module docs) and the key each takes:
#: None (unkeyed), int, or str with an ``expected`` element id.
COLLECTION_KINDS: dict[str, type | None] = {"Set": None, "Array": None, "Dict": int,
                                            "StrDict": str}


def count_changes(changes: Changes) -> int:
    """How many changes a change list carries (each run is ``[model_id, key, value, …]``):
    what the limits, the update budget and the outcomes count."""
    return (sum(map(len, changes)) - len(changes)) // 2


def collection_type_name(kind: str, element_type_name: str) -> str:
    """The wire type name of a collection of ``kind`` holding ``element_type_name`` models."""
    if kind not in COLLECTION_KINDS:
        raise ValueError(f"unknown collection kind {kind!r}")
    return f"rtecs.{kind}<{element_type_name}>"


def split_collection_type(type_name: str) -> tuple[str, str] | None:
    """``(kind, element type name)`` if ``type_name`` names a collection, else None."""
    if not type_name.startswith("rtecs.") or not type_name.endswith(">"):
        return None
    kind, sep, element = type_name[6:-1].partition("<")
    if not sep or not element or kind not in COLLECTION_KINDS:
        return None
    return kind, element

