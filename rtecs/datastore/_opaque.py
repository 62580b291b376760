"""Opaque models: what a client keeps of a model type it has no class for (DESIGN §4b).

A newer client may spawn a type this one does not know, and a stored room may hold one. Such
a model is kept as an :class:`OpaqueModel`: its type name, owner, flags and property values
(by property id) are stored and every change to it is applied, so the datastore still counts
it, ids stay reserved and its known children keep their parent; but it is never shown — no
change streams emit for it and the ECS layer gives it no component. It is not an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rtecs.model import RealtimeModel

__all__ = ["OpaqueModel"]


class OpaqueModel(RealtimeModel, type_name="rtecs.Opaque"):
    """A model of a type this client has no class for (see the module docs).

    ``opaque_type`` is the type name the room gave it; ``values`` its property values by
    property id, as the stream holds them (a property never written is absent).
    """

    opaque: ClassVar[bool] = True

    def __init__(self, opaque_type: str = "") -> None:
        super().__init__()
        self._opaque_type = opaque_type
        self._values: dict[int, Any] = {}

    @property
    def opaque_type(self) -> str:
        """The type name of the model in the room."""
        return self._opaque_type

    @property
    def values(self) -> dict[int, Any]:
        """Property values by id (a live view: do not mutate)."""
        return self._values

    def __repr__(self) -> str:
        return f"OpaqueModel({self._opaque_type!r}, id={self.model_id!r}, {self._values!r})"
