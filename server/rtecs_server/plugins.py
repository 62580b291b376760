"""Server plugins: validate, transform or refuse the changes clients make to a room.

The simplest plugin is a callable ``plugin(room, sender, change) -> value``, asked about every
property write::

    def clamp_score(room: Room, sender: int, change: Change) -> Value:
        if change.type_name == "Game" and change.prop_name == "score":
            if not isinstance(change.value, int) or change.value < 0:
                raise Reject("score cannot be negative")
            return min(change.value, 100)
        return change.value

    room = Room("lobby", plugins=[clamp_score])

A plugin that needs more is a *hook object* (:class:`Hooks`; the interface and its rules are
in :mod:`rtecs_server.hooks`): ``on_write`` for property writes and collection operations,
``on_create`` for creates with their initial values, ``on_destroy``, ``on_owner`` and
``authenticate``, each given a :class:`Context` (the room, the sender, the session's user id
and claims)::

    class Rules(Hooks):
        def on_owner(self, ctx: Context, model_id: ModelId, new_owner: int) -> None:
            if model_id == 0 and new_owner != -1:
                raise Reject("the room model belongs to nobody")

When a write plugin is called
    For every property write (property id ≥ 1) of a client update that passed the room's own
    checks (the model exists, the property is in the schema, the value has the declared type,
    the sender may write the model), in the order the writes appear in the update, right
    before the write is applied. Changes the server makes itself (lifetime destroys, cleared
    ownership) are never put to plugins: they cannot be refused.

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
:class:`~rtecs_server.room.Room` (its signature names the room), the hooks in
:mod:`rtecs_server.hooks`, :class:`Change` with the core's records
(:mod:`rtecs_server.records`) and :class:`Reject` with the server's errors
(:mod:`rtecs_server.errors`), so the room core needs nothing from this module.
"""

from __future__ import annotations

from rtecs_server.errors import Reject
from rtecs_server.hooks import (
    CollectionChange,
    Context,
    Create,
    Hooks,
    Identity,
    authenticate,
    is_plugin,
)
from rtecs_server.records import Change
from rtecs_server.room import Plugin, WritePlugin

__all__ = ["Change", "CollectionChange", "Context", "Create", "Hooks", "Identity", "Plugin",
           "Reject", "WritePlugin", "authenticate", "is_plugin"]
