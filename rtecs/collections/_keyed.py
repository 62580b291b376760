"""RealtimeDictionary (int keys, optimistic, last writer wins) and StringKeyDictionary
(string keys, transactional)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, Generic, TypeVar

from reactivex import Observable
from reactivex.subject import Subject

from rtecs.collections._base import Batch, Collection, CollectionChange, E, settled, when_done
from rtecs.model import UNCHECKED, KidEvent, ModelOwner, RealtimeModel, guarded, store_of

__all__ = ["RealtimeDictionary", "StringKeyDictionary"]

K = TypeVar("K", int, str)

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _Op:
    """One of this client's operations on a key, not answered yet."""

    __slots__ = ("element", "future", "removes")

    def __init__(self, element: RealtimeModel, removes: bool) -> None:
        self.element = element
        self.removes = removes
        self.future: Future[bool] | None = None

    def promise(self, on_done: Callable[[bool], None] | None = None) -> Future[bool]:
        if self.future is None:
            self.future = Future()
        return when_done(self.future, on_done)


class _Keyed(Collection[E], Generic[K, E], type_name="rtecs.Keyed", abstract=True):
    """What the two dictionaries share: the elements shown by key, and this client's
    pending operations per key (oldest first), answered in order."""

    __slots__ = ("_ops", "_shown")
    _key_type: ClassVar[type]

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[K, E] = {}
        self._ops: dict[K, list[_Op]] = {}

    def _pending_futures(self) -> list[Future[bool]]:
        found = [op.future for ops in self._ops.values() for op in ops if op.future]
        self._ops = {}
        return found

    # ----------------------------------------------------------------- reading

    def __getitem__(self, key: K) -> E:
        return self._shown[key]

    def get(self, key: K, default: E | None = None) -> E | None:
        """The element shown at ``key``, or ``default``."""
        return self._shown.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._shown

    def __len__(self) -> int:
        return len(self._shown)

    def __iter__(self) -> Iterator[K]:
        return iter(tuple(self._shown))

    def keys(self) -> list[K]:
        """The keys shown, in the order they were added."""
        return list(self._shown)

    def values(self) -> list[E]:
        """The elements shown, in key order (see :meth:`keys`)."""
        return list(self._shown.values())

    def items(self) -> list[tuple[K, E]]:
        """``(key, element)`` for every element shown (see :meth:`keys`)."""
        return list(self._shown.items())

    @property
    def replaced(self) -> Observable[CollectionChange[E]]:
        """An element replaced by another at the same key (``previous`` is the old one)."""
        streams = self._streams or self._make_streams()
        if streams.replaced is None:
            streams.replaced = Subject()
        return guarded(streams.replaced, self._report_error)

    # ----------------------------------------------------------------- operations

    def _check_key(self, key: object) -> None:
        if type(key) is not self._key_type or (
                type(key) is int and not _INT64_MIN <= key <= _UINT64_MAX):
            raise TypeError(f"the keys of a {type(self).__name__} are "
                            f"{self._key_type.__name__}s (64-bit for ints), not {key!r}")

    def _remove(self, key: K, target: E | None,
                on_done: Callable[[bool], None] | None) -> Future[bool]:
        ops = self._ops.get(key)
        if ops and ops[-1].removes:
            return ops[-1].promise(on_done)  # already asked
        if target is None:
            return settled(False, on_done)
        self._store().destroy(target)
        ops = self._ops[key]
        return ops[-1].promise(on_done)

    def _target(self, key: K) -> E | None:
        """The element at ``key`` once this client's pending operations are done."""
        ops = self._ops.get(key)
        if ops:
            last = ops[-1]
            return None if last.removes else last.element  # type: ignore[return-value]
        return self._store().keyed_kids(self).get(key)  # type: ignore[return-value]

    def _visible(self, key: K) -> E | None:
        raise NotImplementedError

    # ----------------------------------------------------------------- reports

    def _take(self, batch: Batch, event: KidEvent, kid: RealtimeModel, key: Any) -> None:
        if event is KidEvent.RESET:
            store: ModelOwner = self._store()
            for pending in self._ops.values():
                for op in pending:  # each reports whether its effect is in the server's state
                    if op.future is not None:
                        done = (store_of(op.element) is store) is not op.removes
                        batch.done.append((op.future, done))
            self._ops.clear()
            for k in (*self._shown, *store.keyed_kids(self)):
                batch.touch(k, event)
            return
        if event is KidEvent.CREATED or event is KidEvent.DESTROYING:
            self._ops.setdefault(key, []).append(_Op(kid, event is KidEvent.DESTROYING))
        elif event is not KidEvent.ADDED and event is not KidEvent.GONE:
            removes = event is KidEvent.DESTROYED or event is KidEvent.KEPT
            if key is None:  # the model went before the answer: find its operation
                key = next((k for k, ops in self._ops.items()
                            if any(op.element is kid for op in ops)), None)
            ops = self._ops.get(key)
            for i, op in enumerate(ops or ()):
                if op.element is kid and op.removes is removes:
                    assert ops is not None
                    del ops[i]
                    if not ops:
                        del self._ops[key]
                    if op.future is not None:
                        ok = event is KidEvent.CONFIRMED or event is KidEvent.DESTROYED
                        batch.done.append((op.future, ok))
                    break
        if key is not None:
            batch.touch(key, event)

    def _diff(self, batch: Batch) -> list[tuple[str, CollectionChange[E]]]:
        shown = self._shown
        out: list[tuple[str, CollectionChange[E]]] = []
        for slot in batch.touched:
            key: K = slot  # type: ignore[assignment]
            old = shown.get(key)
            new = self._visible(key)
            if old is new:
                continue
            remote = batch.remote(slot)
            if new is None:
                assert old is not None
                del shown[key]
                out.append(("removed", CollectionChange(self, key, old, None, remote)))
            else:
                shown[key] = new
                out.append(("added", CollectionChange(self, key, new, None, remote))
                           if old is None else
                           ("replaced", CollectionChange(self, key, new, old, remote)))
        return out


