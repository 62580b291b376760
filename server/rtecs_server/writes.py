"""Property writes and ownership changes of client updates (DESIGN §3, §4b): each checked where
it falls — the property is in the schema and not a child model, the value has its declared
type, the sender may write the model (:meth:`~rtecs_server.tree.Model.held_by_other`), the
plugins accept it, the datastore stays under its limit — then applied to the
:class:`~rtecs_server.table.ModelTable`, noted in its undo log.

Owner changes: ``owner = sender`` is allowed when no ancestor is owned by another client and
the model is unowned, already the sender's, or another's without
``PREVENT_OWNERSHIP_TAKEOVER``; ``owner = -1`` when no ancestor is owned by another and the
model is unowned or the sender's; any other value is rejected. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    F32,
    PREVENT_OWNERSHIP_TAKEOVER,
    ErrorCode,
    ModelId,
    coerce_value,
)
from rtecs_server.hooks import REFUSED, PluginSet
from rtecs_server.records import Change
from rtecs_server.table import REJECTED, ModelTable, Problem, bad
from rtecs_server.tree import Model, value_size
from rtecs_server.undo import ABSENT

__all__ = ["Writes"]


class Writes:
    """The write path of one room's table, with its plugins."""

    __slots__ = ("_max_bytes", "_note", "hooks", "table")

    def __init__(self, table: ModelTable, hooks: PluginSet) -> None:
        self.table = table
        self.hooks = hooks
        self._note = table.undo.note  # the hot path's undo entry, one builtin call
        self._max_bytes = table.limits.max_datastore_bytes

    def write(self, sender: int, m: Model, mid: ModelId, pid: int, value: object,
              problems: list[Problem]) -> Any:
        """Property ``pid`` of model ``m`` (id ``mid``) := ``value``, from ``sender``: the
        value applied (maybe transformed by a plugin), or :data:`REJECTED`."""
        mtype = m.type
        prop = mtype.props.get(pid)
        if prop is None:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"{mtype.name} has no property {pid} (model {mid!r})")
        if prop.child is not None:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"{mtype.name}.{prop.name} (property {pid}) is a child model and "
                       f"cannot be assigned (model {mid!r})")
        try:
            new = coerce_value(prop.tag, value)
        except TypeError as exc:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"{mtype.name}.{prop.name} (model {mid!r}, property {pid}): {exc}")
        if m.held_by_other(sender):
            return REJECTED
        props = m.props
        if self.hooks.any_writes:
            result = self.hooks.write(
                Change(mid, mtype.name, pid, prop.name, new, props.get(pid)), prop.tag)
            if result is REFUSED:
                return REJECTED
            new = result  # type: ignore[assignment]  # a value: write() coerced it
        table = self.table
        old = props.get(pid, ABSENT)
        delta = value_size(new) - (0 if old is ABSENT else value_size(old))
        if delta > 0 and table.size + delta > self._max_bytes:
            return bad(problems, ErrorCode.OVER_LIMIT,
                       f"the room's datastore is over its limit of "
                       f"{table.limits.max_datastore_bytes} bytes: write to "
                       f"{mtype.name}.{prop.name} of model {mid!r} refused")
        table.size += delta
        if prop.f32 and new is not None:
            new = F32(new)  # relayed (and saved) as a 4-byte float
        self._note((props, pid, old))
        props[pid] = new
        if not m.life or table.persists(m):
            table.persistent_changes += 1
        return new

    def claim(self, sender: int, m: Model, mid: ModelId, value: object,
              problems: list[Problem]) -> Any:
        """The owner of model ``m`` (id ``mid``) := ``value``, from ``sender``: the value,
        or :data:`REJECTED`."""
        if type(value) is not int:
            return bad(problems, ErrorCode.BAD_UPDATE,
                       f"owner of model {mid!r} must be an int, got {value!r}")
        if m.parent is not None and m.parent.held_by_other(sender):
            return REJECTED
        owner = m.owner
        if value == sender:
            if owner != -1 and owner != sender and m.flags & PREVENT_OWNERSHIP_TAKEOVER:
                return REJECTED
        elif value != -1 or (owner != -1 and owner != sender):
            return REJECTED
        if self.hooks.any_owners and not self.hooks.owner(mid, value):
            return REJECTED
        if owner != value:
            table = self.table
            table.set_owner(mid, m, value)
            if m.flags & DESTROY_WHEN_OWNER_LEAVES and not m.life & DESTROY_WHEN_LAST_CLIENT_LEAVES:
                # Owners are not saved, but an owned destroy_when_owner_leaves model is left
                # out of a checkpoint with its subtree.
                table.persistent_changes += 1
        return value
