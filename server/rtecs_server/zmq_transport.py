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
  connection holds is parked by libzmq and never speaks for the holder. Once the holder's
  connection is gone, though, libzmq gives the id to whoever announces it next; so every
  connection is *named* (below) and a session belongs to the connection that joined: a
  frame on its routing id from any other connection is a stranger's, and the session is
  detached from the id (:meth:`RoomHost.handle <rtecs_server.host.RoomHost.handle>`). A
  session moves to a new connection only by showing its resume secret
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
- ``RCVHWM`` (:data:`DEFAULT_RCVHWM`, 100 frames per peer) bounds what one connection can
  make the server hold unread: past it libzmq stops reading that connection until the loop
  catches up.

A message of more than one part (``[routing id, a, b, …]``) is not a frame of the protocol:
:meth:`receive` leaves it out and records ``(peer, reason)`` in :meth:`take_malformed`, which
the loop hands to :meth:`RoomHost.handle_malformed`.

**Peer addresses** (:meth:`ZmqServerTransport.address_of`, for the sessions-per-address
limit). libzmq attaches the connection's metadata to every frame it delivers, and
``Peer-Address`` there is the peer's IP address (``127.0.0.1``, ``::1``; for ipc,
``localhost:UID:GID:PID``; inproc has none). pyzmq shows it only on a :class:`zmq.Frame`
(``recv(copy=False)``), so :meth:`receive` reads each message as its routing id (bytes)
and then its frame as a ``zmq.Frame``: ``Frame.more`` tells a one-part message without a
``RCVMORE`` getsockopt, and ``Frame.bytes`` is the payload. Only a frame that may be a
``HELLO`` has its address read (anything but a MessagePack fixarray whose kind is a
fixint other than ``HELLO``'s: every update and ping is one), into a dict that the next
:meth:`receive` empties; the host asks while it handles the batch. This costs less than
the ``recv_multipart`` it replaced, which pays for a ``RCVMORE`` getsockopt and enum
conversions on every part: :meth:`receive` of 100,000 queued 12-27 byte updates and pings
from 20 DEALERs, on the 2-core development machine, medians of 3 alternating runs of 7,
went from 2.2 to 1.1 µs a message over inproc and from 3.8 to 1.7 µs over tcp; the server
CPU in ``python -m bench.server_tick`` did not change beyond its noise.

**Connection names.** The socket always has a ZAP domain, so libzmq asks the
:class:`ZapHandler` thread about every handshake (NULL ones too, when there is no auth or
CURVE); the handler answers with a user id of its own for each connection (a random
prefix and a counter), and libzmq attaches it to every frame of that connection as
``User-Id``. :meth:`~ZmqServerTransport.messages` reads it from each frame (inproc has no
handshake, and no names: None). A peer cannot choose or learn it. Reading it costs about
1 µs a message: :meth:`~ZmqServerTransport.messages` of 100,000 queued 12-byte pings from
20 DEALERs over tcp took 3.4-3.8 µs a message with it and 2.0-2.7 without (two alternating
runs each, the 2-core development machine) — about 1 % of a core at 300 clients.

**The handshake** (DESIGN §8). libzmq 4.3.5 aborts the process when an auto-generated
routing id collides with one a peer chose (``router.cpp`` ``identify_peer``), and no socket
option prevents it. Three things make that hard to reach, set up by
:class:`ZmqServerTransport`:

- ``gate`` (the server has an auth secret): the ROUTER is a ZeroMQ **PLAIN** server and a
  :class:`ZapHandler` thread (ZAP, RFC 27, on ``inproc://zeromq.zap.01`` of the transport's
  context) accepts a connection only if its PLAIN username is ``rtecs`` and its password a
  join token's signed head, valid now (:meth:`JoinAuth.check_gate
  <rtecs_server.auth.JoinAuth.check_gate>`). A peer without a valid token never completes
  the handshake, so it never gets a pipe, a routing id, or a place in ``identify_peer``. (A
  ZAP handler cannot see the peer's routing id, and need not.) The full token is checked
  again at ``HELLO`` (room, claims).
- ``curve_secret_key``: the ROUTER is a **CURVE** server (encryption). Clients use fresh
  ephemeral key pairs, so the ZAP handler accepts every client key: with CURVE, the join
  token is checked at ``HELLO`` only, and any peer that knows the server's *public* key
  completes the handshake. CURVE takes precedence over PLAIN (one mechanism per socket).
- :func:`seed_routing_ids` before the ROUTER is made: libzmq draws the first auto routing
  id from libc's ``rand()``, which nothing seeds, so every process starts at ``00 6b8b4567``;
  seeded from ``os.urandom`` the start is unpredictable.

What remains: an attacker with a valid token (or, with CURVE, the public key) who guesses
the counter. Run the server supervised (``docs/server.md``): a crash costs a restart.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, NamedTuple

import zmq
import zmq.auth
from zmq.utils import z85

from rtecs.protocol import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_RCVHWM", "MAX_RECEIVE_BATCH", "ZAP_DOMAIN", "KeyFiles", "ZapHandler",
           "ZmqServerTransport", "check_curve_key", "load_secret_key", "max_message_size",
           "seed_routing_ids", "write_key_pair"]

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
#: The message kind of ``HELLO``, the first element of its MessagePack array (a fixint).
_HELLO_KIND: Final = 1

#: Frames libzmq queues from one peer before it stops reading that peer's connection (TCP
#: then holds the rest back: nothing is lost). It bounds what one connection can make the
#: server hold unread to ``RCVHWM`` x ``MAXMSGSIZE`` (~107 MiB with the default limits; at
#: libzmq's default of 1000, over 1 GiB). An rtecs client sends ~21 frames a second.
DEFAULT_RCVHWM: Final = 100


class ZmqServerTransport:
    """A bound ROUTER socket. Use from one thread at a time (the loop's)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], bind: str, *,
                 limits: Limits = DEFAULT_LIMITS, sndhwm: int = 1000,
                 rcvhwm: int = DEFAULT_RCVHWM,
                 socket_options: Mapping[int, int] | None = None,
                 gate: Callable[[bytes, bytes], str | None] | None = None,
                 curve_secret_key: bytes | None = None) -> None:
        #: The ZAP thread (None over inproc, which has no handshake).
        self.zap: ZapHandler | None = None
        # Always: besides gating, the ZAP handler names every connection (module docs).
        self._named = not bind.startswith("inproc://")   # inproc has no handshake
        if self._named:
            self.zap = ZapHandler(context, gate=gate, curve=curve_secret_key is not None,
                                  null=gate is None and curve_secret_key is None)
        #: Whether libzmq's routing-id counter was seeded (:func:`seed_routing_ids`).
        self.seeded = seed_routing_ids()
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        try:
            if curve_secret_key is not None:
                sock.curve_server = True
                sock.curve_secretkey = curve_secret_key
                sock.curve_publickey = zmq.curve_public(curve_secret_key)
            elif gate is not None:
                sock.plain_server = True
            if self.zap is not None:
                sock.zap_domain = ZAP_DOMAIN.encode()
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
            if self.zap is not None:
                self.zap.stop()
            raise
        self.socket = sock
        #: The endpoint actually bound (the real port when ``bind`` asked for port 0).
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._malformed: list[tuple[bytes, str]] = []
        self._addresses: dict[bytes, str | None] = {}

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
        """Every one-part message waiting (at most :data:`MAX_RECEIVE_BATCH`), in order; the
        address of every peer in it that may have sent a ``HELLO`` is kept for
        :meth:`address_of` until the next call (see the module docs)."""
        return [(peer, frame) for peer, frame, _ in self.messages()]

    def messages(self) -> Iterator[tuple[bytes, bytes, int | str | None]]:
        """The one-part messages waiting (at most :data:`MAX_RECEIVE_BATCH`), each read from
        the socket only when the previous one was taken: a caller that stops early leaves
        the rest queued in libzmq, which hands them out fairly, a message per peer in turn,
        so a peer that sends costly messages waits behind itself, not others behind it (the
        loop's time slice: :mod:`rtecs_server.server`). :meth:`address_of` answers for the
        peers of the messages taken so far, until the next call. Each comes with the name of
        the connection it came over (``User-Id``, given by the ZAP handler: unique for every
        connection this socket accepts; None over inproc), so a routing id that turns up on
        a new connection is told apart from the one that joined (module docs)."""
        if self._addresses:
            self._addresses = {}
        addresses = self._addresses
        named = self._named
        recv = self.socket.recv
        for _ in range(MAX_RECEIVE_BATCH):
            try:
                peer = recv(_NOBLOCK)   # the routing id: a ROUTER's first part, always
            except zmq.Again:
                break
            part = recv(_NOBLOCK, False)   # a zmq.Frame: .more, and the peer's address
            if part.more:
                parts = 2
                while recv(_NOBLOCK, False).more:
                    parts += 1
                self._malformed.append(
                    (peer, f"a message must be exactly one frame part, got {parts}: "
                           f"message dropped"))
                continue
            frame = part.bytes
            connection = part.get("User-Id") if named else None
            # Plainly not a HELLO: a fixarray whose kind is a fixint other than HELLO's, as
            # every update and ping is. Anything else may decode as one: keep its address.
            if (len(frame) < 2 or not 0x91 <= frame[0] <= 0x9F or frame[1] == _HELLO_KIND
                    or frame[1] > 0x7F):
                addresses[peer] = _peer_address(part)
            yield peer, frame, connection

    def address_of(self, peer: bytes) -> str | None:
        """The IP address (``Peer-Address``, as libzmq reports it) of ``peer``'s connection,
        if a frame that may be its ``HELLO`` came in the last :meth:`receive`; else None
        (also for inproc peers, which have none)."""
        return self._addresses.get(peer)

    def take_malformed(self) -> list[tuple[bytes, str]]:
        """``(peer, reason)`` for every message :meth:`receive` left out since the last call."""
        malformed, self._malformed = self._malformed, []
        return malformed

    def close(self, linger: float = 0.0) -> None:
        """Close the socket, waiting at most ``linger`` seconds for queued frames."""
        if not self.socket.closed:
            self.socket.close(int(linger * 1000))
        if self.zap is not None:
            self.zap.stop()


def _peer_address(frame: zmq.Frame) -> str | None:
    """The ``Peer-Address`` property of a received frame (the peer's IP address for tcp;
    ``HOST:UID:GID:PID`` for ipc), or None (inproc has none)."""
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:
        return None
    return address if isinstance(address, str) and address else None


# ----------------------------------------------------------------------------- handshake

#: The ZAP domain of the ROUTER (the ZAP handler answers only for it).
ZAP_DOMAIN: Final = "rtecs"
_ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"


def seed_routing_ids() -> bool:
    """Seed libc's ``rand()`` from :func:`os.urandom`, so that the next ROUTER socket made in
    this process starts its auto routing ids at an unpredictable value (see the module docs);
    True if it could (libc found by :class:`ctypes.CDLL`).

    Measured with pyzmq 27.3 (bundled libzmq 4.3.5, which imports ``rand``/``srand`` from
    glibc): two fresh processes each bind a ROUTER and receive from one anonymous DEALER; the
    routing id is ``006b8b4567`` in both without seeding, and two different values (e.g.
    ``0054850846``, ``00a78e125d``) when this runs before the ROUTER is made. It changes
    ``rand()`` for everything else in the process too, which Python does not use."""
    try:
        libc = ctypes.CDLL(None)  # the process's symbols: the libc libzmq's rand() binds to
        srand = libc.srand
    except (OSError, AttributeError, TypeError):
        log.warning("cannot seed libzmq's routing ids (no libc srand): they are predictable")
        return False
    srand.argtypes = [ctypes.c_uint]
    srand.restype = None
    srand(int.from_bytes(os.urandom(4), "big"))
    return True


class ZapHandler:
    """A ZAP (RFC 27) handler thread for ``context``: PLAIN credentials go to ``gate``
    (``gate(username, password) -> None`` to accept, else the reason to refuse; None: PLAIN
    is refused), CURVE is accepted for any client key if ``curve``, NULL if ``null``,
    anything else refused. Every connection it accepts gets a user id of its own (a random
    prefix and a counter): libzmq attaches it to each frame as ``User-Id``, which is how
    :meth:`ZmqServerTransport.messages` names connections.

    The handler must be bound before the ROUTER accepts connections (it is, on creation) and
    outlive it (:meth:`stop` after the ROUTER is closed). ``gate`` runs on this thread: it must
    not touch the loop's state (see :meth:`JoinAuth.check_gate
    <rtecs_server.auth.JoinAuth.check_gate>`). Refusals are counted in :attr:`refused` and
    logged at debug level, and at info level at the 1st, 10th, 100th, … (a flood of bad
    handshakes cannot flood the log)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], *,
                 gate: Callable[[bytes, bytes], str | None] | None = None,
                 curve: bool = False, null: bool = False) -> None:
        self._context = context
        self._gate = gate
        self._curve = curve
        self._null = null
        self._prefix = os.urandom(4).hex()
        self._connections = itertools.count(1)
        self.accepted = 0
        """Handshakes accepted."""
        self.refused = 0
        """Handshakes refused."""
        self._stop_endpoint = f"inproc://rtecs-zap-stop-{id(self):x}"
        self._stop: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        self._stop.setsockopt(zmq.LINGER, 0)
        self._stop.bind(self._stop_endpoint)
        self._ready = threading.Event()
        self._failure: zmq.ZMQError | None = None
        self._thread = threading.Thread(target=self._run, name="rtecs-zap", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._stop.close(0)
            raise self._failure

    def stop(self) -> None:
        """End the thread and close its sockets (idempotent)."""
        if self._stop.closed:
            return
        if self._thread.is_alive():
            self._stop.send(b"")
            self._thread.join()
        self._stop.close(0)

    def _run(self) -> None:
        zap: zmq.Socket[bytes] = self._context.socket(zmq.REP)
        stop: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        zap.setsockopt(zmq.LINGER, 0)
        stop.setsockopt(zmq.LINGER, 0)
        try:
            zap.bind(_ZAP_ENDPOINT)
            stop.connect(self._stop_endpoint)
        except zmq.ZMQError as exc:
            self._failure = exc
            zap.close(0)
            stop.close(0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop in events:
                    break
                if zap in events:
                    zap.send_multipart(self._answer(zap.recv_multipart()))
        except zmq.ContextTerminated:
            pass
        finally:
            zap.close(0)
            stop.close(0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request ``[version, id, domain, address, routing id,
        mechanism, credentials…]``: ``[version, id, status, text, user id, metadata]``."""
        if len(request) < 6:
            log.error("malformed ZAP request of %d frames", len(request))
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _, mechanism = request[:6]
        credentials = request[6:]
        why: str | None = f"mechanism {mechanism.decode('ascii', 'replace')} is not accepted"
        if version != b"1.0" or domain != ZAP_DOMAIN.encode():
            why = "not a request for this server"
        elif (mechanism == b"CURVE" and self._curve) or (mechanism == b"NULL" and self._null):
            why = None
        elif mechanism == b"PLAIN" and self._gate is not None and len(credentials) == 2:
            try:
                why = self._gate(credentials[0], credentials[1])
            except Exception:
                log.exception("the handshake check failed; the connection is refused")
                why = "internal error"
        if why is None:
            self.accepted += 1
            name = f"{self._prefix}-{next(self._connections):x}".encode()
            return [b"1.0", request_id, b"200", b"OK", name, b""]
        self.refused += 1
        peer = address.decode("ascii", "replace")[:64]
        if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
            log.info("refused a handshake from %s: %s (%d refused so far)", peer, why,
                     self.refused)
        else:
            log.debug("refused a handshake from %s: %s", peer, why)
        return [b"1.0", request_id, b"400", why.encode()[:200], b"", b""]


# ----------------------------------------------------------------------------- CURVE keys

class KeyFiles(NamedTuple):
    """What :func:`write_key_pair` wrote."""

    public_key: str      # the public key, Z85 text (what clients pass as server_key=)
    public_file: Path    # server.key
    secret_file: Path    # server.key_secret (mode 600)


def write_key_pair(directory: str | os.PathLike[str], *,
                   overwrite: bool = False) -> KeyFiles:
    """Make a CURVE key pair for a server in ``directory`` (created if missing):
    ``server.key`` (the public key: give it, or its ``public-key`` line, to clients) and
    ``server.key_secret`` (the secret key, mode 600: ``--curve-secret-key-file``), in
    ZeroMQ's certificate format (:func:`zmq.auth.create_certificates`), read back to check
    them. ``FileExistsError`` if a secret key is there already and not ``overwrite``."""
    base = Path(directory)
    secret = base / "server.key_secret"
    if secret.exists() and not overwrite:
        raise FileExistsError(f"{secret} exists already (keygen --force replaces it)")
    base.mkdir(parents=True, exist_ok=True)
    old_mask = os.umask(0o077)  # the secret file is never readable by others, even briefly
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(base), "server")
    finally:
        os.umask(old_mask)
    os.chmod(secret_file, stat.S_IRUSR | stat.S_IWUSR)
    os.chmod(public_file, 0o644)
    public, _ = zmq.auth.load_certificate(public_file)
    if zmq.curve_public(load_secret_key(secret_file)) != public:
        raise ValueError(f"the key pair written to {base} does not read back")
    return KeyFiles(public.decode("ascii"), Path(public_file), Path(secret_file))


def load_secret_key(path: str | os.PathLike[str]) -> bytes:
    """The CURVE secret key (Z85) in a key file :func:`write_key_pair` wrote
    (``server.key_secret``); ``ValueError`` if the file cannot be read or holds no secret
    key (a public key file, say)."""
    try:
        _, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the CURVE key file {os.fspath(path)!r}: {exc}"
                         ) from None
    if not secret:
        raise ValueError(f"{os.fspath(path)!r} holds no secret key: pass the server.key_secret "
                         f"file that rtecs-server keygen wrote")
    check_curve_key(secret, f"the secret key in {os.fspath(path)!r}")
    return secret


def check_curve_key(key: bytes, what: str = "a CURVE key") -> bytes:
    """``key`` if it is a CURVE key in Z85 (40 characters for 32 bytes), else
    ``ValueError``."""
    try:
        ok = len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, struct.error):
        ok = False
    if not ok:
        raise ValueError(f"{what} is not a CURVE key (40 Z85 characters)")
    return key
