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

Threads
    Every method may be called from any thread, one call at a time per storage object in the
    SQLite case (serialised by a lock) and concurrently in the Redis case (redis-py's pool).
    Calls block: a server should call them where blocking for a save is acceptable.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Self, cast

import msgpack
import msgspec

from rtecs.errors import RtecsError
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    F32,
    enc_hook,
    is_model_id,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "DEFAULT_DB_FILE", "FORMAT_VERSION", "CorruptRoomError", "FencedOut", "Lease", "Owner",
    "RedisStorage", "RoomInfo", "SQLiteStorage", "SavedRoom", "Schema", "Storage",
    "StorageError", "StorageUnavailable", "decode_room", "encode_room", "open_storage",
    "persistent_models",
]

#: The checkpoint format this code writes; it reads only this one.
FORMAT_VERSION: Final = 1
#: The SQLite file :func:`open_storage` uses under the data directory by default.
DEFAULT_DB_FILE: Final = "rooms.sqlite3"

_MAGIC: Final = b"RTRM"
_HEADER: Final = struct.Struct(">4sHI")  # magic, format version, CRC-32 of the body
_SQLITE_SCHEMA_VERSION: Final = 1

Schema = dict[str, dict[int, tuple[str, str, bool]]]


# ----------------------------------------------------------------------------- errors

class StorageError(RtecsError):
    """A storage operation failed (I/O, a database error, a bad URL)."""


class StorageUnavailable(StorageError):
    """The storage could not be reached (Redis down, the database locked or unwritable)."""


class CorruptRoomError(StorageError):
    """A stored room cannot be read: damaged, of an unknown format version, or malformed.
    Only that room is affected; ``room`` names it and ``reason`` says what is wrong."""

    def __init__(self, room: str, reason: str) -> None:
        super().__init__(f"stored room {room!r} cannot be loaded: {reason}")
        self.room = room
        self.reason = reason


class FencedOut(StorageError):
    """A save was made with a fencing token older than the room's newest claim: another
    instance has claimed the room since, and this one must stop hosting it."""

    def __init__(self, room: str, fence: int, current: int) -> None:
        super().__init__(f"room {room!r}: save with fencing token {fence} refused, the room "
                         f"was claimed since (token {current}); this instance no longer "
                         f"hosts it")
        self.room = room
        self.fence = fence
        self.current = current


# ----------------------------------------------------------------------------- records

