r"""The client's datastore: the model tree of one room, dirty tracking, deltas and snapshots.

Pure and deterministic: no sockets, no clocks, no threads. :class:`rtecs.Realtime` feeds it
decoded messages and sends what :meth:`Datastore.collect` returns.

- Model ids: the room model is 0; declared children extend their parent's id with the
  property id; dynamic models get :func:`rtecs.protocol.dynamic_model_id` of (client id,
  counter), allocated here without a round trip.
- Dirty tracking: a write records ``(model, prop)`` in an ordered dict with the value
  visible before the frame's first write, and moves to the end when written again so the
  update keeps the order of the last writes (the server checks each change where it falls,
  e.g. after an ownership request). Per-frame cost grows with the changed properties only;
  the size of the datastore does not matter.
- Reliable properties go through the :class:`~rtecs.cache.InFlightCache`. Unreliable ones
  apply remote values at once and ignore stale echoes of this client's own writes; while an
  own write of one is unsent or in flight, the datastore keeps the latest seq sent and the
  stream's value of it (its *server value*), shown again if the server rejects the write
  (DESIGN §4). Every write is sent, even one back to the frame-start value: there is no
  "changed back" suppression for unreliable properties.
- Types: a type not passed to the constructor is found by name among the defined
  :class:`RealtimeModel` subclasses (:func:`rtecs.model.find_model_type`); one created here
  that the room was not told about in the hello is announced by :meth:`take_new_types`
  (the client sends it as ``SCHEMA`` before the update that uses it). A type no class is
  found for is kept as an :class:`OpaqueModel` (values stored, changes applied, never shown
  to the ECS), never an error.
- Resyncs within a session are *re-based* (:meth:`rebase`), not rolled back: what the
  server applied is settled from the snapshot, the rest is renumbered and sent again.
- Emissions from applying server messages are queued and delivered by :meth:`flush_emissions`
  once the whole message is applied (DESIGN §4b); a queued emission for a property that a
  callback has since written locally is dropped (the local write is newer). A subscriber
  that raises is reported to :attr:`Datastore.error_listeners` and never stops the others.
- Collections (:mod:`rtecs.collections`) are models that follow their dynamic kids
  (``_follows_kids``). The datastore keeps the *server's* structure for them — which
  elements exist, which element is at each key (a keyed create replaces the element at its
  key, for everyone, at its place in the stream) — and reports what happens to their kids as
  :class:`~rtecs.model._model.KidEvent`\ s: this client's own creates and destroy requests at
  once, everything from the stream (remote creates and destroys, answers to this client's
  creates and destroys, snapshots) when the message's emissions are flushed. The collection
  keeps its pending operations on top and decides what shows.
- Destroying a collection's element is *deferred*: the model stays (hidden or shown, as its
  collection decides) until the server answers; accepted, it goes; refused, it stays, so a
  refused remove rolls back instead of diverging. Other dynamic models go at once.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from reactivex import Observable
from reactivex.subject import Subject

from rtecs.cache import InFlightCache
from rtecs.datastore import _receive
from rtecs.datastore._opaque import OpaqueModel
from rtecs.errors import NotConnectedError, OwnershipError, SchemaError
from rtecs.model import Change, ChangeSource, Prop, RealtimeModel, find_model_type
from rtecs.model._model import _OWNER_PROP, CREATE_MARK, DESTROY_MARK, DESTROYED, KidEvent
from rtecs.model._streams import guarded
from rtecs.protocol import (
    CREATE,
    DEFAULT_LIMITS,
    F32,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    ModelId,
    Update,
    UpdateEntry,
    Welcome,
    dynamic_model_id,
)

__all__ = ["UNCHECKED", "Datastore", "OpaqueModel"]

log = logging.getLogger(__name__)

_MISSING: Any = object()
Key = tuple[RealtimeModel, Prop]
_Emission = tuple[RealtimeModel, Prop, Any, Any, ChangeSource]
_KidRecord = tuple[RealtimeModel, KidEvent, RealtimeModel, Any]  # parent, event, kid, key


class _Unchecked(enum.Enum):
    UNCHECKED = "unchecked"


UNCHECKED = _Unchecked.UNCHECKED
"""``expected`` of :meth:`Datastore.create` when the create must not check the key."""


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


class _Closed(dict[Any, Any]):
    """The dirty set of a closed datastore: any write raises."""

    def pop(self, key: Any, default: Any = None) -> Any:
        raise NotConnectedError("this client was closed: connect again to write")


def _estimate(value: object) -> int:
    """A cheap upper estimate of a value's MessagePack size."""
    if isinstance(value, str):
        return 5 + (len(value) if value.isascii() else 4 * len(value))
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, tuple):
        return 40 + len(value[0])
    return 9


