"""Realtime models: :class:`RealtimeModel`, :func:`prop` and their change streams.

Besides the public API, the model layer defines both sides of the narrow interface between a
model and its datastore (DESIGN §1): what a model asks of its datastore (``_Owner``: mark
dirty, check a write, write the owner, report an error; the :class:`WriteLog` a
model's writes record themselves in) and how the datastore reaches a model
(``bind``, ``values_of``, ``notify``, …), and the :class:`Notifier` that emits a datastore's
visible changes (reactivex lives here, not in the datastore).
"""

from rtecs.model._model import (
    CREATE_MARK,
    DEFAULT_MAX_VALUE_BYTES,
    DESTROY_MARK,
    DESTROYED,
    OWNER_PROP,
    Change,
    ChangeSource,
    Emit,
    KidEvent,
    KidReport,
    ModelOwner,
    Prop,
    RealtimeModel,
    WriteLog,
    bind,
    check_kid,
    children_of,
    defaults_of,
    find_model_type,
    flags_of,
    follows_kids,
    id_of,
    kid_types_of,
    kids_changed,
    notify,
    prop,
    props_of,
    set_flags,
    store_of,
    unbind,
    values_of,
    watched,
)
from rtecs.model._notify import ChangeStream, Notifier, VisibleChanges
from rtecs.model._streams import guarded

__all__ = ["CREATE_MARK", "DEFAULT_MAX_VALUE_BYTES", "DESTROYED", "DESTROY_MARK", "OWNER_PROP",
           "Change", "ChangeSource", "ChangeStream", "Emit", "KidEvent", "KidReport", "ModelOwner",
           "Notifier", "Prop", "RealtimeModel", "VisibleChanges", "WriteLog", "bind", "check_kid",
           "children_of", "defaults_of", "find_model_type", "flags_of", "follows_kids",
           "guarded", "id_of", "kid_types_of", "kids_changed", "notify", "prop", "props_of",
           "set_flags", "store_of", "unbind", "values_of", "watched"]
