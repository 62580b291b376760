"""The records codec: a :class:`~rtecs_server.records.SavedRoom` as the blob every storage
backend keeps, and back (see :mod:`rtecs_server.storage`, "Records").

A blob is a 10-byte header — the magic ``b"RTRM"``, the format version (big-endian u16,
:data:`~rtecs_server.records.FORMAT_VERSION`, or
:data:`~rtecs_server.records.LIVE_FORMAT_VERSION` for a room saved with sessions) and the
CRC-32 of the body (big-endian u32) — then the MessagePack body ``[name, root_type, schema,
next_client_id, created, models]``, and in format 2 ``sessions`` after them: each
``[session_id, secret_hash, client_id, epoch, last_applied, prior_epoch, prior_applied,
user_id, claims]`` (:class:`~rtecs_server.records.SavedSession`).
Both directions check the record's shape, so nothing unloadable is ever written and nothing
malformed is ever handed to the room core: every model record as the protocol's
:func:`~rtecs.protocol.check_snapshot_record` checks it, and of a type in the schema. For
speed (a checkpoint holds up to hundreds of thousands of records) a save checks a plainly
well-formed record in one expression, and a load first decodes with msgspec into types that
check the fields as they are read; whatever does not pass that way is checked record by
record by the protocol's check, which words what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from functools import partial
from itertools import chain
from operator import itemgetter
from typing import Annotated, Any, Final

import msgpack
import msgspec
from msgspec import Meta

from rtecs.errors import ProtocolError
from rtecs.gcpause import paused_gc
from rtecs.protocol import (
    F32,
    INT_MAX,
    INT_MIN,
    SnapshotRecord,
    check_snapshot_record,
    enc_hook,
    is_model_id,
)
from rtecs_server.errors import CorruptRoomError, StorageError
from rtecs_server.records import FORMAT_VERSION, LIVE_FORMAT_VERSION, SavedRoom, SavedSession

__all__ = ["decode_room", "encode_room"]

_MAGIC: Final = b"RTRM"
_HEADER: Final = struct.Struct(">4sHI")  # magic, format version, CRC-32 of the body

_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook)  # F32 values as float32


def encode_room(room: SavedRoom) -> bytes:
    """The stored blob of ``room`` (header + MessagePack body). Raises :class:`StorageError`
    if ``room`` does not have the documented shape (so nothing unloadable is ever written):
    checked first, which costs about as much as encoding."""
    try:
        models = _check_room(room, (list, tuple))
    except _Malformed as exc:
        raise StorageError(f"room {room.name!r} cannot be saved: {exc}") from None
    fields: tuple[object, ...] = (room.name, room.root_type, room.schema, room.next_client_id,
                                  room.created, models)
    fmt = FORMAT_VERSION
    if room.sessions:
        try:
            sessions = [_check_session(s) for s in room.sessions]
        except _Malformed as exc:
            raise StorageError(f"room {room.name!r} cannot be saved: {exc}") from None
        fields, fmt = (*fields, sessions), LIVE_FORMAT_VERSION
    try:
        body = _ENCODER.encode(fields)
    except (TypeError, OverflowError, ValueError) as exc:
        raise StorageError(f"room {room.name!r} cannot be saved: {exc}") from None
    return _HEADER.pack(_MAGIC, fmt, zlib.crc32(body)) + body


def decode_room(name: str, blob: bytes, *, saved_at: float = 0.0,
                version: int = 0) -> SavedRoom:
    """The room stored as ``blob`` under ``name``; raises :class:`CorruptRoomError` naming
    ``name`` if the blob is damaged, of another format version, or malformed."""
    if len(blob) < _HEADER.size:
        raise CorruptRoomError(name, f"the record is {len(blob)} bytes, too short for a header")
    magic, fmt, crc = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise CorruptRoomError(name, f"not an rtecs room record (starts with {magic!r})")
    if fmt not in (FORMAT_VERSION, LIVE_FORMAT_VERSION):
        raise CorruptRoomError(name, f"unknown format version {fmt} (this server reads "
                                     f"versions {FORMAT_VERSION} and {LIVE_FORMAT_VERSION}; "
                                     f"was it saved by a newer rtecs?)")
    body = memoryview(blob)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise CorruptRoomError(name, "checksum mismatch: the record is damaged")
    # Decoding makes one container per record and per props map, and one SnapshotRecord per
    # record: the cyclic GC would run every few hundred of them and triple the time. None of
    # them can form a cycle.
    with paused_gc():
        room = _typed_body(body) if fmt == FORMAT_VERSION else None
        if room is None:
            room = _checked_body(name, body, fmt)
    if room.name != name:
        raise CorruptRoomError(name, f"the record is of room {room.name!r}")
    room.saved_at = saved_at
    room.version = version
    room.format = fmt
    return room


class _Malformed(Exception):
    pass


def _checked_body(name: str, body: memoryview, fmt: int = FORMAT_VERSION) -> SavedRoom:
    """The body read with msgpack and checked record by record: what a body the typed
    decoder refused goes through, which words what is wrong with it (or loads a format-1
    checkpoint written before protocol 3)."""
    limit = len(body)
    try:
        data = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=False,
                               max_str_len=limit, max_bin_len=limit, max_array_len=limit,
                               max_map_len=limit, max_ext_len=0)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptRoomError(name, f"malformed MessagePack: {exc}") from None
    try:
        return _check_body(data, fmt)
    except _Malformed as exc:
        raise CorruptRoomError(name, str(exc)) from None


def _int(v: object, what: str, low: int = INT_MIN) -> int:
    if type(v) is not int or not low <= v <= INT_MAX:
        raise _Malformed(f"{what} must be an int ≥ {low}, got {v!r:.60}")
    return v


def _check_body(data: object, fmt: int = FORMAT_VERSION) -> SavedRoom:
    """Check the shape of a decoded body (everything the room core relies on)."""
    size = 6 if fmt == FORMAT_VERSION else 7
    if type(data) is not tuple or len(data) != size:
        raise _Malformed(f"the body of a format-{fmt} record must be an array of {size}")
    room = SavedRoom(*data[:6])
    room.models = _check_room(room, (tuple,))
    if size == 7:
        sessions = data[6]
        if type(sessions) is not tuple:
            raise _Malformed("sessions must be a list")
        room.sessions = [_check_session(s) for s in sessions]
        ids = [s.session_id for s in room.sessions]
        members = [s.client_id for s in room.sessions]
        if len(set(ids)) != len(ids) or len(set(members)) != len(members):
            raise _Malformed("two sessions share a session id or a client id")
    return room


def _check_session(session: object) -> SavedSession:
    """A session record as :class:`SavedSession`, or :class:`_Malformed`."""
    if not isinstance(session, tuple | list) or len(session) != 9:
        raise _Malformed(f"a session must be an array of 9, got {session!r:.60}")
    fields: tuple[Any, ...] = tuple(session)
    sid, digest, cid, epoch, last, prior_epoch, prior_last, user, claims = fields
    if type(sid) is not bytes or len(sid) != 16 or type(digest) is not bytes \
            or len(digest) != 32:
        raise _Malformed("a session's id must be 16 bytes and its secret hash 32")
    what = f"session of client {cid!r:.20}"
    _int(cid, f"the client id of a {what}", 1)
    _int(epoch, f"the epoch of the {what}", 1)
    _int(last, f"the last applied update of the {what}", 0)
    _int(prior_epoch, f"the prior epoch of the {what}", 0)
    _int(prior_last, f"the prior last applied update of the {what}", 0)
    if user is not None and type(user) is not str:
        raise _Malformed(f"the user id of the {what} must be a string or nil")
    if type(claims) is not dict or not all(type(k) is str for k in claims):
        raise _Malformed(f"the claims of the {what} must be a map of strings")
    return SavedSession(sid, digest, cid, epoch, last, prior_epoch, prior_last, user, claims)


def _check_room(room: SavedRoom, arrays: tuple[type, ...]) -> list[SnapshotRecord]:
    """Raise :class:`_Malformed` unless ``room`` has the shape :class:`SavedRoom` documents;
    ``arrays`` are the types the model list may have (decoded: a tuple). Returns the model
    records as :class:`SnapshotRecord` (format 1 written before protocol 3 left a record's
    nil parent and key out)."""
    schema = _check_header(room)
    models = room.models
    if type(models) not in arrays:
        raise _Malformed("models must be a list")
    return _check_models(models, schema)


def _check_header(room: SavedRoom) -> Mapping[str, object]:
    """Raise :class:`_Malformed` unless everything of ``room`` but its models has the shape
    :class:`SavedRoom` documents; return its schema."""
    name, root_type, schema = room.name, room.root_type, room.schema
    if type(name) is not str or type(root_type) is not str:
        raise _Malformed("room name and root type must be strings")
    _int(room.next_client_id, "next_client_id", 1)
    if type(schema) is not dict:
        raise _Malformed("the schema must be a map")
    for tname, props in schema.items():
        if type(tname) is not str or type(props) is not dict:
            raise _Malformed(f"schema of type {tname!r:.60} must be a map")
        for pid, spec in props.items():
            _int(pid, f"a property id of {tname}", 1)
            if (type(spec) is not tuple or len(spec) != 3 or type(spec[0]) is not str
                    or type(spec[1]) is not str or type(spec[2]) is not bool):
                raise _Malformed(f"property {pid} of {tname} must be (name, tag, reliable)")
    if root_type not in schema:
        raise _Malformed(f"the root type {root_type!r} is not in the schema")
    created = room.created
    if type(created) is not dict:
        raise _Malformed("created must be a map")
    for cid, counter in created.items():
        _int(cid, "a creator's client id", 1)
        _int(counter, f"client {cid}'s created counter", 0)
    return schema


#: What a record's property may hold: the protocol's scalars, and F32 (a live room's float32
#: values). No more than check_snapshot_record allows.
_VALUES: Final = frozenset({type(None), bool, int, float, F32, str, bytes})
_as_record: Final = partial(tuple.__new__, SnapshotRecord)  # SnapshotRecord._make, in C


def _check_models(models: Sequence[Any],
                  schema: Mapping[str, object]) -> list[SnapshotRecord]:
    """The model records as :class:`SnapshotRecord`, each as the protocol's
    :func:`~rtecs.protocol.check_snapshot_record` checks it and of a type in ``schema``.
    Format-1 records written before protocol 3 left a nil parent and key out (5 fields, or
    6 with a parent): they are padded first."""
    # A checkpoint holds up to hundreds of thousands of records and a live room is saved
    # every few seconds: a plainly well-formed record passes here without a call per record
    # or per field; anything else goes to _check_record, which pads a format-1 record and
    # asks check_snapshot_record, the authority, which words what is wrong. This passes
    # nothing that check_snapshot_record and the schema test would refuse.
    values = _VALUES
    checked: list[SnapshotRecord] = []
    append = checked.append
    for rec in models:
        if type(rec) is SnapshotRecord or (type(rec) is tuple and len(rec) == 7):
            mid, name, owner, flags, props, parent, key = rec
            if (((type(mid) is int and mid >= 0) or is_model_id(mid))
                    and type(name) is str and name in schema
                    and type(owner) is int and owner >= -1 and type(flags) is int and flags >= 0
                    and (parent is None or is_model_id(parent))
                    and (key is None or type(key) is int or type(key) is str)
                    and type(props) is dict):
                for pid, value in props.items():
                    if type(pid) is not int or pid < 1 or type(value) not in values:
                        break
                else:
                    append(rec if type(rec) is SnapshotRecord else _as_record(rec))
                    continue
        append(_check_record(rec, schema))
    return checked


def _check_record(rec: object, schema: Mapping[str, object]) -> SnapshotRecord:
    if type(rec) is tuple and (len(rec) == 5 or (len(rec) == 6 and rec[5] is not None)):
        rec = (*rec, None, None)[:7]  # format 1 before protocol 3 left nil tails out
    try:
        checked = check_snapshot_record(rec)
    except ProtocolError as exc:
        raise _Malformed(str(exc)) from None
    if checked.type_name not in schema:
        raise _Malformed(f"model {checked.model_id!r:.60} is of type "
                         f"{checked.type_name!r:.60}, not in the schema")
    return checked


# A body is first decoded with msgspec into these types, which checks each record's fields in
# C as it reads them (no slower than decoding untyped); _typed_records_ok checks what the
# types cannot say. Together they pass no more than _check_body does: a body they refuse is
# read again by _checked_body, the authority, which words what is wrong or passes it after
# all (a format-1 checkpoint of 5- and 6-field records, for one).
_Id = (Annotated[int, Meta(ge=0)]
       | Annotated[tuple[Annotated[int, Meta(ge=0)], ...], Meta(min_length=2)])
_PropId = Annotated[int, Meta(ge=1)]


#: A model record as the typed decoder reads it: SnapshotRecord's fields (model id, type name,
#: owner, flags, props, parent, key) as a plain tuple (msgspec makes those faster than
#: NamedTuples). The props' values are checked after: msgspec cannot type str | bytes.
_Stored = tuple[_Id, str, Annotated[int, Meta(ge=-1)], Annotated[int, Meta(ge=0)],
                dict[_PropId, Any], _Id | None, int | str | None]


_BODY: Final = msgspec.msgpack.Decoder(
    tuple[str, str, dict[str, dict[_PropId, tuple[str, str, bool]]], int, dict[int, int],
          list[_Stored]])
_INT: Final = frozenset({int})
_model_id, _type_name, _props, _parent = itemgetter(0), itemgetter(1), itemgetter(4), itemgetter(5)


def _typed_body(body: memoryview) -> SavedRoom | None:
    """The body decoded and checked by type, or None if it does not pass that way."""
    try:
        name, root_type, schema, next_id, created, records = _BODY.decode(body)
    except Exception:  # msgspec's errors, or RecursionError for a deeply nested value
        return None
    room = SavedRoom(name, root_type, schema, next_id, created, [])
    try:
        _check_header(room)
    except _Malformed:
        return None
    if not _typed_records_ok(records, schema):
        return None
    room.models = list(map(_as_record, records))
    return room


def _typed_records_ok(records: list[_Stored], schema: Mapping[str, object]) -> bool:
    """What the types of :data:`_Stored` leave unchecked: every type name is in the schema,
    every property value a scalar, and a tuple model id (a declared child's) passes
    :func:`~rtecs.protocol.is_model_id` (its parts after the first are ≥ 1)."""
    parents = list(map(_parent, records))
    return (schema.keys() >= set(map(_type_name, records))
            and _VALUES.issuperset(map(type, chain.from_iterable(
                map(dict.values, map(_props, records)))))
            and (_INT.issuperset(map(type, map(_model_id, records)))
                 or all(map(is_model_id, map(_model_id, records))))
            and (parents.count(None) == len(parents)
                 or all(is_model_id(p) for p in parents if p is not None)))
