"""Where rooms go when they are not in memory: persisted checkpoints and the room directory.

A :class:`Storage` keeps one checkpoint per room (a :class:`SavedRoom`) and a *room
directory* of expiring leases that says which server instance hosts which room. Two
implementations, chosen by URL with :func:`open_storage`:

- :class:`SQLiteStorage` (the default: ``None``/``"sqlite:"`` is ``rooms.sqlite3`` under the
  data directory, created on first use): one server instance. Its directory is trivial —
  every claim is granted (there is nobody to share rooms with) — but fencing tokens are real
  and persisted, so the same calls work for both backends.
- :class:`RedisStorage` (``redis://host:port/db``): several instances share one Redis, which
  holds the checkpoints and the directory. Leases expire unless renewed; a claim carries a
  fencing token that grows with every claim, and a save made with an older token than the
  newest is refused (:class:`FencedOut`), checked atomically with the write, so a host that
  stalled past its lease can never overwrite its successor's checkpoint.

Records
    A checkpoint is one blob: a 10-byte header — the magic ``b"RTRM"``, the format version
    (big-endian u16, :data:`FORMAT_VERSION`) and the CRC-32 of the body (big-endian u32) —
    then the MessagePack body ``[name, root_type, schema, next_client_id, created, models]``
    (see :class:`SavedRoom`). The header is read first, so an unknown version or a damaged
    body is a clear :class:`CorruptRoomError` for that room only. The per-save ``version``
    (1, 2, 3… per room, assigned by the storage) and ``saved_at`` live beside the blob (a
    column in SQLite, a hash beside the blob in Redis) so :meth:`Storage.list_rooms` needn't
    read blobs.

Atomicity
    SQLite: one ``BEGIN IMMEDIATE`` transaction per save, in WAL mode with
    ``synchronous=FULL`` (durable at commit, also against power loss); a crash mid-save leaves
    the previous row. Redis: the blob is first staged under a key of its own, then one Lua
    script checks the fence and moves it into place (``RENAME``) with its metadata, so the
    record is replaced whole or not at all (Redis runs a script alone and never executes a
    partially received command; a staged blob whose script never ran expires after 60 s).

Redis keys (``prefix`` defaults to ``rtecs:``; not Redis-Cluster-safe: keys of one room are
not hash-tagged into one slot)
    ``<prefix>room:<name>`` the blob (a string); ``<prefix>meta:<name>`` a hash ``{version,
    saved_at, models}``; ``<prefix>rooms`` the set of stored room names;
    ``<prefix>stage:<name>:<uuid>`` a blob on its way in; ``<prefix>lease:<name>`` the lease, a
    string ``[token, instance_id, endpoint]`` (JSON) with a TTL; ``<prefix>fence:<name>`` the
    fencing counter (INCR on every claim; never deleted, not even by :meth:`Storage.delete`,
    so tokens never go back).

Time
    Every storage reads time from one :class:`~rtecs.clock.Clock` (``clock=``, default
    :data:`~rtecs.clock.SYSTEM_CLOCK`, kept as :attr:`Storage.clock`): a lease's
    :attr:`Lease.expires_at` and :meth:`Lease.time_left` count on its ``monotonic()``
    reading, a checkpoint's ``saved_at`` is its ``wall()`` reading. A server passes its own
    clock, so tests can step a :class:`~rtecs.clock.ManualClock` through lease expiry. (Redis
    itself still expires leases in real time: with a manual clock the local estimate is the
    test's to keep honest.)

Threads
    Every method may be called from any thread, one call at a time per storage object in the
    SQLite case (serialised by a lock) and concurrently in the Redis case (redis-py's pool).
    Calls block: a server should call them where blocking for a save is acceptable.
"""

from __future__ import annotations

import gc
import math
import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self

import msgpack
import msgspec

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs.protocol import F32, enc_hook, is_model_id
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError, StorageUnavailable
from rtecs_server.records import FORMAT_VERSION, SavedRoom, Schema, persistent_models

__all__ = [
    "DEFAULT_DB_FILE", "FORMAT_VERSION", "CorruptRoomError", "FencedOut", "Lease", "Owner",
    "RedisStorage", "RoomInfo", "SQLiteStorage", "SavedRoom", "Schema", "Storage",
    "StorageError", "StorageUnavailable", "decode_room", "encode_room", "open_storage",
    "persistent_models",
]

#: The SQLite file :func:`open_storage` uses under the data directory by default.
DEFAULT_DB_FILE: Final = "rooms.sqlite3"

