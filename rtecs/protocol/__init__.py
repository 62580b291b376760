"""The rtecs wire format: every message, its fields, and the MessagePack codec.

Every frame is one MessagePack array whose first element is the message kind.
Decoding is strict: anything malformed raises :class:`~rtecs.errors.ProtocolError`
and nothing else. Arrays decode as tuples (so model ids are hashable).

Client → server
    ``HELLO   [1, version, room, root_type, schema, token]``
        ``version`` is :data:`PROTOCOL_VERSION`; ``room`` the room name; ``root_type`` the
        type name of the room model; ``schema`` maps type name → {property id → [name, tag,
        reliable]} (tags: see :mod:`rtecs.model`); ``token`` a string or nil.
    ``UPDATE  [2, seq, changes, epoch]``
        One frame's delta. ``seq`` counts 1, 2, 3… within a session *epoch*: every welcome
        starts a new epoch (named in the ``WELCOME``) and every update names the epoch it was
        numbered in. The server applies only updates of the current epoch, each exactly
        once and in order: an older epoch's update is dropped (it was sent before the client
        saw its new welcome, which told it what became of it), a duplicate is dropped
        silently (its answer is already in the stream), a gap is answered with a resync.
    ``PING    [3, client_time]``
    ``BYE     [4]``
    ``RESYNC  [5]``
        Ask for a fresh WELCOME (sent when this client cannot reconstruct the room's state by
        itself: a hole in the stream — a ``room_seq`` gap, a malformed frame, an error while
        applying — or a refused destroy that raced with creates under the destroyed model).
    ``SCHEMA  [6, schema]``
        Model types this client first uses after joining (same shape as the hello's
        ``schema``). The room merges them, all or nothing, before the client's next update;
        a contradiction is answered ``ERROR schema`` (not fatal) and creates of those types
        are then refused.

Server → client
    ``WELCOME [10, client_id, room_seq, server_time, snapshot, clients, epoch, last_applied,
    limits]``
        Sent on join and again whenever the client must resync. ``snapshot`` is a list of
        model records ``[model_id, type_name, owner_id, flags, {property id: value}]``,
        parents before children and dynamic models in the order the room created them, with
        the parent's id as a sixth element for a dynamic model created under a parent and
        its key as a seventh for an element of a keyed collection (see *Collections*);
        properties never written are absent (the client keeps its defaults). ``clients``
        lists the client ids present. ``room_seq`` is the sequence number of the last batch
        the snapshot includes. ``epoch`` numbers the session's updates from now on (1 at the
        join, one more at every resync). ``last_applied`` is the seq of the last update of
        the previous epoch the server applied (0 at a join): the snapshot includes it and
        everything before it, and nothing after it, so the client drops its pending writes
        up to it and renumbers the rest into the new epoch and sends them again — re-based
        on the snapshot, not rolled back. ``limits`` maps limit names to ints, the values
        the client must respect (unknown names are ignored): ``update_bytes`` (largest
        update frame), ``datastore_bytes`` (largest room).
    ``BATCH   [11, room_seq, server_time, entries]``
        What the room ordered in one server tick, encoded once and sent to every member.
        ``room_seq`` grows by one per batch. Entries, in order:

        - ``[0, sender, seq, changes, rejected]`` — client ``sender``'s update ``seq`` as the
          room applied it: the accepted changes (with the server's transformed values) and
          ``rejected``, a list of ``[model_id, key]`` that were refused (no values: the
          stream before this entry already holds the authoritative value). ``sender`` 0 is
          the server itself (lifetime destroys, cleared ownership; ``seq`` 0).
        - ``[1, client_id]`` — a client joined.
        - ``[2, client_id]`` — a client left.
    ``PONG    [12, client_time, server_time, room_seq]``
        ``room_seq`` is the room's last batch, so a client notices a lost last batch: the
        server sends every batch before the pong that counts it. A ping from a peer with no
        session is answered ``ERROR not_joined``, never ``PONG``.
    ``ERROR   [13, code, message, fatal]``
        ``code`` is one of :class:`ErrorCode`; ``fatal`` true means the server dropped the
        session. A client reconnects (with backoff) after ``shutdown``, ``unavailable`` and
        ``not_joined``, and gives up after any other fatal code.
    ``REDIRECT [14, endpoint, room]``
        The answer to a ``HELLO`` sent to a server instance that does not host ``room``:
        another instance does, and clients reach it at ``endpoint`` (a non-empty ZeroMQ
        endpoint such as ``tcp://10.0.0.7:7777``; an instance's ``--advertise``). No session
        was opened. The client closes this connection, connects to ``endpoint`` and sends
        its ``HELLO`` there; a redirect is not a failed attempt, but a client gives up after
        several redirects in a row without a ``WELCOME`` (a loop). ``room`` repeats the
        hello's room name; a client ignores a redirect for another room.

Changes
    A list of *runs*. A run is ``[model_id, key, value, key, value, …]`` (odd length ≥ 3):
    consecutive changes to one model share its id. Order is the writer's order and matters
    (the server checks each change where it falls). Keys:

    - ``1…`` a property id; the value is bool, int, float, str, bytes or nil. Floats of
      ``f32`` properties travel as MessagePack float32 (5 bytes), every other float as
      float64.
    - ``0`` (:data:`OWNER`) the model's owner id (-1 = unowned).
    - ``-1`` (:data:`CREATE`) creates a dynamic model; the value is ``[type_name, flags]``
      (flags: :data:`PREVENT_OWNERSHIP_TAKEOVER`, :data:`DESTROY_WHEN_OWNER_LEAVES`,
      :data:`DESTROY_WHEN_LAST_CLIENT_LEAVES`), or ``[type_name, flags, parent_id]`` for a
      dynamic model that belongs to another (an entity's component, a collection's element):
      the parent's ownership covers it and destroying the parent destroys it. Its initial
      values follow as ordinary changes; its declared children exist with it.
      ``[type_name, flags, parent_id, key]`` creates an element of a keyed collection at
      ``key`` (an int or a string), replacing — destroying, in the same change — the element
      at that key, if any; ``[type_name, flags, parent_id, key, expected]`` does so only if
      the element at ``key`` is ``expected`` (a model id, or nil for "no element"), and is
      rejected otherwise. Everyone who sees an accepted keyed create applies the same rule.
    - ``-2`` (:data:`DESTROY`) destroys a dynamic model and its children; the value is nil.

Collections
    A collection is a declared child model with no properties whose type is named
    ``rtecs.<Kind><<Element>>`` (:func:`collection_type_name`): ``rtecs.Set<Item>``,
    ``rtecs.Array<Item>``, ``rtecs.Dict<Item>``, ``rtecs.StrDict<Item>``. Its elements are
    dynamic models of exactly the element type created under it; removing one is a
    ``DESTROY`` of it. The server accepts, under a collection, only creates of its element
    type: unkeyed under a ``Set`` or ``Array``, ``[…, key]`` with an int key under a
    ``Dict`` (last writer wins), ``[…, key, expected]`` with a string key under a
    ``StrDict`` (transactional); keyed creates anywhere else are bad input.

Model ids
    ``0`` is the room model; dynamic models have the int :func:`dynamic_model_id` of
    (creating client id, counter), so clients allocate ids without a round trip and ids never
    collide; a declared child model is its parent's id extended by the property id, as an
    array: ``[0, 3]`` is property 3 of the room model, ``[17, 2, 1]`` a grandchild.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import msgpack
import msgspec

from rtecs.errors import ProtocolError
from rtecs.protocol._values import (
    _INT64_MIN,
    _UINT64_MAX,
    F32,
    SCALAR_TAGS,
    Value,
    check_tag,
    coerce_value,
    enc_hook,
)

__all__ = [
    "F32", "SCALAR_TAGS", "check_tag", "coerce_value", "enc_hook",
    "CREATE", "DESTROY", "OWNER", "PROTOCOL_VERSION", "INT_MIN", "INT_MAX",
    "check_snapshot_record",
    "PREVENT_OWNERSHIP_TAKEOVER", "DESTROY_WHEN_OWNER_LEAVES", "DESTROY_WHEN_LAST_CLIENT_LEAVES",
    "Limits", "UPDATE_OVERHEAD", "ErrorCode", "ModelId", "Value", "Changes",
    "Hello", "Update", "Ping", "Bye", "Resync", "Schema", "SchemaSpec",
    "Welcome", "Batch", "Pong", "Error", "Redirect",
    "UpdateEntry", "JoinEntry", "LeaveEntry", "ClientMessage", "ServerMessage",
    "encode", "decode_client_message", "decode_server_message",
    "dynamic_model_id", "split_dynamic_model_id", "is_model_id",
    "COLLECTION_KINDS", "collection_type_name", "split_collection_type",
]

PROTOCOL_VERSION = 2

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
_ALL_FLAGS = 7

#: The ints MessagePack carries: every int value on the wire and in storage lies in
#: ``[INT_MIN, INT_MAX]`` (int64 below zero, uint64 above); writes outside are refused.
INT_MIN: int = _INT64_MIN
INT_MAX: int = _UINT64_MAX

ModelId: TypeAlias = "int | tuple[int, ...]"
Changes: TypeAlias = "Sequence[Sequence[Any]]"

_HELLO, _UPDATE, _PING, _BYE, _RESYNC, _SCHEMA = 1, 2, 3, 4, 5, 6
_WELCOME, _BATCH, _PONG, _ERROR, _REDIRECT = 10, 11, 12, 13, 14
_E_UPDATE, _E_JOIN, _E_LEAVE = 0, 1, 2



@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied before and while decoding. Configurable per server and client."""

    max_update_bytes: int = 125 * 1024
    """Largest UPDATE frame (the server announces its value in the welcome)."""
    max_datastore_bytes: int = 10 * 1024 * 1024
    """Largest room, estimated from its values (announced in the welcome)."""
    max_hello_bytes: int = 1024 * 1024
    """Largest HELLO frame (the schema travels in it)."""

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
                "datastore_bytes": self.max_datastore_bytes}

    def with_announced(self, announced: Mapping[str, int]) -> Limits:
        """These limits with the values a welcome announced (unknown names ignored)."""
        return dataclasses.replace(
            self, max_update_bytes=announced.get("update_bytes", self.max_update_bytes),
            max_datastore_bytes=announced.get("datastore_bytes", self.max_datastore_bytes))


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


