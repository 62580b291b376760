"""An in-process room: a RoomHost and Realtime clients over the memory transport, stepped by
hand with a manual clock. No sockets, threads or sleeps: every interleaving is chosen.

``LocalRoom(..., wire=True)`` also taps the wire for checks that read the stream itself (the
state machines' independent authority model and in-flight bookkeeping): every frame a client
sends, every frame it is about to apply and every frame the server sends is decoded and handed
to the room's :attr:`LocalRoom.listeners`. A tapped client applies one frame per
``receive()`` (the harness drains the rest), so a listener knows exactly which message the
change streams are emitting for. :meth:`LocalRoom.drop_batch` loses one batch on its way to a
client, as a broken link would.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import esper

from rtecs.errors import ProtocolError
from rtecs.model import RealtimeModel
from rtecs.protocol import Batch, Welcome, decode_client_message, decode_server_message
from rtecs.realtime import Realtime
from rtecs.transport.memory import MemoryClientTransport, MemoryNetwork
from rtecs_server.host import RESYNC_COOLDOWN, RoomHost
from rtecs_server.plugins import Plugin

_WORLDS = itertools.count(1)  # every client gets an esper world of its own


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WireListener(Protocol):
    """What a listener of a tapped room may implement (every method is optional)."""

    def client_sent(self, rt: Realtime, message: Any) -> None:
        """``rt`` sent ``message`` (an Update, Ping, Resync, …; not its first hello)."""

    def client_receives(self, rt: Realtime, message: Any) -> None:
        """``rt`` is about to apply ``message``: its change streams emit for it next."""

    def server_sent(self, rt: Realtime | None, message: Any, delivered: bool) -> None:
        """The server sent ``message`` to ``rt`` (each batch once per member)."""


class LocalRoom:
    """A server and clients in one process; ``sync()`` runs until everything is delivered."""

    def __init__(self, model_factory: Callable[[], RealtimeModel], *, clients: int = 2,
                 plugins: Iterable[Plugin] = (), room: str = "test",
                 types: Iterable[type[RealtimeModel]] = (), wire: bool = False,
                 **network: Any) -> None:
        self.model_factory = model_factory
        self.room = room
        self.types = tuple(types)
        self.clock = ManualClock()
        self.net = MemoryNetwork(**network)
        self.host = RoomHost(self.net.server, plugins=plugins, heartbeat_timeout=1e9,
                             session_grace=1e9)
        self.clients: list[Realtime] = []
        self.transports: dict[Realtime, MemoryClientTransport] = {}
        self.wire = wire
        self.listeners: list[Any] = []
        """Told of every frame when ``wire`` is on (see :class:`WireListener`)."""
        self.welcomes_sent: dict[Realtime, int] = {}      # counted when ``wire`` is on
        self.welcomes_received: dict[Realtime, int] = {}
        self.dropped: list[tuple[Realtime, int]] = []    # (client, room_seq) lost on the way
        self._by_peer: dict[bytes, Realtime] = {}
        if wire:
            self._tap_server()
        for _ in range(clients):
            self.add_client()
        self.sync()

    def add_client(self) -> Realtime:
        name = f"client-{len(self.transports) + 1}"
        transport = self.net.connect(name)
        holder: list[Realtime] = []
        if self.wire:
            self._tap_client(transport, holder)
        rt = Realtime(transport, self.room, self.model_factory(), types=self.types,
                      world=f"{self.room}-{next(_WORLDS)}-{name}", frame_duration=0.0,
                      ping_interval=3600.0,
                      heartbeat_timeout=3600.0, clock=self.clock)
        holder.append(rt)
        self.clients.append(rt)
        self.transports[rt] = transport
        self._by_peer[transport.peer] = rt
        self.welcomes_sent[rt] = self.welcomes_received[rt] = 0
        return rt

    # ----------------------------------------------------------------- the wire tap

    def _tell(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            method = getattr(listener, event, None)
            if method is not None:
                method(*args)

    def _tap_client(self, transport: MemoryClientTransport, holder: list[Realtime]) -> None:
        send = transport.send

        def tapped_send(frame: bytes, reliable: bool = True) -> None:
            send(frame, reliable)
            if holder and not transport.closed:
                try:
                    message = decode_client_message(frame)
                except ProtocolError:
                    return
                self._tell("client_sent", holder[0], message)

        def tapped_receive() -> list[bytes]:
            if not transport.inbox:
                return []
            frame = transport.inbox.pop(0)  # one message per receive(): see the module docs
            try:
                message = decode_server_message(frame)
            except ProtocolError:
                return [frame]
            rt = holder[0]
            if isinstance(message, Welcome):
                self.welcomes_received[rt] += 1
            self._tell("client_receives", rt, message)
            return [frame]

        transport.send = tapped_send  # type: ignore[method-assign]
        transport.receive = tapped_receive  # type: ignore[method-assign]

    def _tap_server(self) -> None:
        server = self.net.server
        send = server.send

        def tapped_send(peer: bytes, frame: bytes, reliable: bool = True) -> bool:
            delivered = send(peer, frame, reliable)
            try:
                message = decode_server_message(frame)
            except ProtocolError:
                return delivered
            rt = self._by_peer.get(peer)
            if isinstance(message, Welcome) and delivered and rt is not None:
                self.welcomes_sent[rt] += 1
            self._tell("server_sent", rt, message, delivered)
            return delivered

        server.send = tapped_send  # type: ignore[method-assign]

    def drop_batch(self, rt: Realtime, which: int = 0) -> int | None:
        """Lose one BATCH still on its way to ``rt`` (the ``which``-th of those queued, modulo
        their number), as a broken link would; return its ``room_seq`` (None: none queued)."""
        link = self.net.downlinks.get(self.peer(rt))
        if not link:
            return None
        batches = []
        for index, (_, frame) in enumerate(link):
            try:
                message = decode_server_message(frame)
            except ProtocolError:
                continue
            if isinstance(message, Batch):
                batches.append((index, message.room_seq))
        if not batches:
            return None
        index, room_seq = batches[which % len(batches)]
        del link[index]
        self.dropped.append((rt, room_seq))
        return room_seq

    def _drain(self, rt: Realtime) -> None:
        """Apply what reached ``rt`` (a tapped client takes one frame per receive())."""
        rt.receive()
        if self.wire:
            inbox = self.transports[rt].inbox
            while inbox and rt.receive():
                pass

    def peer(self, rt: Realtime) -> bytes:
        return self.transports[rt].peer

    # ----------------------------------------------------------------- stepping

    def send(self, *clients: Realtime) -> None:
        """Each client (all if none given) sends its pending delta now."""
        for rt in clients or tuple(self.clients):
            rt.flush()

    def server_receives(self, *clients: Realtime) -> None:
        """The server receives what these clients sent, in this order, and relays it."""
        for rt in clients:
            self.net.deliver_from(self.peer(rt))
        self.host.pump(self.clock())

    def deliver(self, *clients: Realtime) -> None:
        """These clients receive and apply what the server sent them."""
        for rt in clients or tuple(self.clients):
            self.net.deliver_to(self.peer(rt))
            self._drain(rt)

    def sync(self, max_rounds: int = 100) -> None:
        """Tick everybody and move every frame until nothing is left in flight.

        A client that ends up behind the room's last batch (it lost the last one, so no later
        batch shows the gap) pings, as it would within a ping interval: the pong names the
        room's ``room_seq`` (at most a few times; a client that never catches up is left for
        the caller's checks to find)."""
        pings = 3
        for _ in range(max_rounds):
            for rt in self.clients:
                rt.tick()
                self._drain(rt)
            self.net.step()
            self.host.pump(self.clock())
            self.net.step()
            for rt in self.clients:
                self._drain(rt)
            busy = self.net.in_flight or any(
                _unsent(rt) or self.transports[rt].inbox
                for rt in self.clients if rt.connected)
            if any(sess.needs_resync for sess in self.host.sessions.values()):
                # a resync waits out the host's cooldown: let the time pass, then ping
                self.clock.advance(RESYNC_COOLDOWN)
                for rt in self.clients:
                    rt.connection.ping_now()
                busy = True
            if not busy and pings:
                hosted = self.host.rooms.get(self.room)
                last = hosted.room.room_seq if hosted is not None else 0
                behind = [rt for rt in self.clients if rt.connected and rt.room_seq < last]
                for rt in behind:
                    rt.connection.ping_now()
                if behind:
                    pings -= 1
                    busy = True
            if not busy:
                return
        raise AssertionError("the room did not settle")


    def close(self) -> None:
        """Forget the clients' esper worlds (esper keeps every world in a module global, and
        a world's components hold their whole datastore): for tests that make many rooms."""
        for rt in self.clients:
            if rt.world != esper.current_world:
                with contextlib.suppress(KeyError):
                    esper.delete_world(rt.world)
        self.listeners.clear()


def _unsent(rt: Realtime) -> bool:
    unsent = getattr(rt, "has_unsent_changes", None)
    if isinstance(unsent, bool):
        return unsent
    return bool(rt.datastore.has_unsent_changes)


def assert_same_models(rt: Realtime, records: list[Any]) -> None:
    """``rt``'s datastore holds exactly the room core's models (snapshot ``records``), with
    the same types, owners and property values (absent on the server = the class default)."""
    who = f"client {rt.client_id}"
    truth = {rec[0]: rec for rec in records}
    models = rt.datastore.models
    assert set(models) == set(truth), f"{who} has other models"
    for mid, rec in truth.items():
        model = models[mid]
        _, type_name, owner, _flags, props = rec[:5]
        assert (model.type_name, model.owner_id) == (type_name, owner), f"{who}: {mid}"
        for p in type(model)._props.values():
            if p.id == 0 or p.child_type is not None:
                continue
            expected = props.get(p.id, type(model)._template[p.slot])
            actual = model._v[p.slot]
            assert (type(actual), actual) == (type(expected), expected), (
                f"{who}: {type_name}.{p.name} of {mid} is {actual!r}, server has {expected!r}")
