"""The model types a datastore knows: by wire name, for remote creates and the schema.

A type not passed to the datastore is found by name among the defined
:class:`~rtecs.model.RealtimeModel` subclasses (:func:`rtecs.model.find_model_type`); one
registered here that the room was not told about in the hello is announced by
:meth:`TypeRegistry.take_new` (the client sends it as ``SCHEMA`` before the update that uses
it). Registering a type registers its declared children's types and its collections'
element types too. A type no class is found for is kept as an
:class:`~rtecs.datastore.OpaqueModel` by the datastore, never an error (DESIGN §4b).
"""

from __future__ import annotations

from rtecs.datastore._opaque import OpaqueModel
from rtecs.errors import SchemaError
from rtecs.model import RealtimeModel, children_of, find_model_type, kid_types_of

__all__ = ["Schema", "TypeRegistry"]

#: Each type's properties as the hello carries them: ``{type: {id: (name, tag, reliable)}}``.
Schema = dict[str, dict[int, tuple[str, str, bool]]]


class TypeRegistry:
    """The model classes of one datastore by type name, and which the room was told of."""

    def __init__(self) -> None:
        self._types: dict[str, type[RealtimeModel]] = {}
        self._announced: set[str] = set()  # type names the room was told about

    def find(self, type_name: str) -> type[RealtimeModel] | None:
        """The class of ``type_name``: a registered one, or else the one defined
        :class:`RealtimeModel` subclass of that name (then registered; the room knows it
        already, since it came from the room). None if no class has that name. Raises
        :class:`~rtecs.errors.SchemaError` if two classes share it and neither was
        registered."""
        found = self._types.get(type_name)
        if found is None:
            found = find_model_type(type_name)
            if found is not None:
                known = set(self._types)
                self.register(found)
                self._announced.update(set(self._types) - known)
        return found

    def register(self, model_type: type[RealtimeModel]) -> None:
        """Make a model type (and its child and element types) known."""
        if issubclass(model_type, OpaqueModel):
            raise SchemaError("an opaque model stands for a type this client has no class "
                              "for; it cannot be created here")
        known = self._types.get(model_type.type_name)
        if known is model_type:
            return
        if known is not None:
            raise ValueError(f"two model classes are named {model_type.type_name!r}: "
                             f"{known.__qualname__} and {model_type.__qualname__}")
        self._types[model_type.type_name] = model_type
        for p in children_of(model_type):
            child = p.child_type
            assert child is not None and issubclass(child, RealtimeModel)
            self.register(child)
        for kid_type in kid_types_of(model_type):
            self.register(kid_type)

    def take_new(self) -> Schema | None:
        """The schema of types registered since the room was last told, or None; they count
        as told from now on."""
        new = [name for name in self._types if name not in self._announced]
        if not new:
            return None
        self._announced.update(new)
        return {name: self._types[name].schema() for name in new}

    def schema(self, announce: bool = False) -> Schema:
        """Every known type's properties (``announce``: for a hello, so they all count as
        told to the room)."""
        if announce:
            self._announced = set(self._types)
        return {name: t.schema() for name, t in self._types.items()}
