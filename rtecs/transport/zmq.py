"""The ZeroMQ client transport: one DEALER socket to a room server's ROUTER.

The only module of the client library that imports zmq. Sends never block the game loop
(``NOBLOCK``); a frame that finds the send queue full (the server unreachable for a long
time) is dropped and counted, and the session's heartbeat notices the outage. ``LINGER`` is 0
so closing never hangs; :meth:`rtecs.Realtime.close` waits for its last answer *before*
closing.

Every connection gets a fresh socket (and so a fresh routing id): a reconnect is a new
session, never a continuation that could confuse the server's sequencing.
"""

from __future__ import annotations

import logging
import math

import zmq

__all__ = ["ZmqClientTransport"]

log = logging.getLogger(__name__)


class ZmqClientTransport:
    """A :class:`~rtecs.transport.ClientTransport` over a ZeroMQ DEALER socket."""

    def __init__(self, endpoint: str, *, context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 send_hwm: int = 1000, receive_hwm: int = 0,
                 max_message_size: int = -1) -> None:
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self.dropped = 0
        self.closed = False
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from None

    def send(self, frame: bytes, reliable: bool = True) -> None:
        if self.closed:
            return
        try:
            self._socket.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.Again:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("send queue to %s is full: %d frames dropped", self.endpoint,
                            self.dropped)

    def receive(self) -> list[bytes]:
        if self.closed:
            return []
        frames: list[bytes] = []
        recv = self._socket.recv_multipart
        while True:
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                return frames
            if len(parts) != 1:
                log.warning("dropping a %d-part message from %s", len(parts), self.endpoint)
                continue
            frames.append(parts[0])

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a frame to arrive; True if one has."""
        if self.closed:
            return False
        ms = max(0, math.ceil(timeout * 1000))  # the poller truncates fractions: round up
        return bool(self._poller.poll(ms))

    def fileno(self) -> int:
        """The socket's file descriptor (ZeroMQ's ``FD``): readable when the socket may have
        frames; edge-triggered, so :meth:`receive` until it returns nothing after a wake-up."""
        return int(self._socket.getsockopt(zmq.FD))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._socket.close(0)
