"""rtecs: realtime state synchronisation for Python.

Realtime models are esper components whose property changes are reactivex Observables; a
room server orders, validates and relays every client's writes, and an in-flight cache makes
local writes show at once without ever flashing a stale value.
"""

import importlib
from typing import TYPE_CHECKING, Any

# The faces import lazily (DESIGN §1): ``import rtecs.cache`` or ``rtecs.protocol`` loads
# neither esper nor reactivex nor zmq; a name below is imported on first use.
if TYPE_CHECKING:
    from rtecs.auth import TokenIdentity, make_token
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
        TokenError,
        TokenProblem,
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
        ConnectionStats,
        DisconnectReason,
        Presence,
        Realtime,
        SessionLost,
        UpdateOutcome,
        UpdateStatus,
        connect,
    )

_HOME: dict[str, str] = {
    "TokenIdentity": "rtecs.auth",
    "make_token": "rtecs.auth",
    "TokenError": "rtecs.errors",
    "TokenProblem": "rtecs.errors",
    "CollectionChange": "rtecs.collections",
    "RealtimeArray": "rtecs.collections",
    "RealtimeDictionary": "rtecs.collections",
    "RealtimeSet": "rtecs.collections",
    "StringKeyDictionary": "rtecs.collections",
    "Entity": "rtecs.ecs",
    "EntityEvent": "rtecs.ecs",
    "SyncSystem": "rtecs.ecs",
    "ModelDestroyedError": "rtecs.errors",
    "NotConnectedError": "rtecs.errors",
    "OwnershipError": "rtecs.errors",
    "ProtocolError": "rtecs.errors",
    "RtecsError": "rtecs.errors",
    "SchemaError": "rtecs.errors",
    "Change": "rtecs.model",
    "ChangeSource": "rtecs.model",
    "RealtimeModel": "rtecs.model",
    "prop": "rtecs.model",
    "DESTROY_WHEN_LAST_CLIENT_LEAVES": "rtecs.protocol",
    "DESTROY_WHEN_OWNER_LEAVES": "rtecs.protocol",
    "PREVENT_OWNERSHIP_TAKEOVER": "rtecs.protocol",
    "Limits": "rtecs.protocol",
    "ConnectionState": "rtecs.realtime",
    "ConnectionStats": "rtecs.realtime",
    "SessionLost": "rtecs.realtime",
    "DisconnectReason": "rtecs.realtime",
    "Presence": "rtecs.realtime",
    "Realtime": "rtecs.realtime",
    "UpdateOutcome": "rtecs.realtime",
    "UpdateStatus": "rtecs.realtime",
    "connect": "rtecs.realtime",
}
_SUBMODULES = frozenset({"auth", "cache", "clock", "collections", "datastore", "ecs", "entities",
                         "errors", "link", "model", "protocol", "realtime", "session",
                         "stream", "sync", "timing", "transport"})


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"rtecs.{name}")
    else:
        raise AttributeError(f"module 'rtecs' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})


__all__ = [
    "DESTROY_WHEN_LAST_CLIENT_LEAVES",
    "DESTROY_WHEN_OWNER_LEAVES",
    "PREVENT_OWNERSHIP_TAKEOVER",
    "Change",
    "ChangeSource",
    "CollectionChange",
    "ConnectionState",
    "ConnectionStats",
    "DisconnectReason",
    "Entity",
    "EntityEvent",
    "Limits",
    "Presence",
    "Realtime",
    "SessionLost",
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
    "TokenError",
    "TokenIdentity",
    "TokenProblem",
    "make_token",
]

__version__ = "0.1.0"
