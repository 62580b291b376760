"""The small vocabularies the model layer and its datastore share: why a visible value changed
(:class:`ChangeSource`), what happened to a collection's element (:class:`KidEvent`), and the
sentinel of a create that checks no key (:data:`UNCHECKED`).

They name no model and no property, so every module of the model layer, the collections and
the datastore can use them without importing anything else of it.
"""

from __future__ import annotations

import enum

__all__ = ["UNCHECKED", "ChangeSource", "KidEvent", "Unchecked"]


class ChangeSource(enum.Enum):
    """Why a visible value changed."""

    LOCAL = "local"              # this client wrote it
    REMOTE = "remote"            # another client's write, ordered by the server
    ROLLBACK = "rollback"        # the server refused this client's write; the server value shows
    TRANSFORMED = "transformed"  # the server accepted this client's write with another value
    SNAPSHOT = "snapshot"        # a (re)join loaded the server's state


class KidEvent(enum.IntEnum):
    """What happened to a dynamic model under a parent that follows its kids (a collection:
    see :attr:`RealtimeModel._follows_kids`). The datastore reports these in stream order."""

    CREATED = 0     # this client created it (reported at once)
    DESTROYING = 1  # this client asked to destroy it; it stays until answered (at once)
    ADDED = 2       # the stream created it: another client, or a snapshot
    GONE = 3        # the stream destroyed it: another client, the server, a keyed replace,
    #                 a snapshot without it
    CONFIRMED = 4   # the server accepted this client's create
    REFUSED = 5     # the server refused this client's create; the model is gone
    DESTROYED = 6   # the server accepted this client's destroy; the model is gone
    KEPT = 7        # this client's destroy did not happen (refused, or the model went first);
    #                 the model stays unless it is gone
    RESET = 8       # a snapshot replaced the state (the kid is the parent itself)


class Unchecked(enum.Enum):
    """The type of :data:`UNCHECKED`."""

    UNCHECKED = "unchecked"


UNCHECKED = Unchecked.UNCHECKED
"""``expected`` of a create (:meth:`ModelOwner.create`, ``Datastore.create``) when the create
must not check the key: the collections' unkeyed creates, and keyed ones that replace."""
