"""Sessions: the :class:`SessionTable` of every :class:`~rtecs_server.hosted.Session` of one
server instance, indexed by session id (what a ``RESUME`` names) and by current peer (where a
frame came from), the resume secrets that authenticate them, and :class:`Membership`, which
opens and ends them as clients join and leave rooms.

Secrets (DESIGN §8). A session id is 16 random bytes and a resume secret 32, both from
:mod:`secrets`. The client gets the secret in the ``WELCOME`` that opens its session; the
table keeps only its SHA-256 hash, and :meth:`SessionTable.verify` compares hashes with
:func:`hmac.compare_digest`, so neither a memory dump of the table nor the time a wrong guess
takes tells anyone the secret. :meth:`SessionTable.rotate` makes a fresh secret and forgets
the old one's hash: every answer to a ``RESUME`` (``RESUMED``, or a welcome into a new epoch)
carries one, and the secret shown is spent.

**A resync welcome does not rotate the secret**: it names the session id and carries an
empty ``session_secret``, which tells the client to keep the one it holds. A resync goes over
the session's own live connection and proves nothing a secret should be renewed for; and its
welcome may not reach the client (a stalled send queue), which must not strand the client
with a secret the server already forgot. The server could not resend the old secret anyway:
it keeps only the hash. (A resume's answer may be lost too, on a link that breaks again at
once: the client's next ``RESUME`` then shows the spent secret and it joins anew. The window
is one round trip.)

**Sessions per address** (DESIGN §8). A session may be opened with the network address its
hello came from (:meth:`ServerTransport.address_of <rtecs.transport.ServerTransport.address_of>`,
made a counting key by :func:`address_key`: an IPv4 address as it is, an IPv6 address by its
/64 network — what one subscriber gets, so one attacker cannot spread over 2⁶⁴ addresses —
an IPv4-mapped IPv6 address as the IPv4 one, an ipc peer by its user and group). Loopback
(``127.0.0.1``, ``::1``) is an address like any other: tests and benchmarks that open many
sessions on one machine raise the limit. The table counts the
live sessions of each address (:meth:`SessionTable.sessions_from`); a session counts from
:meth:`~SessionTable.open` until :meth:`~SessionTable.close`, however it ends, and keeps
counting against the address it was opened from if it moves to another peer
(:meth:`~SessionTable.attach`). The host refuses a hello that would give an address more
than ``max_sessions_per_address`` (:data:`DEFAULT_MAX_SESSIONS_PER_ADDRESS`) with a fatal
``ERROR too_many_sessions``. Sessions opened without an address (a transport that cannot
tell) are not counted.

Peers are transport addresses, never credentials: :meth:`SessionTable.attach` is the only way
a session changes peer, and the host calls it only for a session whose secret was shown (a
``RESUME``: :meth:`RoomHost.handle_resume <rtecs_server.host.RoomHost.handle_resume>`).

**Membership**: where the room core's members and hosting's sessions meet. The room core
knows a member by client id (:meth:`Room.join <rtecs_server.room.Room.join>`,
:meth:`Room.leave <rtecs_server.room.Room.leave>`); hosting gives each member a
:class:`~rtecs_server.hosted.Session` in the :class:`SessionTable`. :class:`Membership` keeps
the two in step, and is the only place that does:

- :meth:`Membership.join` — the room is opened if this instance does not hold it (or the
  directory's answer returned: a redirect, an error), its pending entries go out first (the
  welcome's snapshot is the state after them), the room admits the client, a session is
  opened for it (a new id and resume secret) and its ``WELCOME`` goes out with the session
  id, the secret and the room's incarnation;
- :meth:`Membership.leave` — the session ends and the member leaves (its lifetime flags
  apply); a room left without members starts its empty-room timer and clears its history
  (nobody can resume into it);
- :meth:`Membership.expire` — sessions silent past their grace end, and their members
  leave;
- :meth:`Membership.drop_lost` — the members of a room whose lease is gone are told to
  reconnect (``ERROR unavailable``) and their sessions end (the room core is dropped
  whole, so nobody leaves it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from rtecs.protocol import Error, ErrorCode, Hello, Limits, Redirect, encode
from rtecs.transport import ServerTransport
from rtecs_server.directory import LostRoom, RoomDirectory
from rtecs_server.fanout import Fanout
from rtecs_server.hosted import Cost, HostedRoom, Session
from rtecs_server.plugins import Plugin
from rtecs_server.records import SavedSession
from rtecs_server.room import JoinRefused

__all__ = ["DEFAULT_MAX_SESSIONS_PER_ADDRESS", "SECRET_BYTES", "SESSION_ID_BYTES", "Membership",
           "SessionTable", "address_key", "hash_secret"]

log = logging.getLogger("rtecs_server.host")

#: Length of a session id and of a resume secret, in bytes.
SESSION_ID_BYTES: Final = 16
SECRET_BYTES: Final = 32


#: Live sessions one network address may hold (``--max-sessions-per-address``).
DEFAULT_MAX_SESSIONS_PER_ADDRESS: Final = 64

_IPC_PEER = re.compile(r"(.*:\d+:\d+):\d+")  # libzmq's ipc Peer-Address: HOST:UID:GID:PID


def hash_secret(secret: bytes) -> bytes:
    """What the table keeps of a resume secret: its SHA-256 digest."""
    return hashlib.sha256(secret).digest()


def address_key(address: str | None) -> str | None:
    """What sessions are counted by for a peer at ``address`` (see the module docs):
    ``"203.0.113.7"`` as it is, ``"2001:db8:1:2:a:b:c:d"`` as ``"2001:db8:1:2::/64"``,
    ``"::ffff:203.0.113.7"`` as ``"203.0.113.7"`` (``"::1"`` as it is), an ipc peer
    ``"HOST:UID:GID:PID"`` as ``"HOST:UID:GID"``; anything else as it is. None stays None
    (not counted)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone id: dropped
    except ValueError:
        ipc = _IPC_PEER.fullmatch(address)
        return ipc.group(1) if ipc else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SessionTable:
    """Every open session, by session id and by current peer (see the module docs)."""

    __slots__ = ("_address_of", "_by_id", "_by_peer", "_per_address", "by_peer")

    def __init__(self) -> None:
        self._by_id: dict[bytes, Session] = {}
        self._by_peer: dict[bytes, Session] = {}
        self._address_of: dict[bytes, str] = {}     # session id → the address it counts at
        self._per_address: dict[str, int] = {}      # address → its live sessions (≥ 1)
        self.by_peer: Mapping[bytes, Session] = MappingProxyType(self._by_peer)
        """The sessions by current peer (a read-only view)."""

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        """Every session, in the order they were opened."""
        return iter(list(self._by_id.values()))

    def get(self, peer: bytes) -> Session | None:
        """The session whose frames travel on ``peer`` now, or None."""
        return self._by_peer.get(peer)

    def find(self, session_id: bytes) -> Session | None:
        """The session named ``session_id``, or None. Not a credential check: see
        :meth:`verify`."""
        return self._by_id.get(session_id)

    def sessions_from(self, address: str | None) -> int:
        """How many live sessions were opened from ``address`` (a key of
        :func:`address_key`; None: 0)."""
        return 0 if address is None else self._per_address.get(address, 0)

    def address_of(self, session: Session) -> str | None:
        """The address ``session`` counts at (None: opened without one, or ended)."""
        return self._address_of.get(session.session_id)

    @property
    def addresses(self) -> Mapping[str, int]:
        """Live sessions per address (only addresses that hold one; a read-only view)."""
        return MappingProxyType(self._per_address)

    def costs(self) -> dict[bytes, Cost]:
        """Each session's :class:`~rtecs_server.hosted.Cost`, by session id (live records)."""
        return {sid: s.cost for sid, s in self._by_id.items()}

    # ----------------------------------------------------------------- opening and ending

    def open(self, peer: bytes, hosted: HostedRoom, client_id: int, now: float, *,
             epoch: int = 1, address: str | None = None) -> tuple[Session, bytes]:
        """A new session of member ``client_id`` of ``hosted`` on ``peer``, and its resume
        secret (give it to the client in the welcome; it is not kept), counted at
        ``address`` (an :func:`address_key`; None: not counted) until it is closed. A
        session ``peer`` still held must have been ended first (``ValueError``). The caller
        checks the limit first (:meth:`sessions_from`): the table only counts."""
        if peer in self._by_peer:
            raise ValueError(f"peer {peer.hex()} holds a session already: end it first")
        session_id = secrets.token_bytes(SESSION_ID_BYTES)
        while session_id in self._by_id:   # 2⁻¹²⁸ per pair: never, but never is cheap
            session_id = secrets.token_bytes(SESSION_ID_BYTES)
        secret = secrets.token_bytes(SECRET_BYTES)
        session = Session(session_id, hash_secret(secret), peer, hosted, client_id, now,
                          epoch=epoch, opened=now)
        self._by_id[session_id] = session
        self._by_peer[peer] = session
        if address is not None:
            self._address_of[session_id] = address
            self._per_address[address] = self._per_address.get(address, 0) + 1
        return session, secret

    def close(self, session: Session) -> bool:
        """Forget ``session`` (ended: BYE, timeout, fatal error, a lost room). False if it
        was not in the table."""
        if self._by_id.get(session.session_id) is not session:
            return False
        del self._by_id[session.session_id]
        if self._by_peer.get(session.peer) is session:
            del self._by_peer[session.peer]
        address = self._address_of.pop(session.session_id, None)
        if address is not None:
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]
        return True

    def restore(self, saved: SavedSession, hosted: HostedRoom, now: float) -> Session:
        """A session of a live checkpoint, back in the table by its id (its secret hash as
        saved), on no peer: detached until a ``RESUME`` attaches it; silent since ``now``.
        Not counted at any address (a checkpoint keeps none)."""
        if saved.session_id in self._by_id:
            raise ValueError(f"session {saved.session_id.hex()} is in the table already")
        session = Session(saved.session_id, saved.secret_hash, b"", hosted, saved.client_id,
                          now, epoch=saved.epoch, last_applied=saved.last_applied,
                          user_id=saved.user_id, claims=MappingProxyType(dict(saved.claims)),
                          stalled=True, detached=True, opened=-math.inf,
                          prior=((saved.prior_epoch, saved.prior_applied)
                                 if saved.prior_epoch else None))
        self._by_id[saved.session_id] = session
        return session

    # ----------------------------------------------------------------- secrets and peers

    def verify(self, session_id: bytes, secret: bytes) -> Session | None:
        """The session ``session_id`` names if ``secret`` is its resume secret, else None
        (the digests are compared in constant time)."""
        session = self._by_id.get(session_id)
        candidate = hash_secret(secret)
        expected = session.secret_hash if session is not None else bytes(len(candidate))
        if hmac.compare_digest(candidate, expected) and session is not None:
            return session
        return None

    def rotate(self, session: Session) -> bytes:
        """A fresh resume secret for ``session``; the old one no longer verifies."""
        secret = secrets.token_bytes(SECRET_BYTES)
        session.secret_hash = hash_secret(secret)
        return secret

    def detach(self, session: Session) -> None:
        """Take ``session`` off its routing id, which now names another connection: no
        frame from that routing id reaches the session and none of its frames (batches,
        welcomes, errors) go there; it stays in the table — counted, a member, timing
        out as a silent client does — until it ends (or, once sessions resume, is attached
        to a new connection by its secret)."""
        if self._by_peer.get(session.peer) is session:
            del self._by_peer[session.peer]
        session.detached = True
        session.stalled = True   # no batches (the fanout skips stalled sessions)
        session.needs_resync = False

    def attach(self, session: Session, peer: bytes) -> Session | None:
        """Move ``session`` to ``peer`` (a fresh connection, after its secret was verified);
        returns the session ``peer`` held until now, detached from it (its frames no longer
        reach anything), or None. The session keeps counting at the address it was opened
        from."""
        if self._by_id.get(session.session_id) is not session:
            raise KeyError(f"session {session.session_id.hex()} is not in the table")
        previous = self._by_peer.get(peer)
        if previous is session:
            return None
        if self._by_peer.get(session.peer) is session:
            del self._by_peer[session.peer]
        session.peer = peer
        session.detached = False
        self._by_peer[peer] = session
        return previous


