"""The storage of a model: :class:`ModelBase`, the slots every :class:`RealtimeModel` has,
and the fastest ways to set and read them.

A model's values live in one list per instance (``_v``; slot 0 is the owner id), beside the
link to its datastore (``_ds``, the owner of the model layer's interface), the datastore's
write log (``_wlog``), its network id, its parent, its change Subjects (``_subs``, None until
somebody subscribes) and its lifetime flags. So a model costs a few hundred bytes and nothing
more until somebody listens.

This class sits below :class:`~rtecs.model.Prop` and :class:`~rtecs.model.RealtimeModel`: a
property reads and checks values through it, the model class builds on it, and neither has
to refer to the other. :class:`~rtecs.model.RealtimeModel` says the precise types of the
slots (its datastore interface, its write log, its Subjects); here they are what a property
needs. :data:`DESTROYED` is what the datastore slot holds once a model is destroyed.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, Protocol

from rtecs.errors import ModelDestroyedError
from rtecs.model._enums import UNCHECKED
from rtecs.model._streams import log_error
from rtecs.model._values import DEFAULT_MAX_VALUE_BYTES
from rtecs.protocol import ModelId

__all__ = ["DESTROYED", "Limited", "ModelBase", "get_subs", "get_v", "limit_of", "set_ds",
           "set_flags", "set_id", "set_parent", "set_subs", "set_v", "set_wlog"]


class Limited(Protocol):
    """What a property asks of a model's datastore to check a value: the largest str (UTF-8)
    or bytes value it accepts (the server announces it)."""

    max_value_bytes: int


class ModelBase:
    """The slots of a model (see the module docs). Not a model type of its own: subclass
    :class:`~rtecs.model.RealtimeModel`."""

    __slots__ = {  # noqa: RUF023 (the public slot first)
        "model_id": "The network id (None until the model is in a datastore). Not an esper "
                    "entity id. Read-only: the datastore sets it (a slot, not a property: "
                    "collecting a frame reads it for every model it touches).",
        "_ds": None, "_flags": None, "_parent": None, "_subs": None, "_v": None,
        "_wlog": None}
    if typing.TYPE_CHECKING:  # set in RealtimeModel.__init__; the others typed there
        _v: list[Any]
        _ds: Limited | None
        model_id: ModelId | None
        _parent: ModelBase | None
        _flags: int

    type_name: ClassVar[str]
    """The model's name on the wire and in the schema (set by every RealtimeModel class)."""

    def _write_prop(self, name: str, value: Any) -> None:
        """Write the property ``name`` as ``model.name = value`` does: what
        ``object.__setattr__`` reaches through the property (RealtimeModel implements it)."""
        raise NotImplementedError


_SLOTS = ModelBase.__dict__
# Setters of the slots, past any __setattr__ (a slot descriptor's own __set__).
set_v: Callable[[ModelBase, list[Any]], None] = _SLOTS["_v"].__set__
set_ds: Callable[[ModelBase, Any], None] = _SLOTS["_ds"].__set__
set_wlog: Callable[[ModelBase, Any], None] = _SLOTS["_wlog"].__set__
set_id: Callable[[ModelBase, ModelId | None], None] = _SLOTS["model_id"].__set__
set_parent: Callable[[ModelBase, Any], None] = _SLOTS["_parent"].__set__
set_subs: Callable[[ModelBase, Any], None] = _SLOTS["_subs"].__set__
set_flags: Callable[[ModelBase, int], None] = _SLOTS["_flags"].__set__
# Readers of the slots: attrgetter is the cheapest call there is for it (a slot
# descriptor's __get__ costs a third more).
get_v: Callable[[ModelBase], list[Any]] = operator.attrgetter("_v")
get_subs: Callable[[ModelBase], Any] = operator.attrgetter("_subs")


def limit_of(obj: ModelBase) -> int:
    """The largest str (UTF-8) or bytes value ``obj`` accepts now."""
    ds = obj._ds  # noqa: SLF001 (the slot's own module)
    return DEFAULT_MAX_VALUE_BYTES if ds is None else ds.max_value_bytes


class _Destroyed:
    """Stands in for the datastore of a destroyed model (its ``_ds`` from then on): every
    write raises :class:`~rtecs.errors.ModelDestroyedError`, and so does every request of a
    collection held by it. It implements :class:`~rtecs.model.ModelOwner`."""

    client_id = -1
    max_value_bytes = DEFAULT_MAX_VALUE_BYTES

    def report_error(self, exc: BaseException) -> None:
        log_error(exc)

    def mark_dirty(self, model: ModelBase, p: object, old: object) -> NoReturn:
        raise _gone(model)

    def check_write(self, model: ModelBase) -> NoReturn:
        raise _gone(model)

    def write_owner(self, model: ModelBase, owner: int) -> NoReturn:
        raise _gone(model)

    def create(self, model: ModelBase, *, parent: ModelBase | None = None,
               key: int | str | None = None, expected: object = UNCHECKED) -> NoReturn:
        raise _gone(model if parent is None else parent)

    def destroy(self, model: ModelBase) -> NoReturn:
        raise _gone(model)

    def kids(self, model: ModelBase) -> NoReturn:
        raise _gone(model)

    def keyed_kids(self, parent: ModelBase) -> NoReturn:
        raise _gone(parent)


def _gone(model: ModelBase) -> ModelDestroyedError:
    mid = model.model_id
    return ModelDestroyedError(
        f"{type(model).__name__} {mid} was destroyed; drop references to it")


DESTROYED = _Destroyed()
"""The datastore of every destroyed model (see :func:`~rtecs.model.unbind`)."""
