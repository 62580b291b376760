"""Realtime models: :class:`RealtimeModel`, :func:`prop` and their change streams.

Besides the public API, the model layer defines both sides of the narrow interface between a
model and its datastore (DESIGN §1): what a model and a collection ask of their datastore
(:class:`ModelOwner`: mark dirty, check a write, write the owner, report an error, create
and destroy a collection's elements, the server's structure of them; the :class:`WriteLog` a
model's writes record themselves in) and how the datastore reaches a model (``bind``,
``values_of``, ``notify``, …), and the :class:`Notifier` that emits a datastore's visible
changes (reactivex lives here, not in the datastore).

Its modules, bottom to top (each imports only those before it):

- ``_enums``: :class:`ChangeSource`, :class:`KidEvent`, :data:`UNCHECKED`.
- ``_streams``: :func:`guarded` streams, whose subscribers cannot break the emitter.
- ``_values``: what a property value may be (tags, 64-bit bounds, ``max_value_bytes``).
- ``_base``: ``ModelBase``, the slots of a model; :data:`DESTROYED`.
- ``_registry``: classes by name (for :func:`find_model_type`).
- ``_prop``: :func:`prop`, :class:`Prop`, laying out a model class's properties.
- ``_model``: :class:`RealtimeModel`, its write path, :class:`Change`, :class:`WriteLog`.
- ``_interface``: :class:`ModelOwner` and the datastore's side (``bind``, ``values_of``, …).
- ``_notify``: :class:`Notifier`, emitting what a datastore applied.
"""

from rtecs.model._base import DESTROYED
from rtecs.model._enums import UNCHECKED, ChangeSource, KidEvent, Unchecked
from rtecs.model._interface import (
    ModelOwner,
    bind,
    check_kid,
    children_of,
    defaults_of,
    flags_of,
    follows_kids,
    id_of,
    kid_types_of,
    kids_changed,
    notify,
    props_of,
    set_flags,
    store_of,
    unbind,
    values_of,
    watched,
)
from rtecs.model._model import (
    Change,
    Emit,
    KidReport,
    RealtimeModel,
    WriteLog,
    find_model_type,
)
from rtecs.model._notify import ChangeStream, Notifier, VisibleChanges
from rtecs.model._prop import CREATE_MARK, DESTROY_MARK, OWNER_PROP, Prop, prop
from rtecs.model._streams import guarded
from rtecs.model._values import DEFAULT_MAX_VALUE_BYTES

__all__ = ["CREATE_MARK", "DEFAULT_MAX_VALUE_BYTES", "DESTROYED", "DESTROY_MARK", "OWNER_PROP",
           "UNCHECKED", "Change", "ChangeSource", "ChangeStream", "Emit", "KidEvent", "KidReport",
           "ModelOwner", "Notifier", "Prop", "RealtimeModel", "Unchecked", "VisibleChanges",
           "WriteLog", "bind", "check_kid", "children_of", "defaults_of",
           "find_model_type", "flags_of", "follows_kids", "guarded", "id_of", "kid_types_of",
           "kids_changed", "notify", "prop", "props_of", "set_flags", "store_of", "unbind",
           "values_of", "watched"]
