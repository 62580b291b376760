"""RoomHost: the server's message handling over any transport, with no sockets and no clock.

The socket loop (or a test over :mod:`rtecs.transport.memory`) gives it frames with
:meth:`RoomHost.handle` and calls :meth:`RoomHost.flush` (fan out) and
:meth:`RoomHost.expire` (housekeeping) with the current time; :meth:`RoomHost.tick` does both
and :meth:`RoomHost.pump` receives, handles and ticks in one call. The host decodes and
dispatches (``handle_<message>``); the rest is done by the objects it holds, each owning its
state:

==========================  =====================================================  ==========
object                      what it owns                                           module
==========================  =====================================================  ==========
``host.peers``              rate limit and bad-input log throttle per routing id   ratelimit
``host.session_table``      sessions by id and by peer; resume secrets; costs      sessions
``host.members``            joins, leaves, timeouts, rooms lost with their lease   sessions
``host.fanout``             one encode per room batch, its history, the publisher  fanout
``host.directory``          open rooms, their leases and checkpoints               directory
==========================  =====================================================  ==========

Every frame is charged to the session of the peer that sent it (its
:class:`~rtecs_server.hosted.Cost`: messages, bytes, applied updates, changes accepted and
rejected, errors, rate-limit drops, server time).

Bad input never raises: it is answered with ``ERROR`` to that peer and logged (throttled:
:mod:`rtecs_server.ratelimit`), and it changes nothing in any room:

==============================================  =====================  =======================
input                                           error code             session
==============================================  =====================  =======================
undecodable frame, several frame parts          ``protocol``           kept
frame over the update / hello size limit        ``over_limit``         kept
an update, ping or schema before a hello        ``not_joined``         (none)
wrong protocol version, schema conflict, full   ``version`` …          refused (fatal)
a hello refused by its token or a plugin        ``auth_failed``        refused (fatal)
a hello from an address at its session limit    ``too_many_sessions``  refused (fatal)
unknown model ids, wrong value types            ``bad_update``         kept (changes rejected)
a write that would grow the datastore too big   ``over_limit``         kept (change rejected)
a gap in update sequence numbers                ``sequence``           kept, resynced
a schema extension contradicting the room's     ``schema``             kept (nothing merged)
over the rate limit / sustained                 ``rate_limit``         kept / ended (fatal)
an update over its session's/address's budget   ``rate_limit``         kept (changes rejected)
HELLO, SCHEMA… over its address's byte budget   ``rate_limit``         kept (dropped undecoded)
a hello opening a room past ``max_rooms``       ``unavailable``        refused (fatal)
a ``RESUME`` without its session's secret      ``session_unknown``    unchanged
==============================================  =====================  =======================

A frame that was an update but could not be decoded (malformed, or over 125 KB) breaks the
client's sequence, so that client is resynced as for a gap: its refused writes roll back.
Resyncs and stalled clients: :mod:`rtecs_server.fanout`.

Persistence (``persistence``; None: rooms live in memory only): what a joiner of a stored
room is answered, and what happens to a room whose lease is lost, is in
:mod:`rtecs_server.directory`. :meth:`maintain` renews leases and checkpoints rooms whose
persistent state changed; :meth:`check_leases` (cheap: call it before handling frames)
catches a lease that ran out while the loop was stalled; :meth:`close` saves every room
before saying goodbye.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from rtecs.errors import ProtocolError
from rtecs.protocol import (
    DEFAULT_LIMITS,
    Bye,
    Error,
    ErrorCode,
    Hello,
    Limits,
    Ping,
    Pong,
    Resume,
    Resync,
    Schema,
    Update,
    count_changes,
    decode_client_message,
    encode,
)
from rtecs.transport import ServerTransport
from rtecs_server.auth import AuthRefused, JoinAuth
from rtecs_server.directory import (
    DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS,
    DEFAULT_MAX_ROOMS,
    RoomDirectory,
)
from rtecs_server.fanout import (
    MAX_UNREAD_RESYNCS,
    RESYNC_COOLDOWN,
    Fanout,
    Publisher,
    RouterPublisher,
    resync_cooldown,
)
from rtecs_server.hosted import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_SESSION_GRACE,
    HostedRoom,
    Session,
)
from rtecs_server.persistence import Persistence
from rtecs_server.plugins import Plugin
from rtecs_server.ratelimit import (
    LOG_BURST,
    LOG_WINDOW,
    AddressTable,
    Allowance,
    PeerTable,
    RateLimit,
    Verdict,
)
from rtecs_server.room import BadUpdate, JoinRefused, UpdateStatus
from rtecs_server.sessions import (
    DEFAULT_MAX_SESSIONS_PER_ADDRESS,
    Membership,
    SessionTable,
    address_key,
)
from rtecs_server.table import Problem

__all__ = ["DEFAULT_SESSION_GRACE", "LOG_BURST", "LOG_WINDOW", "RESYNC_COOLDOWN", "RoomHost"]

log = logging.getLogger(__name__)

#: Message kinds of some client frames (the codec's, ``rtecs.protocol``), for
#: :func:`_peek_kind`.
_HELLO: Final = 1
_UPDATE: Final = 2
_PING: Final = 3
_SCHEMA: Final = 6

def _peek_kind(frame: bytes) -> int | None:
    """The message kind of a frame that starts like a MessagePack array, else None."""
    if not frame:
        return None
    head = frame[0]
    i = 1 if 0x91 <= head <= 0x9F else 3 if head == 0xDC else 5 if head == 0xDD else 0
    if i and len(frame) > i and frame[i] <= 0x7F:
        return frame[i]
    return None


class RoomHost:
    """Sessions and rooms of one server instance, driven by frames and ticks.

    ``rate_limit`` None (the default here; :class:`~rtecs_server.server.RoomServer` turns it
    on) disables rate limiting, which suits tests on a manual clock. ``persistence`` None
    keeps rooms in memory only (see the module docs). ``publisher`` takes every room's
    batches (default: a :class:`~rtecs_server.fanout.RouterPublisher` over ``transport``);
    ``history_bytes`` bounds each room's :class:`~rtecs_server.hosted.BatchHistory`; ``timer``
    measures the server time charged to sessions (``Cost.seconds``; it decides nothing).
    ``auth_secret`` (None: no token required) and the plugins' ``authenticate`` hooks decide
    who may join (:class:`~rtecs_server.auth.JoinAuth`; token expiry reads ``wall``, seconds
    since the Unix epoch: the server passes its clock's ``wall``).
    ``max_sessions_per_address``: live sessions one network address may hold (as the
    transport's :meth:`~rtecs.transport.ServerTransport.address_of` tells it, counted by
    :func:`~rtecs_server.sessions.address_key`); a hello past it is refused with a fatal
    ``ERROR too_many_sessions``. None or 0: no limit. Peers the transport gives no address
    for (the memory transport's, unless connected with one) are not counted.
    ``max_rooms`` and ``max_empty_rooms_per_address`` bound the open rooms
    (:mod:`rtecs_server.directory`; None or 0: no bound).
    """

    def __init__(self, transport: ServerTransport, *, plugins: Iterable[Plugin] = (),
                 limits: Limits = DEFAULT_LIMITS, heartbeat_timeout: float = 5.0,
                 session_grace: float = DEFAULT_SESSION_GRACE,
                 empty_room_timeout: float = 30.0,
                 max_clients_per_room: int | None = None,
                 rate_limit: RateLimit | None = None,
                 persistence: Persistence | None = None,
                 publisher: Publisher | None = None,
                 history_bytes: int = DEFAULT_HISTORY_BYTES,
                 timer: Callable[[], float] = time.perf_counter,
                 auth_secret: bytes | None = None,
                 wall: Callable[[], float] = time.time,
                 max_sessions_per_address: int | None = DEFAULT_MAX_SESSIONS_PER_ADDRESS,
                 max_rooms: int | None = DEFAULT_MAX_ROOMS,
                 max_empty_rooms_per_address: int | None = DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS
                 ) -> None:
        if max_sessions_per_address is not None and max_sessions_per_address < 0:
            raise ValueError(f"max_sessions_per_address must be ≥ 0 (0: no limit), got "
                             f"{max_sessions_per_address}")
        self.transport = transport
        """Where frames come from and go to (ZeroMQ in the server, memory in tests)."""
        self.plugins = tuple(plugins)
        """The plugins every room runs (:mod:`rtecs_server.plugins`)."""
        self.limits = limits
        """Size limits of frames and rooms (rooms take them when they open)."""
        self.heartbeat_timeout = heartbeat_timeout
        """Seconds of silence after which a member shows ``away`` in presence."""
        self.session_grace = session_grace
        """Seconds of silence after which a session ends (its lifetime flags apply); until
        then it may be resumed over a fresh connection."""
        self.empty_room_timeout = empty_room_timeout
        """Seconds a room stays open after its last member left."""
        self.max_clients_per_room = max_clients_per_room
        """Members per room at most (None: no cap)."""
        self.max_sessions_per_address = max_sessions_per_address or None
        """Live sessions one network address may hold at most (None: no cap)."""
        # a transport written before address_of existed gives no addresses: nothing counted
        self._address_of: Callable[[bytes], str | None] | None = getattr(
            transport, "address_of", None)
        self.peers = PeerTable(rate_limit)
        """Per-peer rate limits and log throttles (:mod:`rtecs_server.ratelimit`)."""
        self.addresses = AddressTable(rate_limit)
        """The budgets every session and connection of one network address shares
        (:class:`~rtecs_server.ratelimit.AddressTable`)."""
        self._refusals: dict[str, int] = {}  # refusals by kind, for their throttled log
        self.session_table = SessionTable()
        """Every session, by id and by peer, with its cost (:mod:`rtecs_server.sessions`)."""
        self.fanout = Fanout(transport, publisher or RouterPublisher(transport))
        """The room streams going out (:mod:`rtecs_server.fanout`)."""
        self.persistence = persistence
        """Room storage and leases (None: rooms live in memory only)."""
        self.directory = RoomDirectory(persistence, history_bytes=history_bytes,
                                       max_rooms=max_rooms,
                                       max_empty_per_address=max_empty_rooms_per_address)
        """The open rooms, their leases and checkpoints
        (:class:`~rtecs_server.directory.RoomDirectory`)."""
        self.members = Membership(transport, self.session_table, self.directory, self.fanout)
        """Joins and leaves (:mod:`rtecs_server.sessions`)."""
        self._timer = timer
        self._deferred: dict[Session, int] = {}  # resumes waiting for a snapshot → epoch
        self.auth = JoinAuth(auth_secret, self.plugins, wall)
        """Who may join: the join token and the plugins' ``authenticate``
        (:mod:`rtecs_server.auth`)."""

    @property
    def rate_limit(self) -> RateLimit | None:
        """Per-peer message rate limit (None: off)."""
        return self.peers.rate_limit

    @property
    def sessions(self) -> Mapping[bytes, Session]:
        """Joined clients by their current routing id (a read-only view of
        :attr:`session_table`)."""
        return self.session_table.by_peer

    @property
    def rooms(self) -> dict[str, HostedRoom]:
        """Open rooms by name."""
        return self.directory.rooms

    @property
    def has_pending(self) -> bool:
        """True if some room has entries waiting for :meth:`flush`."""
        return self.directory.has_dirty

    # ----------------------------------------------------------------- input

    def pump(self, now: float) -> int:
        """Handle every frame the transport has, then tick. Returns the frames handled."""
        frames = self.transport.receive()
        for peer, frame in frames:
            self.handle(peer, frame, now)
        self.tick(now)
        return len(frames)

    def handle(self, peer: bytes, frame: bytes, now: float,
               connection: object = None) -> None:
        """Handle one frame from ``peer`` and charge it to the peer's session (the session
        it opened, for a hello). Bad input is answered with an error, never raised.

        ``connection`` names the transport connection the frame came over (the ZeroMQ
        transport's ``User-Id``; None: the transport cannot tell). A session belongs to the
        connection that joined: a frame on its routing id from another connection (a peer
        that set a dropped client's routing id) is not the session's — the session is
        detached from the routing id (no more frames go there; it times out, or, later, is
        resumed with its secret) and the frame is handled as a stranger's (DESIGN §8)."""
        session = self.session_table.get(peer)
        if (session is not None and session.connection is not None
                and connection != session.connection):
            self._detach(session, now)
            session = None
        if not self._admit(peer, session, now):
            return
        kind = _peek_kind(frame)
        if kind != _UPDATE and kind != _PING:   # may be big, and costly to decode and check
            if session is not None and kind == _HELLO and self._too_soon(session, now):
                return   # a re-join refused before its (maybe large) schema is decoded
            if session is None and kind == _SCHEMA:
                self._error(peer, ErrorCode.NOT_JOINED, "send a hello before a schema",
                            fatal=False, now=now)
                return
            if not self._pay_frame(peer, session, len(frame), now):
                return
        start = self._timer()
        try:
            message = decode_client_message(frame, self.limits)
        except ProtocolError as exc:
            self._bad_frame(peer, session, frame, exc, now)
        else:
            if session is not None:
                session.last_seen = now
            if isinstance(message, Update):
                self.handle_update(peer, session, message, now, size=len(frame))
            elif isinstance(message, Ping):
                self.handle_ping(peer, session, message, now)
            elif isinstance(message, Hello):
                self.handle_hello(peer, session, message, now, connection)
            elif isinstance(message, Bye):
                self.handle_bye(peer, session, now)
            elif isinstance(message, Resync) and session is not None:
                log.debug("client %d of room %r asked for a resync", session.client_id,
                         session.room.name)
                self._resync(session, now)
            elif isinstance(message, Schema):
                self.handle_schema(peer, session, message, now)
            elif isinstance(message, Resume):
                self.handle_resume(peer, session, message, now, connection)
        charged = session if session is not None else self.session_table.get(peer)
        if charged is not None:
            cost = charged.cost
            cost.messages += 1
            cost.bytes += len(frame)
            cost.seconds += self._timer() - start

    def handle_resume(self, peer: bytes, session: Session | None, resume: Resume,
                      now: float, connection: object = None) -> None:
        """A client takes up its session over a fresh connection (DESIGN §8).

        The session is found by its id and resume secret alone (a routing id never is);
        not found — unknown, ended (its grace ran out, a ``BYE``), another room's, a wrong
        or spent secret — the answer is ``ERROR session_unknown`` (not fatal: the client
        joins again with ``HELLO``). Found, the session moves to ``peer`` (and
        ``connection``), any other session ``peer`` held ends, and the secret is rotated:
        the answer is ``RESUMED`` with the new secret, then every batch after the resume's
        ``room_seq`` from the room's history — or, if some are gone, or the resume names
        another incarnation of the room or an older epoch, a resync ``WELCOME`` (a new
        epoch, the snapshot, the new secret). A snapshot waits for the session's resync
        cooldown (:func:`~rtecs_server.fanout.resync_cooldown`; :meth:`tick` sends it when
        it has passed) and counts as unread until the client shows it read it, as a
        ``RESYNC``'s does; a session past :data:`~rtecs_server.fanout.MAX_UNREAD_RESYNCS`
        ends."""
        found = self.session_table.verify(resume.session_id, resume.session_secret)
        if found is None and resume.room not in self.rooms and self.persistence is not None:
            loaded = self._load_for_resume(peer, resume.room, now)
            if loaded is False:
                return   # answered: a redirect, or an error
            if loaded:
                found = self.session_table.verify(resume.session_id, resume.session_secret)
        if found is None or found.room.name != resume.room:
            log.debug("peer %s: RESUME of %s session %s refused", peer.hex(),
                      "another room's" if found is not None else "an unknown",
                      resume.session_id.hex())
            self._error(peer, ErrorCode.SESSION_UNKNOWN,
                        "this server holds no such session (it ended, its grace ran out, "
                        "or the secret is not its current one): join again with HELLO",
                        fatal=False, now=now)
            return
        if session is not None and session is not found:
            self.members.leave(session, now, quiet=True)  # a connection holds one session
        hosted = found.hosted
        self.fanout.flush(hosted, now)   # the history holds every batch up to now
        self.session_table.attach(found, peer)
        found.connection = connection
        found.last_seen = now
        found.stalled = False
        found.needs_resync = False
        found.missed_after = -1
        found.cost.resumes += 1
        self._deferred.pop(found, None)
        frames = None
        if resume.incarnation == hosted.incarnation and resume.epoch == found.epoch:
            frames = hosted.history_since(resume.room_seq)
        if frames is not None:
            self.fanout.resume(found, resume.room_seq, frames,
                               self.session_table.rotate(found), now)
            log.info("client %d resumed its session in room %r (%d batches replayed)",
                     found.client_id, hosted.room.name, len(frames))
            return
        log.info("client %d resumed its session in room %r from a snapshot (%s)",
                 found.client_id, hosted.room.name,
                 "the room was loaded again" if resume.incarnation != hosted.incarnation
                 else "a resync welcome it missed" if resume.epoch != found.epoch
                 else "the batches it missed are no longer kept")
        if found.unread_resyncs >= MAX_UNREAD_RESYNCS:
            self._end_unread(found, now)
            return
        self._deferred[found] = resume.epoch
        found.needs_resync = True
        self._send_deferred(now)

    def _load_for_resume(self, peer: bytes, room: str, now: float) -> bool | None:
        """Load ``room`` from storage for a ``RESUME`` (this instance does not host it: it
        restarted, or the room moved here), with the sessions its checkpoint holds. True:
        loaded; None: not stored (the resume finds nothing); False: answered instead (a
        ``REDIRECT`` to the instance that hosts it, or the error that stops it)."""
        opened = self.directory.open(room, self.plugins, self.limits, self.max_clients_per_room,
                                     now=now, create=False)
        if opened is None:
            return None
        if not isinstance(opened, HostedRoom):
            self.transport.send(peer, encode(opened))
            return False
        self.directory.add(opened)
        if not self.members.take_restored(opened, now):
            opened.empty_since = now   # nobody to resume: it closes as an empty room does
        log.info("room %r loaded for a resume", room)
        return True

    def _send_deferred(self, now: float) -> None:
        """Send the resync welcomes that resumes are waiting for, whose cooldown passed."""
        for session, epoch in list(self._deferred.items()):
            if self.session_table.find(session.session_id) is not session:
                del self._deferred[session]   # ended meanwhile
                continue
            if now - max(session.opened, session.last_resync) < resync_cooldown(session):
                continue
            del self._deferred[session]
            if not self.fanout.resync(session, now, secret=self.session_table.rotate(session),
                                      epoch=epoch):
                self._end_unread(session, now)

    def handle_malformed(self, peer: bytes, reason: str, now: float) -> None:
        """A message the transport could not even turn into one frame (several parts)."""
        if self._admit(peer, self.session_table.get(peer), now):
            self._error(peer, ErrorCode.PROTOCOL, reason, fatal=False, now=now)

    def handle_hello(self, peer: bytes, session: Session | None, hello: Hello,
                     now: float, connection: object = None) -> None:
        """Join ``peer`` to the hello's room (opening or loading it first), ending any
        session it had; answer ``WELCOME`` (opening a new session: a new id and secret),
        ``REDIRECT`` or a fatal ``ERROR`` (``auth_failed``: its token or a plugin refused
        it; the session gets the user id and claims the token or plugin vouched for;
        ``too_many_sessions``: its network address holds :attr:`max_sessions_per_address`
        live sessions already — the peer's own session, which a hello ends, does not count).
        A hello on a connection that has a session (a re-join) costs a snapshot like a
        ``RESYNC`` and is held to the same cooldown (:func:`~rtecs_server.fanout.resync_cooldown`
        since its last welcome; ``ERROR rate_limit``, not fatal, and the session goes on); the
        new session inherits the old one's unread welcomes, plus its own, so a socket that
        joins again and again without reading ends as one that resyncs does.
        Refusals by the address limit are logged at the 1st, 10th, 100th and every 1000th
        (warning), the rest at debug level: a flood from fresh connections, each a new peer,
        would pass the per-peer log throttle. ``connection``: see :meth:`handle`; the new
        session belongs to it."""
        try:
            identity = self.auth.admit(hello)
        except AuthRefused as exc:
            self._error(peer, ErrorCode.AUTH_FAILED, f"cannot join room {hello.room!r}: {exc}",
                        fatal=True, now=now)
            return
        carried: tuple[int, float] | None = None
        if session is not None:   # a re-join: costs a snapshot, like a RESYNC, so it waits
            if self._too_soon(session, now):   # (handle() asks before decoding too)
                return
            carried = (session.unread_resyncs + 1, now)   # the new welcome is unread too
            self.members.leave(session, now, quiet=True)  # logged with the join
        address = None if self._address_of is None else address_key(self._address_of(peer))
        limit = self.max_sessions_per_address
        if limit is not None and address is not None:
            held = self.session_table.sessions_from(address)
            if held >= limit:
                self._log_counted("sessions_per_address",
                                  "peer %s: refused a hello for room %r: %s holds %d "
                                  "sessions, the limit per address", peer.hex(), hello.room,
                                  address, held)
                self._error(peer, ErrorCode.TOO_MANY_SESSIONS,
                            f"cannot join room {hello.room!r}: too many sessions from "
                            f"{address}: it holds {held} already, the most one address may "
                            f"hold on this server (the limit is {limit})",
                            fatal=True, now=now, quiet=True)
                return
        try:
            joined = self.members.join(peer, hello, now, self.plugins, self.limits,
                                       self.max_clients_per_room, address=address,
                                       rejoin=session is not None)
        except JoinRefused as exc:
            self._error(peer, exc.code, f"cannot join room {hello.room!r}: {exc.message}",
                        fatal=True, now=now)
            return
        if isinstance(joined, Session):
            joined.user_id, joined.claims = identity.user_id, identity.claims
            joined.connection = connection
            if carried is not None:   # the connection's unread welcomes and cooldown go on
                joined.unread_resyncs, joined.last_resync = carried
        else:  # the directory's answer: redirect or error
            self.transport.send(peer, encode(joined))

    def handle_update(self, peer: bytes, session: Session | None, update: Update,
                      now: float, *, size: int = 0) -> None:
        """Sequence and apply one update (see :meth:`Room.apply_update
        <rtecs_server.room.Room.apply_update>`); its answer goes out in the next batch.
        ``size`` is its frame's length: an update its session's :class:`Allowance
        <rtecs_server.ratelimit.Allowance>` cannot pay for (bytes and changes per second) is
        refused inside the stream, every change rejected, with one ``ERROR rate_limit``
        (not fatal) per run of refusals."""
        if session is None:
            self._error(peer, ErrorCode.NOT_JOINED, "send a hello before updates", fatal=False,
                        now=now)
            return
        hosted = session.hosted
        refuse = None
        quiet = False  # a refusal after the first of a run: no ERROR again
        limit = self.peers.rate_limit
        if limit is not None and (limit.update_bytes or limit.update_changes):
            allowance = session.allowance
            if allowance is None:
                allowance = session.allowance = Allowance(limit, now)
            changes = count_changes(update.changes)
            shared = self.addresses.updates(self.session_table.address_of(session), now)
            if not allowance.pay(limit, size, changes, now, shared):
                refuse = Problem(ErrorCode.RATE_LIMIT, Allowance.over_budget(
                    limit, shared if allowance.can_pay(limit, size, changes, now) else None))
                quiet = allowance.refused > 1
        try:
            outcome = hosted.room.apply_update(session.client_id, update,
                                               user_id=session.user_id, claims=session.claims,
                                               refuse=refuse)
        except BadUpdate as exc:
            self._error(peer, exc.code, exc.message, fatal=False, now=now)
            return
        entry = outcome.entry
        if entry is not None:  # APPLIED
            Fanout.read_welcome(session, update.epoch)
            session.last_applied = entry.seq
            cost = session.cost
            cost.updates += 1
            cost.changes_accepted += len(entry.changes)
            cost.changes_rejected += len(entry.rejected)
            self.directory.mark_dirty(hosted)
        elif outcome.status is UpdateStatus.GAP:
            self._error(peer, ErrorCode.SEQUENCE,
                        f"update {update.seq} skips a sequence number: resyncing", fatal=False,
                        now=now)
            self._resync(session, now)
        for problem in () if quiet else outcome.problems:
            self._error(peer, problem.code, problem.message, fatal=False, now=now)

    def handle_ping(self, peer: bytes, session: Session | None, ping: Ping,
                    now: float) -> None:
        """Answer ``PONG`` (with the room's ``room_seq``), or ``ERROR not_joined`` to a peer
        with no session; a resync that waited for its cooldown happens here."""
        if session is None:  # forgotten (restart, timeout): tell it, so it rejoins
            self._error(peer, ErrorCode.NOT_JOINED, "no session: send a hello", fatal=False,
                        now=now)
            return
        Fanout.read_welcome(session, ping.epoch)
        if session.stalled or session.needs_resync:   # catch up, or a resync that waited
            if not self.fanout.catch_up(session, now):
                self._end_unread(session, now)
            if self.session_table.get(peer) is not session:
                return  # ended: it left too many resyncs unread
        self.transport.send(
            peer, encode(Pong(ping.client_time, now, session.room.room_seq)), False)

    def handle_schema(self, peer: bytes, session: Session | None, message: Schema,
                      now: float) -> None:
        """Merge the types a member first uses after joining into its room's schema."""
        if session is None:
            self._error(peer, ErrorCode.NOT_JOINED, "send a hello before a schema",
                        fatal=False, now=now)
            return
        try:
            session.room.extend_schema(session.client_id, message.schema)
        except BadUpdate as exc:
            self._error(peer, exc.code, exc.message, fatal=False, now=now)

    def handle_bye(self, peer: bytes, session: Session | None, now: float) -> None:
        """End the peer's session at once (its lifetime flags apply)."""
        if session is not None:
            self.members.leave(session, now)

    # ----------------------------------------------------------------- output

    def tick(self, now: float) -> None:
        """:meth:`check_leases`, :meth:`expire`, :meth:`maintain`, then :meth:`flush`."""
        self.check_leases(now)
        self.expire(now)
        self.maintain(now)
        self.flush(now)

    @property
    def largest_room(self) -> int:
        """Members of the most crowded room (the server paces its flushes by it)."""
        return max((len(h.members) for h in self.rooms.values()), default=0)

    def flush(self, now: float) -> None:
        """Fan out every room's pending entries: one encode per room, the same bytes to every
        member (except stalled ones, which will be resynced), kept in the room's history."""
        for hosted in self.directory.take_dirty():
            self.fanout.flush(hosted, now)

    def expire(self, now: float) -> None:
        """End the sessions silent past the session grace (their lifetime flags apply),
        send the resume snapshots whose cooldown passed, close rooms empty past the
        empty-room timeout, forget idle unjoined peers."""
        self.members.expire(now, self.session_grace)
        if self._deferred:
            self._send_deferred(now)
        self.directory.close_empty(now, self.empty_room_timeout)
        self.peers.forget_idle(now, self.session_table.by_peer)
        self.addresses.forget_idle(now, self.session_table.addresses)

    def close(self, now: float) -> int:
        """Shut down: save every room and release its lease (with persistence), then tell
        every client (``ERROR shutdown``, fatal) and end its session. Returns how many
        clients were told."""
        self.directory.shut_down(now)
        sessions = list(self.session_table)
        for session in sessions:
            if session.detached:   # its routing id is someone else's now: tell nobody
                self.members.leave(session, now, quiet=True)
                continue
            self._error(session.peer, ErrorCode.SHUTDOWN, "the server is shutting down",
                        fatal=True, now=now, quiet=True)
        self.directory.take_dirty()  # the leaves just queued go to nobody
        if sessions:
            log.info("told %d clients that the server is shutting down", len(sessions))
        return len(sessions)

    def maintain(self, now: float) -> None:
        """Persistence housekeeping: renew the leases that are due, checkpoint the rooms whose
        persistent state changed, retry failed lease releases. Nothing without persistence."""
        self.members.drop_lost(self.directory.maintain(now))

    def check_leases(self, now: float) -> None:
        """Stop hosting rooms whose lease ran out and cannot be renewed. O(1) while no lease
        is near its end: call it before handling frames, so a loop stalled past a lease never
        applies updates to a room another instance may host by now."""
        self.members.drop_lost(self.directory.check_leases(now))

    # ----------------------------------------------------------------- bad input

    def _admit(self, peer: bytes, session: Session | None, now: float) -> bool:
        verdict = self.peers.admit(peer, now)
        if verdict is Verdict.ADMIT:
            return True
        if session is not None:
            session.cost.rate_limited += 1
        if verdict is not Verdict.DROP:
            self._error(peer, ErrorCode.RATE_LIMIT, self.peers.over_limit(peer, verdict, now),
                        fatal=verdict is Verdict.FATAL, now=now)
        return False

    def _pay_frame(self, peer: bytes, session: Session | None, size: int, now: float) -> bool:
        """Charge a frame that is neither an UPDATE nor a PING (a HELLO, a SCHEMA, ...) to
        its address's budget before it is decoded (:meth:`AddressTable.pay_schema
        <rtecs_server.ratelimit.AddressTable.pay_schema>`); False: refused with a non-fatal
        ``ERROR rate_limit`` (logged at the 1st, 10th, 100th and every 1000th: fresh
        connections would pass the per-peer log throttle)."""
        if session is not None:
            address = self.session_table.address_of(session)
        else:
            address = None if self._address_of is None else address_key(self._address_of(peer))
        if self.addresses.pay_schema(address, size, now):
            return True
        assert address is not None
        if session is not None:
            session.cost.rate_limited += 1
        message = self.addresses.over_schema_budget(address, size)
        self._log_counted("schema_budget", "peer %s: %s", peer.hex(), message)
        self._error(peer, ErrorCode.RATE_LIMIT, message, fatal=False, now=now, quiet=True)
        return False

    def _log_counted(self, kind: str, fmt: str, *args: object) -> None:
        """Log the 1st, 10th, 100th and every 1000th event of ``kind`` as a warning (with
        the count so far), the rest at debug level."""
        n = self._refusals[kind] = self._refusals.get(kind, 0) + 1
        log.log(logging.WARNING if n in (1, 10, 100) or n % 1000 == 0 else logging.DEBUG,
                fmt + " (%d such refusals so far)", *args, n)

    def _detach(self, session: Session, now: float) -> None:
        """``session``'s routing id came over another connection: nothing more of the
        session's goes to that routing id (see :meth:`handle`)."""
        self.session_table.detach(session)
        log.warning("client %d of room %r: its routing id %s came over a new connection; "
                    "the session is detached from it (it times out unless resumed)",
                    session.client_id, session.room.name, session.peer.hex()[:64])

    def _resync(self, session: Session, now: float) -> None:
        """Resync ``session`` (when its cooldown allows: :mod:`rtecs_server.fanout`), or end
        it if it left too many resync welcomes unread."""
        if not self.fanout.request_resync(session, now):
            self._end_unread(session, now)

    def _too_soon(self, session: Session, now: float) -> bool:
        """A hello on ``session``'s connection (a re-join) is refused: ``session`` left too
        many snapshots unread (ended), or the resync cooldown since its last welcome has
        not passed (``ERROR rate_limit``, not fatal; the session goes on). False: it may
        join again."""
        if session.unread_resyncs >= MAX_UNREAD_RESYNCS:
            self._end_unread(session, now)
            return True
        cooldown = resync_cooldown(session)
        since = now - max(session.opened, session.last_resync)
        if since >= cooldown:
            return False
        self._error(session.peer, ErrorCode.RATE_LIMIT,
                    f"a hello {since:.2f} s after this connection's last welcome: joining "
                    f"again on one connection waits {cooldown:g} s; the session in room "
                    f"{session.room.name!r} goes on", fatal=False, now=now)
        return True

    def _end_unread(self, session: Session, now: float) -> None:
        """End ``session``: it left :data:`~rtecs_server.fanout.MAX_UNREAD_RESYNCS`
        snapshots unread (a fatal ``ERROR rate_limit``)."""
        self._error(session.peer, ErrorCode.RATE_LIMIT,
                    f"{session.unread_resyncs} snapshots sent and none read (no ping or "
                    f"update named their epoch): session ended", fatal=True, now=now)

    def _bad_frame(self, peer: bytes, session: Session | None, frame: bytes,
                   exc: ProtocolError, now: float) -> None:
        code = ErrorCode.PROTOCOL if exc.code is None else ErrorCode(exc.code)
        if session is not None:
            session.last_seen = now
        self._error(peer, code, str(exc), fatal=False, now=now)
        if session is not None and _peek_kind(frame) == _UPDATE:  # an UPDATE lost: repair the
            self._resync(session, now)        # client's sequence

    def _error(self, peer: bytes, code: ErrorCode, message: str, *, fatal: bool, now: float,
               quiet: bool = False) -> None:
        """Send ``ERROR`` to ``peer``, log it (throttled per peer); end its session if fatal."""
        session = self.session_table.get(peer)
        who = (f"client {session.client_id} of room {session.room.name!r}"
               if session is not None else f"peer {peer.hex()}")
        if not quiet:
            self.peers.log_bad_input(peer, now, "%s: %s%s (%s)", who,
                                     "fatal: " if fatal else "", message, code.value)
        self.transport.send(peer, encode(Error(code.value, message, fatal)))
        if session is not None:
            session.cost.errors += 1
            if fatal:
                self.members.leave(session, now)
