"""Realtime: one client's session with a room, driven by ``tick()`` on the game loop's thread.

A tick has fixed phases: (1) when a frame is due, collect the datastore's delta and send it
as the next update; (2) drain the transport and apply every message in stream order, each
message applied whole before its change streams emit. Nothing runs on a background thread, so
observers always run on the ticking thread.

:class:`Realtime` is a facade over three parts: :class:`~rtecs.connection.Connection` keeps
the client in the room (the hello, the session, heartbeats, reconnects, redirects, the
stream's order and resync requests; a state machine over any
:class:`~rtecs.transport.ClientTransport` and an injected clock);
:class:`~rtecs.datastore.Datastore` holds the room's state; :class:`~rtecs.sync.RoomSync`
joins the two — it sends what the datastore collects and applies what the connection hands
on (a new session's welcome rolls unanswered writes back; a resync's welcome re-bases them).

A subscriber that raises never stops the tick: its exception is logged and put on
:attr:`Realtime.errors`. An internal error while applying a message asks for a resync.
"""

from __future__ import annotations

import logging
import os
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
from rtecs.errors import NotConnectedError, ProtocolError
from rtecs.model import Change, RealtimeModel
from rtecs.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Hello,
    Limits,
    ModelId,
    Update,
    check_room_name,
)
from rtecs.session import (
    ConnectionState,
    ConnectionStats,
    DisconnectReason,
    Presence,
    SessionLost,
    UpdateOutcome,
    UpdateStatus,
)
from rtecs.sync import RoomSync
from rtecs.transport import ClientTransport