def child_id(parent: ModelId, prop_id: int) -> ModelId:
    return (parent, prop_id) if type(parent) is int else (*parent, prop_id)  # type: ignore[misc]


class Datastore:
    """The synchronised state of one room as this client sees it."""

    def __init__(self, room_model: RealtimeModel,
                 types: Iterable[type[RealtimeModel]] = ()) -> None:
        if room_model._ds is not None:
            raise ValueError("this room model already belongs to a datastore")
        self.client_id = -1
        self.room_model = room_model
        self.cache = InFlightCache()
        self._models: dict[ModelId, RealtimeModel] = {}
        self._types: dict[str, type[RealtimeModel]] = {}
        self._dirty: dict[Key, Any] = {}
        self._unreliable_sent: dict[Key, int] = {}
        # The stream's value of each unreliable property with an own write in flight.
        self._unreliable_server: dict[Key, Any] = {}
        self._announced: set[str] = set()  # type names the room was told about
        self.epoch = 1
        """The session epoch the welcome named: every update carries it (DESIGN §5)."""
        self.max_value_bytes = DEFAULT_LIMITS.max_value_bytes
        """Largest str/bytes value a property may take (from the limits the server
        announced); larger writes raise ``ValueError`` at the assignment."""
        self.error_listeners: list[Callable[[BaseException], None]] = []
        """Called with every exception a subscriber raised (see :meth:`report_error`)."""
        # What each unanswered update carried: its runs, its reliable (key, value) pairs and
        # its unreliable keys, so an answer that accepts it as sent is settled in bulk.
        self._inflight: dict[int, tuple[list[list[Any]], list[tuple[Key, Any]],
                                        list[tuple[Key, Any]]]] = {}
        self._emissions: list[_Emission] = []
        self._kids: dict[RealtimeModel, dict[RealtimeModel, None]] = {}  # ordered sets
        # Keyed collections: the server's element at each key, and every keyed kid's key.
        self._keyed: dict[RealtimeModel, dict[Any, RealtimeModel]] = {}
        self._key_of: dict[RealtimeModel, Any] = {}
        # This client's destroys not yet answered (sent or about to be): the model, whether
        # it is deferred (a collection's element, still attached), and the ids of detached
        # ones the stream destroyed too (a race: the refusal that follows is no news).
        self._destroying: dict[ModelId, RealtimeModel] = {}
        self._deferred: set[ModelId] = set()
        self._raced: set[ModelId] = set()
        self.resync_wanted = False
        """Set when this client cannot rebuild the room's state by itself (the server refused
        a destroy this client already applied): :class:`~rtecs.Realtime` asks the server for
        a fresh snapshot."""
        self._kid_reports: list[_KidRecord] = []
        # Per unanswered update: the creates under collections and the destroys it carried,
        # as (model id, key), so their answers are heard on the fast path too.
        self._lifecycle_sent: dict[int, list[tuple[ModelId, int]]] = {}
        self._lifecycle: list[tuple[RealtimeModel, bool]] = []
        self.lifecycle_listeners: list[Callable[[RealtimeModel, bool], None]] = []
        """Called with ``(model, alive)`` when a dynamic model appears or goes other than by
        this client's own create()/destroy(): remote creates and destroys, snapshots, and
        creates the server refused."""
        self._all_changes: Subject[Change] | None = None
        self._next_seq = 1
        self._counter = 0
        self._welcomed = False
        for t in (type(room_model), *types):
            self.register_type(t)
        self._attach(room_model, 0, None)

    # ----------------------------------------------------------------- types and schema

    def find_type(self, type_name: str) -> type[RealtimeModel] | None:
        """The class of ``type_name``: a registered one, or else the one defined
        :class:`RealtimeModel` subclass of that name (then registered; the room knows it
        already, since it came from the room). None if no class has that name. Raises
        :class:`~rtecs.errors.SchemaError` if two classes share it and neither was passed
        in ``types=``."""
        found = self._types.get(type_name)
        if found is None:
            found = find_model_type(type_name)
            if found is not None:
                known = set(self._types)
                self.register_type(found)
                self._announced.update(set(self._types) - known)
        return found

    def take_new_types(self) -> dict[str, dict[int, tuple[str, str, bool]]] | None:
        """The schema of types registered since the room was last told (the hello, or a
        previous call), or None; they count as told from now on."""
        new = [name for name in self._types if name not in self._announced]
        if not new:
            return None
        self._announced.update(new)
        return {name: self._types[name].schema() for name in new}

    def hello_schema(self) -> dict[str, dict[int, tuple[str, str, bool]]]:
        """:meth:`schema`, for a hello: every type counts as told to the room."""
        self._announced = set(self._types)
        return self.schema()

    def register_type(self, model_type: type[RealtimeModel]) -> None:
        """Make a model type (and its child types) known: in the schema and for remote creates."""
        if issubclass(model_type, OpaqueModel):
            raise SchemaError("an opaque model stands for a type this client has no class "
                              "for; it cannot be created here")
        known = self._types.get(model_type.type_name)
        if known is model_type:
            return
        if known is not None:
            raise ValueError(f"two model classes are named {model_type.type_name!r}: "
                             f"{known.__qualname__} and {model_type.__qualname__}")
        self._types[model_type.type_name] = model_type
        for p in model_type._children:
            assert p.child_type is not None
            self.register_type(p.child_type)
        for kid_type in model_type._kid_types:
            self.register_type(kid_type)

    def schema(self) -> dict[str, dict[int, tuple[str, str, bool]]]:
        """Every known type's properties, as the hello carries them."""
        return {name: t.schema() for name, t in self._types.items()}

    # ----------------------------------------------------------------- model tree

    @property
    def models(self) -> dict[ModelId, RealtimeModel]:
        """Every model in the datastore by network id (a live view: do not mutate)."""
        return self._models

    def get(self, model_id: ModelId) -> RealtimeModel | None:
        return self._models.get(model_id)

    def _attach(self, model: RealtimeModel, model_id: ModelId,
                parent: RealtimeModel | None) -> None:
        if model._ds is not None:
            raise ValueError(f"{model!r} already belongs to a datastore")
        model._ds = self
        model._id = model_id
        model._parent = parent
        self._models[model_id] = model
        for p in type(model)._children:
            self._attach(model._v[p.slot], child_id(model_id, p.id), model)

    def _attach_under(self, model: RealtimeModel, model_id: ModelId,
                      parent: RealtimeModel | None) -> None:
        """Attach a dynamic model, as a top-level model or under a dynamic parent."""
        self._attach(model, model_id, parent)
        if parent is not None:
            siblings = self._kids.get(parent)
            if siblings is None:
                siblings = self._kids[parent] = {}
            siblings[model] = None

    def _walk(self, model: RealtimeModel) -> Iterator[RealtimeModel]:
        """The model, its declared children and the dynamic models under it, parents first."""
        yield model
        for p in type(model)._children:
            yield from self._walk(model._v[p.slot])
        for kid in self._kids.get(model, ()):
            yield from self._walk(kid)

    def kids(self, model: RealtimeModel) -> list[RealtimeModel]:
        """The dynamic models created under ``model`` (a copy), in the order they came here
        (after a snapshot: the room's order of creation)."""
        return list(self._kids.get(model, ()))

    def keyed_kids(self, parent: RealtimeModel) -> dict[Any, RealtimeModel]:
        """The server's element at each key of a keyed collection (a live view: do not
        mutate). This client's unanswered creates are not in it."""
        return self._keyed.get(parent) or {}

    def key_of(self, model: RealtimeModel) -> Any:
        """The key of a keyed collection's element (None if it has none)."""
        return self._key_of.get(model)

    def create(self, model: RealtimeModel, flags: int = 0, owned: bool = False,
               parent: RealtimeModel | None = None, *, key: int | str | None = None,
               expected: ModelId | _Unchecked | None = UNCHECKED) -> ModelId:
        """Add a dynamic model: it exists locally at once and is created on the server by the
        next update (with all its current values). Needs a client id. Under a ``parent`` (a
        model of this datastore), the parent's ownership covers it and destroying the parent
        destroys it. ``key`` (and ``expected``, the id of the element this client believes is
        at ``key``, None for none) create an element of a keyed collection: see
        :mod:`rtecs.protocol`; collections call this for you."""
        if self.closed:
            raise NotConnectedError("this client was closed: connect again to create models")
        if self.client_id < 1:
            raise NotConnectedError("creating a model needs a client id: wait for the welcome")
        if model._ds is not None:
            raise ValueError(f"{model!r} already belongs to a datastore")
        value: tuple[Any, ...] = (model.type_name, flags)
        follows = False
        if parent is not None:
            if parent._ds is not self:
                raise ValueError(f"the parent {parent!r} is not a model of this datastore")
            self._check_owner(parent, parent._v[0], None)
            follows = type(parent)._follows_kids
            if follows:
                parent._check_kid(model, key, expected)
            elif key is not None or expected is not UNCHECKED:
                raise ValueError("only a keyed collection's elements have keys")
            value = (model.type_name, flags, parent._id)
            if key is not None:
                value = (*value, key) if expected is UNCHECKED else (*value, key, expected)
        self.register_type(type(model))
        self._counter += 1
        model_id = dynamic_model_id(self.client_id, self._counter)
        model._flags = flags
        self._attach_under(model, model_id, parent)
        if key is not None:
            self._key_of[model] = key
        dirty = self._dirty
        dirty[(model, CREATE_MARK)] = value
        if owned:
            model._v[0] = self.client_id
            dirty[(model, _OWNER_PROP)] = -1
        for m in self._walk(model):  # its values that differ from its class's defaults
            values, template = m._v, type(m)._template
            for p in type(m)._props.values():
                if p.id != OWNER and p.child_type is None:
                    start = template[p.slot]
                    value = values[p.slot]
                    if value != start or type(value) is not type(start):
                        dirty[(m, p)] = start
        if follows:
            assert parent is not None
            self._tell(parent, KidEvent.CREATED, model, key)
        return model_id

    def destroy(self, model: RealtimeModel) -> None:
        """Destroy a dynamic model (and its children) here at once and on the server.

        An element of a collection is the exception: it stays until the server answers (its
        collection hides it meanwhile, or keeps showing it if transactional) and goes then;
        if the server refuses, it stays. Asking again while it waits does nothing."""
        if self.closed:
            raise NotConnectedError("this client was closed: connect again to destroy models")
        if type(model._id) is not int or model._id == 0 or model._ds is not self:
            raise ValueError(f"only dynamic models of this datastore can be destroyed: {model!r}")
        self._check_owner(model, model._v[0], None)
        parent = model._parent
        if parent is not None and type(parent)._follows_kids:
            if model._id in self._destroying:
                return
            # Sent even if the create is still unsent: the server creates, then destroys it
            # (a keyed create has effects — it replaces — that a cancel would lose).
            self._dirty[(model, DESTROY_MARK)] = None
            self._destroying[model._id] = model
            self._deferred.add(model._id)
            self._tell(parent, KidEvent.DESTROYING, model, self._key_of.get(model))
            return
        unsent = (model, CREATE_MARK) in self._dirty  # created this frame: the server never knew
        self._remove(model, notify=False)
        if not unsent:
            self._dirty[(model, DESTROY_MARK)] = None
            self._destroying[model._id] = model

    def _bury(self, model_id: ModelId, restore: bool) -> None:
        """The server answered this client's destroy of ``model_id``; ``restore``: it refused
        (someone took the model over meanwhile). The model is gone here but not there, and
        only the server knows its state now: ask for a fresh snapshot."""
        if restore:
            log.info("the server refused to destroy model %r: asking for a fresh snapshot",
                     model_id)
            self.resync_wanted = True

    def _tell(self, parent: RealtimeModel, event: KidEvent, kid: RealtimeModel,
              key: Any) -> None:
        """Report this client's own create or destroy request to the kid's collection; its
        streams emit at once."""
        emit = parent._kids_changed([(event, kid, key)], True)
        if emit is not None:
            emit()

    def _remove(self, model: RealtimeModel, notify: bool = True,
                event: KidEvent | None = KidEvent.GONE) -> None:
        """Detach ``model`` and everything under it. ``notify``: it went other than by this
        client's own destroy (lifecycle listeners hear of it). ``event``: what to report to
        the model's collection, if it is in one (None: nothing)."""
        order = list(self._walk(model))
        gone = set(order)
        parent = model._parent
        if parent is not None and parent in self._kids:
            self._kids[parent].pop(model, None)
        reports = self._kid_reports
        if parent is not None and event is not None and type(parent)._follows_kids:
            reports.append((parent, event, model, self._key_of.get(model)))
        destroying = self._destroying
        for m in order:
            mid: ModelId = m._id  # type: ignore[assignment]
            self._models.pop(mid, None)
            self._kids.pop(m, None)
            m._ds = DESTROYED
            if notify and type(mid) is int:
                self._lifecycle.append((m, False))
            key = self._key_of.pop(m, None)
            if key is not None:
                truth = self._keyed.get(m._parent)  # type: ignore[arg-type]
                if truth is not None and truth.get(key) is m:
                    del truth[key]
            self._keyed.pop(m, None)
            if mid in destroying and (m, DESTROY_MARK) in self._dirty:
                del destroying[mid]  # never sent: no answer will come
                self._deferred.discard(mid)
                if m is model and parent is not None and type(parent)._follows_kids:
                    reports.append((parent, KidEvent.KEPT, m, key))
        for dirty_key in [k for k in self._dirty if k[0] in gone]:
            del self._dirty[dirty_key]
        self.cache.forget([k for k in self.cache if k[0] in gone])  # type: ignore[index]
        for key in [k for k in self._unreliable_sent if k[0] in gone]:
            del self._unreliable_sent[key]
            self._unreliable_server.pop(key, None)

    def _place(self, parent: RealtimeModel, key: Any, model: RealtimeModel) -> None:
        """The stream put ``model`` at ``key`` of ``parent``: the element there goes."""
        truth = self._keyed.get(parent)
        if truth is None:
            truth = self._keyed[parent] = {}
        previous = truth.get(key)
        if previous is not None and previous is not model:
            self._remove(previous)
        truth[key] = model

    # ----------------------------------------------------------------- local writes

    def check_write(self, model: RealtimeModel) -> None:
        """Raise unless this client may write ``model`` as far as it knows (the model and its
        ancestors unowned or owned by this client). Called by property setters."""
        self._check_owner(model, model._v[0], None)

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        """Set ``model``'s owner locally (request or clear ownership) and send it."""
        self._check_owner(model, -1, model)
        values = model._v
        old = values[0]
        if old == owner:
            return
        key = (model, _OWNER_PROP)
        dirty = self._dirty
        dirty[key] = dirty.pop(key, old)
        values[0] = owner
        if model._subs is not None:
            model._notify(_OWNER_PROP, old, owner, ChangeSource.LOCAL)
        if self._all_changes is not None:
            self._all_changes.on_next(Change(model, "owner_id", old, owner, ChangeSource.LOCAL))

    def _check_owner(self, model: RealtimeModel, own: int, requesting: RealtimeModel | None,
                     ) -> None:
        me = self.client_id
        if own != -1 and own != me:
            raise OwnershipError(f"{type(model).__name__} {model._id} is owned by client {own}; "
                                 "request ownership first")
        if requesting is not None:
            owner = requesting._v[0]
            if (owner != -1 and owner != me and requesting._flags & PREVENT_OWNERSHIP_TAKEOVER):
                raise OwnershipError(f"{type(model).__name__} {model._id} is owned by client "
                                     f"{owner} and prevents ownership takeover")
        p = model._parent
        while p is not None:
            owner = p._v[0]
            if owner != -1 and owner != me:
                raise OwnershipError(f"{type(model).__name__} {model._id} belongs to "
                                     f"{type(p).__name__} {p._id}, owned by client {owner}")
            p = p._parent

    def collect(self, max_bytes: int | None = None) -> Update | None:
        """The frame's delta as the next update, or None if nothing needs sending.

        With ``max_bytes``, the update stops before its estimated size passes it and the rest
        stays dirty for the next update (call again while :attr:`has_unsent_changes`): a frame
        that spawns thousands of models goes out as several updates under the size limit.
        """
        dirty = self._dirty
        if not dirty:
            return None
        seq = self._next_seq
        cache = self.cache
        sent = self._unreliable_sent
        userver = self._unreliable_server
        keys: list[Key] = []
        starts: list[Any] = []
        values: list[Any] = []
        unreliable: list[tuple[Key, Any]] = []
        runs: list[list[Any]] = []
        run: list[Any] = []
        last: RealtimeModel | None = None
        budget = max_bytes if max_bytes is not None else -1
        lifecycle: list[tuple[ModelId, int]] = []
        size = consumed = 0
        for key, start in dirty.items():
            model, p = key
            pid = p.id
            if pid >= 0:
                value = model._v[p.slot]
            elif pid == CREATE:
                value = start  # the whole create, made by create()
            else:
                value = None
            if budget >= 0:
                t = type(value)
                grow = ((9 if t is float or t is int or t is bool else _estimate(value))
                        + (2 if model is last else 14))
                if size + grow > budget and runs:
                    break  # the rest goes in the next update
                size += grow
                consumed += 1
            if pid >= 0:
                if p.reliable:
                    if value == start and type(value) is type(start):
                        # Changed back: nothing to send, unless a remote value arrived
                        # meanwhile (there is no such suppression for unreliable ones).
                        hidden, server = cache.hidden_remote(key)
                        if not hidden or (value == server and type(value) is type(server)):
                            cache.drop_hidden(key)
                            continue
                    keys.append(key)
                    starts.append(start)
                    values.append(value)
                else:
                    if key not in sent:
                        userver[key] = start  # the stream's value, until it says otherwise
                    sent[key] = seq
                    unreliable.append((key, value))
            elif pid == CREATE:
                parent = model._parent
                if parent is not None and type(parent)._follows_kids:
                    lifecycle.append((model._id, pid))  # type: ignore[arg-type]
            else:
                lifecycle.append((model._id, pid))  # type: ignore[arg-type]
            if p.f32 and value is not None:
                value = F32(value)  # sent as a 4-byte float (it was rounded when written)
            if model is last:
                run.append(pid)
                run.append(value)
            else:
                run = [model._id, pid, value]
                runs.append(run)
                last = model
        if budget < 0 or consumed == len(dirty):
            dirty.clear()
        else:
            for key in list(itertools.islice(dirty, consumed)):
                del dirty[key]
        if not runs:
            return None
        cache.record(seq, keys, starts)
        self._inflight[seq] = (runs, list(zip(keys, values, strict=True)), unreliable)
        if lifecycle:
            self._lifecycle_sent[seq] = lifecycle
        self._next_seq = seq + 1
        return Update(seq, runs, self.epoch)

    def discard(self, update: Update) -> None:
        """Take back the last update :meth:`collect` returned, unsent (it could not be
        encoded, or its frame is over the size limit): it is treated as if the server had
        rejected all of it (its writes roll back, its creates vanish) and its seq is
        reused."""
        if update.seq != self._next_seq - 1:
            raise ValueError("only the last collected update can be discarded")
        rejected = [(run[0], run[i]) for run in update.changes for i in range(1, len(run), 2)]
        self.apply_entry(UpdateEntry(self.client_id, update.seq, (), rejected))
        self._next_seq = update.seq

    @property
    def has_unsent_changes(self) -> bool:
        """True if writes wait for the next :meth:`collect`."""
        return bool(self._dirty)

    @property
    def updates_in_flight(self) -> int:
        """Updates collected (sent) whose answer has not arrived yet."""
        return len(self._inflight)

    @property
    def closed(self) -> bool:
        return type(self._dirty) is _Closed

    def close(self) -> None:
        """No more writes: from now on every write to a model of this datastore raises
        :class:`~rtecs.errors.NotConnectedError` (the client was closed)."""
        self._dirty = _Closed()

    def report_error(self, error: BaseException) -> None:
        """A subscriber raised ``error``: log it with its traceback and tell every
        :attr:`error_listeners` (a listener that raises is logged and skipped). The state
        is already applied; nothing else is affected (DESIGN §4b)."""
        log.error("a change subscriber raised %s: %s", type(error).__name__, error,
                  exc_info=(type(error), error, error.__traceback__))
        for listener in list(self.error_listeners):
            try:
                listener(error)
            except Exception:
                log.exception("an error listener raised")

    @property
    def next_seq(self) -> int:
        return self._next_seq

    # ----------------------------------------------------------------- server messages

    def apply_entry(self, entry: UpdateEntry) -> None:
        """Apply one entry of the server stream (queue its emissions)."""
        _receive.apply_entry(self, entry)

    def load_snapshot(self, welcome: Welcome) -> None:
        """Replace the state with the server's at the start of a (new) session.

        Unanswered writes roll back (source ``rollback``); everything else that differs shows
        with source ``snapshot``. Writes made before the first welcome are simply overwritten.
        """
        _receive.load_snapshot(self, welcome)

    def rebase(self, welcome: Welcome) -> list[Update]:
        """Take a welcome that opens a new epoch of the same session (a resync).

        The snapshot holds every update up to ``welcome.last_applied`` and none after: those
        are settled from it (their creates confirmed or refused, their destroys done or not,
        their writes showing what the server holds), the snapshot shows like a stream of the
        missed changes (source ``snapshot``) under any newer local write, and the unapplied
        updates are renumbered into the new epoch: returned, to be sent again in order.
        Nothing of this client's is rolled back that the server did not refuse.
        """
        return _receive.rebase(self, welcome)

    def _show(self, model: RealtimeModel, p: Prop, value: Any, source: ChangeSource) -> None:
        _receive._show(self, model, p, value, source)

    # ----------------------------------------------------------------- emissions

    @property
    def changes(self) -> Observable[Change]:
        """Every visible change of every model in this datastore."""
        if self._all_changes is None:
            self._all_changes = Subject()
        return guarded(self._all_changes, self.report_error)

    def flush_emissions(self) -> None:
        """Deliver what applying server messages queued: first the collections take in what
        happened to their elements (all of them, before anybody hears of it), then the
        lifecycle listeners hear of dynamic models that appeared or went, then the
        collections' streams emit, then the property changes, in order."""
        emits: list[Callable[[], None]] = []
        if self._kid_reports:
            reports, self._kid_reports = self._kid_reports, []
            by_parent: dict[RealtimeModel, list[Any]] = {}
            for parent, event, kid, key in reports:
                by_parent.setdefault(parent, []).append((event, kid, key))
            for parent, events in by_parent.items():
                if parent._ds is self:
                    emit = parent._kids_changed(events, False)
                    if emit is not None:
                        emits.append(emit)
        if self._lifecycle:
            lifecycle, self._lifecycle = self._lifecycle, []
            for model, alive in lifecycle:
                for listener in self.lifecycle_listeners:
                    listener(model, alive)
        for emit in emits:
            emit()
        pending = self._emissions
        if not pending:
            return
        self._emissions = []
        everything = self._all_changes
        dirty, cache, sent = self._dirty, self.cache, self._unreliable_sent
        for model, p, old, new, source in pending:
            now = model._v[p.slot]
            if now is not new and (type(now) is not type(new) or now != new):
                key = (model, p)
                if key in dirty or key in cache or key in sent:
                    continue  # written locally since (a callback): that write is newer
            try:
                if model._subs is not None:
                    model._notify(p, old, new, source)
                if everything is not None:
                    everything.on_next(Change(model, p.name, old, new, source))
            except Exception as exc:  # a subscriber without the guard (see rtecs.model)
                self.report_error(exc)