@dataclass(slots=True)
class SavedRoom:
    """One room's persistent state.

    ``schema`` is the room's union schema in the hello's shape, ``{type_name: {prop_id:
    (name, tag, reliable)}}``. ``next_client_id`` is the id the room's next joiner gets, and
    ``created`` the highest dynamic-model counter each client id has used (``{client_id:
    counter}``) so ids are never reused after a reload. ``models`` are the persistent model
    records exactly as in a WELCOME snapshot: ``(model_id, type_name, owner_id, flags,
    props[, parent_id[, key]])``, parents before children; model ids are ints or tuples of
    ints, ``props`` maps property id → bool/int/float/str/bytes/None, a collection key is an
    int or a string. :func:`persistent_models` picks them out of a live room's snapshot.

    ``format``, ``saved_at`` (wall time) and ``version`` (1, 2, 3… per save of this room) are
    filled in by :meth:`Storage.load`; :meth:`Storage.save` ignores what the caller put there.
    """

    name: str
    root_type: str
    schema: Schema
    next_client_id: int
    created: dict[int, int]
    models: list[tuple[Any, ...]]
    format: int = FORMAT_VERSION
    saved_at: float = 0.0
    version: int = 0


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
    :meth:`Storage.save` of the room. ``expires_at`` (``time.monotonic()`` seconds) is a
    conservative local estimate of when the lease runs out unless renewed: it counts from
    before the claim or renewal was sent, so the lease never expires in the store before
    it. A host that reaches ``expires_at`` without a successful renewal must stop serving
    the room."""

    room: str
    instance_id: str
    endpoint: str
    token: int
    ttl: float
    expires_at: float
    _value: str = field(default="", repr=False)

    def time_left(self) -> float:
        """Seconds until :attr:`expires_at` (negative once past)."""
        return self.expires_at - time.monotonic()


def persistent_models(records: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The records of a room's snapshot (parents before children) as they would stand once
    every client had left — what a checkpoint of a live room should hold, so that loading it
    after a crash gives what a clean shutdown would have saved:

    - models flagged ``DESTROY_WHEN_LAST_CLIENT_LEAVES``, and models flagged
      ``DESTROY_WHEN_OWNER_LEAVES`` that have an owner, are left out with everything under
      them (their declared children, and dynamic models created under them, recursively);
    - every other model is kept, unowned (owner -1): its owner's session is over.

    ``props`` dicts are shared with ``records``, not copied (the result is meant to be
    encoded at once). The room model (id 0) is always kept.
    """
    out: list[tuple[Any, ...]] = []
    append = out.append
    dropped: set[Any] = set()
    gone = DESTROY_WHEN_LAST_CLIENT_LEAVES
    doomed = DESTROY_WHEN_LAST_CLIENT_LEAVES | DESTROY_WHEN_OWNER_LEAVES
    paused = gc.isenabled()  # up to one new tuple per record, none cyclic: see decode_room
    gc.disable()
    try:
        for rec in records:
            if dropped:
                mid = rec[0]
                if type(mid) is tuple:
                    parent = mid[0] if len(mid) == 2 else mid[:-1]
                    if parent in dropped:
                        dropped.add(mid)
                        continue
                elif len(rec) > 5 and rec[5] in dropped:
                    dropped.add(mid)
                    continue
            flags, owner = rec[3], rec[2]
            if flags & doomed and rec[0] != 0 and (flags & gone or owner != -1):
                dropped.add(rec[0])
                continue
            append(rec if owner == -1 else (rec[0], rec[1], -1, *rec[3:]))
    finally:
        if paused:
            gc.enable()
    return out


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

    # -- checkpoints

    def save(self, room: SavedRoom, *, fence: int | None = None) -> int:
        """Replace ``room.name``'s checkpoint with ``room``, atomically: a crash or error
        mid-save leaves the previous checkpoint readable. Returns the checkpoint's new
        ``version`` (the previous one + 1, or 1). With ``fence`` (a :class:`Lease`'s token)
        the save is refused with :class:`FencedOut` if the room was claimed with a newer token
        since, checked atomically with the write; without it the save is unconditional (for
        tools and single-instance servers). Raises :class:`StorageError` on failure."""
        blob = encode_room(room)
        return self._write(room.name, blob, len(room.models), time.time(), fence)

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


def open_storage(url: str | None, data_dir: str = "./rtecs-data") -> Storage:
    """The storage a ``--storage`` URL names.

    - ``None``, ``""``, ``"sqlite:"`` or ``"sqlite://"``: SQLite, ``rooms.sqlite3`` under
      ``data_dir`` (directory and file created as needed);
    - ``sqlite:///abs/path/file.db``: SQLite at that absolute path; ``sqlite:rel/file.db``:
      relative to the working directory;
    - ``redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``): Redis.

    Raises :class:`StorageError` for another scheme or if the storage can't be opened.
    """
    if url is None or url in ("", "sqlite:", "sqlite://"):
        return SQLiteStorage(Path(data_dir) / DEFAULT_DB_FILE)
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise StorageError(f"storage URL {url!r}: use sqlite:///absolute/path or "
                                   f"sqlite:relative/path")
            rest = "/" + rest.lstrip("/")
        return SQLiteStorage(Path(rest))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStorage(url)
    raise StorageError(f"unknown storage URL {url!r}: expected sqlite:…, redis://host:port/db "
                       f"or nothing (SQLite under the data directory)")


# ----------------------------------------------------------------------------- SQLite

