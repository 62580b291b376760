"""Realtime: one client's session with a room, driven by ``tick()`` on the game loop's thread.

A tick has fixed phases: (1) when a frame is due, collect the datastore's delta and send it
as the next update; (2) drain the transport and apply every message in stream order, each
message applied whole before its change streams emit. Nothing runs on a background thread, so
observers always run on the ticking thread.

:class:`Realtime` is a facade: staying in the room — the hello, heartbeats, reconnects,
redirects, the stream's order and resync requests — is :class:`~rtecs.connection.Connection`'s
job (a state machine over any :class:`~rtecs.transport.ClientTransport` and an injected
clock); the room's state is the :class:`~rtecs.datastore.Datastore`'s. This module joins the
two: it applies what the connection hands on and sends what the datastore collects.

A welcome that answers a hello starts a new session: unanswered writes roll back. A welcome
that answers a resync (a hole in the stream, DESIGN §4b) opens a new *epoch* of the same
session: the datastore re-bases on it (:meth:`Datastore.rebase
<rtecs.datastore.Datastore.rebase>`) — what the server applied is settled, the rest is
renumbered and sent again — so nothing the server did not refuse is rolled back.

A subscriber that raises never stops the tick: its exception is logged and put on
:attr:`Realtime.errors`. An internal error while applying a message asks for a resync.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import esper
from reactivex import Observable
from reactivex.subject import Subject

from rtecs.connection import MAX_REDIRECTS, Connection
from rtecs.datastore import Datastore
from rtecs.entities import Entities, Entity, EntityEvent
from rtecs.errors import NotConnectedError
from rtecs.model import Change, RealtimeModel
from rtecs.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Batch,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    ModelId,
    Schema,
    Update,
    UpdateEntry,
    Welcome,
    encode,
)
from rtecs.session import (
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
        self.datastore = Datastore(room_model, types)
        """The room's datastore as this client sees it (models by network id, the in-flight
        cache): for inspection and tests; write through the models."""
        self.datastore.max_value_bytes = limits.max_value_bytes
        self._entities = Entities(self.datastore, self.world)
        self._token = token
        self._clock = clock
        self._outcomes: Subject[UpdateOutcome] = Subject()
        self._presence: Subject[Presence] = Subject()
        self._errors: Subject[BaseException] = Subject()
        self.datastore.error_listeners.append(self._errors.on_next)
        self._clients: set[int] = set()
        self._next_frame = 0.0
        self._sent_sizes: dict[int, int] = {}
        self.connection = Connection(
            transport, room, self._make_hello, clock=clock, reconnect=reconnect,
            redirect=redirect, ping_interval=ping_interval,
            heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
            reconnect_tries=reconnect_tries, reconnect_backoff=reconnect_backoff,
            limits=limits, rng=rng)
        """The session state machine (states, heartbeats, reconnects, the stream's order)."""

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
        return self.connection.connected

    @property
    def connection_state(self) -> Observable[ConnectionState]:
        """The current state on subscribe, then every change."""
        return self.connection.states

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState` (``connection_state`` streams its changes)."""
        return self.connection.state

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why the session ended for good (None while it has not)."""
        return self.connection.disconnect_reason

    @property
    def last_error(self) -> str | None:
        """The last ``ERROR`` the server sent, as ``"code: message"`` (None if none)."""
        return self.connection.last_error

    @property
    def ping(self) -> float | None:
        """Round trip to the server in milliseconds, measured (None until the first pong)."""
        return self.connection.ping

    @property
    def bytes_sent(self) -> int:
        """Bytes of every frame sent to the server so far."""
        return self.connection.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes of every frame received from the server so far."""
        return self.connection.bytes_received

    @property
    def limits(self) -> Limits:
        """The limits in force: those passed in, with the values the server announced in
        its welcome (writes and updates are checked against them)."""
        return self.connection.limits

    @property
    def ping_interval(self) -> float:
        """Seconds between two pings (they measure :attr:`ping` and keep the session alive)."""
        return self.connection.ping_interval

    @ping_interval.setter
    def ping_interval(self, seconds: float) -> None:
        self.connection.ping_interval = seconds

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds without any frame from the server after which the session counts as lost
        (then it reconnects, or gives up)."""
        return self.connection.heartbeat_timeout

    @heartbeat_timeout.setter
    def heartbeat_timeout(self, seconds: float) -> None:
        self.connection.heartbeat_timeout = seconds

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
        """Updates sent whose answer has not come back through the stream yet, and a
        fresh snapshot asked for and not yet arrived (counted as one): 0 means this client
        waits for nothing from the server."""
        return self.datastore.updates_in_flight + self.connection.resync_pending

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
        return self.connection.room_time

    @property
    def room_seq(self) -> int:
        """The sequence number of the last server batch applied."""
        return self.connection.room_seq

    # ----------------------------------------------------------------- ticking

    def tick(self) -> None:
        """Send the frame's delta when due, then apply everything that arrived."""
        conn = self.connection
        if conn.state is ConnectionState.DISCONNECTED:
            return
        now = self._clock()
        if conn.connected and now >= self._next_frame:
            self.flush()
            self._next_frame = max(self._next_frame + self.frame_duration, now)
        conn.step(now)
        self.receive()
        conn.check(now)

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Tick until the welcome has arrived (for scripts and tests; a game loop just ticks).

        Raises :class:`~rtecs.errors.NotConnectedError` with the reason if the session ends
        and :class:`TimeoutError` if ``timeout`` (seconds of this client's clock) passes.
        """
        deadline = self._clock() + timeout
        while True:
            self.tick()
            state = self.state
            if state is ConnectionState.CONNECTED:
                return
            if state is ConnectionState.DISCONNECTED:
                reason = self.disconnect_reason.value if self.disconnect_reason else "?"
                detail = f" ({self.last_error})" if self.last_error else ""
                raise NotConnectedError(f"could not join room {self.room!r}: {reason}{detail}")
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TimeoutError(f"no welcome from the server within {timeout} s")
            self.connection.wait(min(remaining, 0.05))

    def flush(self) -> Update | None:
        """Send the pending delta now, whatever the frame timer says. Returns the (last)
        update sent. A delta larger than the update size limit goes out as several updates."""
        conn = self.connection
        if not conn.connected:
            return None
        ds = self.datastore
        new_types = ds.take_new_types()
        if new_types:
            conn.send(encode(Schema(new_types)))  # before the update that uses them
        limit = conn.limits.max_update_bytes
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
        self.connection.send(frame)
        count = sum((len(run) - 1) // 2 for run in update.changes)
        self._sent_sizes[update.seq] = count
        self._outcomes.on_next(UpdateOutcome(update.seq, UpdateStatus.SENT, count))

    def receive(self) -> int:
        """Apply every message that has arrived, without sending (``tick()`` calls it);
        return how many were applied."""
        conn = self.connection
        applied = 0
        for message in conn.receive():
            try:
                if isinstance(message, Welcome):
                    self._apply_welcome(message, conn.new_session)
                else:
                    self._apply_batch(message)
            except Exception:  # an internal error: never carry on from a half-applied state
                log.exception("internal error while applying a %s", type(message).__name__)
                conn.ask_resync("an internal error")
            applied += 1
        return applied

    def _apply_welcome(self, welcome: Welcome, new_session: bool) -> None:
        ds = self.datastore
        conn = self.connection
        resend: list[Update] = []
        if new_session or welcome.client_id != ds.client_id:
            ds.load_snapshot(welcome)  # a new session: unanswered writes roll back
            self._sent_sizes.clear()
        else:
            resend = ds.rebase(welcome)  # a new epoch of this session: nothing is lost
            self._sent_sizes = {u.seq: sum((len(run) - 1) // 2 for run in u.changes)
                                for u in resend}
        first = not conn.connected
        conn.welcomed(welcome)
        ds.max_value_bytes = conn.limits.max_value_bytes
        self._clients = set(welcome.clients)
        log.info("%s room %r as client %d (%d models%s)", "joined" if first else "resynced",
                 self.room, welcome.client_id, len(welcome.snapshot),
                 f", {len(resend)} update(s) sent again" if resend else "")
        if first:
            self._next_frame = self._clock()
        for update in resend:  # renumbered into the new epoch: the server applies them now
            conn.send(encode(update))
        ds.flush_emissions()

    def _apply_batch(self, batch: Batch) -> None:
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
            self.connection.ask_resync(
                "the server refused a destroy this client already applied",
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

    def _make_hello(self) -> Hello:
        ds = self.datastore
        return Hello(PROTOCOL_VERSION, self.room, ds.room_model.type_name, ds.hello_schema(),
                     self._token)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is pending, wait (at most ``timeout`` s) for the server's answers, say
        goodbye and release the transport. Answers still show on the change streams."""
        conn = self.connection
        if conn.connected:
            self.flush()
            deadline = self._clock() + timeout
            while self._sent_sizes and conn.connected:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.warning("closing with %d update(s) unanswered", len(self._sent_sizes))
                    break
                conn.wait(min(remaining, 0.05))
                self.receive()
        conn.close()
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
