"""Link: the one transport a client's connection uses at a time, and where it goes next.

:class:`~rtecs.connection.Connection` decides *what* to send and what a message means; the
link moves the bytes: it sends frames, decodes what arrived with the limits the last welcome
announced (a malformed frame is logged, counted and handed on as None), and counts frames and
bytes in the connection's :class:`~rtecs.session.ConnectionStats`. It also knows where to
connect: a fresh transport to the original endpoint after a lost session (:meth:`reopen`),
or to the instance a ``REDIRECT`` names (:meth:`follow`, at most :data:`MAX_REDIRECTS` in a
row without a welcome: more is a loop). Frames still being handed on from a transport that
was replaced are dropped (they came over a connection that is gone).

A transport that can tell why the server refused its handshake (``take_failure()``: the
ZeroMQ one, see :mod:`rtecs.transport.zmq`) has that handed on as a fatal ``ERROR
auth_failed``, as if the server had sent it: a refused token or a plaintext client at an
encrypted server ends the session at once with :attr:`~rtecs.connection.Connection.last_error`
saying why, instead of waiting for timeouts and retrying.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from rtecs.errors import ProtocolError
from rtecs.protocol import Error, ErrorCode, Limits, ServerMessage, decode_server_message
from rtecs.session import ConnectionStats
from rtecs.transport import ClientTransport

__all__ = ["MAX_REDIRECTS", "Link"]

log = logging.getLogger("rtecs.realtime")

#: Redirects followed in a row without a welcome before a client gives up (a loop).
MAX_REDIRECTS = 5


class Link:
    """Frames to and from the server over ``transport`` (see the module docs)."""

    def __init__(self, transport: ClientTransport, limits: Limits, stats: ConnectionStats, *,
                 reconnect: Callable[[], ClientTransport] | None = None,
                 redirect: Callable[[str], ClientTransport] | None = None) -> None:
        self.limits = limits
        """The limits frames are decoded with (the welcome's announced values)."""
        self.stats = stats
        self.redirects = 0
        """Redirects followed in a row (since the last welcome or failure)."""
        self.count_hangups = True
        """Whether handshakes the server hung up on count towards a refusal from one
        transport to the next (see :mod:`rtecs.transport.zmq`): until the first welcome.
        After it, a hang-up is the network's (a proxy in front of a server that is
        restarting hangs up the same way), never a refusal."""
        self._transport = transport
        self._reconnect = reconnect
        self._redirect = redirect

    @property
    def can_reconnect(self) -> bool:
        return self._reconnect is not None

    def reopen(self) -> None:
        """A fresh transport to the original endpoint (which redirects if the room moved)."""
        assert self._reconnect is not None
        self._replace(self._reconnect())

    def follow(self, endpoint: str) -> str | None:
        """Carry on at ``endpoint`` (a redirect); returns why it cannot, else None."""
        self.redirects += 1
        if self._redirect is None:
            return (f"redirected to {endpoint}, but this client has no way to connect "
                    f"elsewhere (pass redirect= to Realtime)")
        if self.redirects > MAX_REDIRECTS:
            return (f"redirected {self.redirects} times in a row without being let in (last "
                    f"to {endpoint}): the server instances disagree about who hosts the room")
        self.stats.redirects += 1
        self._replace(self._redirect(endpoint))
        return None

    def _replace(self, transport: ClientTransport) -> None:
        old = self._transport
        old.close()
        hangups = getattr(old, "hangups", None)   # handshakes refused in a row, so far
        if self.count_hangups and hangups is not None and hasattr(transport, "hangups"):
            transport.hangups = hangups
        self._transport = transport

    def send(self, frame: bytes, reliable: bool = True) -> None:
        stats = self.stats
        stats.frames_sent += 1
        stats.bytes_sent += len(frame)
        self._transport.send(frame, reliable)

    def receive(self) -> Iterator[ServerMessage | None]:
        """Every message that arrived, decoded, in order (None for a malformed frame); it
        stops early if the link was switched to another transport meanwhile."""
        transport = self._transport
        stats = self.stats
        for frame in transport.receive():
            if self._transport is not transport:
                return
            stats.frames_received += 1
            stats.bytes_received += len(frame)
            try:
                yield decode_server_message(frame, self.limits)
            except ProtocolError as exc:
                stats.malformed_frames += 1
                log.error("dropping a malformed frame from the server: %s", exc)
                yield None
        take_failure = getattr(transport, "take_failure", None)
        if take_failure is not None and self._transport is transport:
            failure = take_failure()
            if failure is not None:
                yield Error(ErrorCode.AUTH_FAILED.value, failure, True)

    def hung_up(self) -> str | None:
        """What it suggests that the server hung up on the transport's handshakes, if it
        did (see :meth:`ZmqClientTransport.hung_up
        <rtecs.transport.zmq.ZmqClientTransport.hung_up>`); None otherwise."""
        hung_up = getattr(self._transport, "hung_up", None)
        return hung_up() if hung_up is not None else None

    @property
    def broken(self) -> bool:
        """Whether the transport knows its connection broke (the ZeroMQ one's monitor: see
        :attr:`ZmqClientTransport.broken <rtecs.transport.zmq.ZmqClientTransport.broken>`);
        False for a transport that cannot tell."""
        return bool(getattr(self._transport, "broken", False))

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds`` for a frame, if the transport can (else return at once)."""
        poll = getattr(self._transport, "poll", None)
        if poll is not None:
            poll(seconds)

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when frames may have arrived, if the transport
        has one (ZeroMQ's is edge-triggered: after it fires, receive until nothing is left)."""
        fileno = getattr(self._transport, "fileno", None)
        return fileno() if fileno is not None else None

    def close(self) -> None:
        self._transport.close()
