"""rtecs: realtime state synchronisation for Python.

Realtime models are esper components whose property changes are reactivex Observables; a
room server orders, validates and relays every client's writes, and an in-flight cache makes
local writes show at once without ever flashing a stale value.
"""

from rtecs.collections import (
    CollectionChange,
    RealtimeArray,
    RealtimeDictionary,
    RealtimeSet,
    StringKeyDictionary,
)
from rtecs.ecs import Entity, EntityEvent, SyncSystem
from rtecs.errors import (
    ModelDestroyedError,
    NotConnectedError,
    OwnershipError,
    ProtocolError,
    RtecsError,
    SchemaError,
)
from rtecs.model import Change, ChangeSource, RealtimeModel, prop
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    PREVENT_OWNERSHIP_TAKEOVER,
    Limits,
)
from rtecs.realtime import (
    ConnectionState,
    DisconnectReason,
    Presence,
    Realtime,
    UpdateOutcome,
    UpdateStatus,
    connect,
)

__all__ = [
    "DESTROY_WHEN_LAST_CLIENT_LEAVES",
    "DESTROY_WHEN_OWNER_LEAVES",
    "PREVENT_OWNERSHIP_TAKEOVER",
    "Change",
    "ChangeSource",
    "CollectionChange",
    "ConnectionState",
    "DisconnectReason",
    "Entity",
    "EntityEvent",
    "Limits",
    "Presence",
    "Realtime",
    "UpdateOutcome",
    "UpdateStatus",
    "connect",
    "ModelDestroyedError",
    "NotConnectedError",
    "OwnershipError",
    "ProtocolError",
    "RealtimeArray",
    "RealtimeDictionary",
    "RealtimeModel",
    "RealtimeSet",
    "RtecsError",
    "SchemaError",
    "StringKeyDictionary",
    "SyncSystem",
    "prop",
]

__version__ = "0.1.0"