__all__ = ["MAX_REDIRECTS", "ConnectionState", "ConnectionStats", "DisconnectReason", "Presence",
           "Realtime", "SessionLost", "UpdateOutcome", "UpdateStatus"]

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
        _check_room(room)
        if frame_duration < 0:
            raise ValueError("frame_duration must be ≥ 0")
        self.room = room
        """The room's name, as passed to connect."""
        self.world: str = world if world is not None else esper.current_world
        """The esper world this client's entities live in (see :class:`rtecs.SyncSystem`)."""
        self.datastore = Datastore(room_model, types)
        """The room's datastore as this client sees it (models by network id, the in-flight
        cache): for inspection and tests; write through the models."""
        self.datastore.max_value_bytes = limits.max_value_bytes
        self._entities = Entities(self.datastore, self.world)
        self._token = token
        self._clock = clock
        self._errors: Subject[BaseException] = Subject()
        self.datastore.error_listeners.append(self._errors.on_next)
        self.connection = Connection(
            transport, room, self._make_hello, clock=clock, reconnect=reconnect,
            redirect=redirect, ping_interval=ping_interval,
            heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
            reconnect_tries=reconnect_tries, reconnect_backoff=reconnect_backoff,
            limits=limits, rng=rng)
        """The session state machine (states, heartbeats, reconnects, the stream's order)."""
        self._sync = RoomSync(self.connection, self.datastore, room, clock, frame_duration)

    # ----------------------------------------------------------------- public state

    @property
    def frame_duration(self) -> float:
        """Seconds between two updates sent (default 1/20: 20 Hz); a tick between frames
        only applies what arrived."""
        return self._sync.frame_duration

    @frame_duration.setter
    def frame_duration(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("frame_duration must be ≥ 0")
        self._sync.frame_duration = seconds

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
    def stats(self) -> ConnectionStats:
        """Counters of this client's connection: frames and bytes each way, updates sent and
        resent, batches and welcomes applied, resyncs, reconnects, redirects."""
        return self.connection.stats

    @property
    def session_lost(self) -> Observable[SessionLost]:
        """Emits when this client had to join as a new session because its previous one
        could not be taken up again (its link was down too long, or the server forgot it):
        its unanswered writes rolled back, and what the server ends with a session
        (``destroy_when_owner_leaves`` entities) is gone — respawn an avatar here."""
        return self.connection.session_lost

    def next_deadline(self) -> float:
        """The clock time by which :meth:`tick` must run again if nothing arrives before:
        the next frame (when local writes wait for it), a ping, a timeout or a reconnection.
        For event-loop drivers; a game loop just ticks every frame."""
        due = self.connection.next_deadline()
        if self.has_unsent_changes and self.connection.connected:
            due = min(due, self._sync.next_frame)
        return due

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when frames may have arrived (None if the
        transport has none): wait on it and :meth:`next_deadline`, then :meth:`tick`."""
        return self.connection.fileno()

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
        return self._sync.outcomes

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
        return self._sync.presence

    @property
    def clients(self) -> frozenset[int]:
        """The client ids in the room (this one included) as of the last applied message."""
        return frozenset(self._sync.clients)

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
        if self._sync.frame_due(now):
            self.flush()
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
        return self._sync.flush()

    def receive(self) -> int:
        """Apply every message that has arrived, without sending (``tick()`` calls it);
        return how many were applied."""
        return self._sync.receive()

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
            while self._sync.unanswered and conn.connected:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.warning("closing with %d update(s) unanswered",
                                self._sync.unanswered)
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


def _check_room(room: str) -> None:
    """Refuse a room name no server accepts (:func:`rtecs.protocol.check_room_name`) with a
    ``ValueError``, at once rather than as a refused join."""
    try:
        check_room_name(room)
    except ProtocolError as exc:
        raise ValueError(f"invalid room name: {exc}") from None


def connect(endpoint: str, room: str, room_model: RealtimeModel, *, world: str | None = None,
            types: Iterable[type[RealtimeModel]] = (), frame_duration: float = 1 / 20,
            token: str | None = None, limits: Limits = DEFAULT_LIMITS,
            heartbeat_timeout: float = 5.0, connect_timeout: float = 3.0,
            reconnect_tries: int = 8, ping_interval: float = 1.0,
            server_key: str | bytes | os.PathLike[str] | None = None) -> Realtime:
    """Join ``room`` on the room server at ``endpoint`` (e.g. ``"tcp://127.0.0.1:7777"``).

    Returns at once, in the ``connecting`` state: call :meth:`Realtime.tick` every frame (or
    :meth:`Realtime.wait_connected` in a script). ``room_model`` becomes the room's root model;
    ``types`` lists other model types this client creates or receives. A lost session
    reconnects with jittered exponential backoff (the first retry at once) and gives up after
    ``reconnect_tries`` attempts with :attr:`Realtime.disconnect_reason` set. A redirect to
    the server instance that hosts the room is followed transparently.

    ``token``: a join token from the app's backend (:func:`rtecs.make_token`), for a server
    that requires one; it travels in the hello and, unless ``server_key`` is given, also at
    the ZeroMQ handshake (PLAIN), which such a server checks before anything reaches it.
    ``server_key``: the server's CURVE public key — its 40 Z85 characters, as ``rtecs-server
    keygen`` prints them, or the path of the ``server.key`` file it wrote — for an encrypted
    server (``--curve-secret-key-file``); a bad key is a ``ValueError`` here. A server that
    refuses the handshake (a refused token, a plaintext client at an encrypted server) ends
    the session at once: :attr:`Realtime.last_error` starts with ``auth_failed:`` and says
    why (:meth:`Realtime.wait_connected` raises with it).
    """
    if "://" not in endpoint:
        raise ValueError(f"endpoint {endpoint!r} names no transport: write it as a ZeroMQ "
                         f"endpoint, e.g. 'tcp://{endpoint}'")
    _check_room(room)  # before a socket is made
    from rtecs.auth import gate_password
    from rtecs.transport.zmq import ZmqClientTransport, load_server_key

    key = None if server_key is None else load_server_key(server_key)
    password = gate_password(token) if token is not None and key is None else None

    def open_at(address: str) -> ClientTransport:
        return ZmqClientTransport(address, max_message_size=limits.max_frame_bytes,
                                  server_key=key, plain_password=password)

    def open_transport() -> ClientTransport:
        return open_at(endpoint)

    return Realtime(open_transport(), room, room_model, reconnect=open_transport,
                    redirect=open_at, world=world,
                    types=types, frame_duration=frame_duration, token=token, limits=limits,
                    heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
                    reconnect_tries=reconnect_tries, ping_interval=ping_interval)
