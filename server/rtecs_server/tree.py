"""One room's model records, as the store keeps them: :class:`Model` (its type, owner, flags,
parent, ``{property id: value}`` and collection links), the ids of declared children
(:func:`child_id`), the size estimate (:func:`value_size`, :data:`MODEL_OVERHEAD`) and the one
home of the rule "this model, or a model above it, is owned by another client"
(:meth:`Model.held_by_other`). Used by :mod:`rtecs_server.store` (the write path) and
:mod:`rtecs_server.restore` (loading a checkpoint). Pure: no I/O."""

from __future__ import annotations

from typing import Final

from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    ModelId,
    Value,
)
from rtecs_server.records import SnapshotRecord
from rtecs_server.schema import ModelType

__all__ = ["LIFE", "MODEL_OVERHEAD", "PROP_OVERHEAD", "TAG_TYPES", "Model", "child_id",
           "value_size"]

#: Estimated bytes of one model record, and of one property beside its value.
MODEL_OVERHEAD: Final = 32
PROP_OVERHEAD: Final = 2

#: The Python type of each scalar tag (a restored value of exactly this type is kept as is).
TAG_TYPES: Final[dict[str, type]] = {"bool": bool, "int": int, "float": float, "str": str,
                                     "bytes": bytes}

#: The lifetime flags that keep a model (and everything under it) out of a checkpoint.
LIFE: Final = DESTROY_WHEN_LAST_CLIENT_LEAVES | DESTROY_WHEN_OWNER_LEAVES


def value_size(value: object) -> int:
    """Cheap size estimate of one stored property: str/bytes length (UTF-8 for non-ASCII
    text) or 9 for anything else, plus :data:`PROP_OVERHEAD`."""
    t = type(value)
    if t is str:
        s: str = value  # type: ignore[assignment]
        return PROP_OVERHEAD + (len(s) if s.isascii() else len(s.encode()))
    if t is bytes:
        return PROP_OVERHEAD + len(value)  # type: ignore[arg-type]
    return PROP_OVERHEAD + 9


def child_id(mid: ModelId, pid: int) -> ModelId:
    """The id of the declared child model that property ``pid`` of model ``mid`` holds."""
    return (mid, pid) if type(mid) is int else (*mid, pid)  # type: ignore[misc]


#: Builds a :class:`SnapshotRecord` from its seven fields without the Python-level
#: ``__new__`` a NamedTuple has: a snapshot or a checkpoint makes one per model (~90 ns
#: less each, measured with timeit).
_new_record = tuple.__new__


class Model:
    """One model of a room. ``parent_id`` is set for a dynamic model created under a parent,
    ``kids`` lists the dynamic models under it, ``key`` is its key in a keyed collection and
    ``keyed`` a collection's key → element map. ``order`` is the model's place in its
    store's table (the table lists models in this order; an undone destroy puts them back
    there)."""

    __slots__ = ("depth", "flags", "key", "keyed", "kids", "life", "order", "owner", "parent",
                 "parent_id", "props", "type")

    def __init__(self, mtype: ModelType, parent: Model | None, flags: int) -> None:
        self.type = mtype
        self.owner = -1
        self.flags = flags
        # The lifetime flags of this model and its ancestors, ORed (they never change): 0
        # for the common persistent model, so the checkpoint bookkeeping costs one test.
        self.life: int = (flags | (parent.life if parent is not None else 0)) & LIFE
        self.parent = parent
        #: Its level: 1 for a top-level model, its parent's + 1 below one (the room bounds
        #: it: :attr:`rtecs.protocol.Limits.max_depth`).
        self.depth: int = parent.depth + 1 if parent is not None else 1
        self.props: dict[int, Value] = {}
        self.parent_id: ModelId | None = None   # set for a dynamic model under a parent
        self.kids: dict[ModelId, None] | None = None  # dynamic models under it, in order
        self.key: int | str | None = None       # its key, in a keyed collection
        self.keyed: dict[int | str, ModelId] | None = None  # key → element, for a collection
        self.order = 0

    def record(self, mid: ModelId, props: dict[int, Value]) -> SnapshotRecord:
        """The model as a snapshot lists it, with ``props`` as given."""
        return _new_record(SnapshotRecord, (mid, self.type.name, self.owner, self.flags, props,
                                            self.parent_id, self.key))

    def held_by_other(self, sender: int) -> bool:
        """True if this model or a model above it is owned by a client other than
        ``sender``: then ``sender`` may not write, destroy or create under it."""
        o: Model | None = self
        while o is not None:
            if o.owner != -1 and o.owner != sender:
                return True
            o = o.parent
        return False

    def adopt(self, mid: ModelId, kid: Model, parent_id: ModelId,
              key: int | str | None = None) -> None:
        """Link ``kid`` (id ``mid``), a dynamic model created under this one, with its key
        if this is a keyed collection."""
        kid.parent_id = parent_id
        if self.kids is None:
            self.kids = {}
        self.kids[mid] = None
        if key is not None:
            kid.key = key
            if self.keyed is None:
                self.keyed = {}
            self.keyed[key] = mid
