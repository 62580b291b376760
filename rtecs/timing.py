"""The two clocks a client keeps about its server, apart from the session state machine:

- :class:`ServerClock`: the round trip (``ping``) and the server's clock as this client
  estimates it (``room_time``), from the times the server reports in welcomes, batches and
  pongs;
- :class:`Backoff`: when to try a lost connection again — the first retry at once, then
  jittered exponential delays up to a cap, and how many attempts are left.

Both take the time as an argument or from an injected clock: no real time, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff", "ServerClock"]


class ServerClock:
    """The server's clock, estimated from what it reports (see the module docs)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._server_time = 0.0
        self._server_time_at = 0.0
        self.ping: float | None = None
        """Round trip to the server in milliseconds, measured (None until the first pong)."""

    def reported(self, server_time: float) -> None:
        """The server said its clock reads ``server_time`` (now, give or take half a ping)."""
        self._server_time = server_time
        self._server_time_at = self._clock()

    def ponged(self, client_time: float, server_time: float) -> None:
        """A pong came back for the ping sent at ``client_time`` (this client's clock)."""
        self.ping = max(0.0, (self._clock() - client_time) * 1000.0)
        self.reported(server_time)

    @property
    def room_time(self) -> float:
        """The server's clock now, estimated: its last reported time plus half the ping plus
        the time elapsed since that report."""
        half_ping = (self.ping or 0.0) / 2000.0
        return self._server_time + half_ping + (self._clock() - self._server_time_at)


class Backoff:
    """Attempts at a connection: ``tries`` so far (the first counts), up to ``limit``.

    The delay before attempt ``n + 1`` is 0 after the first failure, else uniform in
    ``[0, min(cap, base * 2 ** (n - 2))]`` ("full jitter"), so a crowd of clients that lost
    one server spreads out instead of reconnecting in lockstep.
    """

    def __init__(self, limit: int, base: float, cap: float, rng: random.Random) -> None:
        self.limit = limit
        self.base = base
        self.cap = cap
        self.tries = 1
        self._rng = rng

    @property
    def exhausted(self) -> bool:
        return self.tries >= self.limit

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        if self.tries == 1:
            return 0.0
        return self._rng.uniform(0, min(self.cap, self.base * 2 ** (self.tries - 2)))

    def attempt(self) -> None:
        self.tries += 1

    def succeeded(self) -> None:
        self.tries = 1