class SQLiteStorage(Storage):
    """Checkpoints in one SQLite file (WAL mode, one transaction per save).

    Tables: ``rooms(name PRIMARY KEY, version, saved_at, models, data BLOB)`` and
    ``fences(name PRIMARY KEY, token)``. The directory is trivial — a single instance hosts
    every room, so :meth:`claim` always grants (it never expires in the store either, and
    :meth:`owner` reports this object's own claims) — but fencing tokens are persisted and
    enforced, so a second process on the same file that claims a room fences the first out.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = f"sqlite:{self.path}"
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open {self.location}: {exc}") from None
        self._conn: sqlite3.Connection | None = conn
        try:
            self._setup(conn)
        except sqlite3.Error as exc:
            conn.close()
            self._conn = None
            raise StorageError(f"cannot open {self.location}: {exc}") from None

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SQLITE_SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"the database is of schema version {version}, made by "
                                        f"a newer rtecs (this one knows "
                                        f"{_SQLITE_SCHEMA_VERSION})")
        if version == 0:
            # Big pages: a checkpoint is a few large blobs, not many small rows. Takes effect
            # only on a new, empty database (before WAL is switched on).
            conn.execute("PRAGMA page_size = 65536")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, "
                             "version INTEGER NOT NULL, saved_at REAL NOT NULL, "
                             "models INTEGER NOT NULL, data BLOB NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS fences (name TEXT PRIMARY KEY, "
                             "token INTEGER NOT NULL)")
                conn.execute(f"PRAGMA user_version = {_SQLITE_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; errors become :class:`StorageError`."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StorageError(f"{self.location} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageUnavailable(f"{what} on {self.location}: {exc}") from None
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"{what} on {self.location}: {exc}") from None

    @contextmanager
    def _query(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StorageError(f"{self.location} is closed")
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StorageError(f"{what} on {self.location}: {exc}") from None

    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int:
        try:
            with self._tx(f"saving room {name!r}") as conn:
                if fence is not None:
                    row = conn.execute("SELECT token FROM fences WHERE name = ?",
                                       (name,)).fetchone()
                    current = row[0] if row else 0
                    if fence < current:
                        raise FencedOut(name, fence, current)
                row = conn.execute("SELECT version FROM rooms WHERE name = ?",
                                   (name,)).fetchone()
                version = (row[0] if row else 0) + 1
                conn.execute("INSERT INTO rooms (name, version, saved_at, models, data) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                             "version = excluded.version, saved_at = excluded.saved_at, "
                             "models = excluded.models, data = excluded.data",
                             (name, version, saved_at, models, blob))
                return version
        except sqlite3.Error as exc:
            raise StorageError(f"saving room {name!r} on {self.location}: {exc}") from None

    def _read(self, name: str) -> tuple[bytes, int, float] | None:
        with self._query(f"loading room {name!r}") as conn:
            row = conn.execute("SELECT data, version, saved_at FROM rooms WHERE name = ?",
                               (name,)).fetchone()
        if row is None:
            return None
        data, version, saved_at = row
        if type(data) is not bytes:
            raise CorruptRoomError(name, f"the stored data is a {type(data).__name__}, "
                                         f"not a blob")
        return data, int(version), float(saved_at)

    def delete(self, name: str) -> bool:
        try:
            with self._tx(f"deleting room {name!r}") as conn:
                return conn.execute("DELETE FROM rooms WHERE name = ?", (name,)).rowcount > 0
        except sqlite3.Error as exc:
            raise StorageError(f"deleting room {name!r} on {self.location}: {exc}") from None

    def list_rooms(self) -> list[RoomInfo]:
        with self._query("listing rooms") as conn:
            rows = conn.execute("SELECT name, length(data), saved_at, models, version "
                                "FROM rooms ORDER BY name").fetchall()
        return [RoomInfo(n, int(size), float(at), int(models), int(version))
                for n, size, at, models, version in rows]

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- directory: a single instance

    def claim(self, room: str, instance_id: str, endpoint: str, ttl: float) -> Lease | None:
        _ttl_ms(ttl)
        start = time.monotonic()
        try:
            with self._tx(f"claiming room {room!r}") as conn:
                token = conn.execute(
                    "INSERT INTO fences (name, token) VALUES (?, 1) ON CONFLICT (name) "
                    "DO UPDATE SET token = token + 1 RETURNING token", (room,)).fetchall()[0][0]
        except sqlite3.Error as exc:
            raise StorageError(f"claiming room {room!r} on {self.location}: {exc}") from None
        lease = Lease(room, instance_id, endpoint, int(token), ttl, start + ttl)
        self._leases[room] = lease
        return lease

    def renew(self, lease: Lease) -> bool:
        start = time.monotonic()
        if self._leases.get(lease.room) is not lease:
            return False
        with self._query(f"renewing room {lease.room!r}") as conn:
            row = conn.execute("SELECT token FROM fences WHERE name = ?",
                               (lease.room,)).fetchone()
        if row is None or row[0] != lease.token:
            self._leases.pop(lease.room, None)
            return False
        lease.expires_at = start + lease.ttl
        return True

    def release(self, lease: Lease) -> bool:
        if self._leases.get(lease.room) is lease:
            del self._leases[lease.room]
            return True
        return False

    def owner(self, room: str) -> Owner | None:
        lease = self._leases.get(room)
        return None if lease is None else Owner(lease.instance_id, lease.endpoint)


# ----------------------------------------------------------------------------- Redis

# Scripts run with a shebang, so Redis refuses them before they start when it is out of
# memory rather than failing a write half way (it does not roll a script back); every check
# precedes the first write.

# The blob is staged under a key of its own (SET, in the same round trip) and moved into place
# by RENAME: passing megabytes through a script's ARGV costs four times the plain write.
_SAVE_LUA: Final = """#!lua
-- KEYS: stage, room, meta, fence, index; ARGV: name, saved_at, models, fence or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, 0}
end
if ARGV[4] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tonumber(ARGV[4]) < current then
    redis.call('DEL', KEYS[1])
    return {0, current}
  end
