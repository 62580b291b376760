"""What the four collections share: parameterisation by element type, the change record,
lazily made streams, and turning the datastore's reports into visible changes.

A collection is a :class:`RealtimeModel` with no properties, declared as a child property of
another model. ``RealtimeSet[Item]`` is a real subclass, made once and cached, whose wire
type name is ``rtecs.Set<Item>`` (see :mod:`rtecs.protocol`) and whose ``element_type`` is
``Item``; so the model machinery — declared child ids, the ownership walk of ancestors, the
server's ``model:<name>`` schema tags, type registration — works unchanged. Elements are
dynamic models created under the collection.

Each collection keeps what it *shows* and its own pending operations; the datastore keeps
the server's structure and reports, in stream order, what happened to the elements
(:class:`~rtecs.model.KidEvent`). After each report batch the collection recomputes
the slots (elements or keys) it touched and emits the differences: local operations at
once, everything from the server once the whole message is applied (DESIGN §4b), so a value
that is replaced twice within one message emits once, and one that comes and goes within it
not at all.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar, cast

from reactivex import Observable
from reactivex.subject import Subject

from rtecs.errors import ModelDestroyedError, NotConnectedError
from rtecs.model import (
    DESTROYED,
    UNCHECKED,
    KidEvent,
    KidReport,
    ModelOwner,
    RealtimeModel,
    guarded,
    store_of,
)
from rtecs.protocol import collection_type_name

__all__ = ["E", "CollectionChange", "Collection", "Batch", "settled"]

E = TypeVar("E", bound=RealtimeModel)

# The classes made by parameterising, by (collection class, id of the element type). Weak:
# a made class lives as long as a model declares it (and the element type lives as long as
# the made class, which refers to it, so the id is never stale), so element classes defined
# in functions and tests can be collected and vanish from find_model_type().
_MADE: weakref.WeakValueDictionary[tuple[type, int], type] = weakref.WeakValueDictionary()


class CollectionChange(NamedTuple, Generic[E]):
    """One visible change of a collection, as its ``added``, ``removed`` and ``replaced``
    streams emit it."""

    collection: RealtimeModel  # the collection that changed
    key: int | str | None
    """The dictionary key; for an array, the index an added element shows at (None for a
    removed one); None for a set."""
    element: E
    """The element added or removed; for a replace, the new one."""
    previous: E | None
    """For a replace, the element that was at the key before; else None."""
    remote: bool
    """False when this client's own operation made the change (at once, or for a
    StringKeyDictionary when the server confirmed it); True when another client or the
    server did, rollbacks included."""


class Batch:
    """What one report batch gathers: the slots it touched, in order, each with whether the
    last report about it was the server confirming this client's own operation; and the
    futures to resolve."""

    __slots__ = ("done", "local", "touched")

    def __init__(self, local: bool) -> None:
        self.local = local
        self.touched: dict[Hashable, bool] = {}
        self.done: list[tuple[Future[bool], bool]] = []

    def touch(self, slot: Hashable, event: KidEvent) -> None:
        self.touched[slot] = event is KidEvent.CONFIRMED or event is KidEvent.DESTROYED

    def remote(self, slot: Hashable) -> bool:
        return not self.local and not self.touched[slot]


def settled(ok: bool, on_done: Callable[[bool], None] | None = None) -> Future[bool]:
    """A future that is already resolved (an operation that needed no server)."""
    future: Future[bool] = Future()
    future.set_result(ok)
    if on_done is not None:
        on_done(ok)
    return future


def when_done(future: Future[bool], on_done: Callable[[bool], None] | None) -> Future[bool]:
    """Call ``on_done`` with the result once ``future`` resolves (at once if it has)."""
    if on_done is not None:
        callback = on_done
        future.add_done_callback(lambda f: callback(f.result()))
    return future


class _Streams:
    __slots__ = ("added", "removed", "replaced")

    def __init__(self) -> None:
        self.added: Subject[Any] | None = None
        self.removed: Subject[Any] | None = None
        self.replaced: Subject[Any] | None = None


class Collection(RealtimeModel, Generic[E], type_name="rtecs.Collection", abstract=True):
    """Base of the four collections. Parameterise a concrete one by its element type."""

    __slots__ = ("_streams",)

    _follows_kids = True
    _kind: ClassVar[str] = ""
    element_type: ClassVar[type[RealtimeModel]]
    """The model type of the elements (set on ``RealtimeSet[Item]`` and its kin)."""

    def __class_getitem__(cls, element: Any) -> Any:
        if isinstance(element, TypeVar | tuple):  # generic subclassing inside rtecs
            return cast(Any, super()).__class_getitem__(element)
        if not (isinstance(element, type) and issubclass(element, RealtimeModel)):
            raise TypeError(f"{cls.__name__}[...] takes a RealtimeModel subclass, "
                            f"not {element!r}")
        if "element_type" in vars(cls) or not cls._kind:
            raise TypeError(f"{cls.__name__} cannot be parameterised again")
        made = _MADE.get((cls, id(element)))
        if made is None:
            name = f"{cls.__name__}[{element.__name__}]"
            extra = {"__slots__": (), "element_type": element, "_kid_types": (element,),
                     "__module__": cls.__module__, "__qualname__": name}
            made = types.new_class(
                name, (cls,), {"type_name": collection_type_name(cls._kind, element.type_name)},
                lambda ns: ns.update(extra))
            _MADE[(cls, id(element))] = made
        return made

    def __init__(self) -> None:
        if not hasattr(type(self), "element_type"):
            raise TypeError(f"say what {type(self).__name__} holds: "
                            f"{type(self).__name__}[YourModel]")
        super().__init__()
        self._streams: _Streams | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.model_id!r}, {len(self)} elements)"

    def __len__(self) -> int:
        raise NotImplementedError

    # ----------------------------------------------------------------- streams

    @property
    def added(self) -> Observable[CollectionChange[E]]:
        """Elements that appeared (here at once; others' when their message is applied)."""
        streams = self._streams or self._make_streams()
        if streams.added is None:
            streams.added = Subject()
        return guarded(streams.added, self._report_error)

    @property
    def removed(self) -> Observable[CollectionChange[E]]:
        """Elements that went (removed, refused by the server, or a rollback)."""
        streams = self._streams or self._make_streams()
        if streams.removed is None:
            streams.removed = Subject()
        return guarded(streams.removed, self._report_error)

    def _make_streams(self) -> _Streams:
        self._streams = _Streams()
        return self._streams

    def _abandon(self) -> None:
        """This collection was destroyed with the model that held it: every operation still
        waiting for the server resolves to False (it can no longer take effect here)."""
        for future in self._pending_futures():
            if not future.done():
                future.set_result(False)

    def _pending_futures(self) -> list[Future[bool]]:
        """The futures of this client's operations the server has not answered."""
        raise NotImplementedError

    # ----------------------------------------------------------------- the datastore

    def _store(self) -> ModelOwner:
        """The datastore, through the model layer's interface (never its tables)."""
        ds = store_of(self)
        if ds is None:
            raise NotConnectedError(f"this {type(self).__name__} is not in a room yet: spawn "
                                    "or create the model that holds it first")
        if ds is DESTROYED:
            raise ModelDestroyedError(f"{type(self).__name__} {self.model_id} was destroyed "
                                      "with the model that held it")
        return ds

    def _check_element(self, kid: RealtimeModel) -> None:
        if type(kid) is not self.element_type:
            raise TypeError(f"a {type(self).__name__} holds {self.element_type.__name__} "
                            f"models, not {type(kid).__name__}")

    def _check_kid(self, kid: RealtimeModel, key: Any, expected: Any) -> None:
        """An element of the right type, and no key: the unkeyed collections (the keyed
        ones check their keys too)."""
        self._check_element(kid)
        if key is not None or expected is not UNCHECKED:
            raise ValueError(f"the elements of a {type(self).__name__} have no keys")

    def _kids_changed(self, reports: Sequence[KidReport], local: bool,
                      ) -> Callable[[], None] | None:
        batch = Batch(local)
        for event, kid, key in reports:
            self._take(batch, event, kid, key)
        changes = self._diff(batch)
        if not batch.done and (not changes or self._streams is None):
            return None

        def emit() -> None:
            streams = self._streams
            if streams is not None:
                for stream, change in changes:
                    subject: Subject[Any] | None = getattr(streams, stream)
                    if subject is not None:
                        subject.on_next(change)
            for future, ok in batch.done:
                if not future.done():
                    future.set_result(ok)

        return emit

    def _take(self, batch: Batch, event: KidEvent, kid: RealtimeModel, key: Any) -> None:
        """Take one report into account: update the pending operations, touch slots."""
        raise NotImplementedError

    def _diff(self, batch: Batch) -> list[tuple[str, CollectionChange[E]]]:
        """Recompute the touched slots; update what shows; return the changes to emit."""
        raise NotImplementedError
