"""Realtime: one client's session with a room, driven by ``tick()`` on the game loop's thread.

A tick has fixed phases: (1) when a frame is due, collect the datastore's delta and send it
as the next update; (2) drain the transport and apply every message in stream order, each
message applied whole before its change streams emit. Nothing runs on a background thread, so
observers always run on the ticking thread.

:class:`Realtime` speaks to the server through any :class:`~rtecs.transport.ClientTransport`
(the ZeroMQ one in production, :mod:`rtecs.transport.memory` in tests) and takes a clock, so
tests step it without sleeping.

The stream has no holes (DESIGN §4b): a batch is applied only if its ``room_seq`` is the
last one plus one. A gap, a pong naming a batch this client never got, a malformed frame or an
internal error while applying asks the server for a fresh snapshot (``RESYNC``); until the
welcome arrives, batches are not applied. That welcome opens a new *epoch* of the same
session: the datastore re-bases on it (:meth:`Datastore.rebase
<rtecs.datastore.Datastore.rebase>`) — what the server applied is settled, the rest is
renumbered and sent again — so nothing the server did not refuse is rolled back. A welcome
that answers a hello starts a new session instead: unanswered writes roll back.

A subscriber that raises never stops the tick: its exception is logged and put on
:attr:`Realtime.errors`.

Redirects: a server instance that does not host the room answers the hello with
``REDIRECT endpoint room`` (several instances sharing one Redis). The client follows it at
once — a new transport to ``endpoint`` (the ``redirect`` factory), a new hello — without
counting it as a failed attempt; after :data:`MAX_REDIRECTS` redirects in a row without a
welcome it gives up (``DisconnectReason.REDIRECT_LOOP``). A lost session reconnects to the
*original* endpoint, which redirects again if the room moved.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import esper
from reactivex import Observable
from reactivex.subject import BehaviorSubject, Subject

from rtecs.datastore import Datastore
from rtecs.entities import Entities, Entity, EntityEvent
from rtecs.errors import NotConnectedError, ProtocolError
from rtecs.model import Change, RealtimeModel
from rtecs.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Error,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    ModelId,
    Ping,
    Pong,
    Redirect,
    Resync,
    Schema,
    Update,
    UpdateEntry,
    Welcome,
    decode_server_message,
    encode,
)
from rtecs.session import (
    _REASON_OF_CODE,
    _RECONNECT_CODES,
    ConnectionState,
    DisconnectReason,
    Presence,
    UpdateOutcome,
    UpdateStatus,
)
from rtecs.transport import ClientTransport

__all__ = ["MAX_REDIRECTS", "ConnectionState", "DisconnectReason", "Presence", "Realtime",
           "UpdateOutcome", "UpdateStatus"]

log = logging.getLogger(__name__)

#: Redirects followed in a row without a welcome before a client gives up (a loop).
MAX_REDIRECTS = 5


class Realtime:
    """A client session: the room's datastore, kept in sync through ``tick()``."""

    def __init__(self, transport: ClientTransport, room: str, room_model: RealtimeModel, *,
                 reconnect: Callable[[], ClientTransport] | None = None,
                 redirect: Callable[[str], ClientTransport] | None = None,
                 world: str | None = None,
                 types: Iterable[type[RealtimeModel]] = (), frame_duration: float = 1 / 20,
                 ping_interval: float = 1.0, heartbeat_timeout: float = 5.0,
                 connect_timeout: float = 3.0, reconnect_tries: int = 8,
                 reconnect_backoff: tuple[float, float] = (0.25, 5.0),
                 token: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        if frame_duration < 0:
            raise ValueError("frame_duration must be ≥ 0")
        self.room = room
        """The room's name, as passed to connect."""
        self.world: str = world if world is not None else esper.current_world
        """The esper world this client's entities live in (see :class:`rtecs.SyncSystem`)."""
        self.frame_duration = frame_duration
        """Seconds between two updates sent (default 1/20: 20 Hz); a tick between frames
        only applies what arrived."""
        self.ping_interval = ping_interval
        """Seconds between two pings (they measure :attr:`ping` and keep the session alive)."""
        self.heartbeat_timeout = heartbeat_timeout
        """Seconds without any frame from the server after which the session counts as lost
        (then it reconnects, or gives up)."""
        self.connect_timeout = connect_timeout
        """Seconds a hello waits for its welcome before the attempt counts as failed."""
        self.reconnect_tries = reconnect_tries
        """Connection attempts (the first included) before giving up for good."""
        self.reconnect_backoff = reconnect_backoff
        """``(base, cap)`` seconds of the jittered exponential backoff between attempts."""
        self.limits = limits
        """The limits in force: those passed in, with the values the server announced in
        its welcome (writes and updates are checked against them)."""
        self._limits_asked = limits
        self.datastore = Datastore(room_model, types)
        """The room's datastore as this client sees it (models by network id, the in-flight
        cache): for inspection and tests; write through the models."""
        self.datastore.max_value_bytes = limits.max_value_bytes
        self._entities = Entities(self.datastore, self.world)
        self._transport = transport
        self._reconnect = reconnect
        self._redirect = redirect
        self._redirects = 0  # followed in a row, since the last welcome or failure
        self._token = token
        self._clock = clock
        self._rng = rng or random.Random()
        self._tries = 1
        self._ever_connected = False
        self._next_attempt = 0.0
        self._deadline = clock() + connect_timeout
        self._last_heard = clock()
        self._state: BehaviorSubject[ConnectionState] = BehaviorSubject(
            ConnectionState.CONNECTING)
        self._outcomes: Subject[UpdateOutcome] = Subject()
        self._presence: Subject[Presence] = Subject()
        self._errors: Subject[BaseException] = Subject()
        self.datastore.error_listeners.append(self._errors.on_next)
        self._joining = True        # a hello is out: its welcome starts a new session
        self._resync_asked = False  # a hole in the stream: batches wait for the welcome
        self._clients: set[int] = set()
        self._next_frame = 0.0
        self._next_ping = 0.0
        self._sent_sizes: dict[int, int] = {}
        self._server_time = 0.0
        self._server_time_at = 0.0
        self._room_seq = 0
        self.ping: float | None = None
        """Round trip to the server in milliseconds, measured (None until the first pong)."""
        self.disconnect_reason: DisconnectReason | None = None
        """Why the session ended for good (None while it has not)."""
        self.last_error: str | None = None
        """The last ``ERROR`` the server sent, as ``"code: message"`` (None if none)."""
        self.bytes_sent = 0
        """Bytes of every frame sent to the server so far."""
        self.bytes_received = 0
        """Bytes of every frame received from the server so far."""
        self._send_hello()

    # ----------------------------------------------------------------- public state

    @property
    def client_id(self) -> int:
        """This client's id in the room, assigned by the server (-1 until connected)."""
        return self.datastore.client_id

    @property
    def room_model(self) -> RealtimeModel:
        """The room's root model (the one passed to connect), kept in sync."""
        return self.datastore.room_model

    @property
    def connected(self) -> bool:
        """True while in the room (welcomed, not reconnecting or disconnected)."""
        return self._state.value is ConnectionState.CONNECTED

    @property
    def connection_state(self) -> Observable[ConnectionState]:
        """The current state on subscribe, then every change."""
        return self._state

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState` (``connection_state`` streams its changes)."""
        return self._state.value

    @property
    def outcomes(self) -> Observable[UpdateOutcome]:
        """Every update's fate: sent, then confirmed, transformed or rejected."""
        return self._outcomes

    @property
    def errors(self) -> Observable[BaseException]:
        """Every exception a change subscriber raised (logged too, with its traceback). The
        tick and the write that emitted carried on; the state was already applied."""
        return self._errors

    @property
    def updates_in_flight(self) -> int:
        """Updates sent whose answer has not come back through the stream yet."""
        return self.datastore.updates_in_flight

    @property
    def has_unsent_changes(self) -> bool:
        """True if local writes wait for the next frame's update."""
        return self.datastore.has_unsent_changes

    @property
    def presence(self) -> Observable[Presence]:
        """Joins and leaves of other clients, in stream order."""
        return self._presence

    @property
    def clients(self) -> frozenset[int]:
        """The client ids in the room (this one included) as of the last applied message."""
        return frozenset(self._clients)

    @property
    def changes(self) -> Observable[Change]:
        """Every visible change of every model in the room."""
        return self.datastore.changes

    @property
    def room_time(self) -> float:
        """The server's clock now, estimated: its last reported time plus half the ping plus
        the time elapsed since that report."""
        half_ping = (self.ping or 0.0) / 2000.0
        return self._server_time + half_ping + (self._clock() - self._server_time_at)

    @property
    def room_seq(self) -> int:
        """The sequence number of the last server batch applied."""
        return self._room_seq

    # ----------------------------------------------------------------- ticking

    def tick(self) -> None:
        """Send the frame's delta when due, then apply everything that arrived."""
        state = self._state.value
        if state is ConnectionState.DISCONNECTED:
            return
        now = self._clock()
        if state is ConnectionState.CONNECTED:
            if now >= self._next_frame:
                self.flush()
                self._next_frame = max(self._next_frame + self.frame_duration, now)
            if now >= self._next_ping:
                if self._resync_asked:
                    self._send(encode(Resync()))  # in case the server could not serve it yet
                self._send(encode(Ping(now)), reliable=False)
                self._next_ping = now + self.ping_interval
        elif state is ConnectionState.RECONNECTING and now >= self._next_attempt:
            self._attempt(now)
        self.receive()
        state = self._state.value
        if state is ConnectionState.CONNECTED:
            if now - self._last_heard > self.heartbeat_timeout:
                log.warning("no word from the server for %.1f s", now - self._last_heard)
                self._lost(DisconnectReason.TIMEOUT, now)
        elif state is not ConnectionState.DISCONNECTED and now > self._deadline:
            self._lost(DisconnectReason.TIMEOUT, now)

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Tick until the welcome has arrived (for scripts and tests; a game loop just ticks).

        Raises :class:`~rtecs.errors.NotConnectedError` with the reason if the session ends
        and :class:`TimeoutError` if ``timeout`` (seconds of this client's clock) passes.
        """
        deadline = self._clock() + timeout
        while True:
            self.tick()
            state = self._state.value
            if state is ConnectionState.CONNECTED:
                return
            if state is ConnectionState.DISCONNECTED:
                reason = self.disconnect_reason.value if self.disconnect_reason else "?"
                detail = f" ({self.last_error})" if self.last_error else ""
                raise NotConnectedError(f"could not join room {self.room!r}: {reason}{detail}")
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TimeoutError(f"no welcome from the server within {timeout} s")
            self._wait(min(remaining, 0.05))

    def _wait(self, seconds: float) -> None:
        poll = getattr(self._transport, "poll", None)
        if poll is not None:
            poll(seconds)

    def flush(self) -> Update | None:
        """Send the pending delta now, whatever the frame timer says. Returns the (last)
        update sent. A delta larger than the update size limit goes out as several updates."""
        if self._state.value is not ConnectionState.CONNECTED:
            return None
        ds = self.datastore
        new_types = ds.take_new_types()
        if new_types:
            self._send(encode(Schema(new_types)))  # before the update that uses them
        limit = self.limits.max_update_bytes
        budget = limit * 3 // 4  # the estimate errs high; keep margin
        update = ds.collect(budget)
        last = None
        while update is not None:
            try:
                frame: bytes | None = encode(update)
                why = ""
            except TypeError as exc:
                frame, why = None, str(exc)
            if frame is None or len(frame) > limit:
                # Never sent: the server would refuse it (or libzmq drop the link).
                log.error("update %d not sent: %s; its writes roll back", update.seq,
                          why or f"{len(frame or b'')} bytes, over the {limit}-byte limit")
                ds.discard(update)
                ds.flush_emissions()
                self._outcomes.on_next(UpdateOutcome(update.seq, UpdateStatus.REJECTED, 0))
            else:
                self._send_update(update, frame)
                last = update
            update = ds.collect(budget) if ds.has_unsent_changes else None
        return last

    def _send_update(self, update: Update, frame: bytes) -> None:
        self._send(frame)
        count = sum((len(run) - 1) // 2 for run in update.changes)
        self._sent_sizes[update.seq] = count
        self._outcomes.on_next(UpdateOutcome(update.seq, UpdateStatus.SENT, count))

    def receive(self) -> int:
        """Apply every message that has arrived, without sending (``tick()`` calls it);
        return how many frames were taken."""
        transport = self._transport
        frames = transport.receive()
        if frames:
            self._last_heard = self._clock()
        for frame in frames:
            if self._transport is not transport:
                break  # redirected: the rest came over the old connection
            self.bytes_received += len(frame)
            try:
                message = decode_server_message(frame, self.limits)
            except ProtocolError as exc:
                log.error("dropping a malformed frame from the server: %s", exc)
                self._ask_resync("a malformed frame")
                continue
            try:
                self._handle(message)
            except Exception:  # an internal error: never carry on from a half-applied state
                log.exception("internal error while applying a %s", type(message).__name__)
                self._ask_resync("an internal error")
            if self._state.value is ConnectionState.DISCONNECTED:
                break
        return len(frames)

    def _handle(self, message: Welcome | Batch | Pong | Error | Redirect) -> None:
        """Apply one decoded server message, then let its change streams emit."""
        if isinstance(message, Batch):
            self._handle_batch(message)
        elif isinstance(message, Welcome):
            self._handle_welcome(message)
        elif isinstance(message, Pong):
            self._handle_pong(message)
        elif isinstance(message, Redirect):
            self._handle_redirect(message)
        else:
            self._handle_error(message)

    def _handle_welcome(self, welcome: Welcome) -> None:
        first = self._state.value is not ConnectionState.CONNECTED
        ds = self.datastore
        self.limits = self._limits_asked.with_announced(welcome.limits)
        ds.max_value_bytes = self.limits.max_value_bytes
        resend: list[Update] = []
        if first or self._joining or welcome.client_id != ds.client_id:
            ds.load_snapshot(welcome)  # a new session: unanswered writes roll back
            self._sent_sizes.clear()
        else:
            resend = ds.rebase(welcome)  # a new epoch of this session: nothing is lost
            self._sent_sizes = {u.seq: sum((len(run) - 1) // 2 for run in u.changes)
                                for u in resend}
        self._joining = False
        self._resync_asked = False
        self._room_seq = welcome.room_seq
        self._clients = set(welcome.clients)
        self._set_server_time(welcome.server_time)
        log.info("%s room %r as client %d (%d models%s)", "joined" if first else "resynced",
                 self.room, welcome.client_id, len(welcome.snapshot),
                 f", {len(resend)} update(s) sent again" if resend else "")
        self._tries = 1
        self._redirects = 0
        self._ever_connected = True
        if first:
            self._next_frame = self._next_ping = self._clock()
            self._state.on_next(ConnectionState.CONNECTED)
        for update in resend:  # renumbered into the new epoch: the server applies them now
            self._send(encode(update))
        ds.flush_emissions()

    def _ask_resync(self, why: str, level: int = logging.WARNING) -> None:
        """A hole in the stream: ask for a fresh snapshot and apply no batch until then."""
        if self._state.value is not ConnectionState.CONNECTED or self._resync_asked:
            return
        log.log(level, "room %r: %s; asking the server for a fresh snapshot", self.room, why)
        self._resync_asked = True
        self._send(encode(Resync()))

    def _handle_batch(self, batch: Batch) -> None:
        if self._state.value is not ConnectionState.CONNECTED:
            return  # from before our welcome: the snapshot includes it
        if self._resync_asked:
            return  # after a hole: the welcome on its way includes it
        if batch.room_seq <= self._room_seq:
            log.debug("ignoring batch %d already covered (at %d)", batch.room_seq,
                      self._room_seq)
            return
        if batch.room_seq != self._room_seq + 1:
            self._ask_resync(f"batch {batch.room_seq} arrived after {self._room_seq}")
            return
        self._room_seq = batch.room_seq
        self._set_server_time(batch.server_time)
        ds = self.datastore
        me = ds.client_id
        outcomes: list[UpdateOutcome] = []
        presence: list[Presence] = []
        for entry in batch.entries:
            if isinstance(entry, UpdateEntry):
                ds.apply_entry(entry)
                if entry.sender == me and entry.seq > 0:
                    outcomes.append(self._outcome_of(entry))
            elif isinstance(entry, JoinEntry):
                self._clients.add(entry.client_id)
                presence.append(Presence(entry.client_id, True))
            elif isinstance(entry, LeaveEntry):
                self._clients.discard(entry.client_id)
                presence.append(Presence(entry.client_id, False))
        ds.flush_emissions()
        if ds.resync_wanted:
            ds.resync_wanted = False
            self._ask_resync("the server refused a destroy this client already applied",
                             logging.INFO)  # a normal race (see Datastore._bury)
        for p in presence:
            self._presence.on_next(p)
        for o in outcomes:
            self._outcomes.on_next(o)

    def _outcome_of(self, entry: UpdateEntry) -> UpdateOutcome:
        accepted = sum((len(run) - 1) // 2 for run in entry.changes)
        sent = self._sent_sizes.pop(entry.seq, accepted)
        if entry.rejected:
            status = UpdateStatus.REJECTED
        elif accepted != sent:
            status = UpdateStatus.TRANSFORMED
        else:
            status = UpdateStatus.CONFIRMED
        return UpdateOutcome(entry.seq, status, accepted, tuple(entry.rejected))

    def _handle_pong(self, pong: Pong) -> None:
        now = self._clock()
        self.ping = max(0.0, (now - pong.client_time) * 1000.0)
        self._set_server_time(pong.server_time)
        if pong.room_seq > self._room_seq and self._state.value is ConnectionState.CONNECTED:
            # Every batch goes out before the pong that counts it: one was lost.
            self._ask_resync(f"the server is at batch {pong.room_seq}, this client at "
                             f"{self._room_seq}")

    def _handle_redirect(self, redirect: Redirect) -> None:
        """The server does not host this room: connect to ``redirect.endpoint`` instead (see
        the module docs)."""
        if redirect.room != self.room:
            log.warning("ignoring a redirect for another room (%r)", redirect.room)
            return
        self._redirects += 1
        if self._redirect is None or self._redirects > MAX_REDIRECTS:
            self.last_error = (
                f"redirected to {redirect.endpoint}, but this client has no way to connect "
                f"elsewhere (pass redirect= to Realtime)" if self._redirect is None else
                f"redirected {self._redirects} times in a row without being let in (last to "
                f"{redirect.endpoint}): the server instances disagree about who hosts room "
                f"{self.room!r}")
            log.error("giving up on room %r: %s", self.room, self.last_error)
            self._disconnect(DisconnectReason.REDIRECT_LOOP)
            return
        log.info("room %r is hosted at %s: connecting there", self.room, redirect.endpoint)
        now = self._clock()
        if self._state.value is ConnectionState.CONNECTED:
            self._state.on_next(ConnectionState.RECONNECTING)
        self._transport.close()
        self._transport = self._redirect(redirect.endpoint)
        self._room_seq = 0
        self._sent_sizes.clear()
        self._next_attempt = float("inf")
        self._deadline = now + self.connect_timeout
        self._last_heard = now
        self._send_hello()

    def _handle_error(self, error: Error) -> None:
        self.last_error = f"{error.code}: {error.message}"
        if error.code in _RECONNECT_CODES:
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

    def _set_server_time(self, server_time: float) -> None:
        self._server_time = server_time
        self._server_time_at = self._clock()

    # ----------------------------------------------------------------- entities and models

    def spawn(self, *components: RealtimeModel, owned: bool = True,
              prevent_ownership_takeover: bool = False, destroy_when_owner_leaves: bool = True,
              destroy_when_last_client_leaves: bool = True) -> int:
        """Create a replicated entity with these component models; return its esper entity
        id in this client's world. It exists here at once and on every other client after
        the next frame. ``owned`` makes this client its owner (only the owner may write it
        then); the flags say when the server destroys it. Needs the welcome
        (:class:`~rtecs.errors.NotConnectedError` before it)."""
        return self._entities.spawn(
            *components, owned=owned, prevent_ownership_takeover=prevent_ownership_takeover,
            destroy_when_owner_leaves=destroy_when_owner_leaves,
            destroy_when_last_client_leaves=destroy_when_last_client_leaves)

    def destroy(self, entity: int) -> None:
        """Destroy a replicated entity here at once and everywhere with the next frame. Only
        its owner may, or anyone if it is unowned
        (:class:`~rtecs.errors.OwnershipError` otherwise)."""
        self._entities.destroy(entity)

    @property
    def entities(self) -> Observable[EntityEvent]:
        """Replicated entities spawned and destroyed, here and by others."""
        return self._entities.events

    def entity_of(self, model: RealtimeModel) -> int | None:
        """The esper entity a replicated component belongs to (None if it is not one)."""
        return self._entities.entity_of(model)

    def entity_model(self, entity: int) -> Entity | None:
        """The network record of a replicated entity: its owner and ownership calls."""
        return self._entities.record(entity)

    def create(self, model: RealtimeModel, flags: int = 0, owned: bool = False,
               parent: RealtimeModel | None = None) -> ModelId:
        """Add a dynamic model to the room without an entity (sent with the next frame)."""
        return self.datastore.create(model, flags, owned, parent)

    def destroy_model(self, model: RealtimeModel) -> None:
        """Destroy a dynamic model made with :meth:`create` (and its children) here at once
        and in the room with the next frame (see :meth:`Datastore.destroy
        <rtecs.datastore.Datastore.destroy>`)."""
        self.datastore.destroy(model)

    # ----------------------------------------------------------------- lifecycle

    def _send_hello(self) -> None:
        hello = Hello(PROTOCOL_VERSION, self.room, self.datastore.room_model.type_name,
                      self.datastore.hello_schema(), self._token)
        self._joining = True
        self._resync_asked = False
        self._send(encode(hello))

    def _send(self, frame: bytes, reliable: bool = True) -> None:
        self.bytes_sent += len(frame)
        self._transport.send(frame, reliable)

    def _lost(self, reason: DisconnectReason, now: float) -> None:
        """The session (or a connection attempt) failed: retry with backoff, or give up."""
        self._redirects = 0
        if self._reconnect is None or self._tries >= self.reconnect_tries:
            if self._ever_connected and reason is DisconnectReason.TIMEOUT:
                reason = DisconnectReason.SERVER_GONE
            log.error("giving up on room %r after %d attempt(s): %s", self.room, self._tries,
                      reason.value)
            self._disconnect(reason)
            return
        base, cap = self.reconnect_backoff
        delay = 0.0 if self._tries == 1 else self._rng.uniform(
            0, min(cap, base * 2 ** (self._tries - 2)))
        self._next_attempt = now + delay
        self._deadline = self._next_attempt + self.connect_timeout
        log.info("reconnecting to room %r in %.2f s (attempt %d of %d)", self.room, delay,
                 self._tries + 1, self.reconnect_tries)
        if self._state.value is not ConnectionState.RECONNECTING:
            self._state.on_next(ConnectionState.RECONNECTING)
        if delay == 0.0:
            self._attempt(now)

    def _attempt(self, now: float) -> None:
        assert self._reconnect is not None
        self._tries += 1
        self._transport.close()
        self._transport = self._reconnect()
        self._room_seq = 0
        self._sent_sizes.clear()
        self._next_attempt = float("inf")
        self._deadline = now + self.connect_timeout
        self._last_heard = now
        self._send_hello()

    def _disconnect(self, reason: DisconnectReason) -> None:
        if self._state.value is ConnectionState.DISCONNECTED:
            return
        self.disconnect_reason = reason
        self._state.on_next(ConnectionState.DISCONNECTED)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is pending, wait (at most ``timeout`` s) for the server's answers, say
        goodbye and release the transport. Answers still show on the change streams."""
        if self._state.value is ConnectionState.CONNECTED:
            self.flush()
            deadline = self._clock() + timeout
            while self._sent_sizes and self._state.value is ConnectionState.CONNECTED:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.warning("closing with %d update(s) unanswered", len(self._sent_sizes))
                    break
                self._wait(min(remaining, 0.05))
                self.receive()
            self._send(encode(Bye()))
        self._disconnect(DisconnectReason.CLOSED)
        self._transport.close()
        self.datastore.close()  # a write from now on raises NotConnectedError

    def __enter__(self) -> Realtime:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def connect(endpoint: str, room: str, room_model: RealtimeModel, *, world: str | None = None,
            types: Iterable[type[RealtimeModel]] = (), frame_duration: float = 1 / 20,
            token: str | None = None, limits: Limits = DEFAULT_LIMITS,
            heartbeat_timeout: float = 5.0, connect_timeout: float = 3.0,
            reconnect_tries: int = 8, ping_interval: float = 1.0) -> Realtime:
    """Join ``room`` on the room server at ``endpoint`` (e.g. ``"tcp://127.0.0.1:7777"``).

    Returns at once, in the ``connecting`` state: call :meth:`Realtime.tick` every frame (or
    :meth:`Realtime.wait_connected` in a script). ``room_model`` becomes the room's root model;
    ``types`` lists other model types this client creates or receives. A lost session
    reconnects with jittered exponential backoff (the first retry at once) and gives up after
    ``reconnect_tries`` attempts with :attr:`Realtime.disconnect_reason` set. A redirect to
    the server instance that hosts the room is followed transparently.
    """
    if "://" not in endpoint:
        raise ValueError(f"endpoint {endpoint!r} names no transport: write it as a ZeroMQ "
                         f"endpoint, e.g. 'tcp://{endpoint}'")
    from rtecs.transport.zmq import ZmqClientTransport

    def open_at(address: str) -> ClientTransport:
        return ZmqClientTransport(address, max_message_size=limits.max_frame_bytes)

    def open_transport() -> ClientTransport:
        return open_at(endpoint)

    return Realtime(open_transport(), room, room_model, reconnect=open_transport,
                    redirect=open_at, world=world,
                    types=types, frame_duration=frame_duration, token=token, limits=limits,
                    heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
                    reconnect_tries=reconnect_tries, ping_interval=ping_interval)
