"""The server's typed exceptions that cross its layers: a plugin's :class:`Reject`, and the
storage errors (:class:`StorageError` and its kinds) that the room core raises for a
checkpoint it cannot restore and the storage backends raise for everything else. A leaf:
it imports nothing of the server."""

from __future__ import annotations

from rtecs.errors import RtecsError

__all__ = ["CorruptRoomError", "FencedOut", "Reject", "StorageError", "StorageUnavailable"]


class Reject(RtecsError):
    """Raised by a plugin to refuse one property write. ``reason`` is logged (debug level);
    clients only learn *that* the write was rejected, never why."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        """Why the write was refused (logged at debug level, never sent)."""


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
