"""The undo log of one update (DESIGN §5 "internal error"): every mutation the store makes while
it applies an update is noted here first, so that an exception in the room's own code can put
the room back exactly as it was before the update.

Two kinds of entries, both three-tuples noted *before* the change is made:

- ``(dict, key, old)`` — a dict slot about to be set or deleted; ``old`` is the value it
  held, or :data:`ABSENT` if the key was not there. Undone by putting ``old`` back (or
  deleting the key).
- ``(attr, None, old)`` — an attribute about to be set: ``attr`` names the object and the
  attribute, ``old`` is its value.

Undoing runs the entries newest first. A dict whose deleted keys come back has them at its
end; :meth:`UndoLog.undo` reports those dicts so their owner can restore the order it
depends on (the store's model table is ordered parents before children). Noting costs one
tuple and one list append; nothing is copied. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ABSENT", "UndoLog"]


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: The ``old`` value of a dict slot that did not exist.
ABSENT: Final[Any] = _Absent()


class _Attr:
    """An attribute of one object, as an undo entry names it."""

    __slots__ = ("name", "obj")

    def __init__(self, obj: object, name: str) -> None:
        self.obj = obj
        self.name = name


class UndoLog:
    """The mutations of the update being applied, oldest first."""

    __slots__ = ("_entries", "note")

    def __init__(self) -> None:
        self._entries: list[tuple[Any, Any, Any]] = []
        #: ``note((d, key, old))``: :meth:`item` as one builtin call, for the hot write path.
        self.note = self._entries.append

    def __len__(self) -> int:
        return len(self._entries)

    def item(self, d: dict[Any, Any], key: object, old: object) -> None:
        """Note that ``d[key]``, which held ``old`` (:data:`ABSENT`: nothing), is about to
        be set or deleted."""
        self._entries.append((d, key, old))

    def set_item(self, d: dict[Any, Any], key: object, value: object) -> None:
        """``d[key] = value``, noted."""
        self._entries.append((d, key, d.get(key, ABSENT)))
        d[key] = value

    def del_item(self, d: dict[Any, Any], key: object) -> None:
        """``del d[key]`` if it is there, noted."""
        old = d.pop(key, ABSENT)
        if old is not ABSENT:
            self._entries.append((d, key, old))

    def set_attr(self, obj: object, name: str, value: object) -> None:
        """``obj.name = value``, noted."""
        self._entries.append((_Attr(obj, name), None, getattr(obj, name)))
        setattr(obj, name, value)

    def clear(self) -> None:
        """Forget every entry: the update is done (or there was none)."""
        self._entries.clear()

    def undo(self) -> list[dict[Any, Any]]:
        """Undo every entry, newest first, and forget them. Returns the dicts that got
        deleted keys back (at their end), each once."""
        entries = self._entries[:]
        self._entries.clear()
        refilled: dict[int, dict[Any, Any]] = {}
        for target, key, old in reversed(entries):
            if type(target) is _Attr:
                setattr(target.obj, target.name, old)
            elif old is ABSENT:
                target.pop(key, None)
            else:
                if key not in target:
                    refilled[id(target)] = target
                target[key] = old
        return list(refilled.values())
