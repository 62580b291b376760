"""The server's ZeroMQ transport: one ROUTER socket, a :class:`~rtecs.transport.ServerTransport`.

Only this module and the socket loop (:mod:`rtecs_server.server`) import zmq on the server.

Frames on the wire: a client's DEALER sends one-part messages; the ROUTER sees
``[routing id, frame]``. The routing id is the peer. Socket options, and why:

- ``ROUTER_MANDATORY=1`` and every send ``NOBLOCK``: a send to a peer whose queue is at its
  high-water mark raises ``zmq.Again`` and a send to a peer that is gone raises
  ``EHOSTUNREACH``; :meth:`send` turns both into ``False`` (the host then resyncs that client
  later) instead of libzmq dropping the frame silently or blocking the loop.
- ``LINGER 0``: closing never waits for unsent frames (:meth:`close` can ask for a short,
  bounded linger to get goodbyes out).
- ``ROUTER_HANDOVER=0`` (libzmq's default, set explicitly): a routing id is a transport
  address, never a credential (DESIGN §8). A connection that announces a routing id another
  connection holds is parked by libzmq and never speaks for the holder, so nobody can take
  over a client's session by copying its routing id (they are predictable: see
  ``docs/server.md``). A session moves to a new connection only by showing its resume secret
  (:mod:`rtecs_server.sessions`).
- ``MAXMSGSIZE``: :func:`max_message_size` — a little over the largest frame the host will
  decode (``max(limits.max_update_bytes, limits.max_hello_bytes)`` + 64 KiB). A frame up to
  that size is read and answered with a clear ``ERROR over_limit``; **a frame over it makes
  libzmq close that peer's connection without telling the application** (no message, no
  routing id). The client's DEALER reconnects with a new routing id, its old session times
  out after the heartbeat timeout, and everything it queued behind the huge frame is lost.
  Clients never send such frames: the client library refuses updates over the limit.
- ``SNDHWM`` (default 1000 frames per peer) sets when a slow client counts as "cannot keep
  up"; tests lower it.

A message of more than one part (``[routing id, a, b, …]``) is not a frame of the protocol:
:meth:`receive` leaves it out and records ``(peer, reason)`` in :meth:`take_malformed`, which
the loop hands to :meth:`RoomHost.handle_malformed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

import zmq

from rtecs.protocol import DEFAULT_LIMITS, Limits

__all__ = ["MAX_RECEIVE_BATCH", "ZmqServerTransport", "max_message_size"]

log = logging.getLogger(__name__)

#: Most messages :meth:`ZmqServerTransport.receive` takes in one call, so a flood cannot keep
#: the loop from ticking.
MAX_RECEIVE_BATCH: Final = 4096


def max_message_size(limits: Limits) -> int:
    """The ROUTER's ``MAXMSGSIZE`` for these limits (see the module docs)."""
    return max(limits.max_update_bytes, limits.max_hello_bytes) + 64 * 1024


# Send flags as plain ints: building them from the enum on every send costs measurably.
_MORE_NOBLOCK: Final = int(zmq.SNDMORE | zmq.NOBLOCK)
_NOBLOCK: Final = int(zmq.NOBLOCK)


class ZmqServerTransport:
    """A bound ROUTER socket. Use from one thread at a time (the loop's)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], bind: str, *,
                 limits: Limits = DEFAULT_LIMITS, sndhwm: int = 1000, rcvhwm: int = 1000,
                 socket_options: Mapping[int, int] | None = None) -> None:
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_size(limits))
            sock.setsockopt(zmq.SNDHWM, sndhwm)
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
            for option, value in (socket_options or {}).items():
                sock.setsockopt(option, value)
            sock.bind(bind)
        except zmq.ZMQError:
            sock.close(0)
            raise
        self.socket = sock
        #: The endpoint actually bound (the real port when ``bind`` asked for port 0).
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._malformed: list[tuple[bytes, str]] = []

    def send(self, peer: bytes, frame: bytes, reliable: bool = True) -> bool:
        """Queue ``frame`` for ``peer`` without blocking; False if the peer is gone or its
        queue is full (nothing is sent then)."""
        return self._send(peer, frame)

    def broadcast(self, peers: Iterable[bytes], frame: bytes) -> list[bytes]:
        """Queue the same ``frame`` for every peer; return the peers that could not take it.

        One :class:`zmq.Frame` is shared by every send (libzmq reference-counts it), so a
        large batch is not copied per member: measured at 1,000 members, 14 % less server CPU
        than sending the bytes to each (``python -m bench.room_fanout``)."""
        shared = zmq.Frame(frame)
        return [peer for peer in peers if not self._send(peer, shared)]

    def _send(self, peer: bytes, frame: bytes | zmq.Frame) -> bool:
        sock = self.socket
        try:
            sock.send(peer, _MORE_NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        # With ROUTER_MANDATORY the routing-id part is where HWM and unknown peers fail;
        # once it went through, the frame part is accepted.
        sock.send(frame, _NOBLOCK)
        return True

    def receive(self) -> list[tuple[bytes, bytes]]:
        """Every one-part message waiting (at most :data:`MAX_RECEIVE_BATCH`), in order."""
        out: list[tuple[bytes, bytes]] = []
        recv = self.socket.recv_multipart
        for _ in range(MAX_RECEIVE_BATCH):
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) == 2:
                out.append((parts[0], parts[1]))
            else:
                self._malformed.append(
                    (parts[0], f"a message must be exactly one frame part, got "
                               f"{len(parts) - 1}: message dropped"))
        return out

    def take_malformed(self) -> list[tuple[bytes, str]]:
        """``(peer, reason)`` for every message :meth:`receive` left out since the last call."""
        malformed, self._malformed = self._malformed, []
        return malformed

    def close(self, linger: float = 0.0) -> None:
        """Close the socket, waiting at most ``linger`` seconds for queued frames."""
        if not self.socket.closed:
            self.socket.close(int(linger * 1000))
