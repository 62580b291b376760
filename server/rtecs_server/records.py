"""The records the room core produces and reads: what a plugin sees of a write
(:class:`Change`), of a collection operation (:class:`CollectionChange`) and of a create
(:class:`Create`), a model as a snapshot lists it (:class:`SnapshotRecord`), a room's checkpoint
(:class:`SavedRoom`, with the sessions it holds: :class:`SavedSession`), and
:func:`persistent_models`, the one home of the rule of which models a
checkpoint keeps. Storage encodes these records (:mod:`rtecs_server.codec`); the core never
imports storage. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from rtecs.gcpause import paused_gc
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    ModelId,
    SnapshotRecord,
    Value,
)

__all__ = ["FORMAT_VERSION", "LIVE_FORMAT_VERSION", "Change", "CollectionChange", "Create",
           "SavedRoom", "SavedSession", "Schema", "SnapshotRecord", "persistent_models"]

#: The checkpoint format of a room without sessions (what every room saved before sessions
#: were kept, and every room saved empty); read and written.
FORMAT_VERSION: Final = 1
#: The format of a checkpoint of a live room: format 1 plus its sessions. Read and written.
LIVE_FORMAT_VERSION: Final = 2

#: A room's union schema in the hello's shape: ``{type_name: {prop_id: (name, tag, reliable)}}``.
Schema = dict[str, dict[int, tuple[str, str, bool]]]


class Change(NamedTuple):
    """One property write, as a plugin sees it.

    ``value`` is already coerced to the property's type tag. ``previous`` is the value the
    room holds before this write, or ``None`` when the property was never written (a
    nullable property holding nil looks the same).
    """

    model_id: ModelId  # the model written
    type_name: str     # its type's name (from the schema)
    prop_id: int       # the property's id
    prop_name: str     # the property's name (from the schema)
    value: Value       # the value written, coerced to the property's type
    previous: Value    # the value before this write (None if never written)


class CollectionChange(NamedTuple):
    """One collection operation, as a plugin's ``on_write`` sees it: an element created under
    a collection (``op`` ``"add"``; at ``key`` in a keyed one, where it replaces the element
    ``replaced``, if any) or destroyed (``op`` ``"remove"``; ``key`` is the element's key)."""

    model_id: ModelId         # the collection (a declared child model)
    type_name: str            # its type's name, e.g. "rtecs.Dict<Item>"
    op: str                   # "add" or "remove"
    element_id: ModelId       # the element added or removed
    element_type: str         # the element's type name
    key: int | str | None     # its key (None in a Set or an Array)
    replaced: ModelId | None  # add: the element at that key before, destroyed with it


class Create(NamedTuple):
    """One create, as a plugin's ``on_create`` sees it: the new model's id, type and flags,
    its parent (None: top level) and key in a keyed collection, and the initial values the
    create's run carries after it, coerced to their properties' types (a value that is not
    of its property's type is left out: it is rejected on its own)."""

    model_id: ModelId             # the new dynamic model
    type_name: str                # its type's name
    flags: int                    # its lifetime and takeover flags
    parent_id: ModelId | None     # the model it is created under (None: top level)
    key: int | str | None         # its key in a keyed collection, else None
    values: dict[int, Value]      # property id → initial value


class SavedSession(NamedTuple):
    """One session of a live room's checkpoint (DESIGN §8): enough to resume it after the
    room is loaded again, by this server process or another — never the secret itself."""

    session_id: bytes           # 16 random bytes
    secret_hash: bytes          # SHA-256 of its current resume secret
    client_id: int              # its member
    epoch: int                  # the epoch its updates are numbered in
    last_applied: int           # the seq of its last update applied in that epoch
    prior_epoch: int            # the epoch before its last resync (0: none)
    prior_applied: int          # the last update applied in that one
    user_id: str | None         # who its join token named
    claims: Mapping[str, Any]   # and what it claimed


@dataclass(slots=True)
class SavedRoom:
    """One room's persistent state.

    ``schema`` is the room's union schema in the hello's shape, ``{type_name: {prop_id:
    (name, tag, reliable)}}``. ``next_client_id`` is the id the room's next joiner gets, and
    ``created`` the highest dynamic-model counter each client id has used (``{client_id:
    counter}``) so ids are never reused after a reload. ``models`` are the persistent model
    records exactly as in a WELCOME snapshot (:class:`~rtecs.protocol.SnapshotRecord`:
    model id, type name, owner id, flags, props, parent id or None, key or None), parents
    before children; model ids are ints or tuples of
    ints, ``props`` maps property id → bool/int/float/str/bytes/None, a collection key is an
    int or a string. :func:`persistent_models` picks them out of a live room's snapshot.

    ``sessions`` are the room's sessions when it was saved with members (a *live*
    checkpoint, format :data:`LIVE_FORMAT_VERSION`): then ``models`` are every model as it
    stood, owners and all, and loading it gives the room back with those members, each
    waiting for its client to resume (DESIGN §8). Without sessions ``models`` are the
    persistent ones only (format :data:`FORMAT_VERSION`).

    ``format``, ``saved_at`` (wall time) and ``version`` (1, 2, 3… per save of this room) are
    filled in by :meth:`Storage.load`; :meth:`Storage.save` ignores what the caller put there.
    """

    name: str                     # the room's name
    root_type: str                # the type name of its room model
    schema: Schema                # its union schema (see above)
    next_client_id: int           # the id its next joiner gets
    created: dict[int, int]       # client id → the highest dynamic-model counter it used
    models: list[SnapshotRecord]  # the persistent models, parents before children
    format: int = FORMAT_VERSION  # the checkpoint format it was read from
    saved_at: float = 0.0         # when it was saved (wall-clock seconds)
    version: int = 0              # its checkpoint number: 1, 2, 3… per save of this room
    sessions: list[SavedSession] = field(default_factory=list)  # a live checkpoint's



def persistent_models(records: Iterable[SnapshotRecord]) -> list[SnapshotRecord]:
    """The records of a room's snapshot (parents before children) as they would stand once
    every client had left — what a checkpoint of a live room should hold, so that loading it
    after a crash gives what a clean shutdown would have saved:

    - models flagged ``DESTROY_WHEN_LAST_CLIENT_LEAVES``, and models flagged
      ``DESTROY_WHEN_OWNER_LEAVES`` that have an owner, are left out with everything under
      them (their declared children, and dynamic models created under them, recursively);
    - every other model is kept, unowned (owner -1): its owner's session is over.

    ``props`` dicts are shared with ``records``, not copied (the result is meant to be
    encoded at once). The room model (id 0) is always kept.
    """
    out: list[SnapshotRecord] = []
    append = out.append
    dropped: set[Any] = set()
    gone = DESTROY_WHEN_LAST_CLIENT_LEAVES
    doomed = DESTROY_WHEN_LAST_CLIENT_LEAVES | DESTROY_WHEN_OWNER_LEAVES
    with paused_gc():  # up to one new tuple per record, none cyclic: see decode_room
        for rec in records:
            mid = rec.model_id
            if dropped:
                if type(mid) is tuple:
                    parent = mid[0] if len(mid) == 2 else mid[:-1]
                    if parent in dropped:
                        dropped.add(mid)
                        continue
                elif rec.parent is not None and rec.parent in dropped:
                    dropped.add(mid)
                    continue
            flags, owner = rec.flags, rec.owner
            if flags & doomed and mid != 0 and (flags & gone or owner != -1):
                dropped.add(mid)
                continue
            append(rec if owner == -1 else
                   SnapshotRecord(mid, rec.type_name, -1, flags, rec.props, rec.parent,
                                  rec.key))
    return out
