"""Server plugins: validate or transform every property write a room accepts.

A plugin is any callable ``plugin(room, sender, change) -> value``::

    def clamp_score(room: Room, sender: int, change: Change) -> Value:
        if change.type_name == "Game" and change.prop_name == "score":
            if not isinstance(change.value, int) or change.value < 0:
                raise Reject("score cannot be negative")
            return min(change.value, 100)
        return change.value

    room = Room("lobby", plugins=[clamp_score])

When it is called
    For every property write (property id ≥ 1) of a client update that passed the room's own
    checks (the model exists, the property is in the schema, the value has the declared type,
    the sender may write the model), in the order the writes appear in the update, right
    before the write is applied. Ownership changes, creates and destroys do not go through
    plugins. Changes the server makes itself (lifetime destroys, cleared ownership) do not
    either.

What it may do
    - return ``change.value`` to accept the write unchanged;
    - return another value to accept a *transformed* write: the room coerces it to the
      property's type tag again (an int for a float property becomes a float; a value of the
      wrong type counts as a plugin failure), applies it, and relays it to every client —
      the writer's in-flight cache then shows the transformed value;
    - raise :class:`Reject` to refuse the write: it is listed as rejected in the update's
      answer and every client keeps the previous value;
    - read the room (``room.record(model_id)``, ``room.members`` …). It must not mutate the
      room from inside the call.

Several plugins run in the order given; each sees the value the previous one returned. Any
exception other than :class:`Reject` is logged (logger ``rtecs_server.room``) with its
traceback and counts as a rejection: a faulty plugin never takes the room down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from rtecs.errors import RtecsError
from rtecs.protocol import ModelId, Value

if TYPE_CHECKING:
    from rtecs_server.room import Room

__all__ = ["Change", "Plugin", "Reject"]


class Reject(RtecsError):
    """Raised by a plugin to refuse one property write. ``reason`` is logged (debug level);
    clients only learn *that* the write was rejected, never why."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        """Why the write was refused (logged at debug level, never sent)."""


class Change(NamedTuple):
    """One property write, as a plugin sees it.

    ``value`` is already coerced to the property's type tag. ``previous`` is the value the
    room holds before this write, or ``None`` when the property was never written (a
    nullable property holding nil looks the same).
    """

    model_id: ModelId  # the model written
    type_name: str     # its type's name (from the schema)
    prop_id: int       # the property's id
    prop_name: str     # the property's name (from the schema)
    value: Value       # the value written, coerced to the property's type
    previous: Value    # the value before this write (None if never written)


class Plugin(Protocol):
    """The plugin interface: a plain function or an object with ``__call__``."""

    def __call__(self, room: Room, sender: int, change: Change, /) -> Value:
        """Return the value to accept (``change.value`` or a transformed one), or raise
        :class:`Reject`."""
        ...
