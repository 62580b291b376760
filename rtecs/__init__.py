"""rtecs: realtime state synchronisation for Python.

Realtime models are esper components whose property changes are reactivex Observables; a
room server orders, validates and relays every client's writes, and an in-flight cache makes
local writes show at once without ever flashing a stale value.
"""

from rtecs.errors import (
    ModelDestroyedError,
    NotConnectedError,
    OwnershipError,
    ProtocolError,
    RtecsError,
    SchemaError,
)
from rtecs.model import Change, ChangeSource, RealtimeModel, prop
from rtecs.protocol import Limits

__all__ = [
    "Change",
    "ChangeSource",
    "Limits",
    "ModelDestroyedError",
    "NotConnectedError",
    "OwnershipError",
    "ProtocolError",
    "RealtimeModel",
    "RtecsError",
    "SchemaError",
    "prop",
]

__version__ = "0.1.0"
