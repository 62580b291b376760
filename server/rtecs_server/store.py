"""The authoritative datastore of one room: model records, authority checks, plugins, size.

The server keeps no model classes: a model is its type (from the room's
:class:`~rtecs_server.schema.RoomSchema`), owner, flags, parent and ``{property id: value}``.
:class:`ModelStore` applies a client's change runs one change at a time, each checked where
it falls (DESIGN §3, §4b), and makes the server's own lifetime changes. It knows nothing of
members, sequence numbers or frames: that is :class:`~rtecs_server.room.Room`'s job.

Decisions where the design is silent:

- Dynamic models are top level: their parent is not the room model, so owning the room model
  does not cover them. Declared children (``(parent, pid, …)`` ids) have flags 0.
- A change that names a model or property the room has never known, a wrong value type, a
  write to a child-model property, or a create of an id that is not the sender's next one is
  *bad input*: it is rejected like any other change (the rest of the update still applies)
  and also reported as a :class:`Problem` (code ``bad_update``) for the host to send. A write
  to a model that existed and was destroyed is a quiet rejection (a normal race).
- "Existed" is judged by a per-creator high-water mark of created counters, so creates must
  arrive in increasing counter order (the client allocates them that way). A create refused
  for any reason other than a foreign or reused id still uses up its counter, so the writes
  that follow it in the update are quiet rejections. The marks are persisted with the room
  (:meth:`ModelStore.restore`), so ids are never reused after a reload either.
- Owner changes: ``owner = sender`` is allowed when no ancestor is owned by another client
  and the model is unowned, already the sender's, or another's without
  ``PREVENT_OWNERSHIP_TAKEOVER``; ``owner = -1`` when no ancestor is owned by another and the
  model is unowned or the sender's; any other value is rejected.
- The size is an estimate (:func:`value_size`, :data:`MODEL_OVERHEAD` per model); a change
  that would push it over ``limits.max_datastore_bytes`` is rejected and reported with code
  ``over_limit``. Shrinking writes are always allowed.
- Collections (see :mod:`rtecs.protocol`): under a model whose type names a collection only
  creates of its element type are accepted, keyed as its kind requires; anything else is bad
  input. Each parent keeps key → element id. A keyed create replaces — destroys, in the same
  change — the element at its key; it is refused (quietly: a normal race) when it carries an
  ``expected`` element id that is not the one at the key, or when the element it would
  replace is owned by another client (replacing is destroying). A transactional remove is an
  ordinary destroy of the element: refused quietly if the element is already gone.

Persistence (DESIGN §6): :meth:`ModelStore.records` is a view of the models for a checkpoint
(no copies), :attr:`ModelStore.persistent_changes` grows only with changes that alter what a
checkpoint would hold (so a room whose traffic is all to ``destroy_when_last_client_leaves``
models is never re-saved), and :meth:`ModelStore.restore` rebuilds a store from one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Generic, NamedTuple, TypeVar

from rtecs.errors import SchemaError
from rtecs.protocol import (
    COLLECTION_KINDS,
    CREATE,
    DESTROY,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    F32,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    Changes,
    ErrorCode,
    Limits,
    ModelId,
    Value,
    coerce_value,
    split_collection_type,
    split_dynamic_model_id,
)
from rtecs_server.errors import CorruptRoomError, Reject
from rtecs_server.records import Change, SavedRoom, SnapshotRecord
from rtecs_server.restore import load_models
from rtecs_server.schema import ModelType, Prop, RoomSchema, SchemaSpec
from rtecs_server.tree import MODEL_OVERHEAD, Model, child_id, value_size

__all__ = ["MODEL_OVERHEAD", "ModelStore", "Problem", "SnapshotRecord", "value_size"]

log = logging.getLogger("rtecs_server.room")

_MAX_PROBLEMS: Final = 8

_REJECTED: Final = object()
_ABSENT: Final = object()

#: What a collection type accepts under it: (element type name, key type or None).
_NOT_A_COLLECTION: Final = ("", None)

#: What the plugins are given as their first argument (the room, for a room's store).
C = TypeVar("C")


class Problem(NamedTuple):
    """Bad input found in an update; report it to the sender as ``ERROR code message``."""

    code: ErrorCode  # the ERROR code to send
    message: str     # what was wrong, for the client's developer


def _bad(problems: list[Problem], code: ErrorCode, message: str) -> object:
    if len(problems) < _MAX_PROBLEMS:
        problems.append(Problem(code, message))
    return _REJECTED


def _prefix(changes: Changes, ri: int, run: Sequence[Any], i: int) -> list[Any]:
    """The accepted output so far when the first change that deviates is run ``ri``, key
    index ``i``: every earlier change went through unchanged."""
    out: list[Any] = list(changes[:ri])
    if i > 1:
        out.append(list(run[:i]))
    return out


def _append(out: list[Any], mid: ModelId, key: int, value: object) -> None:
    if out:
        last = out[-1]
        if last[0] == mid:
            if type(last) is not list:
                last = out[-1] = list(last)
            last.append(key)
            last.append(value)
            return
    out.append([mid, key, value])


class ModelStore(Generic[C]):
    """The models of one room, keyed by model id; the room model is id 0. ``context`` is
    what the ``plugins`` get as their first argument (the room); ``name`` names the room in
    logs."""

    def __init__(self, context: C, name: str, limits: Limits,
                 plugins: tuple[Callable[[C, int, Change], Value], ...]) -> None:
        self._context = context
        self.name = name
        self.limits = limits
        self.plugins = plugins
        self.schema = RoomSchema()
        #: Estimated size in bytes (see :func:`value_size`).
        self.size = 0
        self._models: dict[ModelId, Model] = {}
        self._owned: dict[int, dict[ModelId, None]] = {}   # owner → its models, ordered
        self._created: dict[int, int] = {}                 # creator → highest counter used
        self._collections: dict[str, tuple[str, type | None]] = {}  # type name → what it takes
        #: Grows with every change that alters what a checkpoint would hold (see the module
        #: docs): a host saves the room when it differs from the value at its last save.
        self.persistent_changes = 0

    def __len__(self) -> int:
        return len(self._models)

    def record(self, model_id: ModelId) -> SnapshotRecord | None:
        """``(model_id, type_name, owner, flags, props)`` of one model, or None. ``props``
        is the live dict: read it, don't keep or change it."""
        m = self._models.get(model_id)
        if m is None:
            return None
        return m.record(model_id, m.props)

    def records(self) -> Iterator[SnapshotRecord]:
        """Every model as :meth:`snapshot` lists it, but with the *live* ``props`` dicts (no
        copies) and lazily: for a checkpoint that is encoded at once, on the room's thread,
        before anything changes the room (see :meth:`Room.export
        <rtecs_server.room.Room.export>`)."""
        for mid, m in self._models.items():
            yield m.record(mid, m.props)

    @property
    def created(self) -> dict[int, int]:
        """The highest dynamic-model counter each client id has used (a copy)."""
        return dict(self._created)

    def snapshot(self) -> list[SnapshotRecord]:
        """Every model, parents before children and in the order they were created
        (insertion order: a parent is always made first); ``props`` are shallow copies
        without the properties never written."""
        return [m.record(mid, dict(m.props)) for mid, m in self._models.items()]

    def merge_schema(self, schema: SchemaSpec, root_type: str) -> None:
        """Add a joiner's schema (raises :class:`~rtecs.errors.SchemaError`, changing
        nothing); make the room model on the first join, and new declared children of
        existing models when the schema grew some (rare: scans the models)."""
        types = self.schema.types
        before = len(types) + sum(len(t.props) for t in types.values())
        grown = self.schema.merge(schema, root_type)
        if len(types) + sum(len(t.props) for t in types.values()) != before:
            self.persistent_changes += 1  # the schema is saved with the room
        if not self._models:
            self._make(0, self.schema.types[root_type], None, 0)
            self.persistent_changes += 1
            return
        if not grown:
            return
        for mid, m in list(self._models.items()):
            new_pids = grown.get(m.type.name)
            if new_pids:
                for pid, child_type in m.type.children:
                    cid = child_id(mid, pid)
                    if pid in new_pids and cid not in self._models:
                        self._make(cid, child_type, m, 0)

    def release(self, client_id: int, room_empty: bool) -> list[list[Any]]:
        """Lifetime changes after ``client_id`` left, applied and returned as runs: destroys
        of its models flagged destroy_when_owner_leaves, owner -1 for its other models
        (children included), then, if ``room_empty``, destroys of every top-level model
        flagged destroy_when_last_client_leaves."""
        changes: list[list[Any]] = []
        owned = self._owned.pop(client_id, {})
        models = self._models
        for mid in owned:
            m = models.get(mid)
            if m is not None and m.flags & DESTROY_WHEN_OWNER_LEAVES:
                self._destroy(mid, m)  # owned: never in a checkpoint
                changes.append([mid, DESTROY, None])
        for mid in owned:
            m = models.get(mid)
            if m is not None:  # not flagged destroy_when_owner_leaves: owners aren't saved
                m.owner = -1
                changes.append([mid, OWNER, -1])
        if room_empty:
            doomed = [(mid, m) for mid, m in models.items()
                      if m.flags & DESTROY_WHEN_LAST_CLIENT_LEAVES and type(mid) is int]
            for mid, m in doomed:
                if mid in models:  # not already gone with a destroyed parent
                    self._destroy(mid, m)
                    changes.append([mid, DESTROY, None])
        return changes

    def apply_changes(self, sender: int, changes: Changes, rejected: list[tuple[ModelId, int]],
                       problems: list[Problem]) -> Changes:
        """Apply in order; return the accepted changes as runs. While every change goes
        through unchanged the update's own ``changes`` object is returned (no copy)."""
        models = self._models
        out: list[Any] | None = None
        for ri, run in enumerate(changes):
            mid = run[0]
            for i in range(1, len(run), 2):
                key = run[i]
                value = run[i + 1]
                if key == CREATE:
                    result = self._create(sender, mid, value, problems)
                else:
                    m = models.get(mid)
                    if m is None:
                        result = self._missing(mid, problems)
                    elif key > 0:
                        result = self._write(sender, m, mid, key, value, problems)
                    elif key == OWNER:
                        result = self._claim(sender, m, mid, value, problems)
                    else:
                        result = self._destroy_change(sender, m, mid, value, problems)
                if result is _REJECTED:
                    rejected.append((mid, key))
                    if out is None:
                        out = _prefix(changes, ri, run, i)
                elif out is not None:
                    _append(out, mid, key, result)
                elif result is not value:
                    out = _prefix(changes, ri, run, i)
                    _append(out, mid, key, result)
        return changes if out is None else out

    def _missing(self, mid: ModelId, problems: list[Problem]) -> object:
        top = mid if type(mid) is int else mid[0]  # type: ignore[index]
        if top != 0:
            creator, counter = split_dynamic_model_id(top)
            if counter >= 1 and counter <= self._created.get(creator, 0):
                if top not in self._models:
                    return _REJECTED  # it existed and was destroyed: a normal race
            else:
                return _bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} was never created")
        return _bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} does not exist: "
                                                    f"{top!r} has no such child model")

    def _write(self, sender: int, m: Model, mid: ModelId, pid: int, value: object,
               problems: list[Problem]) -> object:
        mtype = m.type
        prop = mtype.props.get(pid)
        if prop is None:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"{mtype.name} has no property {pid} (model {mid!r})")
        if prop.child is not None:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"{mtype.name}.{prop.name} (property {pid}) is a child model and "
                        f"cannot be assigned (model {mid!r})")
        try:
            new = coerce_value(prop.tag, value)
        except TypeError as exc:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"{mtype.name}.{prop.name} (model {mid!r}, property {pid}): {exc}")
        if m.held_by_other(sender):
            return _REJECTED
        if self.plugins:
            result = self._run_plugins(sender, m, mid, pid, prop, new)
            if result is _REJECTED:
                return _REJECTED
            new = result  # type: ignore[assignment]
        props = m.props
        old = props.get(pid, _ABSENT)
        delta = value_size(new) - (0 if old is _ABSENT else value_size(old))
        if delta > 0 and self.size + delta > self.limits.max_datastore_bytes:
            return _bad(problems, ErrorCode.OVER_LIMIT,
                        f"the room's datastore is over its limit of "
                        f"{self.limits.max_datastore_bytes} bytes: write to "
                        f"{mtype.name}.{prop.name} of model {mid!r} refused")
        self.size += delta
        if prop.f32 and new is not None:
            new = F32(new)  # relayed (and saved) as a 4-byte float
        props[pid] = new
        if not m.life or self._persists(m):
            self.persistent_changes += 1
        return new

    def _run_plugins(self, sender: int, m: Model, mid: ModelId, pid: int, prop: Prop,
                     value: Value) -> object:
        previous = m.props.get(pid)
        for plugin in self.plugins:
            change = Change(mid, m.type.name, pid, prop.name, value, previous)
            try:
                result = plugin(self._context, sender, change)
                if result is not value:
                    result = coerce_value(prop.tag, result)
            except Reject as r:
                log.debug("room %r: plugin rejected %s from client %d: %s",
                          self.name, change, sender, r.reason)
                return _REJECTED
            except Exception:
                log.exception("room %r: plugin %r failed on %s from client %d; the write is "
                              "rejected", self.name, plugin, change, sender)
                return _REJECTED
            value = result
        return value

    def _claim(self, sender: int, m: Model, mid: ModelId, value: object,
               problems: list[Problem]) -> object:
        if type(value) is not int:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"owner of model {mid!r} must be an int, got {value!r}")
        if m.parent is not None and m.parent.held_by_other(sender):
            return _REJECTED
        owner = m.owner
        if value == sender:
            if owner != -1 and owner != sender and m.flags & PREVENT_OWNERSHIP_TAKEOVER:
                return _REJECTED
        elif value != -1 or (owner != -1 and owner != sender):
            return _REJECTED
        if owner != value:
            if owner != -1 and (was := self._owned.get(owner)) is not None:
                was.pop(mid, None)
            if value != -1:
                self._owned.setdefault(value, {})[mid] = None
            m.owner = value
            life = m.life
            if m.flags & DESTROY_WHEN_OWNER_LEAVES and not life & DESTROY_WHEN_LAST_CLIENT_LEAVES:
                # Owners are not saved, but an owned destroy_when_owner_leaves model is left
                # out of a checkpoint with its subtree.
                self.persistent_changes += 1
        return value

    def _create(self, sender: int, mid: ModelId, value: Any, problems: list[Problem]) -> object:
        if type(mid) is not int or mid == 0:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"model {mid!r} cannot be created: only dynamic models can")
        creator, counter = split_dynamic_model_id(mid)
        if creator != sender or counter < 1:
            return _bad(problems, ErrorCode.BAD_UPDATE, f"client {sender} cannot create model "
                                                        f"{mid}: the id is not one of its own")
        if counter <= self._created.get(sender, 0):
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"model id {mid} (counter {counter}) was already used by client "
                        f"{sender}: ids are never reused")
        self._created[sender] = counter
        type_name, flags = value[0], value[1]
        mtype = self.schema.types.get(type_name)
        if mtype is None:
            return _bad(problems, ErrorCode.BAD_UPDATE,
                        f"model {mid} cannot be created: unknown type {type_name!r}")
        parent: Model | None = None
        replaced: ModelId | None = None
        if len(value) >= 3:
            parent_id = value[2]
            parent = self._models.get(parent_id)
            if parent is None:
                return self._missing(parent_id, problems)
            problem = self._check_element(parent, mid, value)
            if problem:
                return _bad(problems, ErrorCode.BAD_UPDATE, problem)
            if parent.held_by_other(sender):  # creating under a parent is writing to it
                return _REJECTED
            if len(value) >= 4:
                replaced = parent.keyed.get(value[3]) if parent.keyed else None
                if len(value) == 5 and value[4] != replaced:
                    return _REJECTED  # another client changed the key first
                if replaced is not None:
                    owner = self._models[replaced].owner
                    if owner != -1 and owner != sender:
                        return _REJECTED  # replacing is destroying it
        cost = mtype.subtree_models * MODEL_OVERHEAD
        if self.size + cost > self.limits.max_datastore_bytes:
            return _bad(problems, ErrorCode.OVER_LIMIT,
                        f"the room's datastore is over its limit of "
                        f"{self.limits.max_datastore_bytes} bytes: model {mid} not created")
        if replaced is not None:
            old = self._models[replaced]
            if self._persists(old):
                self.persistent_changes += 1
            self._destroy(replaced, old)
        self._make(mid, mtype, parent, flags)
        if parent is not None:
            parent.adopt(mid, self._models[mid], value[2], value[3] if len(value) >= 4 else None)
        if self._persists(self._models[mid]):
            self.persistent_changes += 1
        return value

    def _check_element(self, parent: Model, mid: ModelId, value: Any) -> str | None:
        """What is wrong with creating ``value`` under ``parent``, as a collection element
        (None: nothing)."""
        name = parent.type.name
        takes = self._collections.get(name)
        if takes is None:
            split = split_collection_type(name)
            takes = self._collections[name] = _NOT_A_COLLECTION if split is None else (
                split[1], COLLECTION_KINDS[split[0]])
        element, key_type = takes
        if not element:
            if len(value) > 3:
                return f"model {mid} cannot be created with a key: {name} is not a keyed " \
                       f"collection"
            return None
        if value[0] != element:
            return f"model {mid}: a {name} holds {element} models, not {value[0]}"
        want = 3 if key_type is None else 4 if key_type is int else 5
        if len(value) != want or (key_type is not None and type(value[3]) is not key_type):
            shape = {3: "no key", 4: "an int key", 5: "a string key and the expected element"}
            return f"model {mid}: an element of a {name} is created with {shape[want]}"
        return None

    def _destroy_change(self, sender: int, m: Model, mid: ModelId, value: object,
                        problems: list[Problem]) -> object:
        if type(mid) is not int or mid == 0:
            return _bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} cannot be destroyed: "
                                                        f"only dynamic models can")
        if m.held_by_other(sender):
            return _REJECTED
        if self._persists(m):
            self.persistent_changes += 1
        self._destroy(mid, m)
        return value

    # ------------------------------------------------------------------ persistence

    @staticmethod
    def _persists(m: Model) -> bool:
        """True if ``m`` would be in a checkpoint (see
        :func:`~rtecs_server.records.persistent_models`): nothing above it or itself is
        flagged destroy_when_last_client_leaves, nor destroy_when_owner_leaves and owned."""
        life = m.life
        if not life:
            return True
        if life & DESTROY_WHEN_LAST_CLIENT_LEAVES:
            return False
        o: Model | None = m
        while o is not None:
            if o.flags & DESTROY_WHEN_OWNER_LEAVES and o.owner != -1:
                return False
            o = o.parent
        return True

    def restore(self, saved: SavedRoom) -> None:
        """Fill this empty store from a checkpoint: the saved schema first, then the models
        in record order (parents before children) with their values re-checked against the
        schema (:func:`~rtecs_server.restore.load_models`), every model unowned, collection
        keys and the created counters restored. A declared child missing from the records is
        made. Raises :class:`~rtecs_server.errors.CorruptRoomError` if the checkpoint
        contradicts itself (its schema is invalid, a record names an unknown type or
        property, a value has the wrong type, a child comes before its parent…); the store
        is then unusable."""
        if self._models:
            raise RuntimeError("restore() needs an empty store")
        try:
            self.schema.merge(saved.schema, saved.root_type)
        except SchemaError as exc:
            raise CorruptRoomError(saved.name, f"its schema is invalid: {exc}") from None
        loaded = load_models(self.schema, saved)
        self._models = models = loaded.models
        self._created = loaded.created
        self.size = loaded.size
        for mid, m in list(models.items()):
            for pid, child_type in m.type.children:
                cid = child_id(mid, pid)
                if cid not in models:
                    self._make(cid, child_type, m, 0)
        self.persistent_changes = 0

    # ------------------------------------------------------------------ model tree

    def _make(self, mid: ModelId, mtype: ModelType, parent: Model | None, flags: int) -> None:
        m = Model(mtype, parent, flags)
        self._models[mid] = m
        self.size += MODEL_OVERHEAD
        for pid, child_type in mtype.children:
            self._make(child_id(mid, pid), child_type, m, 0)

    def _destroy(self, mid: ModelId, m: Model) -> None:
        del self._models[mid]
        size = MODEL_OVERHEAD
        for v in m.props.values():
            size += value_size(v)
        self.size -= size
        if m.owner != -1:
            owned = self._owned.get(m.owner)
            if owned is not None:
                owned.pop(mid, None)
        for pid, _ in m.type.children:
            cid = child_id(mid, pid)
            child = self._models.get(cid)
            if child is not None:
                self._destroy(cid, child)
        m.keyed = None
        owner_keys = m.parent.keyed if m.parent is not None else None
        if m.key is not None and owner_keys is not None and owner_keys.get(m.key) == mid:
            del owner_keys[m.key]
        kids, m.kids = m.kids, None
        for kid_id in kids or ():
            kid = self._models.get(kid_id)
            if kid is not None:
                self._destroy(kid_id, kid)
        if m.parent_id is not None and m.parent is not None and m.parent.kids:
            m.parent.kids.pop(mid, None)
