"""Clocks: the one object through which rtecs reads time wherever time decides behaviour.

Heartbeats, leases, checkpoints and their budget, session graces and token expiry all take a
:class:`Clock` instead of calling :mod:`time` themselves, so tests step a
:class:`ManualClock` instead of sleeping. A clock has two readings:

- :meth:`Clock.monotonic` — seconds that never go backwards (timeouts, deadlines, rates);
- :meth:`Clock.wall` — seconds since the Unix epoch (what is stored or shared between
  machines: save times, token expiry).

A pure leaf: imports nothing of rtecs.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where time comes from (see the module docs)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (may jump when the system clock is set)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`time.time`."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def __call__(self) -> float:
        """The monotonic reading (so a clock can stand where a ``() -> float`` is taken)."""
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
"""The process's real clock; the default wherever a clock is taken."""


class ManualClock:
    """A clock that moves only when told to (tests): :meth:`advance` steps both readings.

    ``now`` is the monotonic reading; the wall reading keeps a fixed offset from it (set it
    with ``wall_offset``). Calling the clock returns ``now``.
    """

    __slots__ = ("now", "wall_offset")

    def __init__(self, now: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = now
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (≥ 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
