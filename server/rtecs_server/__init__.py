"""rtecs_server: the rtecs room server.

:class:`Room` is the pure room core (members, sequencing, the batch stream; no I/O) over its
:class:`~rtecs_server.store.ModelStore` (authority, validation, lifetime, size) and
:class:`~rtecs_server.schema.RoomSchema` (the union of the joiners' schemas). Plugins
(:class:`Plugin`, :class:`Change`, :class:`Reject`) validate or transform writes.
"""

from rtecs_server.plugins import Change, Plugin, Reject
from rtecs_server.room import (
    ANSWER_RING,
    BadUpdate,
    JoinRefused,
    Room,
    UpdateOutcome,
    UpdateStatus,
)
from rtecs_server.store import Problem, SnapshotRecord, value_size

__all__ = [
    "ANSWER_RING", "BadUpdate", "Change", "JoinRefused", "Plugin", "Problem", "Reject", "Room",
    "SnapshotRecord", "UpdateOutcome", "UpdateStatus", "value_size",
]
