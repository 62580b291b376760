"""The authoritative datastore of one room: its models, checked and changed one change at a
time, and undone whole when the room's own code fails in the middle of an update.

The server keeps no model classes: a model is its type (from the room's
:class:`~rtecs_server.schema.RoomSchema`), owner, flags, parent and ``{property id: value}``
(:class:`~rtecs_server.tree.Model`). :class:`ModelStore` is the face of the parts that hold
and change them; it knows nothing of members, sequence numbers or frames: that is
:class:`~rtecs_server.room.Room`'s job.

- :class:`~rtecs_server.table.ModelTable` (``table.py``): the models, owners, created
  counters, size and checkpoint counter, the structural changes (make, link, destroy a
  subtree, change an owner), each noted in its :class:`~rtecs_server.undo.UndoLog`.
- :class:`~rtecs_server.writes.Writes` (``writes.py``): property writes and ownership
  changes, with their checks.
- :class:`~rtecs_server.lifecycle.Lifecycle` (``lifecycle.py``): creates, collection
  elements, destroys and the lifetime changes when a client leaves.
- :class:`~rtecs_server.hooks.PluginSet` (``hooks.py``): the plugins, asked about every
  change a client makes.

A change that names a model or property the room has never known, a wrong value type or a
write to a child-model property is *bad input*: it is rejected like any other change (the
rest of the update still applies) and also reported as a :class:`Problem` (code
``bad_update``) for the host to send. A write to a model that existed and was destroyed is a
quiet rejection (a normal race). The size is an estimate (:func:`value_size`,
:data:`MODEL_OVERHEAD` per model); a change that would push it over
``limits.max_datastore_bytes`` is rejected and reported with code ``over_limit``. Shrinking
writes are always allowed.

Internal errors (DESIGN §5): :meth:`ModelStore.apply_changes` applies an update whole or not
at all — an exception in this code (never a plugin's: plugins' exceptions are refusals)
undoes every change the update made, down to the order of the models, and is raised again
for the room to answer with an entry that rejects everything.

Persistence (DESIGN §6): :meth:`ModelStore.records` is a view of the models for a checkpoint
(no copies), :attr:`ModelStore.persistent_changes` grows only with changes that alter what a
checkpoint would hold (so a room whose traffic is all to ``destroy_when_last_client_leaves``
models is never re-saved), and :meth:`ModelStore.restore` rebuilds a store from one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from rtecs.errors import SchemaError
from rtecs.protocol import CREATE, OWNER, Changes, Limits, ModelId
from rtecs_server.errors import CorruptRoomError
from rtecs_server.hooks import PluginSet, RoomView
from rtecs_server.lifecycle import Lifecycle
from rtecs_server.records import SavedRoom, SnapshotRecord
from rtecs_server.restore import load_models
from rtecs_server.schema import RoomSchema, SchemaBounds, SchemaSpec
from rtecs_server.table import REJECTED, ModelTable, Problem
from rtecs_server.tree import MODEL_OVERHEAD, child_id, value_size
from rtecs_server.writes import Writes

__all__ = ["MODEL_OVERHEAD", "ModelStore", "Problem", "SnapshotRecord", "value_size"]


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


class ModelStore:
    """The models of one room, keyed by model id; the room model is id 0. ``room`` is what
    the plugins' context names (:class:`~rtecs_server.hooks.Context`); ``name`` names the
    room in logs; ``plugins`` are plain callables or hook objects
    (:mod:`rtecs_server.hooks`)."""

    def __init__(self, room: RoomView, name: str, limits: Limits,
                 plugins: Iterable[object] = ()) -> None:
        self.name = name
        self.limits = limits
        self.plugins = tuple(plugins)
        self.schema = RoomSchema(SchemaBounds(max_depth=limits.max_depth))
        self.hooks = PluginSet(self.plugins, room)
        self._table = table = ModelTable(name, limits)
        self._writes = Writes(table, self.hooks)
        self._life = Lifecycle(table, self.schema, self.hooks)

    def __len__(self) -> int:
        return len(self._table.models)

    @property
    def size(self) -> int:
        """Estimated size in bytes (see :func:`value_size`)."""
        return self._table.size

    @property
    def persistent_changes(self) -> int:
        """Grows with every change that alters what a checkpoint would hold (see the module
        docs): a host saves the room when it differs from the value at its last save."""
        return self._table.persistent_changes

    def record(self, model_id: ModelId) -> SnapshotRecord | None:
        """``(model_id, type_name, owner, flags, props)`` of one model, or None. ``props``
        is the live dict: read it, don't keep or change it."""
        m = self._table.models.get(model_id)
        if m is None:
            return None
        return m.record(model_id, m.props)

    def records(self) -> Iterator[SnapshotRecord]:
        """Every model as :meth:`snapshot` lists it, but with the *live* ``props`` dicts (no
        copies) and lazily: for a checkpoint that is encoded at once, on the room's thread,
        before anything changes the room (see :meth:`Room.export
        <rtecs_server.room.Room.export>`)."""
        for mid, m in self._table.models.items():
            yield m.record(mid, m.props)

    @property
    def created(self) -> dict[int, int]:
        """The highest dynamic-model counter each client id has used (a copy)."""
        return dict(self._table.created)

    def snapshot(self) -> list[SnapshotRecord]:
        """Every model, parents before children and in the order they were created
        (insertion order: a parent is always made first); ``props`` are shallow copies
        without the properties never written."""
        return [m.record(mid, dict(m.props)) for mid, m in self._table.models.items()]

    def merge_schema(self, schema: SchemaSpec, root_type: str) -> None:
        """Add a joiner's schema (raises :class:`~rtecs.errors.SchemaError`, changing
        nothing); make the room model on the first join, and new declared children of
        existing models when the schema grew some (rare: scans the models)."""
        table = self._table
        types = self.schema.types
        before = len(types) + sum(len(t.props) for t in types.values())

        def admit(grown: Mapping[str, list[int]], counts: Mapping[str, int]) -> None:
            """Refuse a merge whose new declared children would take the room over its
            datastore limit, or make more models in the room's existing models than one
            instance may have (``max_declared_models``: a message of a few hundred bytes
            must not make 100,000 models), before anything is made."""
            bound = self.schema.bounds.max_declared_models
            if not table.models:
                new_models = counts[root_type]
            else:
                new_models = 0
                for mid, m in table.models.items() if grown else ():
                    for pid in grown.get(m.type.name, ()):
                        if child_id(mid, pid) not in table.models:
                            new_models += counts[_child_name(schema, m.type.name, pid)]
            growth = new_models * MODEL_OVERHEAD
            limit = table.limits.max_datastore_bytes
            if growth and table.size + growth > limit:
                raise SchemaError(f"the schema's declared child models ({new_models}) would "
                                  f"take the room over its datastore limit of {limit} bytes")
            if table.models and new_models > bound:
                raise SchemaError(f"the schema's new declared children would make {new_models} "
                                  f"models in the room's existing models, over the limit of "
                                  f"{bound} one schema may add")

        grown = self.schema.merge(schema, root_type, admit)
        if len(types) + sum(len(t.props) for t in types.values()) != before:
            table.persistent_changes += 1  # the schema is saved with the room
        models = table.models
        if not models:
            table.make(0, self.schema.types[root_type], None, 0)
            table.persistent_changes += 1
        elif grown:
            for mid, m in list(models.items()):
                new_pids = grown.get(m.type.name)
                if new_pids:
                    for pid, child_type in m.type.children:
                        cid = child_id(mid, pid)
                        if pid in new_pids and cid not in models:
                            table.make(cid, child_type, m, 0)
        table.commit()  # nothing to undo outside an update

    def release(self, client_id: int, room_empty: bool) -> list[list[Any]]:
        """Lifetime changes after ``client_id`` left, applied and returned as runs: destroys
        of its models flagged destroy_when_owner_leaves, owner -1 for its other models
        (children included), then, if ``room_empty``, destroys of every top-level model
        flagged destroy_when_last_client_leaves. No plugin is asked: they cannot be
        refused. All or nothing: an exception undoes them and is raised again."""
        table = self._table
        table.begin()
        try:
            changes = self._life.release(client_id, room_empty)
        except BaseException:
            table.rollback()
            raise
        table.commit()
        return changes

    def apply_changes(self, sender: int, changes: Changes, rejected: list[tuple[ModelId, int]],
                      problems: list[Problem], *, user_id: str | None = None,
                      claims: Mapping[str, Any] | None = None) -> Changes:
        """Apply in order; return the accepted changes as runs. While every change goes
        through unchanged the update's own ``changes`` object is returned (no copy).
        ``user_id`` and ``claims`` name the sender's session to the plugins.

        All or nothing: if this code raises (an internal error), every change already made
        is undone and the exception is raised again; ``rejected`` and ``problems`` then
        hold what was found before it."""
        table = self._table
        table.begin()
        if self.hooks.any:
            self.hooks.begin(sender, user_id, claims)
        try:
            out = self._apply(sender, changes, rejected, problems)
        except BaseException:
            table.rollback()
            raise
        table.commit()
        return out

    def _apply(self, sender: int, changes: Changes, rejected: list[tuple[ModelId, int]],
               problems: list[Problem]) -> Changes:
        models = self._table.models
        writes, life = self._writes, self._life
        out: list[Any] | None = None
        for ri, run in enumerate(changes):
            mid = run[0]
            for i in range(1, len(run), 2):
                key = run[i]
                value = run[i + 1]
                if key == CREATE:
                    result = life.create(sender, mid, value, problems, run, i)
                else:
                    m = models.get(mid)
                    if m is None:
                        result = self._table.missing(mid, problems)
                    elif key > 0:
                        result = writes.write(sender, m, mid, key, value, problems)
                    elif key == OWNER:
                        result = writes.claim(sender, m, mid, value, problems)
                    else:
                        result = life.destroy(sender, m, mid, value, problems)
                if result is REJECTED:
                    rejected.append((mid, key))
                    if out is None:
                        out = _prefix(changes, ri, run, i)
                elif out is not None:
                    _append(out, mid, key, result)
                elif result is not value:
                    out = _prefix(changes, ri, run, i)
                    _append(out, mid, key, result)
        return changes if out is None else out

    # ------------------------------------------------------------------ persistence

    def restore(self, saved: SavedRoom, members: set[int] | frozenset[int] = frozenset()
                ) -> None:
        """Fill this empty store from a checkpoint: the saved schema first, then the models
        in record order (parents before children) with their values re-checked against the
        schema (:func:`~rtecs_server.restore.load_models`), collection keys and the created
        counters restored. A declared child missing from the records is made. Models owned
        by one of ``members`` (a live checkpoint's sessions) keep their owner; any other
        owner is gone, as if it had left: its lifetime flags apply (its
        destroy_when_owner_leaves models are not restored, the rest become unowned). Raises
        :class:`~rtecs_server.errors.CorruptRoomError` if the checkpoint contradicts itself
        (its schema is invalid, a record names an unknown type or property, a value has the
        wrong type, a child comes before its parent…); the store is then unusable."""
        table = self._table
        if table.models:
            raise RuntimeError("restore() needs an empty store")
        try:
            self.schema.merge(saved.schema, saved.root_type)
        except SchemaError as exc:
            raise CorruptRoomError(saved.name, f"its schema is invalid: {exc}") from None
        loaded = load_models(self.schema, saved)
        table.load(loaded.models, loaded.created, loaded.size)
        models = table.models
        for mid, m in list(models.items()):
            for pid, child_type in m.type.children:
                cid = child_id(mid, pid)
                if cid not in models:
                    table.make(cid, child_type, m, 0)
        gone: set[int] = set()
        if saved.sessions:
            for rec in saved.models:
                owner = rec.owner
                if owner != -1 and (owned := models.get(rec.model_id)) is not None:
                    table.set_owner(rec.model_id, owned, owner)
                    if owner not in members:
                        gone.add(owner)
        table.commit()
        for owner in sorted(gone):
            self.release(owner, room_empty=False)
        table.persistent_changes = 0
        table.commit()


def _child_name(schema: SchemaSpec, type_name: str, pid: int) -> str:
    """The child type a hello's schema declares at ``type_name``'s property ``pid``."""
    return schema[type_name][pid][1][6:]  # tag "model:<Type>"
