"""Declaring synchronised properties: :func:`prop`, the :class:`Prop` descriptor it makes,
and :func:`declare`, which lays out a model class's properties (ids, tags, slots, defaults).

A model class declares its properties with :func:`prop` and a type annotation::

    class Player(RealtimeModel):
        name: str = prop(1, default="")
        x: float = prop(2, reliable=False)
        pos: Position = prop(3)          # a declared child model, created with its parent

Reading ``player.name`` is the descriptor's ``__get__``: the value at the property's slot of
the model's value list. Writing it is the model class's own ``__setattr__`` (see
:mod:`rtecs.model._model`: the hot path, without a call of the descriptor); :meth:`Prop.coerce`
and the ``refuse_*`` methods are the checks it falls back on (:mod:`rtecs.model._values`
holds their rules). Besides declared properties, the owner id is a property (id 0, slot 0,
read-only), and the datastore marks a model's creation and destruction in its dirty set
with two more (:data:`CREATE_MARK`, :data:`DESTROY_MARK`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Set
from typing import Any, Union

from rtecs.errors import SchemaError
from rtecs.model._base import ModelBase, limit_of
from rtecs.model._values import INT_MAX, INT_MIN, PYTYPE, UNSET, default_value
from rtecs.protocol import CREATE, DESTROY, OWNER, coerce_value

__all__ = ["CREATE_MARK", "DESTROY_MARK", "OWNER_PROP", "Prop", "declare", "prop", "tag_of"]


class Prop:
    """A synchronised property of a :class:`RealtimeModel` (made by :func:`prop`)."""

    __slots__ = ("child_type", "default", "f32", "id", "name", "pytype", "reliable", "slot",
                 "tag")

    def __init__(self, prop_id: int, default: Any = UNSET, reliable: bool = True,
                 float32: bool = False) -> None:
        self.id = prop_id
        self.default = default
        self.reliable = reliable
        self.f32 = float32
        self.name = ""
        self.tag = ""
        self.slot = -1
        self.pytype: type | None = None
        self.child_type: type[ModelBase] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<prop {self.id} {self.name}: {self.tag}{'' if self.reliable else ' unreliable'}>"

    @typing.overload
    def __get__(self, obj: None, objtype: type | None = None) -> Prop: ...
    @typing.overload
    def __get__(self, obj: ModelBase, objtype: type | None = None) -> Any: ...

    def __get__(self, obj: ModelBase | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._v[self.slot]  # noqa: SLF001 (the hottest read: the values' own descriptor)

    def __set__(self, obj: ModelBase, value: Any) -> None:
        # Writes through ``model.x = v`` never come here: the model class's __setattr__ does
        # them (one call less on the hot path). This is for object.__setattr__.
        obj._write_prop(self.name, value)  # noqa: SLF001 (the base's hook for it)

    def coerce(self, obj: ModelBase, value: object) -> Any:
        """``value`` as this property stores it, or raise (``TypeError`` for a wrong type,
        ``ValueError`` for an int outside 64 bits or a str/bytes value over the limit)."""
        if self.id == OWNER:
            raise AttributeError("owner_id is read-only: use request_ownership() or "
                                 "clear_ownership()")
        tag = self.tag
        if type(value) is int and tag.rstrip("?") in ("int", "float", "f32"):
            self.refuse_int(obj, value)  # a ValueError (not coerce_value's TypeError)
        if type(value) is str and (tag == "str" or tag == "str?"):
            size = len(value)
            if not value.isascii():
                try:
                    size = len(value.encode("utf-8"))
                except UnicodeEncodeError:
                    raise TypeError(f"{type(obj).__name__}.{self.name}: {value[:40]!r}... "
                                    "cannot be sent: it is not valid Unicode (a lone "
                                    "surrogate?)") from None
            if size > limit_of(obj):
                self.refuse_size(obj, size)
            return value
        try:
            coerced = coerce_value(tag, value)
        except TypeError as exc:
            raise TypeError(f"{type(obj).__name__}.{self.name}: {exc}") from None
        if type(coerced) is bytes and len(coerced) > limit_of(obj):
            self.refuse_size(obj, len(coerced))
        return coerced

    def refuse_int(self, obj: ModelBase, value: int) -> None:
        """Raise ``ValueError`` if ``value`` does not fit in 64 bits."""
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"{type(obj).__name__}.{self.name}: {value} does not fit in 64 "
                             f"bits (ints must be in [-2**63, 2**64 - 1])")

    def refuse_size(self, obj: ModelBase, size: int) -> None:
        """Raise ``ValueError``: a str/bytes value of ``size`` bytes is over the limit."""
        what = "UTF-8 encoding" if self.pytype is str else "value"
        raise ValueError(f"{type(obj).__name__}.{self.name}: the {what} is {size} bytes, over "
                         f"the limit of {limit_of(obj)} bytes per value (the server announces "
                         "the limit: max_value_bytes)")


def prop(prop_id: int, *, default: Any = UNSET, reliable: bool = True,
         float32: bool = False) -> Any:
    """Declare a synchronised property with a wire id (≥ 1, unique in the model, never reused).

    ``reliable=False`` makes it latest-value-wins: no in-flight cache, may coalesce, never
    rolled back (positions, aim). The type comes from the annotation: ``bool``, ``int``,
    ``float``, ``str``, ``bytes``, ``X | None``, or a :class:`RealtimeModel` subclass for a
    declared child model. ``float32=True`` (float properties only) sends the value as a
    4-byte float, as games do for positions: writes are rounded to float32 precision at once,
    so every client shows the same value.
    """
    if type(prop_id) is not int or prop_id < 1:
        raise SchemaError(f"a property id must be an int ≥ 1, not {prop_id!r}")
    return Prop(prop_id, default, reliable, float32)


OWNER_PROP = Prop(OWNER, -1)
OWNER_PROP.name, OWNER_PROP.tag, OWNER_PROP.slot = "owner_id", "int", 0
OWNER_PROP.pytype = type(None)  # never the type of a value: __set__ always refuses

# Markers in a datastore's dirty set for a model's creation and destruction.
CREATE_MARK = Prop(CREATE)
CREATE_MARK.name = "<create>"
DESTROY_MARK = Prop(DESTROY)
DESTROY_MARK.name = "<destroy>"


def tag_of(hint: Any, where: str) -> tuple[str, type[ModelBase] | None]:
    """The tag of a property annotated ``hint`` and, for a declared child model, its type;
    raise :class:`~rtecs.errors.SchemaError` (naming ``where``) for a type a property cannot
    have."""
    optional = False
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            hint, optional = args[0], True
    if isinstance(hint, type) and issubclass(hint, ModelBase):
        if optional:
            raise SchemaError(f"{where}: a child model cannot be optional")
        return f"model:{hint.type_name}", hint
    for tag, pytype in PYTYPE.items():
        if hint is pytype:
            return tag + ("?" if optional else ""), None
    raise SchemaError(f"{where}: unsupported property type {hint!r} "
                      "(use bool, int, float, str, bytes, X | None or a RealtimeModel)")


def declare(cls: type[ModelBase], reserved: Set[str]) -> tuple[dict[int, Prop], list[Any]]:
    """Lay out the properties of the model class ``cls`` (its own and its bases'): each
    :class:`Prop` gets its tag, Python type, child type and slot. Returns the properties by
    id (the owner id's included: id 0, slot 0) and the start values by slot. Raises
    :class:`~rtecs.errors.SchemaError` for a name in ``reserved``, a property without an
    annotation or of an unsupported type, an id used twice, a property redeclared with
    another type, ``float32`` on a non-float, and a bad default."""
    found: dict[str, Prop] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Prop):
                found[name] = value
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise SchemaError(f"{cls.__name__}: cannot resolve annotations: {exc}") from None
    by_id: dict[int, Prop] = {OWNER: OWNER_PROP}
    template: list[Any] = [-1]
    for name, p in found.items():
        where = f"{cls.__name__}.{name}"
        if name in reserved:  # it would shadow model_id, parent, … (the datastore reads them)
            raise SchemaError(f"{where}: {name!r} is a RealtimeModel attribute; give the "
                              "property another name")
        if name not in hints:
            raise SchemaError(f"{where}: a property needs a type annotation")
        if p.id in by_id:
            raise SchemaError(f"{where}: property id {p.id} is also used by "
                              f"{cls.__name__}.{by_id[p.id].name}")
        tag, child = tag_of(hints[name], where)
        if p.f32:
            if tag.rstrip("?") != "float":
                raise SchemaError(f"{where}: float32=True needs a float property, not {tag}")
            tag = tag.replace("float", "f32")
        if p.tag and p.tag != tag:
            raise SchemaError(f"{where}: redeclared as {tag}, was {p.tag}")
        p.tag, p.child_type = tag, child
        p.pytype = PYTYPE.get(tag)
        p.slot = len(template)
        if child is not None:
            if p.default is not UNSET:
                raise SchemaError(f"{where}: a child model property takes no default")
            template.append(None)
        else:
            template.append(default_value(tag, p.default, where))
        by_id[p.id] = p
    return by_id, template
