"""The model table of one room: its models by id and the bookkeeping beside them (who owns
what, the created counters, the size estimate, the checkpoint counter), and the structural
changes the write path and the lifecycle make to it — making a model with its declared
children, linking a dynamic model under its parent, changing an owner, destroying a subtree.

Every change goes through the table's :class:`~rtecs_server.undo.UndoLog` while an update is
applied (:meth:`ModelTable.begin` … :meth:`ModelTable.commit`, or :meth:`ModelTable.rollback`
to undo it all). Trees are walked with explicit stacks, never recursion: a chain of nested
models is as deep as clients make it.

Also the answers a change's checks give: :data:`REJECTED` and :class:`Problem` (bad input,
reported to the sender), shared by :mod:`rtecs_server.writes` and
:mod:`rtecs_server.lifecycle`. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    ErrorCode,
    Limits,
    ModelId,
    split_dynamic_model_id,
)
from rtecs_server.schema import ModelType
from rtecs_server.tree import MODEL_OVERHEAD, Model, child_id, value_size
from rtecs_server.undo import ABSENT, UndoLog

__all__ = ["MAX_PROBLEMS", "REJECTED", "ModelTable", "Problem", "bad"]

#: Problems reported per update at most.
MAX_PROBLEMS: Final = 8

#: What a change's check answers when the change is refused.
REJECTED: Final[Any] = object()


class Problem(NamedTuple):
    """Bad input found in an update; report it to the sender as ``ERROR code message``."""

    code: ErrorCode  # the ERROR code to send
    message: str     # what was wrong, for the client's developer


def bad(problems: list[Problem], code: ErrorCode, message: str) -> Any:
    """Note a problem (up to :data:`MAX_PROBLEMS`) and answer :data:`REJECTED`."""
    if len(problems) < MAX_PROBLEMS:
        problems.append(Problem(code, message))
    return REJECTED


class ModelTable:
    """The models of one room, keyed by model id (the room model is id 0), in the order they
    were made: parents before children."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.models: dict[ModelId, Model] = {}
        #: owner → its models, in the order it got them
        self.owned: dict[int, dict[ModelId, None]] = {}
        #: creator → the highest dynamic-model counter it used
        self.created: dict[int, int] = {}
        #: Estimated size in bytes (see :func:`~rtecs_server.tree.value_size`).
        self.size = 0
        #: Grows with every change that alters what a checkpoint would hold.
        self.persistent_changes = 0
        #: The mutations of the update being applied.
        self.undo = UndoLog()
        self._next_order = 0
        self._before = (0, 0)

    # ------------------------------------------------------------------ transactions

    def begin(self) -> None:
        """Start noting changes: what follows can be undone with :meth:`rollback`."""
        self.undo.clear()
        self._before = (self.size, self.persistent_changes)

    def commit(self) -> None:
        """Keep every change since :meth:`begin`."""
        self.undo.clear()

    def rollback(self) -> None:
        """Undo every change since :meth:`begin`: the table is as it was then, models in
        the same order."""
        refilled = self.undo.undo()
        self.size, self.persistent_changes = self._before
        models = self.models
        if any(d is models for d in refilled):
            ordered = sorted(models.items(), key=lambda item: item[1].order)
            models.clear()
            models.update(ordered)

    def load(self, models: dict[ModelId, Model], created: dict[int, int], size: int) -> None:
        """Take over the models of a checkpoint (see :mod:`rtecs_server.restore`), their
        ``order`` counted from 0."""
        self.models = models
        self.created = created
        self.size = size
        self._next_order = len(models)
        self.undo.clear()

    # ------------------------------------------------------------------ rules

    @staticmethod
    def persists(m: Model) -> bool:
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

    def missing(self, mid: ModelId, problems: list[Problem]) -> Any:
        """The answer to a change of a model that is not there: a quiet rejection if it
        existed and was destroyed (a normal race), else bad input."""
        top = mid if type(mid) is int else mid[0]  # type: ignore[index]
        if top != 0:
            creator, counter = split_dynamic_model_id(top)
            if counter >= 1 and counter <= self.created.get(creator, 0):
                if top not in self.models:
                    return REJECTED
            else:
                return bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} was never created")
        return bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} does not exist: "
                                                   f"{top!r} has no such child model")

    def over_limit(self, growth: int) -> bool:
        """True if growing by ``growth`` bytes would pass the datastore limit."""
        return growth > 0 and self.size + growth > self.limits.max_datastore_bytes

    # ------------------------------------------------------------------ changes

    def use_counter(self, creator: int, counter: int) -> None:
        """``creator`` has used its dynamic-model counter up to ``counter``."""
        self.undo.set_item(self.created, creator, counter)

    def set_owner(self, mid: ModelId, m: Model, owner: int) -> None:
        """Give model ``mid`` to ``owner`` (-1: nobody)."""
        undo = self.undo
        was = m.owner
        if was != -1 and (theirs := self.owned.get(was)) is not None:
            undo.del_item(theirs, mid)
        if owner != -1:
            mine = self.owned.get(owner)
            if mine is None:
                mine = {}
                undo.set_item(self.owned, owner, mine)
            undo.set_item(mine, mid, None)
        undo.set_attr(m, "owner", owner)

    def take_owned(self, owner: int) -> dict[ModelId, None]:
        """Forget what ``owner`` owns and return it (the models keep their owner field)."""
        owned = self.owned.get(owner)
        if owned is None:
            return {}
        self.undo.del_item(self.owned, owner)
        return owned

    def make(self, mid: ModelId, mtype: ModelType, parent: Model | None, flags: int) -> Model:
        """Make model ``mid`` and its declared children (flags 0), parents first."""
        undo, models = self.undo, self.models
        first: Model | None = None
        todo: list[tuple[ModelId, ModelType, Model | None, int]] = [(mid, mtype, parent, flags)]
        while todo:
            mid, mtype, parent, flags = todo.pop()
            m = Model(mtype, parent, flags)
            m.order = self._next_order
            self._next_order += 1
            undo.item(models, mid, ABSENT)
            models[mid] = m
            self.size += MODEL_OVERHEAD
            if first is None:
                first = m
            children = [(child_id(mid, pid), child_type, m, 0)
                        for pid, child_type in mtype.children]
            todo.extend(reversed(children))
        assert first is not None
        return first

    def adopt(self, parent: Model, mid: ModelId, kid: Model, parent_id: ModelId,
              key: int | str | None) -> None:
        """Link the new dynamic model ``kid`` (id ``mid``) under ``parent`` (id
        ``parent_id``), at ``key`` if it is an element of a keyed collection."""
        undo = self.undo
        kid.parent_id = parent_id  # a new model: undoing drops it whole
        kids = parent.kids
        if kids is None:
            kids = {}
            undo.set_attr(parent, "kids", kids)
        undo.set_item(kids, mid, None)
        if key is not None:
            kid.key = key
            keyed = parent.keyed
            if keyed is None:
                keyed = {}
                undo.set_attr(parent, "keyed", keyed)
            undo.set_item(keyed, key, mid)

    def destroy(self, mid: ModelId, m: Model) -> None:
        """Destroy model ``mid`` and everything under it (its declared children and the
        dynamic models created under it, recursively), unlinking it from its parent. The
        destroyed :class:`Model` objects are left as they were (nothing reads them again)."""
        undo, models, owned = self.undo, self.models, self.owned
        parent = m.parent
        if parent is not None:
            if m.parent_id is not None and parent.kids:
                undo.del_item(parent.kids, mid)
            if m.key is not None and parent.keyed is not None and parent.keyed.get(
                    m.key) == mid:
                undo.del_item(parent.keyed, m.key)
        todo: list[tuple[ModelId, Model]] = [(mid, m)]
        while todo:
            mid, m = todo.pop()
            undo.item(models, mid, m)
            del models[mid]
            size = MODEL_OVERHEAD
            for v in m.props.values():
                size += value_size(v)
            self.size -= size
            if m.owner != -1 and (theirs := owned.get(m.owner)) is not None:
                undo.del_item(theirs, mid)
            # next: the declared children, then the dynamic models under it, each with
            # everything under it (the order of a recursive walk)
            under = [(cid, child) for pid, _ in m.type.children
                     if (child := models.get(cid := child_id(mid, pid))) is not None]
            if m.kids:
                under += [(kid_id, kid) for kid_id in m.kids
                          if (kid := models.get(kid_id)) is not None]
            todo.extend(reversed(under))
