"""What one network address shares (issue 11, DESIGN §8): the update budget of its sessions
(``--address-budgets``), a byte budget for HELLO, SCHEMA and other frames paid before they
are decoded (``--schema-budget``), the empty rooms it may leave open
(``--max-empty-rooms-per-address``), and the rooms one instance hosts (``--max-rooms``).

Over the memory transport, whose clients are given addresses, on a manual clock; the flags
over a real server process. The hostile suite (``test_hostile_cost.py``) measures what they
cost an attacker and save the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from zmq_helpers import PATIENCE, RawClient, ServerProcess, raw_clients

from rtecs.protocol import (
    CREATE,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Error,
    Hello,
    Ping,
    Schema,
    Update,
    UpdateEntry,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)
from rtecs.transport.memory import MemoryClientTransport, MemoryNetwork
from rtecs_server import RoomHost
from rtecs_server.ratelimit import SCHEMA_BURST_SECONDS, AddressTable, RateLimit

__all__ = ["raw_clients"]  # the fixture

SCHEMA: dict[str, Any] = {"Game": {1: ("title", "str", True)},
                          "Node": {1: ("label", "str", True)}}


class Peer:
    """A raw client over the memory transport."""

    def __init__(self, net: MemoryNetwork, name: str, address: str | None) -> None:
        self.link: MemoryClientTransport = net.connect(name, address=address)
        self.received: list[Any] = []
        self.seq = 0
        self.client_id = -1

    def send(self, message: Any) -> None:
        self.link.send(encode(message))

    def hello(self, room: str = "lobby", schema: dict[str, Any] | None = None) -> None:
        self.send(Hello(PROTOCOL_VERSION, room, "Game", SCHEMA if schema is None else schema,
                        None))

    def take(self) -> list[Any]:
        new = [decode_server_message(f) for f in self.link.receive()]
        self.received += new
        for m in new:
            if isinstance(m, Welcome):
                self.client_id = m.client_id
        return new

    def errors(self) -> list[Error]:
        return [m for m in self.received if isinstance(m, Error)]

    def creates(self, n: int, start: int = 0) -> None:
        """One update creating ``n`` Node models (each a change of two values)."""
        self.seq += 1
        self.send(Update(self.seq, [[dynamic_model_id(self.client_id, start + i + 1), CREATE,
                                     ["Node", 0], 1, "x"] for i in range(n)], 1))


class World:
    def __init__(self, **host: Any) -> None:
        self.now = 0.0
        self.net = MemoryNetwork()
        self.host = RoomHost(self.net.server, heartbeat_timeout=1e9, session_grace=1e9, **host)
        self.peers: list[Peer] = []

    def peer(self, address: str | None) -> Peer:
        p = Peer(self.net, f"p{len(self.peers)}", address)
        self.peers.append(p)
        return p

    def step(self, dt: float = 0.0) -> None:
        self.now += dt
        self.net.step()
        self.host.pump(self.now)
        self.net.step()
        for p in self.peers:
            p.take()

    def join(self, *peers: Peer, room: str = "lobby") -> None:
        for p in peers:
            p.hello(room)
        self.step()
        assert all(p.client_id >= 1 for p in peers), [p.errors() for p in peers]


def paid_by(peer: Peer, observer: Peer) -> list[UpdateEntry]:
    """``peer``'s entries in the room stream, as ``observer`` saw them."""
    return [e for m in observer.received if isinstance(m, Batch) for e in m.entries
            if isinstance(e, UpdateEntry) and e.sender == peer.client_id]


# ----------------------------------------------------------------------------- updates

def test_the_sessions_of_one_address_share_one_update_budget() -> None:
    """Budget 10,000 changes/s (a burst of 5,000): two sessions of 10.0.0.1 each send 3,000
    changes at once — the second update is refused inside the stream, with an error naming
    the shared budget; a session of another address is paid in full; once the budget has
    refilled, the refused session is paid again."""
    limit = RateLimit(update_bytes=0, update_changes=10_000)
    w = World(rate_limit=limit)
    a, b, other = w.peer("10.0.0.1"), w.peer("10.0.0.1"), w.peer("10.0.0.2")
    w.join(a, b, other)
    a.creates(1500)      # 3,000 changes
    w.step()
    b.creates(1500)
    other.creates(1500)
    w.step()
    assert [len(e.changes) > 0 for e in paid_by(a, other)] == [True]
    [refused] = paid_by(b, other)
    assert not refused.changes and refused.rejected
    assert [len(e.changes) > 0 for e in paid_by(other, a)] == [True]
    [err] = b.errors()
    assert err.code == "rate_limit" and not err.fatal
    assert "shared by every session from this client's network address" in err.message
    assert not a.errors() and not other.errors()
    w.step(3000 / 10_000 + 0.01)   # the address's budget refills at its rate
    b.creates(1500, start=1500)
    w.step()
    assert len(paid_by(b, other)) == 2 and paid_by(b, other)[-1].changes


