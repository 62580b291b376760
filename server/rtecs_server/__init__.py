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

__all__ = [
    "BadUpdate", "Change", "JoinRefused", "Plugin", "Problem", "RateLimit",
    "Reject", "Room", "RoomHost", "RoomServer", "SavedRoom", "SnapshotRecord", "Storage",
    "UpdateOutcome", "UpdateStatus", "open_storage", "value_size",
]
