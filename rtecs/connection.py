"""Connection: one client's session with a room server, as a state machine with no models.

:class:`~rtecs.Realtime` is the facade; this class keeps it in the room, and knows nothing
about state. It owns:

- the hello, and what its answer means: a ``WELCOME`` opens a *new session* when it answers
  a hello (:attr:`Connection.new_session`: the facade rolls back) or a new *epoch* of the
  live session when it answers a resync (the facade re-bases);
- the stream's order (DESIGN §4b, :class:`~rtecs.stream.StreamOrder`): a gap, a pong naming
  a batch never received, a malformed frame or an error the facade reports asks for a fresh
  snapshot (``RESYNC``), and no batch is handed on until the welcome;
- the session (:class:`~rtecs.session.ClientSession`: what a ``RESUME`` will show, the frames
  of updates not answered yet) and ``session_lost`` when a new session replaced it;
- heartbeats (a ``PING`` every ``ping_interval``; no word for ``heartbeat_timeout`` loses
  the session) and the server's clock (:class:`~rtecs.timing.ServerClock`);
- losing and regaining the room: the ``ERROR`` codes after which to reconnect, the backoff
  (:class:`~rtecs.timing.Backoff`), redirects and reconnections (:class:`~rtecs.link.Link`,
  which also moves the frames).

Time comes from the injected ``clock``, randomness from ``rng`` and transports from the
injected factories, so a test steps it: :meth:`step` (timers), :meth:`receive` (messages, in
order), :meth:`check` (deadlines). An event-loop driver waits for :meth:`fileno` or
:meth:`next_deadline`. States: ``connecting`` → ``connected``; a lost link → ``reconnecting``
→ (``resumed`` or ``resynced``) → ``connected``; a hole → ``resynced`` → ``connected``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator

from reactivex import Observable
from reactivex.subject import BehaviorSubject, Subject

from rtecs.link import MAX_REDIRECTS, Link
from rtecs.protocol import (
    DEFAULT_LIMITS,
    Batch,
    Bye,
    Error,
    ErrorCode,
    Hello,
    Limits,
    Ping,
    Pong,
    Redirect,
    Resume,
    Resumed,
    Resync,
    UpdateEntry,
    Welcome,
    encode,
)
from rtecs.session import (
    _REASON_OF_CODE,
    _RECONNECT_CODES,
    ClientSession,
    ConnectionState,
    ConnectionStats,
    DisconnectReason,
    SessionLost,
)
from rtecs.stream import StreamOrder
from rtecs.timing import Backoff, ServerClock
from rtecs.transport import ClientTransport

__all__ = ["MAX_REDIRECTS", "Connection", "welcome_opens_session"]

log = logging.getLogger("rtecs.realtime")



def welcome_opens_session(welcome: Welcome, session: ClientSession) -> bool:
    """Whether ``welcome`` (not answering a hello) opens another session than ``session``:
    it names another session id, or another client id (a server that names no sessions)."""
    return (welcome.session_id != session.session_id
            or welcome.client_id != session.client_id)


class Connection:
    """The session state machine of one client (see the module docs).

    ``hello`` makes the hello to send (its schema may grow between attempts). ``reconnect``
    makes a fresh transport to the original endpoint (None: a lost session is not retried);
    ``redirect`` one to another endpoint (None: redirects cannot be followed).
    """

    def __init__(self, transport: ClientTransport, room: str, hello: Callable[[], Hello], *,
                 clock: Callable[[], float],
                 reconnect: Callable[[], ClientTransport] | None = None,
                 redirect: Callable[[str], ClientTransport] | None = None,
                 ping_interval: float = 1.0, heartbeat_timeout: float = 5.0,
                 connect_timeout: float = 3.0, reconnect_tries: int = 8,
                 reconnect_backoff: tuple[float, float] = (0.25, 5.0),
                 limits: Limits = DEFAULT_LIMITS, rng: random.Random | None = None) -> None:
        self.room = room
        self.ping_interval = ping_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.connect_timeout = connect_timeout
        self._asked = limits
        self._hello = hello
        self._clock = clock
        self._backoff = Backoff(reconnect_tries, *reconnect_backoff, rng or random.Random())
        self._server_clock = ServerClock(clock)
        self._state: BehaviorSubject[ConnectionState] = BehaviorSubject(
            ConnectionState.CONNECTING)
        self._session_lost: Subject[SessionLost] = Subject()
        self._order: StreamOrder[Batch] = StreamOrder(window=0)  # one ordered channel
        self._lost_why = ""          # why the last session's link went (for SessionLost)
        self._ever_connected = False
        self._joining = True         # a hello is out: its welcome opens a new session
        self._resuming = False       # a RESUME is out: RESUMED, or a welcome of this session
        self._resync_asked = False   # a hole in the stream: no batch until the welcome
        now = clock()
        self._next_attempt = float("inf")  # no attempt scheduled
        self._next_ping = 0.0
        self._deadline = now + connect_timeout
        self._last_heard = now
        self.session: ClientSession | None = None
        """The session the last welcome opened (None before the first)."""
        self.stats = ConnectionStats()
        """Counters of frames, bytes, updates, resyncs and reconnects."""
        self._link = Link(transport, limits, self.stats, reconnect=reconnect,
                          redirect=redirect)
        self.new_session = True
        """Whether the last welcome opened a new session (else: a new epoch of this one)."""
        self.disconnect_reason: DisconnectReason | None = None
        """Why the session ended for good (None while it has not)."""
        self.last_error: str | None = None
        """The last ``ERROR`` the server sent, as ``"code: message"`` (None if none)."""
        self._send_hello()

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> ConnectionState:
        return self._state.value

    @property
    def states(self) -> Observable[ConnectionState]:
        """The current state on subscribe, then every change."""
        return self._state

    @property
    def limits(self) -> Limits:
        """The limits asked for, with the values the last welcome announced."""
        return self._link.limits

    @property
    def session_lost(self) -> Observable[SessionLost]:
        """Emits when a welcome opened a new session because the previous one could not be
        taken up again (after this client's writes rolled back and the snapshot showed)."""
        return self._session_lost

    @property
    def room_seq(self) -> int:
        """The ``room_seq`` of the last batch handed on (or of the last welcome)."""
        return self._order.last

    @property
    def bytes_sent(self) -> int:
        return self.stats.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.stats.bytes_received

    @property
    def connected(self) -> bool:
        return self._state.value is ConnectionState.CONNECTED

    @property
    def resync_pending(self) -> bool:
        """True from a ``RESYNC`` request until its welcome: the state is known incomplete."""
        return self._resync_asked

    @property
    def room_time(self) -> float:
        """The server's clock now, estimated (see :class:`~rtecs.timing.ServerClock`)."""
        return self._server_clock.room_time

    @property
    def ping(self) -> float | None:
        """Round trip to the server in milliseconds, measured (None until the first pong)."""
        return self._server_clock.ping

    @property
    def reconnect_tries(self) -> int:
        """Connection attempts in a row before giving up."""
        return self._backoff.limit

    @property
    def tries(self) -> int:
        """Connection attempts made in a row so far (1: the first one)."""
        return self._backoff.tries

    # ----------------------------------------------------------------- stepping

    def step(self, now: float) -> None:
        """Timers due before receiving: a ping, a reconnection attempt."""
        state = self._state.value
        if state is ConnectionState.CONNECTED and now >= self._next_ping:
            if self._resync_asked:
                self.send(encode(Resync()))  # in case the server could not serve it yet
            epoch = self.session.epoch if self.session is not None else 0
            self.send(encode(Ping(now, epoch)), reliable=False)  # epoch: "I read its welcome"
            self._next_ping = now + self.ping_interval
        elif state is ConnectionState.RECONNECTING and now >= self._next_attempt:
            self._attempt(now)

    def receive(self) -> Iterator[Welcome | Batch]:
        """The welcomes and batches that arrived, in stream order, for the facade to apply
        one by one (a generator: each is handed on once the one before it was applied).
        Pongs, errors and redirects are handled here. Call :meth:`welcomed` after applying a
        welcome."""
        stats = self.stats
        heard = False
        for message in self._link.receive():
            if not heard:
                heard = True
                self._last_heard = self._clock()
            if message is None:
                self.ask_resync("a malformed frame")
                continue
            if isinstance(message, Batch):
                for batch in self._take(message):
                    stats.batches_applied += 1
                    yield batch
            elif isinstance(message, Welcome):
                session = self.session
                self.new_session = (self._joining or session is None
                                    or welcome_opens_session(message, session))
                yield message
            elif isinstance(message, Pong):
                self._handle_pong(message)
            elif isinstance(message, Redirect):
                self._handle_redirect(message)
            elif isinstance(message, Resumed):
                if self._resuming:
                    self._resumed(message)
                else:   # only ever the answer to a RESUME
                    log.error("the server sent RESUMED without a RESUME: ignored")
                    self.ask_resync("an unexpected RESUMED")
            else:
                self._handle_error(message)
            if self._state.value is ConnectionState.DISCONNECTED:
                return

    def welcomed(self, welcome: Welcome) -> None:
        """The facade applied ``welcome``: the session is in the room from here."""
        first = not self.connected
        returning = self._ever_connected
        lost: SessionLost | None = None
        if self.new_session or self.session is None:
            if self.session is not None:
                lost = SessionLost(self.session.client_id, welcome.client_id,
                                   self._lost_why or "the link was lost")
            self.session = ClientSession(welcome)
        else:
            self.session.new_epoch(welcome)
        self.stats.welcomes += 1
        self._link.limits = self._asked.with_announced(welcome.limits)
        self._joining = False
        self._resuming = False
        self._resync_asked = False
        self._lost_why = ""
        self._order.reset(welcome.room_seq)
        self._server_clock.reported(welcome.server_time)
        self._backoff.succeeded()
        self._link.redirects = 0
        self._link.count_hangups = False
        self._ever_connected = True
        if first:
            self._next_ping = self._clock()
        if returning:
            self._state.on_next(ConnectionState.RESYNCED)
        if first or returning:
            self._state.on_next(ConnectionState.CONNECTED)
        if lost is not None:
            self.stats.sessions_lost += 1
            log.warning("room %r: the session of client %d could not be taken up again (%s); "
                        "joined as client %d", self.room, lost.old_client_id, lost.reason,
                        lost.new_client_id)
            self._session_lost.on_next(lost)

    def check(self, now: float) -> None:
        """Deadlines after receiving: the heartbeat, or a connection attempt's timeout."""
        state = self._state.value
        if state is ConnectionState.DISCONNECTED:
            return
        if self._link.broken and self._next_attempt == float("inf"):
            log.warning("room %r: the connection to the server broke", self.room)
            self._lost_why = self._lost_why or "the connection broke"
            self._lost(DisconnectReason.SERVER_GONE, now)
        elif state is ConnectionState.CONNECTED:
            if now - self._last_heard > self.heartbeat_timeout:
                log.warning("no word from the server for %.1f s", now - self._last_heard)
                self._lost(DisconnectReason.TIMEOUT, now)
        elif now > self._deadline:
            self._lost(DisconnectReason.TIMEOUT, now)

    def ping_now(self) -> None:
        """Send the next ping at the next :meth:`step` (tests, and a resync that waits)."""
        self._next_ping = 0.0

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds`` for a frame, if the transport can (else return at once)."""
        self._link.wait(seconds)

    def next_deadline(self) -> float:
        """The clock time by which :meth:`step` and :meth:`check` must run again, if no frame
        arrives before (a ping due, the heartbeat or connect timeout, a reconnection)."""
        state = self._state.value
        if state is ConnectionState.DISCONNECTED:
            return float("inf")
        if self.connected:
            return min(self._next_ping, self._last_heard + self.heartbeat_timeout)
        if state is ConnectionState.RECONNECTING:
            return min(self._next_attempt, self._deadline)
        return self._deadline

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when frames may have arrived, if the
        transport has one (see :meth:`Link.fileno <rtecs.link.Link.fileno>`)."""
        return self._link.fileno()

    def send(self, frame: bytes, reliable: bool = True) -> None:
        self._link.send(frame, reliable)

    def send_update(self, seq: int, frame: bytes, *, resent: bool = False) -> None:
        """Send an encoded ``UPDATE`` and keep its frame until the stream answers it."""
        if self.session is not None:
            self.session.sent(seq, frame)
        self.stats.updates_sent += 1
        if resent:
            self.stats.updates_resent += 1
        self.send(frame)

    def ask_resync(self, why: str, level: int = logging.WARNING) -> None:
        """A hole in the stream: ask for a fresh snapshot and hand on no batch until then."""
        if not self.connected or self._resync_asked:
            return
        log.log(level, "room %r: %s; asking the server for a fresh snapshot", self.room, why)
        self._resync_asked = True
        self.stats.resyncs_asked += 1
        self.send(encode(Resync()))

    def close(self) -> None:
        """Say goodbye (if in the room), end for good and release the transport."""
        if self.connected:
            self.send(encode(Bye()))
        self._disconnect(DisconnectReason.CLOSED)
        self._link.close()

    # ----------------------------------------------------------------- messages

    def _take(self, batch: Batch) -> list[Batch]:
        """The batches that follow in the stream now that ``batch`` arrived (they count as
        received): none if it is already covered or shows a hole (then a resync)."""
        if not self.connected or self._resync_asked:
            return []  # before the welcome, or after a hole: a welcome will include it
        ready = self._order.offer(batch)
        if ready is None:
            self.ask_resync(f"batch {batch.room_seq} arrived after {self.room_seq}")
            return []
        if not ready:
            log.debug("ignoring batch %d already covered (at %d)", batch.room_seq,
                      self.room_seq)
            return []
        session = self.session
        if session is not None and session.unanswered:
            me = session.client_id
            for b in ready:
                for entry in b.entries:
                    if type(entry) is UpdateEntry and entry.sender == me and entry.seq:
                        session.answered(entry.seq)
        self._server_clock.reported(ready[-1].server_time)
        return ready

    def _handle_pong(self, pong: Pong) -> None:
        self._server_clock.ponged(pong.client_time, pong.server_time)
        if pong.room_seq > self.room_seq and self.connected:
            # Every batch goes out before the pong that counts it: one was lost.
            self.ask_resync(f"the server is at batch {pong.room_seq}, this client at "
                            f"{self.room_seq}")

    def _handle_redirect(self, redirect: Redirect) -> None:
        """The server does not host this room: connect to ``redirect.endpoint`` instead."""
        if redirect.room != self.room:
            log.warning("ignoring a redirect for another room (%r)", redirect.room)
            return
        was_connected = self.connected
        why_not = self._link.follow(redirect.endpoint)
        if why_not is not None:
            self.last_error = why_not
            log.error("giving up on room %r: %s", self.room, self.last_error)
            self._disconnect(DisconnectReason.REDIRECT_LOOP)
            return
        log.info("room %r is hosted at %s: connecting there", self.room, redirect.endpoint)
        if was_connected:
            self._state.on_next(ConnectionState.RECONNECTING)
        self._restart(self._clock())

    def _resumed(self, resumed: Resumed) -> None:
        """The server took this session up again on the fresh transport: nothing is lost.
        The updates it did not apply are sent again as they were (it applies each once);
        the batches this client missed follow from the room's history."""
        session = self.session
        assert session is not None   # a RESUME is only sent for a session
        self._resuming = False
        session.secret = resumed.session_secret
        session.answered(resumed.last_applied)
        self._link.limits = self._asked.with_announced(resumed.limits)
        self._server_clock.reported(resumed.server_time)
        self._backoff.succeeded()
        self._link.redirects = 0
        self._lost_why = ""
        now = self._clock()
        self._last_heard = now
        self._next_ping = now
        stats = self.stats
        stats.resumes += 1
        for frame in session.unanswered.values():   # oldest first, same epoch and numbers
            stats.updates_sent += 1
            stats.updates_resent += 1
            self.send(frame)
        if self._resync_asked:   # the hole this client had found is still there
            self.send(encode(Resync()))
        log.info("room %r: resumed the session of client %d (%d update(s) sent again; the "
                 "server is at batch %d, this client at %d)", self.room, session.client_id,
                 len(session.unanswered), resumed.room_seq, self.room_seq)
        self._state.on_next(ConnectionState.RESUMED)
        self._state.on_next(ConnectionState.CONNECTED)

    def _handle_error(self, error: Error) -> None:
        self.last_error = f"{error.code}: {error.message}"
        if error.code == ErrorCode.SESSION_UNKNOWN.value and self._resuming:
            self._resuming = False
            if self.session is not None:
                self.session.secret = b""   # spent: never shown again
            log.warning("room %r: the server could not resume the session (%s): joining "
                        "again", self.room, self.last_error)
            self._lost_why = self._lost_why or self.last_error
            self._order.reset(0)
            self._send_hello()
        elif error.code in _RECONNECT_CODES:
            log.warning("the server lost this session (%s): reconnecting", self.last_error)
            self._lost(DisconnectReason.SERVER_GONE, self._clock())
        elif error.fatal:
            log.error("the server ended the session: %s", self.last_error)
            try:
                reason = _REASON_OF_CODE.get(ErrorCode(error.code), DisconnectReason.KICKED)
            except ValueError:
                reason = DisconnectReason.KICKED
            self._disconnect(reason)
        else:
            log.warning("the server reported: %s", self.last_error)

    # ----------------------------------------------------------------- lifecycle

    def _send_hello(self) -> None:
        self._joining = True
        self._resync_asked = False
        self.send(encode(self._hello()))

    def _lost(self, reason: DisconnectReason, now: float) -> None:
        """The session (or a connection attempt) failed: retry with backoff, or give up."""
        self._link.redirects = 0
        if not self._lost_why:
            self._lost_why = (self.last_error or reason.value) if self.connected else ""
        backoff = self._backoff
        if not self._link.can_reconnect or backoff.exhausted:
            hung_up = None if self._ever_connected else self._link.hung_up()
            if hung_up is not None:   # never in: the handshakes were refused, it seems
                self.last_error = f"{ErrorCode.AUTH_FAILED.value}: {hung_up}"
                reason = DisconnectReason.AUTH_FAILED
            elif self._ever_connected and reason is DisconnectReason.TIMEOUT:
                reason = DisconnectReason.SERVER_GONE
            log.error("giving up on room %r after %d attempt(s): %s", self.room, backoff.tries,
                      reason.value)
            self._disconnect(reason)
            return
        delay = backoff.next_delay()
        self._next_attempt = now + delay
        self._deadline = self._next_attempt + self.connect_timeout
        log.info("reconnecting to room %r in %.2f s (attempt %d of %d)", self.room, delay,
                 backoff.tries + 1, backoff.limit)
        if self._state.value is not ConnectionState.RECONNECTING:
            self._state.on_next(ConnectionState.RECONNECTING)
        if delay == 0.0:
            self._attempt(now)

    def _attempt(self, now: float) -> None:
        self._backoff.attempt()
        self.stats.reconnect_attempts += 1
        self._link.reopen()
        self._restart(now)

    def _restart(self, now: float) -> None:
        """A fresh transport: resume the session if there is one to resume (DESIGN §8),
        else wait for the welcome of a new hello."""
        self._next_attempt = float("inf")
        self._deadline = now + self.connect_timeout
        self._last_heard = now
        session = self.session
        if session is not None and session.resumable and not self._joining:
            self._resuming = True
            self.send(encode(Resume(self.room, session.session_id, session.secret,
                                    session.epoch, self._order.last, session.incarnation)))
            return
        self._resuming = False
        self._order.reset(0)
        self._send_hello()

    def _disconnect(self, reason: DisconnectReason) -> None:
        if self._state.value is ConnectionState.DISCONNECTED:
            return
        self.disconnect_reason = reason
        self._state.on_next(ConnectionState.DISCONNECTED)