class Membership:
    """Joins and leaves of one server instance's rooms (see the module docs)."""

    __slots__ = ("directory", "fanout", "sessions", "transport")

    def __init__(self, transport: ServerTransport, sessions: SessionTable,
                 directory: RoomDirectory, fanout: Fanout) -> None:
        self.transport = transport
        self.sessions = sessions
        self.directory = directory
        self.fanout = fanout

    def join(self, peer: bytes, hello: Hello, now: float, plugins: Iterable[Plugin],
             limits: Limits, max_clients: int | None, *,
             address: str | None = None, rejoin: bool = False) -> Session | Redirect | Error:
        """Admit ``peer`` to the hello's room — opened (new, or loaded from storage) with
        ``plugins``, ``limits`` and ``max_clients`` if this instance does not hold it yet —
        and send its ``WELCOME``; returns its new session (counted at ``address``: see
        :meth:`SessionTable.open`), or the directory's answer to send instead (a
        ``REDIRECT``, a fatal ``ERROR``). Raises
        :class:`~rtecs_server.room.JoinRefused` (nothing changed; a room opened for this
        joiner is forgotten unsaved). ``rejoin``: the peer had a session just ended by this
        hello (its join and that leave are logged at debug level, so a peer sending HELLOs in
        a loop cannot flood the log)."""
        directory = self.directory
        hosted = directory.rooms.get(hello.room)
        created = hosted is None
        if hosted is None:
            opened = directory.open(hello.room, plugins, limits, max_clients, now=now)
            assert opened is not None   # a hello's room is created if not stored
            if not isinstance(opened, HostedRoom):
                return opened
            hosted = opened
            directory.add(hosted)
            self.take_restored(hosted, now)
        self.fanout.flush(hosted, now)  # join() needs the room's pending entries sent first
        try:
            welcome = hosted.room.join(hello, now)
        except JoinRefused:
            if created:
                directory.discard(hosted)  # unchanged: no save
            raise
        if created:
            hosted.opened_by = address
            loaded = hosted.keeping is not None and hosted.keeping.saved_changes != -1
            log.info("room %r %s", hello.room, "opened from its checkpoint" if loaded
                     else "created")
        session, secret = self.sessions.open(peer, hosted, welcome.client_id, now,
                                             epoch=welcome.epoch, address=address)
        hosted.members[welcome.client_id] = session
        if hosted.empty_since is not None:
            directory.occupied(hosted)
        hosted.empty_since = None
        hosted.close_after = -math.inf
        directory.mark_dirty(hosted)
        log.log(logging.DEBUG if rejoin else logging.INFO, "client %d %s room %r (%d members)",
                welcome.client_id, "joined again" if rejoin else "joined", hello.room,
                len(hosted.members))
        self.fanout.send_welcome(session, welcome, secret)
        return session

    def take_restored(self, hosted: HostedRoom, now: float) -> int:
        """Host the sessions of a live checkpoint ``hosted`` was loaded from: each a member
        with no connection (detached), waiting for its client's ``RESUME``; its grace starts
        now (DESIGN §8). Returns how many."""
        keeping = hosted.keeping
        if keeping is None or not keeping.restored:
            return 0
        restored, keeping.restored = keeping.restored, []
        for saved in restored:
            session = self.sessions.restore(saved, hosted, now)
            hosted.members[saved.client_id] = session
        log.info("room %r: %d sessions restored from its checkpoint, waiting to be resumed",
                 hosted.room.name, len(restored))
        return len(restored)

    def leave(self, session: Session, now: float, *, quiet: bool = False) -> None:
        """End ``session`` and remove its member from the room (BYE, timeout, a fatal error,
        a new hello on the same connection: ``quiet``, logged at debug level). Ending an
        ended session does nothing."""
        self.sessions.close(session)
        hosted = session.hosted
        if hosted.members.get(session.client_id) is not session:
            return
        del hosted.members[session.client_id]
        hosted.room.leave(session.client_id, now)
        self.directory.mark_dirty(hosted)
        log.log(logging.DEBUG if quiet else logging.INFO, "client %d left room %r",
                session.client_id, hosted.room.name)
        if not hosted.members:
            hosted.empty_since = now
            hosted.history.clear()  # nobody is left to resume into it
            self.directory.left_empty(hosted, now)

    def expire(self, now: float, grace: float) -> int:
        """End the sessions silent for more than ``grace`` seconds — connected or not: a
        session in its grace is a member, and may be resumed — and remove their members
        (their lifetime flags apply); returns how many."""
        silent = [s for s in self.sessions if now - s.last_seen > grace]
        for session in silent:
            log.warning("client %d of room %r: its session's grace ran out (silent for "
                        "%.1f s)", session.client_id, session.room.name,
                        now - session.last_seen)
            self.leave(session, now)
        return len(silent)

    def drop_lost(self, lost: list[LostRoom]) -> None:
        """Tell the members of rooms whose lease is gone to reconnect (``ERROR unavailable``)
        and end their sessions, so they are redirected to whoever hosts the room now."""
        for name, hosted, why, saved in lost:
            for session in list(hosted.members.values()):
                if session.detached:   # its routing id names someone else now
                    self.sessions.close(session)
                    continue
                self.transport.send(session.peer, encode(Error(
                    ErrorCode.UNAVAILABLE.value, f"room {name!r} is no longer hosted by this "
                    f"server instance: reconnect", True)))
                self.sessions.close(session)
            log.warning("stopped hosting room %r: %s (%s; %d clients told to reconnect)", name,
                        why, "its latest state was saved" if saved else "not saved",
                        len(hosted.members))
            hosted.members.clear()