def test_address_budgets_scale_the_shared_budget_and_zero_turns_it_off() -> None:
    """``address_budgets=2``: two sessions' bursts fit, a third does not; 0: each session has
    its own budget only."""
    for share, paid in ((2.0, [True, True, False]), (0.0, [True, True, True])):
        limit = RateLimit(update_bytes=0, update_changes=10_000, address_budgets=share)
        w = World(rate_limit=limit)
        senders = [w.peer("10.0.0.1") for _ in range(3)]
        watcher = w.peer("10.0.0.9")
        w.join(*senders, watcher)
        for s in senders:
            s.creates(2000)   # 4,000 changes: inside one session's burst of 5,000
            w.step()
        assert [bool(paid_by(s, watcher)[0].changes) for s in senders] == paid, share


def test_a_shared_budget_is_forgotten_once_full_and_unheld() -> None:
    table = AddressTable(RateLimit(update_bytes=0, update_changes=1000))
    allowance = table.updates("10.0.0.1", 0.0)
    assert allowance is not None and allowance.pay(table.rate_limit, 0, 400, 0.0)  # type: ignore[arg-type]
    assert table.updates(None, 0.0) is None
    table.forget_idle(0.1, live=())
    assert len(table) == 1                       # 400 changes still missing
    table.forget_idle(0.1, live=())
    table.forget_idle(0.5, live={"10.0.0.1"})    # full again, but a session holds it
    assert len(table) == 1
    table.forget_idle(0.5, live=())
    assert len(table) == 0


# ----------------------------------------------------------------------------- frames

def big_schema(tag: str, props: int = 200) -> dict[str, Any]:
    """SCHEMA plus one type of ``props`` properties with long names (~24 kB a 200)."""
    return {**SCHEMA, f"{tag}Big": {p: (f"{tag}p{p}" + "n" * 100, "int", True)
                                    for p in range(1, props + 1)}}