class Ping(NamedTuple):
    client_time: float


class Bye(NamedTuple):
    pass


class Resync(NamedTuple):
    pass


SchemaSpec: TypeAlias = "Mapping[str, Mapping[int, tuple[str, str, bool]]]"


class Schema(NamedTuple):
    """Model types a client first uses after joining (see ``SCHEMA`` in the module docs)."""

    schema: SchemaSpec


_NO_LIMITS: Mapping[str, int] = {}


class Welcome(NamedTuple):
    client_id: int
    room_seq: int
    server_time: float
    snapshot: Sequence[tuple[Any, ...]]  # (model_id, type, owner, flags, props[, parent[, key]])
    clients: Sequence[int]
    epoch: int = 1
    last_applied: int = 0
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


ClientMessage: TypeAlias = "Hello | Update | Ping | Bye | Resync | Schema"
ServerMessage: TypeAlias = "Welcome | Batch | Pong | Error | Redirect"


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


# ----------------------------------------------------------------------------- encoding

# msgspec writes the same bytes as msgpack, about four times faster. One shared encoder: its
# encode() runs under the GIL and its only hook (F32) does not release it, so threads cannot
# interleave inside it.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=enc_hook)


def encode(message: tuple[Any, ...]) -> bytes:
    """Encode a message NamedTuple (or a raw message array) to bytes."""
    kind = _KIND_OF.get(type(message))
    payload: list[Any] = [kind, *message] if kind is not None else list(message)
    if kind == _BATCH:
        payload[3] = [_encode_entry(e) for e in message[2]]
    elif kind in (_BYE, _RESYNC):
        payload = [kind]
    try:
        return _ENCODER.encode(payload)
    except (TypeError, OverflowError) as exc:
        raise TypeError(f"rtecs cannot send this message: {exc}") from None


