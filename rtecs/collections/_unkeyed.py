"""RealtimeSet (unordered) and RealtimeArray (append-only, ordered)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from itertools import chain
from typing import Any, overload

from rtecs.collections._base import Batch, Collection, CollectionChange, E, settled
from rtecs.model import KidEvent, ModelOwner, RealtimeModel, store_of

__all__ = ["RealtimeArray", "RealtimeSet"]


def _settle_removals(batch: Batch, removing: dict[RealtimeModel, Future[bool]],
                     ds: ModelOwner) -> None:
    """A snapshot replaced the state: each pending removal reports whether its element is
    gone now."""
    for element, future in removing.items():
        batch.done.append((future, store_of(element) is not ds))
    removing.clear()


class RealtimeSet(Collection[E], type_name="rtecs.Set", abstract=True):
    """An unordered set of models of one type: ``inventory: RealtimeSet[Item] = prop(5)``.

    ``add(item)`` creates ``item`` under the set (a dynamic model; it shows at once);
    ``remove(item)`` destroys it (it disappears at once). Both need the set's model to be in
    a room, and write access to it (ownership of the set or any ancestor covers the
    elements). Iteration is in order of appearance here; membership is by identity.

    Concurrent removal: when two clients remove the same element, the one the server orders
    first destroys it; the other's :meth:`remove` future resolves to False (its view was
    already right). A removal the server refuses (ownership taken meanwhile) rolls back: the
    element shows again (``added``, remote).
    """

    __slots__ = ("_removing", "_shown")
    _kind = "Set"

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[E, None] = {}
        self._removing: dict[RealtimeModel, Future[bool]] = {}

    def add(self, model: E) -> None:
        """Add a new model (not yet in any room) to the set. Adding a member again does
        nothing."""
        if model in self._shown:
            return
        self._store().create(model, parent=self)

    def remove(self, model: E) -> Future[bool]:
        """Remove a member; removing a non-member does nothing. The future resolves when the
        server answers: True if this client's removal destroyed it, False if another
        client's change came first or the server refused (then it shows again)."""
        pending = self._removing.get(model)
        if pending is not None:
            return pending
        if model not in self._shown:
            return settled(False)
        self._store().destroy(model)
        return self._removing[model]

    def __contains__(self, model: object) -> bool:
        return model in self._shown

    def __len__(self) -> int:
        return len(self._shown)

    def __iter__(self) -> Iterator[E]:
        return iter(tuple(self._shown))

    def _pending_futures(self) -> list[Future[bool]]:
        found, self._removing = list(self._removing.values()), {}
        return found

    def _take(self, batch: Batch, event: KidEvent, kid: RealtimeModel, key: Any) -> None:
        if event is KidEvent.RESET:
            ds = self._store()
            _settle_removals(batch, self._removing, ds)
            for element in (*self._shown, *ds.kids(self)):
                batch.touch(element, event)
            return
        if event is KidEvent.DESTROYING:
            self._removing.setdefault(kid, Future())
        elif event is KidEvent.DESTROYED or event is KidEvent.KEPT:
            future = self._removing.pop(kid, None)
            if future is not None:
                batch.done.append((future, event is KidEvent.DESTROYED))
        batch.touch(kid, event)

    def _diff(self, batch: Batch) -> list[tuple[str, CollectionChange[E]]]:
        return _membership(self, batch, self._shown, self._removing)


