"""The storage interface every backend implements (:class:`Storage`) and the room
directory's records (:class:`Lease`, :class:`Owner`, :class:`RoomInfo`); see
:mod:`rtecs_server.storage` for the semantics. Backends: :mod:`rtecs_server._sqlite_storage`,
:mod:`rtecs_server._redis_storage`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple, Self

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs_server.codec import decode_room, encode_room
from rtecs_server.records import SavedRoom

__all__ = ["Lease", "Owner", "RoomInfo", "Storage", "ttl_ms"]


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
    #: The lease as the directory stores it (Redis: its value), to tell it is still ours.
    stored: str = field(default="", repr=False)
    #: The clock :attr:`expires_at` counts on (the storage's).
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)

    def time_left(self) -> float:
        """Seconds until :attr:`expires_at` by :attr:`clock` (negative once past)."""
        return self.expires_at - self.clock.monotonic()


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


def ttl_ms(ttl: float) -> int:
    """A lease TTL in whole milliseconds (at least 1); ``ValueError`` unless it is positive
    and finite."""
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))