end
local version = tonumber(redis.call('HGET', KEYS[3], 'version') or '0') + 1
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'version', version, 'saved_at', ARGV[2], 'models', ARGV[3])
return {1, version}
"""

_DELETE_LUA: Final = """#!lua
-- KEYS: room, meta, index; ARGV: name
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
"""

_CLAIM_LUA: Final = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = cjson.encode({token, ARGV[1], ARGV[2]})
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
return {token, value}
"""

_RENEW_LUA: Final = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LUA: Final = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


#: Taken off a lease's local expiry estimate: Redis counts expiry in whole milliseconds.
_CLOCK_MARGIN: Final = 0.005
#: How long a staged blob lives if its save never completes (the client died in between).
_STAGE_TTL_MS: Final = 60_000


def _ttl_ms(ttl: float) -> int:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))


class RedisStorage(Storage):
    """Checkpoints and the room directory in Redis (see the module docs for the keys).

    ``url`` is a redis-py URL (``redis://host:port/db``); ``prefix`` namespaces every key.
    Opening pings the server, so a wrong URL fails at once with :class:`StorageUnavailable`.
    """

    def __init__(self, url: str, *, prefix: str = "rtecs:",
                 socket_timeout: float = 10.0) -> None:
        try:
            import redis as redis_mod  # only a Redis deployment needs the package
        except ImportError:
            raise StorageError("Redis storage needs the redis package: pip install "
                               "'redis>=5'") from None

        self._down: tuple[type[Exception], ...] = (
            redis_mod.ConnectionError, redis_mod.TimeoutError, OSError)
        self._errors: tuple[type[Exception], ...] = (redis_mod.RedisError,)
        self._prefix = prefix
        self.location = _redact(url)
        try:
            self._r: redis.Redis = redis_mod.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
            self._r.ping()
        except (redis_mod.RedisError, OSError, ValueError) as exc:
            raise StorageUnavailable(f"cannot reach {self.location}: {exc}") from None
        self._save = self._r.register_script(_SAVE_LUA)
        self._delete = self._r.register_script(_DELETE_LUA)
        self._claim = self._r.register_script(_CLAIM_LUA)
        self._renew = self._r.register_script(_RENEW_LUA)
        self._release = self._r.register_script(_RELEASE_LUA)
        self._index = prefix + "rooms"

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._down as exc:
            raise StorageUnavailable(f"{what} on {self.location}: {exc}") from None
        except self._errors as exc:
            raise StorageError(f"{what} on {self.location}: {exc}") from None

    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int:
        stage = self._key("stage", f"{name}:{uuid.uuid4().hex}")
        with self._calls(f"saving room {name!r}"):
            pipe = self._r.pipeline(transaction=False)
            pipe.set(stage, blob, px=_STAGE_TTL_MS)
            self._save(keys=[stage, self._key("room", name), self._key("meta", name),
                             self._key("fence", name), self._index],
                       args=[name, repr(saved_at), models, "" if fence is None else fence],
                       client=pipe)
            ok, value = pipe.execute()[1]
        if ok == 0:
            assert fence is not None
            raise FencedOut(name, fence, int(value))
        if ok != 1:
            raise StorageError(f"saving room {name!r} on {self.location}: the staged blob "
                               f"vanished before it was moved into place")
        return int(value)

    def _read(self, name: str) -> tuple[bytes, int, float] | None:
        with self._calls(f"loading room {name!r}"):
            pipe = self._r.pipeline(transaction=True)  # blob and metadata of one save
            pipe.get(self._key("room", name))
            pipe.hmget(self._key("meta", name), ["version", "saved_at"])
            data, (version, saved_at) = pipe.execute()
        if data is None:
            return None
        try:
            return data, int(version or 0), float(saved_at or 0)
        except ValueError:
            raise CorruptRoomError(name, "malformed version or saved_at fields") from None

    def delete(self, name: str) -> bool:
        with self._calls(f"deleting room {name!r}"):
            return bool(self._delete(keys=[self._key("room", name), self._key("meta", name),
                                           self._index], args=[name]))

    def list_rooms(self) -> list[RoomInfo]:
        with self._calls("listing rooms"):
            names = sorted(n.decode("utf-8", "replace") for n in
                           cast(set[bytes], self._r.smembers(self._index)))
            pipe = self._r.pipeline(transaction=False)
            for n in names:
                pipe.strlen(self._key("room", n))
                pipe.hmget(self._key("meta", n), ["saved_at", "models", "version"])
            replies = pipe.execute()
        rooms = []
        for i, n in enumerate(names):
            size = int(replies[2 * i])
            saved_at, models, version = replies[2 * i + 1]
            if size:  # a name left in the index by an interrupted delete is skipped
                rooms.append(RoomInfo(n, size, float(saved_at or 0), int(models or 0),
                                      int(version or 0)))
        return rooms

    def close(self) -> None:
        self._r.close()

    # -- directory

    def claim(self, room: str, instance_id: str, endpoint: str, ttl: float) -> Lease | None:
        ms = _ttl_ms(ttl)
        start = time.monotonic()
        with self._calls(f"claiming room {room!r}"):
            reply = self._claim(keys=[self._key("lease", room), self._key("fence", room)],
                                args=[instance_id, endpoint, ms])
        if reply is None:
            return None
        token, value = cast(list[Any], reply)
        return Lease(room, instance_id, endpoint, int(token), ttl,
                     start + ms / 1000 - _CLOCK_MARGIN, value.decode())

    def renew(self, lease: Lease) -> bool:
        ms = _ttl_ms(lease.ttl)
        start = time.monotonic()
        with self._calls(f"renewing the lease of room {lease.room!r}"):
            ok = self._renew(keys=[self._key("lease", lease.room)], args=[lease._value, ms])
        if ok:
            lease.expires_at = start + ms / 1000 - _CLOCK_MARGIN
        return bool(ok)

    def release(self, lease: Lease) -> bool:
        with self._calls(f"releasing the lease of room {lease.room!r}"):
            return bool(self._release(keys=[self._key("lease", lease.room)],
                                      args=[lease._value]))

    def owner(self, room: str) -> Owner | None:
        with self._calls(f"looking up the host of room {room!r}"):
            value = cast(bytes | None, self._r.get(self._key("lease", room)))
        if value is None:
            return None
        try:
            _, instance_id, endpoint = json.loads(value)
        except ValueError:
            raise StorageError(f"room {room!r}: malformed lease {value!r:.100}") from None
        return Owner(str(instance_id), str(endpoint))


def _redact(url: str) -> str:
    """``url`` without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        creds, _, host = rest.partition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
    return url
