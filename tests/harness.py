"""An in-process room: a RoomHost and Realtime clients over the memory transport, stepped by
hand with a manual clock. No sockets, threads or sleeps: every interleaving is chosen."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from rtecs.model import RealtimeModel
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


class LocalRoom:
    """A server and clients in one process; ``sync()`` runs until everything is delivered."""

    def __init__(self, model_factory: Callable[[], RealtimeModel], *, clients: int = 2,
                 plugins: Iterable[Plugin] = (), room: str = "test",
                 types: Iterable[type[RealtimeModel]] = (), **network: Any) -> None:
        self.model_factory = model_factory
        self.room = room
        self.types = tuple(types)
        self.clock = ManualClock()
        self.net = MemoryNetwork(**network)
        self.host = RoomHost(self.net.server, plugins=plugins, heartbeat_timeout=1e9)
        self.clients: list[Realtime] = []
        self.transports: dict[Realtime, MemoryClientTransport] = {}
        for _ in range(clients):
            self.add_client()
        self.sync()

    def add_client(self) -> Realtime:
        name = f"client-{len(self.transports) + 1}"
        transport = self.net.connect(name)
        rt = Realtime(transport, self.room, self.model_factory(), types=self.types,
                      world=f"{self.room}-{next(_WORLDS)}-{name}", frame_duration=0.0,
                      ping_interval=3600.0,
                      heartbeat_timeout=3600.0, clock=self.clock)
        self.clients.append(rt)
        self.transports[rt] = transport
        return rt

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
            rt.receive()

    def sync(self, max_rounds: int = 100) -> None:
        """Tick everybody and move every frame until nothing is left in flight."""
        for _ in range(max_rounds):
            for rt in self.clients:
                rt.tick()
            self.net.step()
            self.host.pump(self.clock())
            self.net.step()
            for rt in self.clients:
                rt.receive()
            busy = self.net.in_flight or any(rt.datastore.has_unsent_changes
                                              for rt in self.clients if rt.connected)
            if any(sess.needs_resync for sess in self.host.sessions.values()):
                # a resync waits out the host's cooldown: let the time pass, then ping
                self.clock.advance(RESYNC_COOLDOWN)
                for rt in self.clients:
                    rt.connection.ping_now()
                busy = True
            if not busy:
                return
        raise AssertionError("the room did not settle")


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