def test_hellos_and_schemas_pay_their_address_before_they_are_decoded() -> None:
    """A schema budget of 50,000 bytes/s (bursts of ``SCHEMA_BURST_SECONDS``): fresh
    connections of one address send hellos of ~24 kB until the burst is spent — the next is
    dropped unread with a non-fatal ``rate_limit`` error naming the budget; another address
    joins; a SCHEMA from a session of the spent address is dropped the same way; after the
    refill both go through. Pings and updates never pay it."""
    rate = 50_000.0
    w = World(rate_limit=RateLimit(schema_bytes=rate))
    hello_size = len(encode(Hello(PROTOCOL_VERSION, "lobby", "Game", big_schema("h0"), None)))
    fits = int(rate * SCHEMA_BURST_SECONDS // hello_size)
    assert fits >= 2
    joined = [w.peer("10.0.0.1") for _ in range(fits)]
    for i, p in enumerate(joined):
        p.hello(schema=big_schema("h0"))
        w.step()
        assert p.client_id >= 1, (i, p.errors())
    late = w.peer("10.0.0.1")
    late.hello(schema=big_schema("h0"))
    w.step()
    [err] = late.errors()
    assert late.client_id == -1 and err.code == "rate_limit" and not err.fatal
    assert "schema budget" in err.message and "10.0.0.1" in err.message
    elsewhere = w.peer("10.0.0.2")
    elsewhere.hello(schema=big_schema("h0"))
    w.step()
    assert elsewhere.client_id >= 1
    first = joined[0]
    first.send(Schema(big_schema("s1")))
    first.send(Ping(1.0, 1))
    first.creates(10)
    w.step()
    assert [e.code for e in first.errors()] == ["rate_limit"]
    assert "Pong" in [type(m).__name__ for m in first.received]
    assert "s1Big" not in w.host.rooms["lobby"].room.store.schema.types
    w.step(SCHEMA_BURST_SECONDS)   # refilled
    first.send(Schema(big_schema("s1")))
    late.hello(schema=big_schema("h0"))
    w.step()
    assert "s1Big" in w.host.rooms["lobby"].room.store.schema.types
    assert late.client_id >= 1


def test_a_schema_from_a_peer_with_no_session_is_not_decoded() -> None:
    w = World(rate_limit=RateLimit())
    p = w.peer("10.0.0.1")
    p.send(Schema(big_schema("x")))
    w.step()
    [err] = p.errors()
    assert err.code == "not_joined" and "schema" in err.message


# ----------------------------------------------------------------------------- rooms

def test_an_addresss_empty_rooms_past_the_bound_close_oldest_first() -> None:
    """``max_empty_rooms_per_address=2``: 10.0.0.1 opens rooms a, b, c and leaves each; when
    c empties, a (empty the longest) closes; a room someone else still holds is not its to
    lose, and a room occupied again no longer counts."""
    w = World(max_empty_rooms_per_address=2, empty_room_timeout=1e9)
    opener = [w.peer("10.0.0.1") for _ in range(4)]
    stays = w.peer("10.0.0.2")
    for p, room in zip(opener, "abc", strict=False):
        w.join(p, room=room)
        w.step(1.0)
    w.join(stays, room="b")
    for p in opener[:3]:
        p.send(Bye())
        w.step(1.0)
    assert set(w.host.rooms) == {"a", "b", "c"}   # b is not empty
    w.join(opener[3], room="d")
    opener[3].send(Bye())
    w.step(1.0)
    assert set(w.host.rooms) == {"b", "c", "d"}   # a: closed when d emptied (a, c, d)
    stays.send(Bye())
    w.step(1.0)
    assert set(w.host.rooms) == {"b", "d"}   # b empties (opened by 10.0.0.1): c goes
    assert w.host.directory.max_empty_per_address == 2


def test_an_instance_hosts_at_most_max_rooms() -> None:
    """``max_rooms=2``: a third room closes the room empty the longest; with none empty the
    hello is refused ``unavailable`` (fatal; a client retries later)."""
    w = World(max_rooms=2, empty_room_timeout=1e9)
    a, b, c, d = (w.peer(f"10.0.0.{i}") for i in range(1, 5))
    w.join(a, room="r1")
    w.join(b, room="r2")
    c.hello("r3")
    w.step()
    [err] = c.errors()
    assert err.code == "unavailable" and err.fatal and "most rooms (2)" in err.message
    a.send(Bye())
    w.step(1.0)
    w.join(d, room="r3")
    assert set(w.host.rooms) == {"r2", "r3"}


# ----------------------------------------------------------------------------- flags

@pytest.mark.timeout(60)
def test_the_flags_reach_the_server(raw_clients: Callable[..., RawClient]) -> None:
    """``--address-budgets 0 --update-budget 0:1000``: two sessions of 127.0.0.1 each get a
    full burst; ``--schema-budget 1000``: a hello of 3 kB is dropped (its burst is 2 kB);
    ``--max-rooms 1``: a second room is refused while the first is held. (The burst of
    ``--update-budget`` is ``BUDGET_SECONDS``, 0.5 s.)"""
    server = ServerProcess("--address-budgets", "0", "--update-budget", "0:1000",
                           "--schema-budget", "1000", "--max-rooms", "1",
                           "--max-sessions-per-address", "0")
    try:
        a, b, big, other = (raw_clients(server.endpoint) for _ in range(4))
        for p in (a, b):
            p.join(timeout=PATIENCE)
            p.update(*[[dynamic_model_id(p.client_id, i + 1), CREATE, ["Player", 0]]
                       for i in range(400)])   # 400 changes: inside a burst of 500
            p.sync(PATIENCE)
        assert not a.errors and not b.errors
        big.hello(schema=big_schema("f", 20))
        assert "schema budget of 1000" in big.expect_error("rate_limit", PATIENCE).message
        other.hello("elsewhere")
        assert "most rooms (1)" in other.expect_error("unavailable", PATIENCE).message
    finally:
        server.kill()
