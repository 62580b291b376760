"""Restoring a saved room into an empty :class:`~rtecs_server.store.ModelStore`: the schema
first, then the models in record order with their parents, collection keys and sizes.
Functions over the store's internals, kept apart from the live write path."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, cast

from rtecs.errors import SchemaError
from rtecs.protocol import Value, coerce_value, split_dynamic_model_id
from rtecs_server.schema import Prop
from rtecs_server.storage import CorruptRoomError, SavedRoom
from rtecs_server.store import _TAG_TYPES, MODEL_OVERHEAD, _child_id, _Model, value_size

if TYPE_CHECKING:
    from rtecs_server.store import ModelStore


def restore(store: ModelStore, saved: SavedRoom) -> None:
    """Fill this empty store from a checkpoint: the saved schema first, then the models
    in record order (parents before children) with their values re-checked against the
    schema, every model unowned, collection keys and the created counters restored. A
    declared child missing from the records is made. Raises
    :class:`~rtecs_server.storage.CorruptRoomError` if the checkpoint contradicts
    itself (its schema is invalid, a record names an unknown type or property, a value
    has the wrong type, a child comes before its parent…); the store is then unusable.
    """
    name = saved.name
    if store._models:
        raise RuntimeError("restore() needs an empty store")
    try:
        store.schema.merge(saved.schema, saved.root_type)
    except SchemaError as exc:
        raise CorruptRoomError(name, f"its schema is invalid: {exc}") from None
    paused = gc.isenabled()  # one object per model and per props dict, none cyclic...
    gc.disable()             # ...apart from parent links the GC need not look at now
    try:
        _restore_models(store, name, saved)
    finally:
        if paused:
            gc.enable()
    created = store._created
    for creator, counter in saved.created.items():
        if counter > created.get(creator, 0):
            created[creator] = counter
    store.persistent_changes = 0

def _restore_models(store: ModelStore, name: str, saved: SavedRoom) -> None:
    types = store.schema.types
    models = store._models
    created = store._created
    tables: dict[str, dict[int, tuple[Prop, type | None, bool]]] = {}
    size = 0
    for rec in saved.models:
        mid, tname, _owner, flags, props = rec[:5]
        what = f"model {mid!r}"
        if mid in models:
            raise CorruptRoomError(name, f"{what} is stored twice")
        mtype = types.get(tname)
        if mtype is None:
            raise CorruptRoomError(name, f"{what} is of type {tname!r}, not in its schema")
        if type(flags) is not int or not 0 <= flags <= 7:
            raise CorruptRoomError(name, f"{what} has invalid flags {flags!r}")
        parent: _Model | None = None
        if type(mid) is tuple:
            parent = models.get(mid[0] if len(mid) == 2 else mid[:-1])
            prop = parent.type.props.get(mid[-1]) if parent is not None else None
            if prop is None or prop.child != tname:
                raise CorruptRoomError(name, f"{what} is not a declared {tname} child of "
                                             f"a model stored before it")
        elif mid == 0:
            if tname != store.schema.root_type:
                raise CorruptRoomError(name, f"the room model is a {tname}, its root "
                                             f"type is {store.schema.root_type}")
        else:
            creator, counter = split_dynamic_model_id(mid)
            if creator < 1 or counter < 1:
                raise CorruptRoomError(name, f"{what} is not a dynamic model id")
            if counter > created.get(creator, 0):
                created[creator] = counter
            if len(rec) > 5:
                parent = models.get(rec[5])
                if parent is None:
                    raise CorruptRoomError(name, f"{what} is stored before its parent "
                                                 f"{rec[5]!r}, or without it")
        m = _Model(mtype, parent, flags)
        values = m.props
        table = tables.get(tname)
        if table is None:
            table = tables[tname] = {
                pid: (prop, _TAG_TYPES.get(prop.tag.rstrip("?")), prop.tag.endswith("?"))
                for pid, prop in mtype.props.items() if prop.child is None}
        for pid, value in props.items():
            spec = table.get(pid)
            if spec is None:
                raise CorruptRoomError(name, f"{what} has a value for property {pid!r}, "
                                             f"which type {tname} does not have")
            prop, exact, nullable = spec
            if type(value) is exact or (value is None and nullable):
                v = cast(Value, value)  # of its type already: as decoded checkpoints hold
            else:
                try:
                    v = coerce_value(prop.tag, value)
                except TypeError as exc:
                    raise CorruptRoomError(name, f"{what}, {tname}.{prop.name}: {exc}"
                                           ) from None
            values[pid] = v
            size += value_size(v)
        models[mid] = m
        size += MODEL_OVERHEAD
        if parent is not None and type(mid) is int:
            m.parent_id = rec[5]
            if parent.kids is None:
                parent.kids = {}
            parent.kids[mid] = None
            if len(rec) > 6:
                key = rec[6]
                if parent.keyed is None:
                    parent.keyed = {}
                if key in parent.keyed:
                    raise CorruptRoomError(name, f"{what}: two elements at key {key!r}")
                m.key = key
                parent.keyed[key] = mid
    if 0 not in models:
        raise CorruptRoomError(name, "it has no room model")
    store.size = size
    for mid, m in list(models.items()):
        for pid, child_type in m.type.children:
            cid = _child_id(mid, pid)
            if cid not in models:
                store._make(cid, child_type, m, 0)
