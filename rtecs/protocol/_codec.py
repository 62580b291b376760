"""The MessagePack codec of the wire format: :func:`encode` and the strict decoders, which
check every frame's shape before anything uses it. Re-exported by :mod:`rtecs.protocol`."""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import msgpack
import msgspec

from rtecs.errors import ProtocolError
from rtecs.protocol._messages import (
    ALL_FLAGS,
    CREATE,
    DEFAULT_LIMITS,
    DESTROY,
    Batch,
    Bye,
    Changes,
    ClientMessage,
    Error,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    ModelId,
    Ping,
    Pong,
    Redirect,
    Resume,
    Resumed,
    Resync,
    Schema,
    ServerMessage,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    count_changes,
    is_model_id,
)
from rtecs.protocol._values import _INT64_MIN, F32, enc_hook

_HELLO, _UPDATE, _PING, _BYE, _RESYNC, _SCHEMA, _RESUME = 1, 2, 3, 4, 5, 6, 7
_WELCOME, _BATCH, _PONG, _ERROR, _REDIRECT, _RESUMED = 10, 11, 12, 13, 14, 15
_E_UPDATE, _E_JOIN, _E_LEAVE = 0, 1, 2

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
    Resume: _RESUME, Welcome: _WELCOME, Batch: _BATCH, Pong: _PONG, Error: _ERROR,
    Redirect: _REDIRECT, Resumed: _RESUMED,
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


#: The longest room name, in characters. Room names are logged, shown and used as storage
#: keys, so they are bounded and printable.
MAX_ROOM_NAME = 128


def check_room_name(name: object, what: str = "room") -> str:
    """Return ``name`` if it is a valid room name: a string of 1 to :data:`MAX_ROOM_NAME`
    printable characters (no NUL, newlines or other control characters). Raises
    :class:`ProtocolError` saying what is wrong."""
    if type(name) is not str:
        raise _fail(f"{what} must be a string", name)
    if not 0 < len(name) <= MAX_ROOM_NAME:
        raise ProtocolError(f"a room name has 1 to {MAX_ROOM_NAME} characters, got "
                            f"{len(name)}")
    if not name.isprintable():
        raise _fail(f"{what} must be printable (no control characters such as NUL or "
                    "newlines)", name)
    return name


def _bytes(v: object, what: str) -> bytes:
    if type(v) is not bytes:
        raise _fail(f"{what} must be bytes", v)
    return v


def _announced(v: object) -> Mapping[str, int]:
    if type(v) is not dict or not all(
            type(k) is str and type(n) is int and n > 0 for k, n in v.items()):
        raise _fail("announced limits must map names to positive ints", v)
    return v


def _tuple(v: object, what: str, length: int | None = None) -> tuple[Any, ...]:
    if type(v) is not tuple or (length is not None and len(v) != length):
        shape = f"an array of {length}" if length is not None else "an array"
        raise _fail(f"{what} must be {shape}", v)
    return v


_SCALARS = (type(None), bool, int, float, str, bytes)


_SCALAR_TYPES = frozenset(_SCALARS)
_INT_ONLY = frozenset((int,))


def _check_change_count(changes: object, limit: int) -> None:
    """Refuse an update of more than ``limit`` changes before its changes are checked one
    by one (what a change costs the server is mostly per change, not per byte)."""
    if type(changes) is not tuple:
        return  # check_changes says what is wrong with it
    try:
        count = count_changes(changes)  # a run that is not an array raises TypeError
    except TypeError:
        return  # a run that is not an array: check_changes says so
    if count > limit:
        raise ProtocolError(f"update of {count} changes is over the limit of {limit} changes",
                            code=ErrorCode.OVER_LIMIT)


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
                        or not 0 <= value[1] <= ALL_FLAGS
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


def check_snapshot_record(rec: object) -> SnapshotRecord:
    """Check one snapshot record's shape (``WELCOME`` in :mod:`rtecs.protocol`; a room's
    checkpoint stores the same records) and return it as a :class:`SnapshotRecord`:
    ``[model_id, type_name, owner, flags, {property id: scalar}, parent, key]`` with nil for
    no parent and no key. Raises :class:`ProtocolError`."""
    # A welcome or a checkpoint holds up to hundreds of thousands of records: a well-formed
    # one is passed in one expression (no call per field); anything else is looked at field
    # by field by _check_field_by_field, which words what is wrong.
    if (type(rec) is SnapshotRecord or type(rec) is tuple) and len(rec) == 7:
        mid, name, owner, flags, props, parent, key = rec
        if (((type(mid) is int and mid >= 0) or is_model_id(mid))
                and type(name) is str and type(owner) is int and owner >= -1
                and type(flags) is int and flags >= 0
                and (parent is None or is_model_id(parent))
                and (key is None or type(key) is int or type(key) is str)
                and type(props) is dict):
            for pid, value in props.items():
                if type(pid) is not int or pid < 1 or type(value) not in _RECORD_VALUES:
                    break
            else:
                return rec if type(rec) is SnapshotRecord else _as_record(rec)
    return _check_field_by_field(rec)


