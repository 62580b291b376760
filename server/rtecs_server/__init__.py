"""rtecs_server: the rtecs room server.

:class:`RoomServer` runs rooms on a ZeroMQ ROUTER socket (``rtecs-server`` on the command
line, :mod:`rtecs_server.cli`). Underneath, :class:`RoomHost` handles sessions, rooms,
heartbeats, rate limits and bad input over any transport; :class:`Room` is the pure room core
(members, sequencing, the batch stream; no I/O) over its
:class:`~rtecs_server.store.ModelStore` (authority, validation, lifetime, size) and
:class:`~rtecs_server.schema.RoomSchema` (the union of the joiners' schemas). Plugins
(:class:`Plugin`, :class:`Change`, :class:`Reject`) validate or transform writes.

Persistence: :mod:`rtecs_server.storage` keeps rooms (:class:`SavedRoom`) in SQLite or
Redis (:func:`open_storage`), and :mod:`rtecs_server.persistence` loads, checkpoints, saves
and leases a server's rooms (``RoomServer(storage=...)``; see ``docs/server.md``).
"""

import importlib
from typing import TYPE_CHECKING, Any

# The face imports lazily (DESIGN §1): ``import rtecs_server.room`` loads the pure room core
# only (no zmq, no storage backends); a name below is imported on first use.
if TYPE_CHECKING:
    from rtecs_server.host import RoomHost
    from rtecs_server.plugins import Change, Plugin, Reject
    from rtecs_server.ratelimit import RateLimit
    from rtecs_server.records import SavedRoom, SnapshotRecord
    from rtecs_server.room import (
        BadUpdate,
        JoinRefused,
        Room,
        UpdateOutcome,
        UpdateStatus,
    )
    from rtecs_server.server import RoomServer
    from rtecs_server.storage import Storage, open_storage
    from rtecs_server.store import Problem, value_size

_HOME: dict[str, str] = {
    "RoomHost": "rtecs_server.host",
    "Change": "rtecs_server.plugins",
    "Plugin": "rtecs_server.plugins",
    "Reject": "rtecs_server.plugins",
    "RateLimit": "rtecs_server.ratelimit",
    "SavedRoom": "rtecs_server.records",
    "SnapshotRecord": "rtecs_server.records",
    "BadUpdate": "rtecs_server.room",
    "JoinRefused": "rtecs_server.room",
    "Room": "rtecs_server.room",
    "UpdateOutcome": "rtecs_server.room",
    "UpdateStatus": "rtecs_server.room",
    "RoomServer": "rtecs_server.server",
    "Storage": "rtecs_server.storage",
    "open_storage": "rtecs_server.storage",
    "Problem": "rtecs_server.store",
    "value_size": "rtecs_server.store",
}

__all__ = [
    "BadUpdate", "Change", "JoinRefused", "Plugin", "Problem", "RateLimit",
    "Reject", "Room", "RoomHost", "RoomServer", "SavedRoom", "SnapshotRecord", "Storage",
    "UpdateOutcome", "UpdateStatus", "open_storage", "value_size",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'rtecs_server' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