def _encode_entry(entry: UpdateEntry | JoinEntry | LeaveEntry) -> list[Any]:
    if isinstance(entry, JoinEntry):
        return [_E_JOIN, entry.client_id]
    if isinstance(entry, LeaveEntry):
        return [_E_LEAVE, entry.client_id]
    return [_E_UPDATE, *entry]


_KIND_OF: dict[type, int] = {
    Hello: _HELLO, Update: _UPDATE, Ping: _PING, Bye: _BYE, Resync: _RESYNC, Schema: _SCHEMA,
    Welcome: _WELCOME, Batch: _BATCH, Pong: _PONG, Error: _ERROR, Redirect: _REDIRECT,
}


# ----------------------------------------------------------------------------- decoding

def _unpack(data: bytes, limit: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a frame must be bytes, not {type(data).__name__}")
    if len(data) > limit:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {limit} bytes",
                            code=ErrorCode.OVER_LIMIT)
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=False, strict_map_key=False, timestamp=0,
            max_str_len=limit, max_bin_len=limit,
            max_array_len=limit, max_map_len=limit, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"malformed MessagePack: {exc}") from None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 4
_SHORT.maxstring = _SHORT.maxother = 60


def _fail(what: str, got: object) -> ProtocolError:
    return ProtocolError(f"{what} (got {_SHORT.repr(got)})")


