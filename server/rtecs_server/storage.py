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
    (big-endian u16, :data:`FORMAT_VERSION`, or :data:`LIVE_FORMAT_VERSION` for a room saved
    with members) and the CRC-32 of the body (big-endian u32) — then the MessagePack body
    ``[name, root_type, schema, next_client_id, created, models]``, with the members'
    sessions after them in format 2 (see :class:`SavedRoom`, :class:`SavedSession`). The
    header is read first, so an unknown version or a damaged body is a clear
    :class:`CorruptRoomError` for that room only. The per-save ``version`` (1, 2, 3… per
    room, assigned by the storage) and ``saved_at`` live beside the blob (a column in SQLite,
    a hash beside the blob in Redis) so :meth:`Storage.list_rooms` needn't read blobs.

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

from pathlib import Path
from typing import Final

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs_server._redis_storage import RedisStorage
from rtecs_server._sqlite_storage import SQLiteStorage
from rtecs_server.codec import decode_room, encode_room
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError, StorageUnavailable
from rtecs_server.records import (
    FORMAT_VERSION,
    LIVE_FORMAT_VERSION,
    SavedRoom,
    SavedSession,
    Schema,
    persistent_models,
)
from rtecs_server.storage_base import Lease, Owner, RoomInfo, Storage

__all__ = [
    "DEFAULT_DB_FILE", "FORMAT_VERSION", "LIVE_FORMAT_VERSION", "CorruptRoomError",
    "FencedOut", "Lease", "Owner", "RedisStorage", "RoomInfo", "SQLiteStorage", "SavedRoom",
    "SavedSession", "Schema", "Storage",
    "StorageError", "StorageUnavailable", "decode_room", "encode_room", "open_storage",
    "persistent_models", "sqlite_file",
]

#: The SQLite file :func:`open_storage` uses under the data directory by default.
DEFAULT_DB_FILE: Final = "rooms.sqlite3"


def sqlite_file(url: str | None, data_dir: str = "./rtecs-data") -> Path | None:
    """The SQLite file a ``--storage`` URL names (see :func:`open_storage`), or None for a
    Redis URL: the one place storage URLs are read. Raises :class:`StorageError` for a
    malformed SQLite URL or another scheme."""
    if url is None or url in ("", "sqlite:", "sqlite://"):
        return Path(data_dir) / DEFAULT_DB_FILE
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise StorageError(f"storage URL {url!r}: use sqlite:///absolute/path or "
                                   f"sqlite:relative/path")
            rest = "/" + rest.lstrip("/")
        return Path(rest)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return None
    raise StorageError(f"unknown storage URL {url!r}: expected sqlite:…, redis://host:port/db "
                       f"or nothing (SQLite under the data directory)")


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
    path = sqlite_file(url, data_dir)
    if path is not None:
        return SQLiteStorage(path, clock=clock)
    assert url is not None
    return RedisStorage(url, clock=clock)
