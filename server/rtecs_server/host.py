"""RoomHost: the server's message handling over any transport, with no sockets and no clock.

The socket loop (or a test over :mod:`rtecs.transport.memory`) gives it frames with
:meth:`RoomHost.handle` and calls :meth:`RoomHost.flush` (fan out) and
:meth:`RoomHost.expire` (housekeeping) with the current time; :meth:`RoomHost.tick` does both
and :meth:`RoomHost.pump` receives, handles and ticks in one call. It keeps one session per
peer, creates rooms on first join, answers pings, fans each room's batch out (one encode, the
same bytes to every member), removes clients that went silent past the heartbeat timeout,
drops rooms that stayed empty and rate-limits every peer (:mod:`rtecs_server.ratelimit`).

Bad input never raises: it is answered with ``ERROR`` to that peer and logged (at most
:data:`LOG_BURST` warnings per peer per :data:`LOG_WINDOW` seconds; the rest at debug level,
counted), and it changes nothing in any room:

==============================================  ================  ======================
input                                           error code        session
==============================================  ================  ======================
undecodable frame, several frame parts          ``protocol``      kept
frame over the update / hello size limit        ``over_limit``    kept
an update, ping or schema before a hello        ``not_joined``    (none)
wrong protocol version, schema conflict, full   ``version`` …     refused (fatal)
unknown model ids, wrong value types            ``bad_update``    kept (changes rejected)
a write that would grow the datastore too big   ``over_limit``    kept (change rejected)
a gap in update sequence numbers                ``sequence``      kept, resynced
a schema extension contradicting the room's     ``schema``        kept (nothing merged)
over the rate limit / sustained                 ``rate_limit``    kept / ended (fatal)
==============================================  ================  ======================

A frame that was an update but could not be decoded (malformed, or over 125 KB) breaks the
client's sequence, so that client is resynced as for a gap: its refused writes roll back.

Persistence (``persistence``, a :class:`~rtecs_server.persistence.Persistence`; None: rooms
live in memory only). A hello for a room this instance does not hold claims and loads it
(:meth:`Persistence.open <rtecs_server.persistence.Persistence.open>`); the joiner then gets:

==============================================  =============================================
the room is hosted by another instance          ``REDIRECT endpoint room`` (no session)
the storage is unreachable, the room is moving  ``ERROR unavailable`` (fatal; clients retry)
the stored room cannot be loaded                ``ERROR room_corrupt`` (fatal), logged as an
                                                error; other rooms are unaffected
==============================================  =============================================

:meth:`maintain` renews leases and checkpoints rooms whose persistent state changed;
:meth:`check_leases` (cheap: call it before handling frames) catches a lease that ran out
while the loop was stalled. A room whose lease is lost (taken over after it expired, or a
save refused by its fencing token) is dropped: its members get ``ERROR unavailable`` and
reconnect, to be redirected to the new host. An empty room is saved and its lease released
when it closes; if the save fails the room stays in memory and the save is retried.
:meth:`close` saves every room before saying goodbye.

Resyncs (a fresh ``WELCOME`` with the full snapshot) happen at most once per
:data:`RESYNC_COOLDOWN` seconds per client, so a client cannot make the server send snapshots
in a loop; a resync that has to wait happens at that client's next ping. A client whose send
queue is full (``transport.send`` returned False) is *stalled*: it gets no more batches
until its resync, which is tried at each of its pings; it is never skipped silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
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
    decode_client_message,
    encode,
)
from rtecs.transport import ServerTransport
from rtecs_server.directory import HostedRoom, LostRoom, RoomDirectory, Session
from rtecs_server.persistence import Persistence
from rtecs_server.plugins import Plugin
from rtecs_server.ratelimit import RateLimit, TokenBucket, Verdict
from rtecs_server.room import BadUpdate, JoinRefused, UpdateStatus

__all__ = ["LOG_BURST", "LOG_WINDOW", "RESYNC_COOLDOWN", "RoomHost"]

log = logging.getLogger(__name__)

#: Minimum seconds between two resyncs of one client.
RESYNC_COOLDOWN: Final = 1.0
#: Bad-input warnings logged per peer per window; the rest go to debug level and are counted.
LOG_BURST: Final = 5
LOG_WINDOW: Final = 10.0
#: Seconds after its last frame that an unjoined peer's rate-limit state is forgotten.
PEER_IDLE: Final = 10.0

_UPDATE_KIND: Final = 2  # see rtecs.protocol: UPDATE [2, seq, changes]


class _Peer:
    """Per-peer state that outlives sessions: the rate limit and the log throttle."""

    __slots__ = ("bucket", "last_frame", "log_start", "logged", "suppressed")

    def __init__(self, bucket: TokenBucket | None, now: float) -> None:
        self.bucket = bucket
        self.last_frame = now
        self.log_start = now
        self.logged = 0
        self.suppressed = 0


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
    keeps rooms in memory only (see the module docs).
    """

    def __init__(self, transport: ServerTransport, *, plugins: Iterable[Plugin] = (),
                 limits: Limits = DEFAULT_LIMITS, heartbeat_timeout: float = 5.0,
                 empty_room_timeout: float = 30.0,
                 max_clients_per_room: int | None = None,
                 rate_limit: RateLimit | None = None,
                 persistence: Persistence | None = None) -> None:
        self.transport = transport
        """Where frames come from and go to (ZeroMQ in the server, memory in tests)."""
        self.plugins = tuple(plugins)
        """The plugins every room runs (:mod:`rtecs_server.plugins`)."""
        self.limits = limits
        """Size limits of frames and rooms (rooms take them when they open)."""
        self.heartbeat_timeout = heartbeat_timeout
        """Seconds of silence after which a client's session ends."""
        self.empty_room_timeout = empty_room_timeout
        """Seconds a room stays open after its last member left."""
        self.max_clients_per_room = max_clients_per_room
        """Members per room at most (None: no cap)."""
        self.rate_limit = rate_limit
        """Per-peer message rate limit (None: off)."""
        self.sessions: dict[bytes, Session] = {}
        """Joined clients by routing id."""
        self._peers: dict[bytes, _Peer] = {}
        self.persistence = persistence
        """Room storage and leases (None: rooms live in memory only)."""
        self.directory = RoomDirectory(persistence)
        """The open rooms, their leases and checkpoints
        (:class:`~rtecs_server.directory.RoomDirectory`)."""

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

    def handle(self, peer: bytes, frame: bytes, now: float) -> None:
        """Handle one frame from ``peer``. Bad input is answered with an error, never raised."""
        if not self._admit(peer, now):
            return
        try:
            message = decode_client_message(frame, self.limits)
        except ProtocolError as exc:
            self._bad_frame(peer, frame, exc, now)
            return
        session = self.sessions.get(peer)
        if session is not None:
            session.last_seen = now
        if isinstance(message, Update):
            self.handle_update(peer, session, message, now)
        elif isinstance(message, Ping):
            self.handle_ping(peer, session, message, now)
        elif isinstance(message, Hello):
            self.handle_hello(peer, session, message, now)
        elif isinstance(message, Bye):
            self.handle_bye(peer, session, now)
        elif isinstance(message, Resync) and session is not None:
            log.info("client %d of room %r asked for a resync", session.client_id,
                     session.room.name)
            self._request_resync(session, now)
        elif isinstance(message, Schema):
            self.handle_schema(peer, session, message, now)
        elif isinstance(message, Resume):
            self.handle_resume(peer, session, message, now)

    def handle_resume(self, peer: bytes, session: Session | None, resume: Resume,
                      now: float) -> None:
        """A client takes up a session over a fresh connection. Sessions are not resumable
        yet: every ``RESUME`` is answered ``ERROR session_unknown`` (not fatal), after which
        the client joins again with ``HELLO``."""
        self._error(peer, ErrorCode.SESSION_UNKNOWN,
                    "this server does not resume sessions: join again with HELLO",
                    fatal=False, now=now)

    def handle_malformed(self, peer: bytes, reason: str, now: float) -> None:
        """A message the transport could not even turn into one frame (several parts)."""
        if self._admit(peer, now):
            self._error(peer, ErrorCode.PROTOCOL, reason, fatal=False, now=now)

    def handle_hello(self, peer: bytes, session: Session | None, hello: Hello,
                     now: float) -> None:
        """Join ``peer`` to the hello's room (opening or loading it first), ending any
        session it had; answer ``WELCOME``, ``REDIRECT`` or a fatal ``ERROR``."""
        if session is not None:
            self._end_session(session, now)
        directory = self.directory
        hosted = directory.rooms.get(hello.room)
        created = hosted is None
        if hosted is None:
            opened = directory.open(hello.room, self.plugins, self.limits,
                                    self.max_clients_per_room, now=now)
            if not isinstance(opened, HostedRoom):  # the joiner's answer: redirect or error
                self.transport.send(peer, encode(opened))
                return
            hosted = opened
            directory.add(hosted)
        self._fan_out(hosted, now)  # join() needs the room's pending entries sent first
        try:
            welcome = hosted.room.join(hello, now)
        except JoinRefused as exc:
            if created:
                directory.discard(hosted)  # unchanged: no save
            self._error(peer, exc.code, f"cannot join room {hello.room!r}: {exc.message}",
                        fatal=True, now=now)
            return
        if created:
            loaded = hosted.keeping is not None and hosted.keeping.saved_changes != -1
            log.info("room %r %s", hello.room, "opened from its checkpoint" if loaded
                     else "created")
        new = Session(peer, hosted, welcome.client_id, now)
        hosted.members[welcome.client_id] = new
        hosted.empty_since = None
        hosted.close_after = -math.inf
        self.sessions[peer] = new
        directory.mark_dirty(hosted)
        log.info("client %d joined room %r (%d members)", welcome.client_id, hello.room,
                 len(hosted.members))
        if not self.transport.send(peer, encode(welcome)):
            self._stall(new)

    def handle_update(self, peer: bytes, session: Session | None, update: Update,
                      now: float) -> None:
        """Sequence and apply one update (see :meth:`Room.apply_update
        <rtecs_server.room.Room.apply_update>`); its answer goes out in the next batch."""
        if session is None:
            self._error(peer, ErrorCode.NOT_JOINED, "send a hello before updates", fatal=False,
                        now=now)
            return
        hosted = session.hosted
        room = hosted.room
        try:
            outcome = room.apply_update(session.client_id, update)
        except BadUpdate as exc:
            self._error(peer, exc.code, exc.message, fatal=False, now=now)
            return
        if outcome.status is UpdateStatus.APPLIED:
            self.directory.mark_dirty(hosted)
        elif outcome.status is UpdateStatus.GAP:
            self._error(peer, ErrorCode.SEQUENCE,
                        f"update {update.seq} skips a sequence number: resyncing", fatal=False,
                        now=now)
            self._request_resync(session, now)
        for problem in outcome.problems:
            self._error(peer, problem.code, problem.message, fatal=False, now=now)

    def handle_ping(self, peer: bytes, session: Session | None, ping: Ping,
                    now: float) -> None:
        """Answer ``PONG`` (with the room's ``room_seq``), or ``ERROR not_joined`` to a peer
        with no session; a resync that waited for its cooldown happens here."""
        if session is None:  # forgotten (restart, timeout): tell it, so it rejoins
            self._error(peer, ErrorCode.NOT_JOINED, "no session: send a hello", fatal=False,
                        now=now)
            return
        if session.needs_resync:
            self._request_resync(session, now)
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
            self._end_session(session, now)

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
        member (except stalled ones, which will be resynced)."""
        for hosted in self.directory.take_dirty():
            self._fan_out(hosted, now)

    def expire(self, now: float) -> None:
        """Remove clients silent past the heartbeat timeout (their lifetime flags apply),
        close rooms empty past the empty-room timeout, forget idle unjoined peers."""
        timeout = self.heartbeat_timeout
        for session in [s for s in self.sessions.values() if now - s.last_seen > timeout]:
            log.warning("client %d of room %r timed out (silent for %.1f s)",
                        session.client_id, session.room.name, now - session.last_seen)
            self._end_session(session, now)
        self.directory.close_empty(now, self.empty_room_timeout)
        limit = self.rate_limit
        sessions = self.sessions
        for peer, state in list(self._peers.items()):
            if peer in sessions or now - state.last_frame < PEER_IDLE:
                continue
            if limit is None or state.bucket is None or state.bucket.idle(limit, now):
                del self._peers[peer]

    def close(self, now: float) -> int:
        """Shut down: save every room and release its lease (with persistence), then tell
        every client (``ERROR shutdown``, fatal) and end its session. Returns how many
        clients were told."""
        self.directory.shut_down(now)
        sessions = list(self.sessions.values())
        for session in sessions:
            self._error(session.peer, ErrorCode.SHUTDOWN, "the server is shutting down",
                        fatal=True, now=now, quiet=True)
        self.directory.take_dirty()  # the leaves just queued go to nobody
        if sessions:
            log.info("told %d clients that the server is shutting down", len(sessions))
        return len(sessions)

    # ----------------------------------------------------------------- rooms and storage

    def maintain(self, now: float) -> None:
        """Persistence housekeeping: renew the leases that are due, checkpoint the rooms whose
        persistent state changed, retry failed lease releases. Nothing without persistence."""
        self._drop_lost(self.directory.maintain(now))

    def check_leases(self, now: float) -> None:
        """Stop hosting rooms whose lease ran out and cannot be renewed. O(1) while no lease
        is near its end: call it before handling frames, so a loop stalled past a lease never
        applies updates to a room another instance may host by now."""
        self._drop_lost(self.directory.check_leases(now))

    def _drop_lost(self, lost: list[LostRoom]) -> None:
        """Tell the members of rooms whose lease is gone to reconnect (``ERROR unavailable``)
        and end their sessions, so they are redirected to whoever hosts the room now."""
        for name, hosted, why, saved in lost:
            for session in list(hosted.members.values()):
                self.transport.send(session.peer, encode(Error(
                    ErrorCode.UNAVAILABLE.value, f"room {name!r} is no longer hosted by this "
                    f"server instance: reconnect", True)))
                if self.sessions.get(session.peer) is session:
                    del self.sessions[session.peer]
            log.warning("stopped hosting room %r: %s (%s; %d clients told to reconnect)", name,
                        why, "its latest state was saved" if saved else "not saved",
                        len(hosted.members))
            hosted.members.clear()

    def _fan_out(self, hosted: HostedRoom, now: float) -> None:
        frame = hosted.room.flush(now)
        if frame is None:
            return
        live = {s.peer: s for s in hosted.members.values() if not s.stalled}
        for peer in self.transport.broadcast(live, frame):
            self._stall(live[peer])

    def _stall(self, session: Session) -> None:
        log.warning("client %d of room %r cannot keep up (send queue full): no batches until "
                    "it is resynced at its next ping", session.client_id, session.room.name)
        session.stalled = True
        session.needs_resync = True

    def _request_resync(self, session: Session, now: float) -> None:
        session.needs_resync = True
        if now - session.last_resync >= RESYNC_COOLDOWN:
            self._resync(session, now)

    def _resync(self, session: Session, now: float) -> None:
        self._fan_out(session.hosted, now)
        welcome = session.room.resync(session.client_id, now)
        session.last_resync = now
        if self.transport.send(session.peer, encode(welcome)):
            session.needs_resync = False
            session.stalled = False
            log.info("client %d of room %r resynced (%d models)", session.client_id,
                     session.room.name, len(welcome.snapshot))
        else:
            session.stalled = True

    def _end_session(self, session: Session, now: float) -> None:
        if self.sessions.get(session.peer) is session:
            del self.sessions[session.peer]
        hosted = session.hosted
        if hosted.members.get(session.client_id) is not session:
            return
        del hosted.members[session.client_id]
        session.room.leave(session.client_id, now)
        self.directory.mark_dirty(hosted)
        log.info("client %d left room %r", session.client_id, session.room.name)
        if not hosted.members:
            hosted.empty_since = now

    # ----------------------------------------------------------------- bad input

    def _admit(self, peer: bytes, now: float) -> bool:
        state = self._peers.get(peer)
        limit = self.rate_limit
        if state is None:
            bucket = TokenBucket(limit, now) if limit is not None else None
            state = self._peers[peer] = _Peer(bucket, now)
        state.last_frame = now
        if state.bucket is None or limit is None:
            return True
        verdict = state.bucket.take(limit, now)
        if verdict is Verdict.ADMIT:
            return True
        if verdict is Verdict.WARN:
            self._error(peer, ErrorCode.RATE_LIMIT,
                        f"over the rate limit of {limit.rate:g} messages/s (burst "
                        f"{limit.burst}): messages are dropped; send less often", fatal=False,
                        now=now)
        elif verdict is Verdict.FATAL:
            b = state.bucket
            self._error(peer, ErrorCode.RATE_LIMIT,
                        f"over the rate limit of {limit.rate:g} messages/s for "
                        f"{now - b.episode_start:.1f} s ({b.dropped} messages dropped): "
                        f"session ended", fatal=True, now=now)
        return False

    def _bad_frame(self, peer: bytes, frame: bytes, exc: ProtocolError, now: float) -> None:
        text = str(exc)
        code = ErrorCode.PROTOCOL if exc.code is None else ErrorCode(exc.code)
        session = self.sessions.get(peer)
        if session is not None:
            session.last_seen = now
        self._error(peer, code, text, fatal=False, now=now)
        if session is not None and _peek_kind(frame) == _UPDATE_KIND:
            self._request_resync(session, now)  # its update was lost: repair the sequence

    def _error(self, peer: bytes, code: ErrorCode, message: str, *, fatal: bool, now: float,
               quiet: bool = False) -> None:
        """Send ``ERROR`` to ``peer``, log it (throttled per peer); end its session if fatal."""
        session = self.sessions.get(peer)
        who = (f"client {session.client_id} of room {session.room.name!r}"
               if session is not None else f"peer {peer.hex()}")
        if not quiet:
            self._log_bad_input(peer, now, "%s: %s%s (%s)", who, "fatal: " if fatal else "",
                                message, code.value)
        self.transport.send(peer, encode(Error(code.value, message, fatal)))
        if fatal and session is not None:
            self._end_session(session, now)

    def _log_bad_input(self, peer: bytes, now: float, fmt: str, *args: object) -> None:
        state = self._peers.get(peer)
        if state is None:
            log.warning(fmt, *args)
            return
        if now - state.log_start >= LOG_WINDOW:
            if state.suppressed:
                log.warning("peer %s: %d more bad-input messages in the last %.0f s (logged at "
                            "debug level)", peer.hex(), state.suppressed, now - state.log_start)
            state.log_start = now
            state.logged = 0
            state.suppressed = 0
        if state.logged < LOG_BURST:
            state.logged += 1
            log.warning(fmt, *args)
        else:
            state.suppressed += 1
            log.debug(fmt, *args)