def _int(v: object, what: str, low: int = _INT64_MIN) -> int:
    if type(v) is not int or v < low:
        raise _fail(f"{what} must be an int ≥ {low}", v)
    return v


def _number(v: object, what: str) -> float:
    if type(v) is float or type(v) is int:
        return float(v)
    raise _fail(f"{what} must be a number", v)


def _str(v: object, what: str) -> str:
    if type(v) is not str:
        raise _fail(f"{what} must be a string", v)
    return v


def _tuple(v: object, what: str, length: int | None = None) -> tuple[Any, ...]:
    if type(v) is not tuple or (length is not None and len(v) != length):
        shape = f"an array of {length}" if length is not None else "an array"
        raise _fail(f"{what} must be {shape}", v)
    return v


_SCALARS = (type(None), bool, int, float, str, bytes)


_SCALAR_TYPES = frozenset(_SCALARS)
_INT_ONLY = frozenset((int,))


def check_changes(changes: object) -> Changes:
    """Check the structure of a change list (see the module docs); return it unchanged."""
    runs = _tuple(changes, "changes")
    scalar = _SCALAR_TYPES
    for run in runs:
        if type(run) is not tuple:
            raise _fail("a change run must be [model_id, key, value, ...] of odd length", run)
        n = len(run)
        if n < 3 or not n & 1:
            raise _fail("a change run must be [model_id, key, value, ...] of odd length", run)
        mid = run[0]
        if (type(mid) is not int or mid < 0) and not is_model_id(mid):
            raise _fail("invalid model id", mid)
        # Fast paths for the common runs (property writes only); anything else is checked
        # change by change below, which also words the error.
        if n == 3:
            key = run[1]
            if type(key) is int and key >= 0 and type(run[2]) in scalar:
                continue
        elif n == 5:
            k1, k2 = run[1], run[3]
            if (type(k1) is int and type(k2) is int and k1 >= 0 and k2 >= 0
                    and type(run[2]) in scalar and type(run[4]) in scalar):
                continue
        else:
            keys = run[1::2]
            if (set(map(type, keys)) <= _INT_ONLY and min(keys) >= 0
                    and set(map(type, run[2::2])) <= scalar):
                continue
        for i in range(1, len(run), 2):
            key, value = run[i], run[i + 1]
            if type(key) is not int or key < DESTROY:
                raise _fail("a change key must be an int ≥ -2", key)
            if key == CREATE:
                if (type(value) is not tuple or not 2 <= len(value) <= 5
                        or type(value[0]) is not str or type(value[1]) is not int
                        or not 0 <= value[1] <= _ALL_FLAGS
                        or (len(value) >= 3 and not is_model_id(value[2]))
                        or (len(value) >= 4 and not _is_key(value[3]))
                        or (len(value) == 5 and value[4] is not None
                            and (type(value[4]) is not int or value[4] < 1))):
                    raise _fail("a create must carry [type_name, flags], [type_name, flags, "
                                "parent_id], [type_name, flags, parent_id, key] or [type_name, "
                                "flags, parent_id, key, expected]", value)
            elif key == DESTROY:
                if value is not None:
                    raise _fail("a destroy must carry nil", value)
            elif type(value) not in _SCALARS:
                raise _fail("a value must be nil, bool, int, float, str or bytes", value)
    return runs


