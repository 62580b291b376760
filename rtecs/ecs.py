"""The ECS face of rtecs: the :class:`SyncSystem` processor, and the replicated entities of
:mod:`rtecs.entities` (re-exported here).

A replicated entity is an esper entity whose replicated components are realtime models; see
:mod:`rtecs.entities` for how it travels and how each client's world follows it.
"""

from __future__ import annotations

from typing import Any

import esper

from rtecs.entities import Entities, Entity, EntityEvent, in_world
from rtecs.realtime import Realtime

__all__ = ["Entities", "Entity", "EntityEvent", "SyncSystem", "in_world"]


class SyncSystem(esper.Processor):
    """An esper processor whose run is one :meth:`Realtime.tick`: send the frame's delta when
    due, then apply everything that arrived.

    Register it with a priority above your own processors so they see this frame's state::

        esper.add_processor(rtecs.SyncSystem(rt), priority=100)

    (esper runs higher priorities first.) Writes your processors make are sent by the next
    run. The tick switches to the client's esper world and back.
    """

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime
        """The client this processor ticks."""

    def process(self, *args: Any, **kwargs: Any) -> None:
        """One :meth:`Realtime.tick` (esper calls it once per ``esper.process()``)."""
        self.realtime.tick()
