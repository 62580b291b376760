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

This module is the plugin interface's face: :class:`Plugin` is defined beside
:class:`~rtecs_server.room.Room` (its signature names the room), :class:`Change` with the
core's records (:mod:`rtecs_server.records`) and :class:`Reject` with the server's errors
(:mod:`rtecs_server.errors`), so the room core needs nothing from this module.
"""

from __future__ import annotations

from rtecs_server.errors import Reject
from rtecs_server.records import Change
from rtecs_server.room import Plugin

__all__ = ["Change", "Plugin", "Reject"]