def _is_key(value: object) -> bool:
    """A collection key: an int (not a bool) or a string."""
    return type(value) is int or type(value) is str


def check_snapshot_record(rec: object) -> None:
    """Check one snapshot record's shape (``WELCOME`` above; a room's checkpoint stores the
    same records): ``[model_id, type_name, owner, flags, {property id: scalar}]`` and
    optionally the parent's id and then a key. Raises :class:`ProtocolError`."""
    if type(rec) is not tuple or not 5 <= len(rec) <= 7:
        raise _fail("a snapshot record must be an array of 5 to 7", rec)
    if not is_model_id(rec[0]) or (len(rec) >= 6 and not is_model_id(rec[5])):
        raise _fail("invalid model id in snapshot", rec)
    if len(rec) == 7 and not _is_key(rec[6]):
        raise _fail("a snapshot key must be an int or a string", rec[6])
    _str(rec[1], "snapshot type name")
    _int(rec[2], "snapshot owner", -1)
    _int(rec[3], "snapshot flags", 0)
    if type(rec[4]) is not dict:
        raise _fail("snapshot properties must be a map", rec[4])
    for pid, value in rec[4].items():
        _int(pid, "snapshot property id", 1)
        if type(value) not in _SCALARS:
            raise _fail("a snapshot value must be a scalar", value)


def _check_rejected(rejected: object) -> Sequence[tuple[ModelId, int]]:
    items = _tuple(rejected, "rejected")
    for item in items:
        if (type(item) is not tuple or len(item) != 2 or not is_model_id(item[0])
                or type(item[1]) is not int):
            raise _fail("a rejection must be [model_id, key]", item)
    return items


def _check_schema(schema: object) -> Mapping[str, Mapping[int, tuple[str, str, bool]]]:
    if type(schema) is not dict:
        raise _fail("schema must be a map", schema)
    for type_name, props in schema.items():
        _str(type_name, "a schema type name")
        if type(props) is not dict:
            raise _fail(f"schema of {type_name} must be a map", props)
        for pid, spec in props.items():
            _int(pid, f"a property id of {type_name}", 1)
            if (type(spec) is not tuple or len(spec) != 3 or type(spec[0]) is not str
                    or type(spec[1]) is not str or type(spec[2]) is not bool):
                raise _fail(f"property {pid} of {type_name} must be [name, tag, reliable]", spec)
    return schema


