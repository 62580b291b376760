"""The four realtime collections: sets, append-only arrays and two kinds of dictionaries of
realtime models, declared as child properties of a model::

    class Item(rtecs.RealtimeModel):
        name: str = rtecs.prop(1, default="")

    class Player(rtecs.RealtimeModel):
        inventory: rtecs.RealtimeSet[Item] = rtecs.prop(5)
        log: rtecs.RealtimeArray[Item] = rtecs.prop(6)
        slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(7)
        names: rtecs.StringKeyDictionary[Item] = rtecs.prop(8)

    player.inventory.add(Item(name="sword"))      # shows at once, then everywhere
    player.inventory.added.subscribe(print)       # CollectionChange(..., remote=True/False)

The element type goes into the model's schema automatically. Elements are dynamic models
created under the collection: ownership of the collection's model (or any ancestor) covers
them, destroying the model destroys them, late joiners get them in the snapshot. An element
is added once: add a new model, not one already in a room. Changes to an element's own
properties are ordinary property changes (``element.observe(...)``).

Every collection has ``added`` and ``removed`` streams (the dictionaries also ``replaced``)
of :class:`CollectionChange`; they exist only once subscribed, and emit synchronously on the
ticking thread: this client's operations at once, the server's once the whole message is
applied (DESIGN §4b). Operations need the welcome (:class:`~rtecs.errors.NotConnectedError`)
and write access (:class:`~rtecs.errors.OwnershipError`).

How each behaves under concurrency is in its class docs; in short: sets and int-key
dictionaries are optimistic and roll back what the server refuses; a remove that loses a race
(the element was removed or replaced first) reports False through its future and changes
nothing; arrays order by the server's stream; string-key dictionaries are transactional.
"""

from rtecs.collections._base import CollectionChange
from rtecs.collections._keyed import RealtimeDictionary, StringKeyDictionary
from rtecs.collections._unkeyed import RealtimeArray, RealtimeSet

__all__ = ["CollectionChange", "RealtimeArray", "RealtimeDictionary", "RealtimeSet",
           "StringKeyDictionary"]
