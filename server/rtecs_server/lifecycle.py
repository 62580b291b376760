"""Creates, collection elements and destroys of client updates, and the server's own lifetime
changes when a client leaves (DESIGN §3), applied to a :class:`~rtecs_server.table.ModelTable`
and noted in its undo log.

Decisions where the design is silent:

- Dynamic models are top level unless created under a parent: their parent is not the room
  model, so owning the room model does not cover them. Declared children (``(parent, pid,
  …)`` ids) have flags 0 and cannot be destroyed.
- A create of an id that is not the sender's next one is *bad input* (a
  :class:`~rtecs_server.table.Problem`). "Existed" is judged by a per-creator high-water mark
  of created counters, so creates must arrive in increasing counter order (the client
  allocates them that way). A create refused for any reason other than a foreign or reused id
  — a plugin's refusal too — still uses up its counter, so the changes that follow it in the
  update are quiet rejections: a refused create is refused whole.
- Collections (see :mod:`rtecs.protocol`): under a model whose type names a collection only
  creates of its element type are accepted, keyed as its kind requires; anything else is bad
  input. Each parent keeps key → element id. A keyed create replaces — destroys, in the same
  change — the element at its key; it is refused (quietly: a normal race) when it carries an
  ``expected`` element id that is not the one at the key, or when the element it would
  replace is owned by another client (replacing is destroying). A transactional remove is an
  ordinary destroy of the element: refused quietly if the element is already gone.
- Plugins (:mod:`rtecs_server.hooks`) are asked, in this order: ``on_write`` for the
  collection operation (adding or removing an element), ``on_create`` with the create's
  initial values, ``on_destroy`` for a destroy and for the element a keyed create replaces.
  :meth:`Lifecycle.release` asks nobody: lifetime changes cannot be refused.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Final

from rtecs.protocol import (
    COLLECTION_KINDS,
    DESTROY,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    ErrorCode,
    ModelId,
    Value,
    coerce_value,
    split_collection_type,
    split_dynamic_model_id,
)
from rtecs_server.hooks import PluginSet
from rtecs_server.records import CollectionChange, Create
from rtecs_server.schema import ModelType, RoomSchema
from rtecs_server.table import REJECTED, ModelTable, Problem, bad
from rtecs_server.tree import MODEL_OVERHEAD, Model

__all__ = ["Lifecycle"]

#: What a collection type accepts under it: (element type name, key type or None).
_NOT_A_COLLECTION: Final = ("", None)


class Lifecycle:
    """Creates and destroys of one room's table, with its plugins."""

    __slots__ = ("_collections", "hooks", "schema", "table")

    def __init__(self, table: ModelTable, schema: RoomSchema, hooks: PluginSet) -> None:
        self.table = table
        self.schema = schema
        self.hooks = hooks
        self._collections: dict[str, tuple[str, type | None]] = {}  # type name → what it takes

    def create(self, sender: int, mid: ModelId, value: Any, problems: list[Problem],
               run: Sequence[Any], i: int) -> Any:
        """Create model ``mid`` as ``value`` (``[type_name, flags, parent?, key?,
        expected?]``) for ``sender``; ``run[i]`` is the create, the changes after it are
        its initial values. The value, or :data:`~rtecs_server.table.REJECTED`."""
        table = self.table
        if type(mid) is not int or mid == 0:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"model {mid!r} cannot be created: only dynamic models can")
        creator, counter = split_dynamic_model_id(mid)
        if creator != sender or counter < 1:
            return bad(problems, ErrorCode.BAD_UPDATE, f"client {sender} cannot create model "
                                                       f"{mid}: the id is not one of its own")
        if counter <= table.created.get(sender, 0):
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"model id {mid} (counter {counter}) was already used by client "
                       f"{sender}: ids are never reused")
        table.use_counter(sender, counter)
        type_name, flags = value[0], value[1]
        mtype = self.schema.types.get(type_name)
        if mtype is None:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"model {mid} cannot be created: unknown type {type_name!r}")
        parent: Model | None = None
        parent_id: ModelId | None = None
        replaced: ModelId | None = None
        key: int | str | None = None
        if len(value) >= 3:
            parent_id = value[2]
            parent = table.models.get(parent_id)
            if parent is None:
                return table.missing(parent_id, problems)
            problem = self._check_element(parent, mid, value)
            if problem:
                return bad(problems, ErrorCode.BAD_UPDATE, problem)
            if parent.held_by_other(sender):  # creating under a parent is writing to it
                return REJECTED
            if len(value) >= 4:
                key = value[3]
                replaced = parent.keyed.get(key) if parent.keyed else None
                if len(value) == 5 and value[4] != replaced:
                    return REJECTED  # another client changed the key first
                if replaced is not None:
                    owner = table.models[replaced].owner
                    if owner != -1 and owner != sender:
                        return REJECTED  # replacing is destroying it
        depth = (parent.depth if parent is not None else 0) + mtype.subtree_depth
        if depth > table.limits.max_depth:
            return bad(problems, ErrorCode.OVER_LIMIT,
                       f"model {mid} would nest {depth} levels deep, over the limit of "
                       f"{table.limits.max_depth}: not created")
        cost = mtype.subtree_models * MODEL_OVERHEAD
        if table.over_limit(cost):
            return bad(problems, ErrorCode.OVER_LIMIT,
                       f"the room's datastore is over its limit of "
                       f"{table.limits.max_datastore_bytes} bytes: model {mid} not created")
        if self.hooks.any and not self._ask_create(mid, mtype, flags, parent, parent_id, key,
                                               replaced, run, i):
            return REJECTED
        if replaced is not None:
            old = table.models[replaced]
            if table.persists(old):
                table.persistent_changes += 1
            table.destroy(replaced, old)
        m = table.make(mid, mtype, parent, flags)
        if parent is not None:
            assert parent_id is not None
            table.adopt(parent, mid, m, parent_id, key)
        if table.persists(m):
            table.persistent_changes += 1
        return value

    def _ask_create(self, mid: ModelId, mtype: ModelType, flags: int, parent: Model | None,
                    parent_id: ModelId | None, key: int | str | None,
                    replaced: ModelId | None, run: Sequence[Any], i: int) -> bool:
        hooks = self.hooks
        if parent is not None and parent_id is not None and self._takes(parent.type)[0]:
            op = CollectionChange(parent_id, parent.type.name, "add", mid, mtype.name, key,
                                  replaced)
            if not hooks.collection(op):
                return False
        values: dict[int, Value] = {}
        for j in range(i + 2, len(run), 2):
            pid = run[j]
            if pid == OWNER:
                continue
            if pid < OWNER:
                break  # a destroy or another create: the initial values end
            prop = mtype.props.get(pid)
            if prop is not None and prop.child is None:
                with suppress(TypeError):  # a value of the wrong type is rejected on its own
                    values[pid] = coerce_value(prop.tag, run[j + 1])
        if not hooks.create(Create(mid, mtype.name, flags, parent_id, key, values)):
            return False
        if replaced is not None:
            return hooks.destroy(replaced, self.table.models[replaced].type.name)
        return True

    def _takes(self, mtype: ModelType) -> tuple[str, type | None]:
        """What a model of ``mtype`` takes as elements: ("", None) if it is no collection."""
        name = mtype.name
        takes = self._collections.get(name)
        if takes is None:
            split = split_collection_type(name)
            takes = self._collections[name] = _NOT_A_COLLECTION if split is None else (
                split[1], COLLECTION_KINDS[split[0]])
        return takes

    def _check_element(self, parent: Model, mid: ModelId, value: Any) -> str | None:
        """What is wrong with creating ``value`` under ``parent``, as a collection element
        (None: nothing)."""
        name = parent.type.name
        element, key_type = self._takes(parent.type)
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

    def destroy(self, sender: int, m: Model, mid: ModelId, value: object,
                problems: list[Problem]) -> Any:
        """Destroy model ``m`` (id ``mid``) and everything under it for ``sender``: the
        value (nil), or :data:`~rtecs_server.table.REJECTED`."""
        if type(mid) is not int or mid == 0:
            return bad(problems, ErrorCode.BAD_UPDATE, f"model {mid!r} cannot be destroyed: "
                                                       f"only dynamic models can")
        if m.held_by_other(sender):
            return REJECTED
        if self.hooks.any:
            parent = m.parent
            if parent is not None and m.parent_id is not None and self._takes(parent.type)[0]:
                op = CollectionChange(m.parent_id, parent.type.name, "remove", mid,
                                      m.type.name, m.key, None)
                if not self.hooks.collection(op):
                    return REJECTED
            if not self.hooks.destroy(mid, m.type.name):
                return REJECTED
        table = self.table
        if table.persists(m):
            table.persistent_changes += 1
        table.destroy(mid, m)
        return value

    def release(self, client_id: int, room_empty: bool) -> list[list[Any]]:
        """Lifetime changes after ``client_id`` left, applied and returned as runs: destroys
        of its models flagged destroy_when_owner_leaves, owner -1 for its other models
        (children included), then, if ``room_empty``, destroys of every top-level model
        flagged destroy_when_last_client_leaves. No plugin is asked."""
        table = self.table
        changes: list[list[Any]] = []
        owned = table.take_owned(client_id)
        models = table.models
        for mid in owned:
            m = models.get(mid)
            if m is not None and m.flags & DESTROY_WHEN_OWNER_LEAVES:
                table.destroy(mid, m)  # owned: never in a checkpoint
                changes.append([mid, DESTROY, None])
        for mid in owned:
            m = models.get(mid)
            if m is not None:  # not flagged destroy_when_owner_leaves: owners aren't saved
                table.undo.set_attr(m, "owner", -1)
                changes.append([mid, OWNER, -1])
        if room_empty:
            doomed = [(mid, m) for mid, m in models.items()
                      if m.flags & DESTROY_WHEN_LAST_CLIENT_LEAVES and type(mid) is int]
            for mid, m in doomed:
                if mid in models:  # not already gone with a destroyed parent
                    table.destroy(mid, m)
                    changes.append([mid, DESTROY, None])
        return changes