_MAGIC: Final = b"RTRM"
_HEADER: Final = struct.Struct(">4sHI")  # magic, format version, CRC-32 of the body
_SQLITE_SCHEMA_VERSION: Final = 1

# ----------------------------------------------------------------------------- records

class RoomInfo(NamedTuple):
    """A stored room as :meth:`Storage.list_rooms` lists it."""

    name: str
    size_bytes: int
    saved_at: float
    models: int
    version: int


class Owner(NamedTuple):
    """Who holds a room's lease: how to reach it, for a redirect."""

    instance_id: str
    endpoint: str


@dataclass(slots=True)
class Lease:
    """A claim on hosting a room. ``token`` is its fencing token: pass it to every
    :meth:`Storage.save` of the room. ``expires_at`` (seconds of ``clock.monotonic()``, the
    storage's clock) is a conservative local estimate of when the lease runs out unless
    renewed: it counts from before the claim or renewal was sent, so the lease never expires
    in the store before it. A host that reaches ``expires_at`` without a successful renewal
    must stop serving the room."""

    room: str
    instance_id: str
    endpoint: str
    token: int
    ttl: float
    expires_at: float
    _value: str = field(default="", repr=False)
    #: The clock :attr:`expires_at` counts on (the storage's).
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)

    def time_left(self) -> float:
        """Seconds until :attr:`expires_at` by :attr:`clock` (negative once past)."""
        return self.expires_at - self.clock.monotonic()


_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook)  # F32 values as float32
_SCALARS: Final = frozenset({type(None), bool, int, float, F32, str, bytes})
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def encode_room(room: SavedRoom) -> bytes:
    """The stored blob of ``room`` (header + MessagePack body). Raises :class:`StorageError`
    if ``room`` does not have the documented shape (so nothing unloadable is ever written):
    checked first, which costs about as much as encoding."""
    try:
        _check_room(room, (list, tuple))
    except _Malformed as exc:
        raise StorageError(f"room {room.name!r} cannot be saved: {exc}") from None
    try:
        body = _ENCODER.encode((room.name, room.root_type, room.schema, room.next_client_id,
                                room.created, room.models))
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


def _int(v: object, what: str, low: int = _INT64_MIN) -> int:
    if type(v) is not int or not low <= v <= _UINT64_MAX:
        raise _Malformed(f"{what} must be an int ≥ {low}, got {v!r:.60}")
    return v


def _check_body(data: object) -> SavedRoom:
    """Check the shape of a decoded body (everything the room core relies on)."""
    if type(data) is not tuple or len(data) != 6:
        raise _Malformed("the body must be an array of 6")
    room = SavedRoom(*data)
    _check_room(room, (tuple,))
    room.models = list(room.models)
    return room


def _check_room(room: SavedRoom, arrays: tuple[type, ...]) -> None:
    """Raise :class:`_Malformed` unless ``room`` has the shape :class:`SavedRoom` documents;
    ``arrays`` are the types the model list may have (decoded: a tuple)."""
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
    scalars = _SCALARS
    model_id = is_model_id
    issuperset = scalars.issuperset
    for rec in models:
        if type(rec) is not tuple:
            raise _Malformed(f"a model record must be a tuple, got {rec!r:.80}")
        n = len(rec)
        if n == 5:
            mid, tname, owner, flags, props = rec
        elif 5 < n <= 7:
            mid, tname, owner, flags, props = rec[:5]
            if not model_id(rec[5]):
                raise _Malformed(f"model {mid!r}: invalid parent id {rec[5]!r:.60}")
            if n == 7 and type(rec[6]) is not int and type(rec[6]) is not str:
                raise _Malformed(f"model {mid!r}: its key must be an int or a string")
        else:
            raise _Malformed(f"a model record must have 5 to 7 fields, got {rec!r:.80}")
        if (type(mid) is not int or mid < 0) and not model_id(mid):
            raise _Malformed(f"invalid model id {mid!r:.60}")
        if type(owner) is not int or owner < -1 or type(flags) is not int or flags < 0 \
                or type(props) is not dict or tname not in schema:
            raise _Malformed(f"malformed model record {rec!r:.80}")
        if props:
            if not issuperset(map(type, props.values())):
                raise _Malformed(f"model {mid!r}: a property value is not a scalar")
            for pid in props:
                if type(pid) is not int or pid < 1:
                    raise _Malformed(f"model {mid!r}: property id {pid!r:.60} must be an "
                                     f"int ≥ 1")