class RealtimeDictionary(_Keyed[int, E], type_name="rtecs.Dict", abstract=True):
    """Models of one type by int key: ``slots: RealtimeDictionary[Item] = prop(7)``.

    ``d[k] = item`` adds or replaces (the old element is destroyed), ``del d[k]`` or
    ``d.remove(k)`` removes; both show at once. Each key is cached like a property (DESIGN
    §4): while this client has operations on a key in flight, other clients' changes to it
    do not show (no flash); when the last is answered the key shows the server's element,
    which is a rollback if the server refused ours.

    Races: a set is last-writer-wins (the one the server orders last stays). A remove is a
    destroy of the element this client saw at the key: if another client replaced that
    element first, the remove is refused, its future resolves to False, and the other's
    element shows (``added``, remote).
    """

    __slots__ = ()
    _kind = "Dict"
    _key_type = int

    def __setitem__(self, key: int, model: E) -> None:
        self._check_key(key)
        self._store().create(model, parent=self, key=key)

    def __delitem__(self, key: int) -> None:
        if key not in self._shown:
            raise KeyError(key)
        self.remove(key)

    def remove(self, key: int) -> Future[bool]:
        """Remove the element at ``key`` (nothing to do if there is none: the future is
        False at once). The future resolves when the server answers: True if this client's
        remove destroyed it, False if another change came first or the server refused."""
        return self._remove(key, self._shown.get(key), None)

    def _check_kid(self, kid: RealtimeModel, key: Any, expected: Any) -> None:
        self._check_element(kid)
        self._check_key(key)
        if expected is not UNCHECKED:
            raise ValueError("a RealtimeDictionary's writes are last-writer-wins: no expected "
                             "element (use a StringKeyDictionary for transactions)")

    def _visible(self, key: int) -> E | None:
        return self._target(key)


class StringKeyDictionary(_Keyed[str, E], type_name="rtecs.StrDict", abstract=True):
    """Models of one type by string key, changed transactionally:
    ``names: StringKeyDictionary[Item] = prop(8)``.

    :meth:`set` and :meth:`remove` return a :class:`concurrent.futures.Future` that
    resolves, when the server answers, to True (done) or False (refused), and call the
    optional ``on_done(ok)`` callback then. A change shows only once the server confirmed it
    (``remote`` False on its record), so this client never shows a value that fails. Each
    operation says which element it expects at the key — the one this client last saw there,
    after its own pending operations on that key — and the server refuses it if another
    client changed the key first. Successive operations of one client on one key chain: if
    one fails, those that expected its result fail too. The elements' own properties are
    ordinary (optimistic, cached) properties.
    """

    __slots__ = ()
    _kind = "StrDict"
    _key_type = str

    def set(self, key: str, model: E,
            on_done: Callable[[bool], None] | None = None) -> Future[bool]:
        """Put a new model at ``key``, replacing the element there, if no other client
        changed the key first."""
        self._check_key(key)
        target = self._target(key)
        expected = None if target is None else target.model_id
        self._store().create(model, parent=self, key=key, expected=expected)
        return self._ops[key][-1].promise(on_done)

    def remove(self, key: str, on_done: Callable[[bool], None] | None = None) -> Future[bool]:
        """Remove the element at ``key`` if no other client changed it first (nothing to do
        if there is none: the future is False at once)."""
        self._check_key(key)
        return self._remove(key, self._target(key), on_done)

    def _check_kid(self, kid: RealtimeModel, key: Any, expected: Any) -> None:
        self._check_element(kid)
        self._check_key(key)
        if expected is UNCHECKED:
            raise ValueError("a StringKeyDictionary's writes say which element they expect "
                             "at the key: use set()")

    def _visible(self, key: str) -> E | None:
        return self._store().keyed_kids(self).get(key)  # type: ignore[return-value]
