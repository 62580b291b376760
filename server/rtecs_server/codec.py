"""The records codec: a :class:`~rtecs_server.records.SavedRoom` as the blob every storage
backend keeps, and back (see :mod:`rtecs_server.storage`, "Records").

A blob is a 10-byte header — the magic ``b"RTRM"``, the format version (big-endian u16,
:data:`~rtecs_server.records.FORMAT_VERSION`) and the CRC-32 of the body (big-endian u32) —
then the MessagePack body ``[name, root_type, schema, next_client_id, created, models]``.
Both directions check the record's shape, so nothing unloadable is ever written and nothing
malformed is ever handed to the room core.
"""

from __future__ import annotations

import gc
import struct
import zlib
from typing import Final

import msgpack
import msgspec

from rtecs.errors import ProtocolError
from rtecs.protocol import INT_MAX, INT_MIN, SnapshotRecord, check_snapshot_record, enc_hook
from rtecs_server.errors import CorruptRoomError, StorageError
from rtecs_server.records import FORMAT_VERSION, SavedRoom

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
    try:
        body = _ENCODER.encode((room.name, room.root_type, room.schema, room.next_client_id,
                                room.created, models))
    except (TypeError, OverflowError, ValueError) as exc:
        raise StorageError(f"room {room.name!r} cannot be saved: {exc}") from None
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, zlib.crc32(body)) + body


def decode_room(name: str, blob: bytes, *, saved_at: float = 0.0,
                version: int = 0) -> SavedRoom:
    """The room stored as ``blob`` under ``name``; raises :class:`CorruptRoomError` naming
    ``name`` if the blob is damaged, of another format version, or malformed."""
    if len(blob) < _HEADER.size:
        raise CorruptRoomError(name, f"the record is {len(blob)} bytes, too short for a header")
    magic, fmt, crc = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise CorruptRoomError(name, f"not an rtecs room record (starts with {magic!r})")
    if fmt != FORMAT_VERSION:
        raise CorruptRoomError(name, f"unknown format version {fmt} (this server reads "
                                     f"version {FORMAT_VERSION}; was it saved by a newer rtecs?)")
    body = memoryview(blob)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise CorruptRoomError(name, "checksum mismatch: the record is damaged")
    limit = len(body)
    # Decoding makes one container per record and per props map: the cyclic GC would run
    # every few hundred of them and triple the time. None of them can form a cycle.
    paused = gc.isenabled()
    gc.disable()
    try:
        data = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=False,
                               max_str_len=limit, max_bin_len=limit, max_array_len=limit,
                               max_map_len=limit, max_ext_len=0)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptRoomError(name, f"malformed MessagePack: {exc}") from None
    finally:
        if paused:
            gc.enable()
    try:
        room = _check_body(data)
    except _Malformed as exc:
        raise CorruptRoomError(name, str(exc)) from None
    if room.name != name:
        raise CorruptRoomError(name, f"the record is of room {room.name!r}")
    room.saved_at = saved_at
    room.version = version
    return room


class _Malformed(Exception):
    pass


def _int(v: object, what: str, low: int = INT_MIN) -> int:
    if type(v) is not int or not low <= v <= INT_MAX:
        raise _Malformed(f"{what} must be an int ≥ {low}, got {v!r:.60}")
    return v


def _check_body(data: object) -> SavedRoom:
    """Check the shape of a decoded body (everything the room core relies on)."""
    if type(data) is not tuple or len(data) != 6:
        raise _Malformed("the body must be an array of 6")
    room = SavedRoom(*data)
    room.models = _check_room(room, (tuple,))
    return room


def _check_room(room: SavedRoom, arrays: tuple[type, ...]) -> list[SnapshotRecord]:
    """Raise :class:`_Malformed` unless ``room`` has the shape :class:`SavedRoom` documents;
    ``arrays`` are the types the model list may have (decoded: a tuple). Returns the model
    records as :class:`SnapshotRecord` (format 1 written before protocol 3 left a record's
    nil parent and key out)."""
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
    models = room.models
    if type(models) not in arrays:
        raise _Malformed("models must be a list")
    checked: list[SnapshotRecord] = []
    append = checked.append
    for rec in models:
        if type(rec) is tuple and (len(rec) == 5 or (len(rec) == 6 and rec[5] is not None)):
            rec = (*rec, None, None)[:7]  # format 1 before protocol 3 left nil tails out
        try:
            rec = check_snapshot_record(rec)
        except ProtocolError as exc:
            raise _Malformed(str(exc)) from None
        if rec.type_name not in schema:
            raise _Malformed(f"model {rec.model_id!r:.60} is of type {rec.type_name!r:.60}, "
                             f"not in the schema")
        append(rec)
    return checked