def _check_field_by_field(rec: object) -> SnapshotRecord:
    """:func:`check_snapshot_record` a field at a time: raises naming the first thing wrong
    (or returns the record, if it was well-formed after all)."""
    if not isinstance(rec, tuple) or len(rec) != 7:
        raise _fail("a snapshot record must be an array of 7", rec)
    if not is_model_id(rec[0]) or (rec[5] is not None and not is_model_id(rec[5])):
        raise _fail("invalid model id in snapshot", rec)
    if rec[6] is not None and not _is_key(rec[6]):
        raise _fail("a snapshot key must be nil, an int or a string", rec[6])
    _str(rec[1], "snapshot type name")
    _int(rec[2], "snapshot owner", -1)
    _int(rec[3], "snapshot flags", 0)
    props = rec[4]
    if type(props) is not dict:
        raise _fail("snapshot properties must be a map", props)
    for pid, value in props.items():
        _int(pid, "snapshot property id", 1)
        if type(value) not in _RECORD_VALUES:
            raise _fail("a snapshot value must be a scalar", value)
    return rec if type(rec) is SnapshotRecord else _as_record(rec)


#: SnapshotRecord._make without its Python-level call (a decoded record is a tuple of 7).
_as_record: Callable[[tuple[Any, ...]], SnapshotRecord] = partial(tuple.__new__, SnapshotRecord)
#: Values a record may hold: the scalars, and F32 (a live room's float32 values).
_RECORD_VALUES = _SCALAR_TYPES | {F32}


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
        _check_change_count(msg[2], limits.max_changes_per_update)
        return Update(_int(msg[1], "update seq", 1), check_changes(msg[2]),
                      _int(msg[3], "update epoch", 1))
    if kind == _PING and type(kind) is int:
        _tuple(msg, "ping", 3)
        return Ping(_number(msg[1], "ping time"), _int(msg[2], "ping epoch", 0))
    if kind == _HELLO and type(kind) is int:
        _tuple(msg, "hello", 6)
        token = msg[5]
        if token is not None:
            _str(token, "token")
        return Hello(_int(msg[1], "protocol version", 0), check_room_name(msg[2]),
                     _str(msg[3], "root type"), _check_schema(msg[4]), token)
    if kind == _RESUME and type(kind) is int:
        _tuple(msg, "resume", 7)
        return Resume(check_room_name(msg[1]), _bytes(msg[2], "session id"),
                      _bytes(msg[3], "session secret"), _int(msg[4], "resume epoch", 1),
                      _int(msg[5], "resume room seq", 0), _int(msg[6], "incarnation", 0))
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
        _tuple(msg, "welcome", 12)
        records = [check_snapshot_record(rec) for rec in _tuple(msg[4], "snapshot")]
        clients = _tuple(msg[5], "clients")
        for c in clients:
            _int(c, "client id", 1)
        return Welcome(_int(msg[1], "client id", 1), _int(msg[2], "room seq", 0),
                       _number(msg[3], "server time"), records, clients,
                       _int(msg[6], "welcome epoch", 1), _int(msg[7], "last applied", 0),
                       _announced(msg[8]), _bytes(msg[9], "session id"),
                       _bytes(msg[10], "session secret"), _int(msg[11], "incarnation", 0))
    if kind == _RESUMED and type(kind) is int:
        _tuple(msg, "resumed", 9)
        return Resumed(_int(msg[1], "client id", 1), _int(msg[2], "resumed epoch", 1),
                       _int(msg[3], "last applied", 0), _int(msg[4], "room seq", 0),
                       _number(msg[5], "server time"), _int(msg[6], "incarnation", 0),
                       _bytes(msg[7], "session secret"), _announced(msg[8]))
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
        return Redirect(endpoint, check_room_name(msg[2], "redirect room"))
    raise _fail("unknown server message kind", kind)

