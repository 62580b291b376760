"""The ZeroMQ client transport: one DEALER socket to a room server's ROUTER.

The only module of the client library that imports zmq. Sends never block the game loop
(``NOBLOCK``); a frame that finds the send queue full (the server unreachable for a long
time) is dropped and counted, and the session's heartbeat notices the outage. ``LINGER`` is 0
so closing never hangs; :meth:`rtecs.Realtime.close` waits for its last answer *before*
closing.

Every connection gets a fresh socket (and so a fresh routing id, DESIGN §8), and a socket
never reconnects by itself (``RECONNECT_IVL`` -1): a link that breaks stays broken, and the
session is taken up again by :class:`~rtecs.connection.Connection` over a fresh socket with a
``RESUME``, never continued on a new TCP connection the server would see as a stranger's.
The socket monitor reports the break (``DISCONNECTED``), so :attr:`ZmqClientTransport.broken`
tells the connection at its next tick instead of after a heartbeat timeout. What the broken
connection delivered but the app had not read yet is gone with it (libzmq drops a pipe's
unread frames when it will not reconnect; measured with libzmq 4.3.5): batches come again
from the server's history on the resume, and only a last ``ERROR`` may be missed (a server
shutting down: the client then learns at its resume that its session is gone).

**Security mechanisms** (the server's side: ``docs/server.md``). ``server_key`` (the server's
CURVE public key, :func:`load_server_key`) makes the socket a CURVE client with a fresh
ephemeral key pair per socket: the traffic is encrypted and only the holder of the server's
secret key can answer. Otherwise ``plain_password`` (a join token's signed head,
:func:`rtecs.auth.gate_password`) makes it a PLAIN client with username
:data:`~rtecs.auth.GATE_USERNAME`, for a server that gates its handshake on join tokens.
Neither: the NULL mechanism (a server without an auth secret or CURVE).

A handshake the server refuses never delivers a frame, so the socket watches its own
handshake (the same socket monitor, one non-blocking read per
:meth:`~ZmqClientTransport.receive`) and :meth:`ZmqClientTransport.take_failure` reports why:
the server's ZAP handler refused the credentials (an expired or forged token), or the two sides
use different mechanisms (a plaintext client and an encrypted server, a token for a server
that takes none). :class:`~rtecs.link.Link` turns that into a fatal ``auth_failed`` error.

The server does not always say so: a server that refuses the mechanism may close the TCP
connection before the client has read its ``ERROR`` command, and libzmq then reports
``HANDSHAKE_FAILED_NO_DETAIL`` (a broken pipe). Measured on the 2-core development machine
(libzmq 4.3.5, pyzmq 27.3, a NULL client and a PLAIN server in another process), that was 8
handshakes of 9. One such hang-up may be the network: the transport counts as broken and
the connection tries a fresh one at once. After :data:`HANGUPS_BEFORE_REFUSAL` in a row
with no handshake completed (:attr:`ZmqClientTransport.hangups`, carried from one socket to
the next by the link), the client reports them as a refusal with the same hint as a
mechanism mismatch.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import Final

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from rtecs.auth import GATE_USERNAME, peek_expiry

__all__ = ["ZmqClientTransport", "load_server_key"]

log = logging.getLogger(__name__)

_MONITORS = itertools.count(1)
_HANDSHAKE_EVENTS: Final = int(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                               | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                               | zmq.EVENT_DISCONNECTED)
_MISMATCH: Final = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
_MISMATCH_HINT: Final = {
    "NULL": "the server wants a secure handshake this client does not offer: connect with "
            "token= (a server with an auth secret) or server_key= (an encrypted server)",
    "PLAIN": "this client sends its join token at the handshake (PLAIN), and the server does "
             "not take one there: it has no auth secret, or it is encrypted (connect with "
             "server_key=)",
    "CURVE": "this client is encrypted (server_key=) and the server is not: connect "
             "without server_key=",
}
_HANGUP_HINT: Final = {
    "NULL": _MISMATCH_HINT["NULL"],
    "PLAIN": "it refused this client's join token, or it takes none at the handshake: it has "
             "no auth secret, or it is encrypted (connect with server_key=)",
    "CURVE": "server_key= may not be this server's public key, or the server is not "
             "encrypted",
}
#: Handshakes in a row the server hung up on (``HANDSHAKE_FAILED_NO_DETAIL``) before this
#: client reports them as a refusal (see the module docs).
HANGUPS_BEFORE_REFUSAL: Final = 3


def load_server_key(key: str | bytes | os.PathLike[str]) -> bytes:
    """A server's CURVE public key as Z85 bytes, from ``key``: the key itself (40 Z85
    characters, str or bytes, e.g. what ``rtecs-server keygen`` prints), 32 raw bytes, or
    the path of the public key file ``rtecs-server keygen`` wrote (``server.key``).
    ``ValueError`` if it is none of these."""
    if isinstance(key, bytes) and len(key) == 32:
        return z85.encode(key)
    if isinstance(key, str | bytes) and len(key) == 40:
        text = key.encode("ascii", "replace") if isinstance(key, str) else key
        try:
            if len(z85.decode(text)) == 32:
                return text
        except (ValueError, KeyError):
            pass
    path = os.fsdecode(key)
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"server_key {path[:80]!r} is neither a CURVE public key (40 Z85 "
                         f"characters) nor a readable key file: {exc}") from None
    return public


class ZmqClientTransport:
    """A :class:`~rtecs.transport.ClientTransport` over a ZeroMQ DEALER socket."""

    def __init__(self, endpoint: str, *, context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 send_hwm: int = 1000, receive_hwm: int = 0,
                 max_message_size: int = -1, server_key: bytes | None = None,
                 plain_password: str | None = None) -> None:
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, -1)   # a broken link is resumed anew
        self.mechanism = "NULL"
        """The security mechanism this socket offers: NULL, PLAIN or CURVE."""
        self._expires = None if plain_password is None else peek_expiry(plain_password)
        if server_key is not None:
            public, secret = zmq.curve_keypair()  # ephemeral: a fresh pair per connection
            self._socket.curve_serverkey = server_key
            self._socket.curve_publickey = public
            self._socket.curve_secretkey = secret
            self.mechanism = "CURVE"
        elif plain_password is not None:
            self._socket.plain_username = GATE_USERNAME.encode()
            self._socket.plain_password = plain_password.encode()
            self.mechanism = "PLAIN"
        self._failure: str | None = None
        self.hangups = 0
        """Handshakes in a row the server hung up on, this socket's and (set by
        :class:`~rtecs.link.Link` when it replaces a transport) those of the sockets
        before it."""
        self._in = False   # a handshake succeeded
        self.broken = False
        """The connection to the server broke after its handshake (it is never made
        again: take the session up over a fresh transport)."""
        self._monitor: zmq.Socket[bytes] | None = self._socket.get_monitor_socket(
            _HANDSHAKE_EVENTS, f"inproc://rtecs-handshake-{os.getpid()}-{next(_MONITORS)}")
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
            self._close_monitor()
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
        if self._monitor is not None:
            self._watch()
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

    def take_failure(self) -> str | None:
        """Why the server refused this socket's handshake (once; None if it has not):
        see the module docs."""
        if self._monitor is not None:
            self._watch()
        failure, self._failure = self._failure, None
        return failure

    def hung_up(self) -> str | None:
        """If the server hung up on this socket's handshake (and maybe those before it) and
        none completed: what that suggests, as for a refusal; else None. The connection
        reports it when it gives up before :data:`HANGUPS_BEFORE_REFUSAL` were seen."""
        if self._monitor is not None:
            self._watch()
        if self._in or not self.hangups:
            return None
        return (f"the handshake failed: the server hung up on {self.hangups} handshake(s) "
                f"in a row, as it does when security mechanisms differ or it refuses what "
                f"this client offers ({_HANGUP_HINT[self.mechanism]})")

    def _watch(self) -> None:
        """Read what the socket monitor reported: the handshake's outcome, a broken
        connection (see the module docs)."""
        monitor = self._monitor
        assert monitor is not None
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            kind, value = int(event["event"]), int(event["value"])
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._in = True
                self.hangups = 0
                continue
            if kind == zmq.EVENT_DISCONNECTED:
                self.broken = True   # never made again (RECONNECT_IVL -1)
                if self._in:
                    log.info("the connection to %s broke", self.endpoint)
                self._close_monitor()
                return
            if self._in:
                continue
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._failure = self._refused(value)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MISMATCH:
                self._failure = (f"the handshake failed: security mechanisms differ "
                                 f"({_MISMATCH_HINT[self.mechanism]})")
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.hangups += 1
                self.broken = True
                if self.hangups < HANGUPS_BEFORE_REFUSAL:
                    continue
                self._failure = (f"the handshake failed: the server hung up on "
                                 f"{self.hangups} handshakes in a row, as it does when "
                                 f"security mechanisms differ or it refuses what this "
                                 f"client offers ({_HANGUP_HINT[self.mechanism]})")
            else:
                continue
            self._close_monitor()
            return

    def _refused(self, status: int) -> str:
        """Why the server's ZAP handler refused the token, as far as this client can tell
        (the server sends only a status code)."""
        why = "it is forged, made with another secret than the server's, or expired"
        if self._expires is not None and time.time() >= self._expires:
            why = f"it expired {time.time() - self._expires:.1f} s ago"
        return f"the server refused this client's join token at the handshake ({why}; ZAP " \
               f"status {status})"

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close_monitor()
            self._socket.close(0)
