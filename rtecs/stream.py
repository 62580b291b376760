"""The room stream's order on a client: batches are handed on strictly by ``room_seq``.

A client applies batch ``n`` only right after batch ``n - 1`` (DESIGN §4b: the stream has no
holes). Batches reach it over one ordered connection today; DESIGN §5 allows a second inbound
channel (an XPUB → SUB fan-out beside the ROUTER connection that carries replays), and two
channels can deliver out of order. :class:`StreamOrder` stitches them: a batch that arrives
early waits in a bounded reorder buffer until the ones before it arrive; a duplicate (the same
``room_seq`` over both channels, or a replay of one already applied) is dropped; a hole that
the buffer cannot bridge is reported, and the client asks for a fresh snapshot.

With ``window=0`` (one ordered channel, today's case) any batch after a hole is a hole at once.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

__all__ = ["Sequenced", "StreamOrder"]


class Sequenced(Protocol):
    @property
    def room_seq(self) -> int: ...


B = TypeVar("B", bound=Sequenced)


class StreamOrder(Generic[B]):
    """Batches in, batches out in ``room_seq`` order (see the module docs).

    ``window`` is how many early batches may wait for the ones before them (0: none).
    """

    def __init__(self, window: int = 0) -> None:
        if window < 0:
            raise ValueError("window must be ≥ 0")
        self.window = window
        self.last = 0
        """The ``room_seq`` of the last batch handed on (or the snapshot's)."""
        self._early: dict[int, B] = {}

    @property
    def waiting(self) -> int:
        """Early batches held in the reorder buffer."""
        return len(self._early)

    def reset(self, room_seq: int) -> None:
        """A snapshot up to ``room_seq`` was applied: continue after it, forget the rest."""
        self.last = room_seq
        self._early = {seq: b for seq, b in self._early.items() if seq > room_seq}

    def offer(self, batch: B) -> list[B] | None:
        """The batches that can be applied now, in order (``[]`` if ``batch`` is a duplicate
        or waits), or None if ``batch`` shows a hole the buffer cannot bridge (then nothing
        is handed on until :meth:`reset`). Batches that waited and follow now (after a
        :meth:`reset`, too) come out with it."""
        seq = batch.room_seq
        if seq <= self.last:
            return []
        early = self._early
        if seq != self.last + 1 and seq not in early and len(early) >= self.window:
            return None
        early[seq] = batch
        return self.take_ready()

    def take_ready(self) -> list[B]:
        """The waiting batches that follow the last one handed on, in order."""
        ready: list[B] = []
        early = self._early
        while early:
            nxt = early.pop(self.last + 1, None)
            if nxt is None:
                break
            ready.append(nxt)
            self.last += 1
        return ready