# ----------------------------------------------------------------------------- interface

class Storage(ABC):
    """Checkpoints of rooms, and the room directory. See the module docs."""

    #: Where the storage is, for logs and error messages (no credentials).
    location: str
    #: Where the storage reads time (see the module docs): lease expiry on its
    #: ``monotonic()``, save times on its ``wall()``. Set by the constructors' ``clock=``.
    clock: Clock = SYSTEM_CLOCK

    # -- checkpoints

    def save(self, room: SavedRoom, *, fence: int | None = None) -> int:
        """Replace ``room.name``'s checkpoint with ``room``, atomically: a crash or error
        mid-save leaves the previous checkpoint readable. Returns the checkpoint's new
        ``version`` (the previous one + 1, or 1). With ``fence`` (a :class:`Lease`'s token)
        the save is refused with :class:`FencedOut` if the room was claimed with a newer token
        since, checked atomically with the write; without it the save is unconditional (for
        tools and single-instance servers). The save time stored beside it is
        ``self.clock.wall()``. Raises :class:`StorageError` on failure."""
        blob = encode_room(room)
        return self._write(room.name, blob, len(room.models), self.clock.wall(), fence)

    def load(self, name: str) -> SavedRoom | None:
        """The room's checkpoint, or None if there is none. Raises :class:`CorruptRoomError`
        (for this room only) if it cannot be read, :class:`StorageError` on failure."""
        row = self._read(name)
        if row is None:
            return None
        blob, version, saved_at = row
        return decode_room(name, blob, saved_at=saved_at, version=version)

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Delete the room's checkpoint; False if there was none. Its fencing counter stays."""

    @abstractmethod
    def list_rooms(self) -> list[RoomInfo]:
        """Every stored room, by name, without reading the blobs."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int: ...

    @abstractmethod
    def _read(self, name: str) -> tuple[bytes, int, float] | None: ...

    # -- room directory

    @abstractmethod
    def claim(self, room: str, instance_id: str, endpoint: str, ttl: float) -> Lease | None:
        """Claim hosting ``room`` for ``ttl`` seconds: a :class:`Lease` with a fencing token
        greater than any earlier claim's, or None if another claim holds it (see
        :meth:`owner` to redirect). ``instance_id`` must be unique per server process."""

    @abstractmethod
    def renew(self, lease: Lease) -> bool:
        """Extend the lease by its ``ttl`` if it is still ours (True); False if it expired
        or was taken over: the caller must stop hosting the room."""

    @abstractmethod
    def release(self, lease: Lease) -> bool:
        """Give the lease up if it is still ours (True), so another instance may claim the
        room at once. Save the room before releasing it."""

    @abstractmethod
    def owner(self, room: str) -> Owner | None:
        """Who holds ``room``'s lease, or None if nobody does."""

    # -- context manager

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_storage(url: str | None, data_dir: str = "./rtecs-data", *,
                 clock: Clock = SYSTEM_CLOCK) -> Storage:
    """The storage a ``--storage`` URL names.

    - ``None``, ``""``, ``"sqlite:"`` or ``"sqlite://"``: SQLite, ``rooms.sqlite3`` under
      ``data_dir`` (directory and file created as needed);
    - ``sqlite:///abs/path/file.db``: SQLite at that absolute path; ``sqlite:rel/file.db``:
      relative to the working directory;
    - ``redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``): Redis.

    ``clock``: the storage's :attr:`Storage.clock` (a server passes its own).
    Raises :class:`StorageError` for another scheme or if the storage can't be opened.
    """
    if url is None or url in ("", "sqlite:", "sqlite://"):
        return SQLiteStorage(Path(data_dir) / DEFAULT_DB_FILE, clock=clock)
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise StorageError(f"storage URL {url!r}: use sqlite:///absolute/path or "
                                   f"sqlite:relative/path")
            rest = "/" + rest.lstrip("/")
        return SQLiteStorage(Path(rest), clock=clock)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStorage(url, clock=clock)
    raise StorageError(f"unknown storage URL {url!r}: expected sqlite:…, redis://host:port/db "
                       f"or nothing (SQLite under the data directory)")


def _ttl_ms(ttl: float) -> int:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))


# The two backends (imported last: they build on the definitions above).
from rtecs_server._redis_storage import RedisStorage  # noqa: E402
from rtecs_server._sqlite_storage import SQLiteStorage  # noqa: E402
