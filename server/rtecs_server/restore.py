"""Loading a checkpoint's models (:class:`~rtecs_server.records.SavedRoom`) for an empty
:class:`~rtecs_server.store.ModelStore`: the models in record order with their parents,
collection keys and sizes, every value re-checked against the room's schema. Returns what it
built (:class:`LoadedModels`); :meth:`ModelStore.restore
<rtecs_server.store.ModelStore.restore>` takes it over. Kept apart from the live write path.
"""

from __future__ import annotations

from typing import NamedTuple

from rtecs.gcpause import paused_gc
from rtecs.protocol import (
    COLLECTION_KINDS,
    ModelId,
    SnapshotRecord,
    coerce_value,
    split_collection_type,
    split_dynamic_model_id,
)
from rtecs_server.errors import CorruptRoomError
from rtecs_server.records import SavedRoom
from rtecs_server.schema import Prop, RoomSchema
from rtecs_server.tree import MODEL_OVERHEAD, TAG_TYPES, Model, value_size

__all__ = ["LoadedModels", "load_models"]


class LoadedModels(NamedTuple):
    """The models of a checkpoint, as :func:`load_models` built them."""

    #: Every stored model by id, in record order (declared children not stored are absent).
    models: dict[ModelId, Model]
    #: The highest dynamic-model counter each creator used: the saved counters and the ids
    #: of the stored models, whichever is higher.
    created: dict[int, int]
    #: The estimated size of the models built (see :func:`~rtecs_server.tree.value_size`).
    size: int


def load_models(schema: RoomSchema, saved: SavedRoom) -> LoadedModels:
    """The models of ``saved`` against ``schema`` (the room's, with the saved schema merged):
    every model unowned, parents before children. Raises
    :class:`~rtecs_server.errors.CorruptRoomError` if the checkpoint contradicts itself (a
    record names an unknown type or property, a value has the wrong type, a child comes
    before its parent…)."""
    # one object per model and per props dict, none cyclic (apart from parent links the GC
    # need not look at now)
    with paused_gc():
        loaded = _load(schema, saved)
    created = loaded.created
    for creator, counter in saved.created.items():
        if counter > created.get(creator, 0):
            created[creator] = counter
    return loaded


def _load(schema: RoomSchema, saved: SavedRoom) -> LoadedModels:
    name = saved.name
    types = schema.types
    models: dict[ModelId, Model] = {}
    created: dict[int, int] = {}
    tables: dict[str, dict[int, tuple[Prop, type | None, bool]]] = {}
    size = 0
    for rec in saved.models:
        mid, tname, flags, props = rec.model_id, rec.type_name, rec.flags, rec.props
        what = f"model {mid!r}"
        if mid in models:
            raise CorruptRoomError(name, f"{what} is stored twice")
        mtype = types.get(tname)
        if mtype is None:
            raise CorruptRoomError(name, f"{what} is of type {tname!r}, not in its schema")
        if type(flags) is not int or not 0 <= flags <= 7:
            raise CorruptRoomError(name, f"{what} has invalid flags {flags!r}")
        parent: Model | None = None
        if (type(mid) is tuple or mid == 0) and (rec.parent is not None or rec.key is not None):
            raise CorruptRoomError(name, f"{what} is a declared model or the room model but "
                                         f"names a parent or a key")
        if type(mid) is tuple:
            parent = models.get(mid[0] if len(mid) == 2 else mid[:-1])
            prop = parent.type.props.get(mid[-1]) if parent is not None else None
            if prop is None or prop.child != tname:
                raise CorruptRoomError(name, f"{what} is not a declared {tname} child of "
                                             f"a model stored before it")
        elif mid == 0:
            if tname != schema.root_type:
                raise CorruptRoomError(name, f"the room model is a {tname}, its root "
                                             f"type is {schema.root_type}")
        else:
            creator, counter = split_dynamic_model_id(mid)
            if creator < 1 or counter < 1:
                raise CorruptRoomError(name, f"{what} is not a dynamic model id")
            if counter > created.get(creator, 0):
                created[creator] = counter
            if rec.parent is not None:
                parent = models.get(rec.parent)
                if parent is None:
                    raise CorruptRoomError(name, f"{what} is stored before its parent "
                                                 f"{rec.parent!r}, or without it")
            _check_link(name, what, rec, parent)
        m = Model(mtype, parent, flags)
        values = m.props
        table = tables.get(tname)
        if table is None:
            table = tables[tname] = {
                pid: (prop, TAG_TYPES.get(prop.tag.rstrip("?")), prop.tag.endswith("?"))
                for pid, prop in mtype.props.items() if prop.child is None}
        for pid, value in props.items():
            spec = table.get(pid)
            if spec is None:
                raise CorruptRoomError(name, f"{what} has a value for property {pid!r}, "
                                             f"which type {tname} does not have")
            prop, exact, nullable = spec
            if type(value) is exact or (value is None and nullable):
                v = value  # of its type already: as decoded checkpoints hold
            else:
                try:
                    v = coerce_value(prop.tag, value)
                except TypeError as exc:
                    raise CorruptRoomError(name, f"{what}, {tname}.{prop.name}: {exc}"
                                           ) from None
            values[pid] = v
            size += value_size(v)
        m.order = len(models)
        models[mid] = m
        size += MODEL_OVERHEAD
        if parent is not None and type(mid) is int:
            key = rec.key
            if key is not None and parent.keyed is not None and key in parent.keyed:
                raise CorruptRoomError(name, f"{what}: two elements at key {key!r}")
            parent.adopt(mid, m, rec.parent, key)
    if 0 not in models:
        raise CorruptRoomError(name, "it has no room model")
    return LoadedModels(models, created, size)


def _check_link(name: str, what: str, rec: SnapshotRecord, parent: Model | None) -> None:
    """A dynamic model's place: an element of a collection is of its element type and has a
    key exactly when the collection is keyed (of its key type); any other model has none."""
    collection = split_collection_type(parent.type.name) if parent is not None else None
    key = rec.key
    if collection is None:
        if key is not None:
            raise CorruptRoomError(name, f"{what} has a key ({key!r}) but is no element of a "
                                         f"keyed collection")
        return
    kind, element = collection
    if rec.type_name != element:
        raise CorruptRoomError(name, f"{what} is a {rec.type_name} in a collection of "
                                     f"{element}")
    key_type = COLLECTION_KINDS[kind]
    if key_type is None:
        if key is not None:
            raise CorruptRoomError(name, f"{what} has a key ({key!r}) in an unkeyed {kind}")
    elif type(key) is not key_type:
        raise CorruptRoomError(name, f"{what} has key {key!r} in a {kind}, whose keys are "
                                     f"{key_type.__name__}s")
