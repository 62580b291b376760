r"""The client's datastore: the model tree of one room, dirty tracking, deltas and snapshots.

Pure and deterministic: no sockets, no clocks, no threads. :class:`rtecs.Realtime` feeds it
decoded messages and sends what :meth:`Datastore.collect` returns. :class:`Datastore` is a
facade over parts that each own their state:

- :class:`~rtecs.datastore._tree.ModelTree` (``_tree.py``): models by id, dynamic kids in
  order, keyed collections' server structure, id allocation.
- :class:`~rtecs.datastore._delta.DeltaTracker` (``_delta.py``): the dirty set → updates,
  unanswered updates (and the pure in-flight cache), unreliable records, own destroys.
- :class:`~rtecs.datastore._apply.Applier`, :class:`~rtecs.datastore._snapshot.Snapshots`:
  applying stream entries and snapshots, gathering the visible changes as data.
- a :class:`~rtecs.model.Notifier` (model layer: reactivex lives there) emits them.

Models reach their datastore through the model layer's narrow interface (its
:class:`~rtecs.model.WriteLog`, ``mark_dirty``, …), never its tables; the datastore reaches
models through the model layer's functions (``bind``, ``values_of``, ``id_of``, …) and their
public attributes (``parent``), never their private ones.

- Types (:class:`~rtecs.datastore._types.TypeRegistry`, ``_types.py``): found by name among
  the defined :class:`RealtimeModel` subclasses when not passed in; new ones are announced
  by :meth:`take_new_types`; a type no class is found for is kept as an
  :class:`OpaqueModel` (values stored, changes applied, never shown), never an error.
- Resyncs within a session are *re-based* (:meth:`rebase`), not rolled back; what applying
  a message changed is emitted by :meth:`flush_emissions` once it is all applied (§4b).
- Collections (:mod:`rtecs.collections`) follow their dynamic kids: the datastore keeps the
  *server's* structure and reports what happens to their kids (:class:`~rtecs.model.KidEvent`:
  own creates and destroy requests at once, the stream's at the flush); the collection keeps
  its pending operations on top and decides what shows. Destroying an element is
  *deferred* until the server answers (refused, it stays); other dynamic models go at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rtecs.cache import InFlightCache
from rtecs.datastore._apply import Applier
from rtecs.datastore._delta import DeltaTracker
from rtecs.datastore._opaque import OpaqueModel
from rtecs.datastore._snapshot import Snapshots
from rtecs.datastore._tree import ModelTree
from rtecs.datastore._types import Schema, TypeRegistry
from rtecs.errors import NotConnectedError
from rtecs.model import (
    CREATE_MARK,
    OWNER_PROP,
    UNCHECKED,
    ChangeStream,
    Emit,
    KidEvent,
    Notifier,
    Prop,
    RealtimeModel,
    Unchecked,
    WriteLog,
    check_kid,
    defaults_of,
    follows_kids,
    id_of,
    props_of,
    set_flags,
    store_of,
    values_of,
)
from rtecs.protocol import (
    DEFAULT_LIMITS,
    OWNER,
    ModelId,
    Update,
    UpdateEntry,
    Welcome,
)

__all__ = ["UNCHECKED", "Datastore", "OpaqueModel"]  # UNCHECKED: the model layer's, re-exported


class Datastore:
    """The synchronised state of one room as this client sees it."""

    __slots__ = ("_applier", "_delta", "_log", "_notifier", "_snapshots", "_tree", "_types",
                 "_welcomed", "client_id", "max_depth", "max_value_bytes", "room_model")

    def __init__(self, room_model: RealtimeModel,
                 types: Iterable[type[RealtimeModel]] = ()) -> None:
        if store_of(room_model) is not None:
            raise ValueError("this room model already belongs to a datastore")
        self.client_id = -1
        self.room_model = room_model
        self.max_value_bytes = DEFAULT_LIMITS.max_value_bytes
        #: How many levels models may nest (the room model is level 1): the server announces
        #: it; a create that would nest deeper is refused at once.
        self.max_depth = DEFAULT_LIMITS.max_depth
        """Largest str/bytes value a property may take (from the limits the server
        announced); larger writes raise ``ValueError`` at the assignment."""
        self._types = TypeRegistry()
        self._welcomed = False
        self._delta = DeltaTracker()
        self._log = WriteLog(self._delta.dirty)  # handed to every model (the write path)
        self._tree = ModelTree(self, self._log)
        self._notifier = Notifier(self, self._delta.written_locally, self._log)
        self._applier = Applier(self, self._tree, self._delta, self._notifier, self.find_type)
        self._snapshots = Snapshots(self, self._tree, self._delta, self._applier)
        for t in (type(room_model), *types):
            self.register_type(t)
        self._tree.attach(room_model, 0, None)

    @property
    def delta(self) -> DeltaTracker:
        """The dirty set and the records of unanswered updates (read it: for diagnostics)."""
        return self._delta

    @property
    def cache(self) -> InFlightCache:
        """The in-flight cache of reliable writes (read it; the datastore changes it)."""
        return self._delta.cache

    @property
    def epoch(self) -> int:
        """The session epoch the welcome named: every update carries it (DESIGN §5)."""
        return self._delta.epoch

    @property
    def next_seq(self) -> int:
        return self._delta.next_seq  # the seq of the next update collect() returns

    @property
    def resync_wanted(self) -> bool:
        """Set when this client cannot rebuild the room's state by itself (the server
        refused a destroy it already applied): :class:`~rtecs.Realtime` asks for a snapshot."""
        return self._applier.resync_wanted

    @resync_wanted.setter
    def resync_wanted(self, wanted: bool) -> None:
        self._applier.resync_wanted = wanted

    @property
    def error_listeners(self) -> list[Callable[[BaseException], None]]:
        """Called with every exception a subscriber raised (see :meth:`report_error`)."""
        return self._notifier.error_listeners

    @property
    def lifecycle_listeners(self) -> list[Callable[[RealtimeModel, bool], None]]:
        """Called with ``(model, alive)`` when a dynamic model appears or goes other than by
        this client's own create()/destroy() (remote ones, snapshots, refused creates)."""
        return self._notifier.lifecycle_listeners

    # ----------------------------------------------------------------- types and schema

    def find_type(self, type_name: str) -> type[RealtimeModel] | None:
        """The class of ``type_name``: a registered one, or else the one defined
        :class:`RealtimeModel` subclass of that name (then registered; the room knows it
        already, since it came from the room). None if no class has that name. Raises
        :class:`~rtecs.errors.SchemaError` if two classes share it and neither was passed
        in ``types=``."""
        return self._types.find(type_name)

    def take_new_types(self) -> Schema | None:
        """The schema of types registered since the room was last told (the hello, or a
        previous call), or None; they count as told from now on."""
        return self._types.take_new()

    def hello_schema(self) -> Schema:
        """:meth:`schema`, for a hello: every type counts as told to the room."""
        return self._types.schema(announce=True)

    def register_type(self, model_type: type[RealtimeModel]) -> None:
        """Make a model type (and its child types) known: in the schema and for remote creates."""
        self._types.register(model_type)

    def schema(self) -> Schema:
        """Every known type's properties, as the hello carries them."""
        return self._types.schema()

    # ----------------------------------------------------------------- model tree

    @property
    def models(self) -> dict[ModelId, RealtimeModel]:
        """Every model in the datastore by network id (a live view: do not mutate)."""
        return self._tree.models

    def get(self, model_id: ModelId) -> RealtimeModel | None:
        return self._tree.get(model_id)

    def kids(self, model: RealtimeModel) -> list[RealtimeModel]:
        """The dynamic models created under ``model`` (a copy), in the order they came here
        (after a snapshot: the room's order of creation)."""
        return self._tree.kids(model)

    def keyed_kids(self, parent: RealtimeModel) -> dict[Any, RealtimeModel]:
        """The server's element at each key of a keyed collection (a live view: do not
        mutate). This client's unanswered creates are not in it."""
        return self._tree.keyed_kids(parent)

    def key_of(self, model: RealtimeModel) -> Any:
        """The key of a keyed collection's element (None if it has none)."""
        return self._tree.key_of(model)

    def create(self, model: RealtimeModel, flags: int = 0, owned: bool = False,
               parent: RealtimeModel | None = None, *, key: int | str | None = None,
               expected: ModelId | Unchecked | None = UNCHECKED) -> ModelId:
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
        if store_of(model) is not None:
            raise ValueError(f"{model!r} already belongs to a datastore")
        value: tuple[Any, ...] = (model.type_name, flags)
        follows = False
        depth = _level(parent) + _declared_levels(type(model))
        if depth > self.max_depth:
            raise ValueError(f"{model!r} would nest {depth} levels deep (with its declared "
                             f"children), over the limit of {self.max_depth}")
        if parent is not None:
            if store_of(parent) is not self:
                raise ValueError(f"the parent {parent!r} is not a model of this datastore")
            self._tree.check_owner(parent, self.client_id, parent.owner_id)
            follows = follows_kids(type(parent))
            if follows:
                check_kid(parent, model, key, expected)
            elif key is not None or expected is not UNCHECKED:
                raise ValueError("only a keyed collection's elements have keys")
            value = (model.type_name, flags, id_of(parent))
            if key is not None:
                value = (*value, key) if expected is UNCHECKED else (*value, key, expected)
        self.register_type(type(model))
        model_id = self._tree.new_id(self.client_id)
        set_flags(model, flags)
        self._tree.attach_under(model, model_id, parent, key)
        delta = self._delta
        delta.mark_start((model, CREATE_MARK), value)
        if owned:
            values_of(model)[0] = self.client_id
            delta.mark_start((model, OWNER_PROP), -1)
        for m in self._tree.walk(model):  # its values that differ from its class's defaults
            values, defaults = values_of(m), defaults_of(type(m))
            for p in props_of(type(m)).values():
                if p.id != OWNER and p.child_type is None:
                    start = defaults[p.slot]
                    current = values[p.slot]
                    if current != start or type(current) is not type(start):
                        delta.mark_start((m, p), start)
        if follows:
            assert parent is not None
            self._notifier.tell_local(parent, KidEvent.CREATED, model, key)
        return model_id

    def destroy(self, model: RealtimeModel) -> None:
        """Destroy a dynamic model (and its children) here at once and on the server.

        An element of a collection is the exception: it stays until the server answers (its
        collection hides it meanwhile, or keeps showing it if transactional) and goes then;
        if the server refuses, it stays. Asking again while it waits does nothing."""
        if self.closed:
            raise NotConnectedError("this client was closed: connect again to destroy models")
        mid = id_of(model)
        if type(mid) is not int or mid == 0 or store_of(model) is not self:
            raise ValueError(f"only dynamic models of this datastore can be destroyed: {model!r}")
        self._tree.check_owner(model, self.client_id, model.owner_id)
        parent = model.parent
        delta = self._delta
        if parent is not None and follows_kids(type(parent)):
            if delta.destroying(mid):
                return
            # Sent even if the create is still unsent: the server creates, then destroys it
            # (a keyed create has effects — it replaces — that a cancel would lose).
            delta.start_destroy(model, deferred=True)
            self._notifier.tell_local(parent, KidEvent.DESTROYING, model,
                                      self._tree.key_of(model))
            return
        unsent = delta.is_dirty((model, CREATE_MARK))  # created this frame: never sent
        self._applier.remove(model, notify=False)
        if not unsent:
            delta.start_destroy(model, deferred=False)

    # ----------------------------------------------------------------- local writes

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> Emit | None:
        """``model.p`` is about to change locally from ``old`` (the narrow interface; its
        models do this through its :class:`~rtecs.model.WriteLog`, without a call). Before
        the store: closed, this raises :class:`~rtecs.errors.NotConnectedError`, nothing
        changes. The key keeps the frame-start value and moves to the end of the dirty set.
        Returns where the change goes datastore-wide (None while nobody listens)."""
        dirty, key = self._log.dirty, (model, p)
        dirty[key] = dirty.pop(key, old)
        return self._log.emit

    def check_write(self, model: RealtimeModel) -> None:
        """Raise unless this client may write ``model`` as far as it knows (the model and its
        ancestors unowned or owned by this client). Called by property setters."""
        self._tree.check_owner(model, self.client_id, model.owner_id)

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        """Set ``model``'s owner locally (request or clear ownership) and send it."""
        self._tree.check_owner(model, self.client_id, -1, requesting=True)
        values = values_of(model)
        old = values[0]
        if old == owner:
            return
        self._delta.mark((model, OWNER_PROP), old)
        values[0] = owner
        self._notifier.local_change(model, OWNER_PROP, old, owner)

    def collect(self, max_bytes: int | None = None,
                max_changes: int | None = None) -> Update | None:
        """The frame's delta as the next update, or None if nothing needs sending.

        With ``max_bytes`` (or ``max_changes``), the update stops before its estimated size
        passes it (or before it carries more changes) and the rest stays dirty for the next
        update (call again while :attr:`has_unsent_changes`): a frame that spawns thousands
        of models goes out as several updates under the server's limits.
        """
        return self._delta.collect(max_bytes, max_changes)

    def discard(self, update: Update) -> None:
        """Take back the last update :meth:`collect` returned, unsent (it could not be
        encoded, or its frame is over the size limit): it is treated as if the server had
        rejected all of it (its writes roll back, its creates vanish) and its seq is
        reused."""
        if update.seq != self._delta.next_seq - 1:
            raise ValueError("only the last collected update can be discarded")
        rejected = [(run[0], run[i]) for run in update.changes for i in range(1, len(run), 2)]
        self._applier.apply_entry(UpdateEntry(self.client_id, update.seq, (), rejected))
        self._delta.reuse_seq(update.seq)

    @property
    def has_unsent_changes(self) -> bool:
        """True if writes wait for the next :meth:`collect`."""
        return bool(self._delta.dirty)

    @property
    def updates_in_flight(self) -> int:
        """Updates collected (sent) whose answer has not arrived yet."""
        return self._delta.updates_in_flight

    @property
    def closed(self) -> bool:
        return self._delta.closed

    def close(self) -> None:
        """No more writes: from now on every write to a model of this datastore raises
        :class:`~rtecs.errors.NotConnectedError` (the client was closed)."""
        self._delta.close()
        self._log.dirty = self._delta.dirty  # refuses every write (its pop raises)

    def report_error(self, error: BaseException) -> None:
        """A subscriber raised ``error``: log it with its traceback and tell every
        :attr:`error_listeners` (a listener that raises is logged and skipped). The state
        is already applied; nothing else is affected (DESIGN §4b)."""
        self._notifier.report_error(error)

    # ----------------------------------------------------------------- server messages

    def apply_entry(self, entry: UpdateEntry) -> None:
        """Apply one entry of the server stream (its emissions wait for
        :meth:`flush_emissions`)."""
        self._applier.apply_entry(entry)

    def load_snapshot(self, welcome: Welcome) -> None:
        """Replace the state with the server's at the start of a (new) session.

        Unanswered writes roll back (source ``rollback``); everything else that differs shows
        with source ``snapshot``. Writes made before the first welcome are simply overwritten.
        """
        if welcome.client_id != self.client_id:
            self._tree.restart_ids()  # a new client id: its dynamic ids count from 1 again
        self.client_id = welcome.client_id
        self._snapshots.load(welcome, rollback=self._welcomed)
        self._welcomed = True

    def rebase(self, welcome: Welcome) -> list[Update]:
        """Take a welcome that opens a new epoch of the same session (a resync).

        The snapshot holds every update up to ``welcome.last_applied`` and none after: those
        are settled from it (their creates confirmed or refused, their destroys done or not,
        their writes showing what the server holds), the snapshot shows like a stream of the
        missed changes (source ``snapshot``) under any newer local write, and the unapplied
        updates are renumbered into the new epoch: returned, to be sent again in order.
        Nothing of this client's is rolled back that the server did not refuse.
        """
        return self._snapshots.rebase(welcome)

    # ----------------------------------------------------------------- emissions

    @property
    def changes(self) -> ChangeStream:
        """Every visible change of every model in this datastore."""
        return self._notifier.changes

    def flush_emissions(self) -> None:
        """Deliver what applying server messages gathered: first the collections take in
        what happened to their elements (all of them, before anybody hears of it), then the
        lifecycle listeners hear of dynamic models that appeared or went, then the
        collections' streams emit, then the property changes, in order."""
        visible = self._applier.take_changes()
        if visible:
            self._notifier.deliver(visible)


def _level(model: RealtimeModel | None) -> int:
    """``model``'s level in its tree (1: the room model or a top-level model; 0: None)."""
    level = 0
    while model is not None:
        level += 1
        model = model.parent
    return level


_LEVELS: dict[type[RealtimeModel], int] = {}


def _declared_levels(cls: type[RealtimeModel]) -> int:
    """How many levels one ``cls`` spans with its declared child models (1: none)."""
    levels = _LEVELS.get(cls)
    if levels is None:
        below = [p.child_type for p in props_of(cls).values() if p.child_type is not None]
        levels = _LEVELS[cls] = 1 + max(
            (_declared_levels(c) for c in below if issubclass(c, RealtimeModel)), default=0)
    return levels