class RealtimeArray(Collection[E], type_name="rtecs.Array", abstract=True):
    """An append-only list of models of one type: ``log: RealtimeArray[Line] = prop(6)``.

    The order is the room's order of creation (the server's stream), the same on every
    client and for late joiners. This client's appends show at once *after* every confirmed
    element and move into their place in the stream when the server confirms them (no
    stream emits for the move). ``added`` carries the element's index when it appeared.
    Elements cannot be removed through the array; if one is destroyed anyway (another
    client destroying the model), it goes and ``removed`` emits.
    """

    __slots__ = ("_confirmed", "_pending", "_removing", "_shown", "_view")
    _kind = "Array"

    def __init__(self) -> None:
        super().__init__()
        self._confirmed: list[E] = []
        self._pending: list[E] = []
        self._shown: dict[RealtimeModel, None] = {}
        self._removing: dict[RealtimeModel, Future[bool]] = {}
        self._view: list[E] | None = None

    def append(self, model: E) -> None:
        """Append a new model (not yet in any room); it shows at once, last."""
        self._store().create(model, parent=self)

    def _list(self) -> list[E]:
        view = self._view
        if view is None:
            removing = self._removing
            view = self._view = [e for e in chain(self._confirmed, self._pending)
                                 if e not in removing]
        return view

    def __len__(self) -> int:
        return len(self._shown)

    def __iter__(self) -> Iterator[E]:
        return iter(self._list())

    @overload
    def __getitem__(self, index: int) -> E: ...
    @overload
    def __getitem__(self, index: slice) -> list[E]: ...

    def __getitem__(self, index: int | slice) -> E | list[E]:
        return self._list()[index]

    def index(self, model: E) -> int:
        """The element's position (ValueError if it is not in the array)."""
        return self._list().index(model)

    def __contains__(self, model: object) -> bool:
        return model in self._shown

    def _pending_futures(self) -> list[Future[bool]]:
        found, self._removing = list(self._removing.values()), {}
        return found

    def _take(self, batch: Batch, event: KidEvent, kid: RealtimeModel, key: Any) -> None:
        element: E = kid  # type: ignore[assignment]
        if event is KidEvent.CREATED:  # last in the view: extend it rather than rebuild it
            self._pending.append(element)
            if self._view is not None:
                self._view.append(element)
            batch.touch(kid, event)
            return
        self._view = None
        if event is KidEvent.ADDED:
            self._confirmed.append(element)
        elif event is KidEvent.CONFIRMED:
            if element in self._pending:
                self._pending.remove(element)
                self._confirmed.append(element)
        elif event is KidEvent.DESTROYING:
            self._removing.setdefault(kid, Future())
        elif event is KidEvent.RESET:
            ds = self._store()
            _settle_removals(batch, self._removing, ds)
            self._confirmed = ds.kids(self)  # type: ignore[assignment]
            self._pending = []
            for e in (*self._shown, *self._confirmed):
                batch.touch(e, event)
            return
        if event is KidEvent.DESTROYED or event is KidEvent.KEPT:
            future = self._removing.pop(kid, None)
            if future is not None:
                batch.done.append((future, event is KidEvent.DESTROYED))
        if store_of(kid) is not store_of(self):  # gone: refused, destroyed
            if element in self._pending:
                self._pending.remove(element)
            elif element in self._confirmed:
                self._confirmed.remove(element)
        batch.touch(kid, event)

    def _diff(self, batch: Batch) -> list[tuple[str, CollectionChange[E]]]:
        out = _membership(self, batch, self._shown, self._removing)
        if self._streams is not None and any(s == "added" for s, _ in out):
            view = self._list()  # indexes once everything is in place
            if len(out) == 1 and view and view[-1] is out[0][1].element:
                return [(out[0][0], out[0][1]._replace(key=len(view) - 1))]
            where = {e: i for i, e in enumerate(view)}
            out = [(s, c._replace(key=where[c.element]) if s == "added" else c)
                   for s, c in out]
        return out


def _membership(collection: Any, batch: Batch, shown: dict[Any, None],
                removing: Mapping[Any, Any]) -> list[tuple[str, CollectionChange[Any]]]:
    """What the elements a batch touched did to what ``collection`` shows: each that now is
    (in the datastore, not being removed) and was not shown is ``added``, and the reverse
    ``removed``; ``shown`` is updated."""
    ds = store_of(collection)
    out: list[tuple[str, CollectionChange[Any]]] = []
    for slot in batch.touched:
        element: Any = slot
        now = store_of(element) is ds and element not in removing
        if now is (element in shown):
            continue
        if now:
            shown[element] = None
            stream = "added"
        else:
            del shown[element]
            stream = "removed"
        out.append((stream, CollectionChange(collection, None, element, None,
                                             batch.remote(slot))))
    return out
