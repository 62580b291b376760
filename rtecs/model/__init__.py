"""Realtime models: :class:`RealtimeModel`, :func:`prop` and their change streams."""

from rtecs.model._model import Change, ChangeSource, Prop, RealtimeModel, prop

__all__ = ["Change", "ChangeSource", "Prop", "RealtimeModel", "prop"]