def decode_client_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ClientMessage:
    """Decode a frame a client sent. Raises :class:`ProtocolError` for anything malformed."""
    msg = _unpack(data, max(limits.max_update_bytes, limits.max_hello_bytes))
    if type(msg) is not tuple or not msg:
        raise _fail("a message must be a non-empty array", msg)
    kind = msg[0]
    if kind == _UPDATE and type(kind) is int:
        if len(data) > limits.max_update_bytes:
            raise ProtocolError(f"update of {len(data)} bytes is over the limit of "
                                f"{limits.max_update_bytes} bytes", code=ErrorCode.OVER_LIMIT)
        _tuple(msg, "update", 4)
        return Update(_int(msg[1], "update seq", 1), check_changes(msg[2]),
                      _int(msg[3], "update epoch", 1))
    if kind == _PING and type(kind) is int:
        _tuple(msg, "ping", 2)
        return Ping(_number(msg[1], "ping time"))
    if kind == _HELLO and type(kind) is int:
        _tuple(msg, "hello", 6)
        token = msg[5]
        if token is not None:
            _str(token, "token")
        return Hello(_int(msg[1], "protocol version", 0), _str(msg[2], "room"),
                     _str(msg[3], "root type"), _check_schema(msg[4]), token)
    if kind == _BYE and type(kind) is int:
        _tuple(msg, "bye", 1)
        return Bye()
    if kind == _RESYNC and type(kind) is int:
        _tuple(msg, "resync", 1)
        return Resync()
    if kind == _SCHEMA and type(kind) is int:
        _tuple(msg, "schema", 2)
        return Schema(_check_schema(msg[1]))
    raise _fail("unknown client message kind", kind)


def decode_server_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ServerMessage:
    """Decode a frame the server sent. Raises :class:`ProtocolError` for anything malformed."""
    msg = _unpack(data, limits.max_frame_bytes)
    if type(msg) is not tuple or not msg:
        raise _fail("a message must be a non-empty array", msg)
    kind = msg[0]
    if kind == _BATCH and type(kind) is int:
        _tuple(msg, "batch", 4)
        entries: list[UpdateEntry | JoinEntry | LeaveEntry] = []
        for e in _tuple(msg[3], "batch entries"):
            ekind = _tuple(e, "a batch entry")[0] if e else None
            if type(ekind) is not int:
                raise _fail("unknown batch entry", e)
            if ekind == _E_UPDATE and len(e) == 5:
                entries.append(UpdateEntry(_int(e[1], "sender", 0), _int(e[2], "seq", 0),
                                           check_changes(e[3]), _check_rejected(e[4])))
            elif ekind == _E_JOIN and len(e) == 2:
                entries.append(JoinEntry(_int(e[1], "client id", 1)))
            elif ekind == _E_LEAVE and len(e) == 2:
                entries.append(LeaveEntry(_int(e[1], "client id", 1)))
            else:
                raise _fail("unknown batch entry", e)
        return Batch(_int(msg[1], "room seq", 0), _number(msg[2], "server time"), entries)
    if kind == _PONG and type(kind) is int:
        _tuple(msg, "pong", 4)
        return Pong(_number(msg[1], "ping time"), _number(msg[2], "server time"),
                    _int(msg[3], "pong room seq", 0))
    if kind == _WELCOME and type(kind) is int:
        _tuple(msg, "welcome", 9)
        records = _tuple(msg[4], "snapshot")
        for rec in records:
            check_snapshot_record(rec)
        clients = _tuple(msg[5], "clients")
        for c in clients:
            _int(c, "client id", 1)
        announced = msg[8]
        if type(announced) is not dict or not all(
                type(k) is str and type(v) is int and v > 0 for k, v in announced.items()):
            raise _fail("welcome limits must map names to positive ints", announced)
        return Welcome(_int(msg[1], "client id", 1), _int(msg[2], "room seq", 0),
                       _number(msg[3], "server time"), records, clients,
                       _int(msg[6], "welcome epoch", 1), _int(msg[7], "last applied", 0),
                       announced)
    if kind == _ERROR and type(kind) is int:
        _tuple(msg, "error", 4)
        if type(msg[3]) is not bool:
            raise _fail("error 'fatal' must be a bool", msg[3])
        return Error(_str(msg[1], "error code"), _str(msg[2], "error message"), msg[3])
    if kind == _REDIRECT and type(kind) is int:
        _tuple(msg, "redirect", 3)
        endpoint = _str(msg[1], "redirect endpoint")
        if not endpoint:
            raise _fail("redirect endpoint must not be empty", endpoint)
        return Redirect(endpoint, _str(msg[2], "redirect room"))
    raise _fail("unknown server message kind", kind)
