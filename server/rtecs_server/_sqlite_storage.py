"""SQLite storage: one file, WAL mode, one transaction per save (see
:mod:`rtecs_server.storage`)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError, StorageUnavailable
from rtecs_server.storage_base import Lease, Owner, RoomInfo, Storage, ttl_ms

#: The version of the database's tables (``PRAGMA user_version``) this code makes and reads.
_SQLITE_SCHEMA_VERSION: Final = 1


class SQLiteStorage(Storage):
    """Checkpoints in one SQLite file (WAL mode, one transaction per save).

    Tables: ``rooms(name PRIMARY KEY, version, saved_at, models, data BLOB)`` and
    ``fences(name PRIMARY KEY, token)``. The directory is trivial — a single instance hosts
    every room, so :meth:`claim` always grants (it never expires in the store either, and
    :meth:`owner` reports this object's own claims) — but fencing tokens are persisted and
    enforced, so a second process on the same file that claims a room fences the first out.

    ``clock``: where leases and save times read time (see :mod:`rtecs_server.storage`).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.clock = clock
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
        ttl_ms(ttl)
        start = self.clock.monotonic()
        try:
            with self._tx(f"claiming room {room!r}") as conn:
                token = conn.execute(
                    "INSERT INTO fences (name, token) VALUES (?, 1) ON CONFLICT (name) "
                    "DO UPDATE SET token = token + 1 RETURNING token", (room,)).fetchall()[0][0]
        except sqlite3.Error as exc:
            raise StorageError(f"claiming room {room!r} on {self.location}: {exc}") from None
        lease = Lease(room, instance_id, endpoint, int(token), ttl, start + ttl,
                      clock=self.clock)
        self._leases[room] = lease
        return lease

    def renew(self, lease: Lease) -> bool:
        start = self.clock.monotonic()
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
