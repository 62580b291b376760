"""Classes by name, as long as they live: how model types are found by name when a client is
not told them in ``types=`` (DESIGN §4b).

:class:`ClassNames` knows nothing of models: :class:`~rtecs.model.RealtimeModel` adds every
class it makes that is not ``abstract=True`` (under its ``type_name``), and
:func:`~rtecs.model.find_model_type` asks it (:meth:`~ClassNames.find`). The classes are held
weakly: one that was garbage-collected (a model defined in a function or a test) no longer
counts.
"""

from __future__ import annotations

import gc
import weakref
from typing import Generic, TypeVar

from rtecs.errors import SchemaError

__all__ = ["ClassNames"]

C = TypeVar("C", bound=type)


class ClassNames(Generic[C]):
    """Live classes by name (several may share one; :meth:`find` refuses to choose)."""

    __slots__ = ("_named",)

    def __init__(self) -> None:
        self._named: dict[str, weakref.WeakSet[C]] = {}

    def add(self, name: str, cls: C) -> None:
        """Record ``cls`` under ``name`` (for as long as it lives)."""
        self._named.setdefault(name, weakref.WeakSet()).add(cls)

    def find(self, type_name: str) -> C | None:
        """The one live class recorded under ``type_name``, or None if there is none; raise
        :class:`~rtecs.errors.SchemaError` naming them if two or more share it."""
        found = self._named.get(type_name)
        if not found:
            return None
        if len(found) > 1:
            gc.collect()  # classes sit in reference cycles: a dead one may not be freed yet
        if len(found) == 1:
            for only in found:
                return only
        if not found:
            return None
        names = sorted(f"{c.__module__}.{c.__qualname__}" for c in found)  # no strong refs
        more = f" (and {len(names) - 2} more)" if len(names) > 2 else ""
        raise SchemaError(f"two model classes are named {type_name!r}: {names[0]} and "
                          f"{names[1]}{more}; pass the one this client uses in types=")
