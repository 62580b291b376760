"""Realtime models: :class:`RealtimeModel`, :func:`prop` and their change streams."""

from rtecs.model._model import (
    DEFAULT_MAX_VALUE_BYTES,
    Change,
    ChangeSource,
    Prop,
    RealtimeModel,
    find_model_type,
    prop,
)
from rtecs.model._streams import guarded

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "Change", "ChangeSource", "Prop", "RealtimeModel",
           "find_model_type", "guarded", "prop"]
