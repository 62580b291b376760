"""Hostile writes (issue 11 case 5 and the "plus" list): a joined raw client sends
structurally valid updates nobody honest would — ids never allocated, other clients' id
spaces and owned models, bad parents, destroys of the room model, wrong types, boundary
ints, NaN, deep chains, sizes at each limit, repeated HELLOs, BYE then more — while two
honest ``rtecs.connect`` clients keep writing. After each phase the server serves, the
attacker's session carries on where the protocol says it does, and every honest datastore
equals the server's room."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from _hostile import HNode, HPlayer, Net, Raw, converge, net, settle, truth

from rtecs.clock import ManualClock
from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    INT_MAX,
    INT_MIN,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    PROTOCOL_VERSION,
    Hello,
    LeaveEntry,
    Limits,
    Pong,
    Resync,
    Update,
    dynamic_model_id,
    encode,
)
from rtecs_server import RoomServer
from rtecs_server.fanout import RESYNC_COOLDOWN
from rtecs_server.zmq_transport import max_message_size

__all__ = ["net"]  # the fixture

pytestmark = pytest.mark.timeout(30)


class Room:
    """An embedded server, two honest clients each with an owned, takeover-protected avatar,
    and a joined attacker."""

    def __init__(self, net: Net, server: RoomServer) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.a, self.b = net.honest(self.endpoint), net.honest(self.endpoint)
        self.avatar_a = HPlayer(name="ann", hp=10)
        self.avatar_b = HPlayer(name="bob", hp=20)
        self.a.spawn(self.avatar_a, owned=True, prevent_ownership_takeover=True)
        self.b.spawn(self.avatar_b, owned=True, prevent_ownership_takeover=True)
        self.x: Raw = net.raw(self.endpoint)
        self.x.join()
        self.round = 0
        self.check()

    @property
    def honest(self) -> list[Any]:
        return [self.a, self.b]

    def check(self) -> dict[Any, Any]:
        """Both honest clients write, then converge; their avatars are intact."""
        self.round += 1
        self.a.room_model.title = f"a{self.round}"  # type: ignore[attr-defined]
        self.avatar_b.hp = 20 + self.round
        want = converge(self.honest, self.endpoint)
        assert self.server.running
        assert dict(want[0][2])[1] == ("str", f"a{self.round}")
        assert dict(want[self.avatar_b.model_id][2])[3] == ("int", 20 + self.round)
        assert dict(want[self.avatar_a.model_id][2])[1] == ("str", "ann")
        for rt in self.honest:
            assert rt.stats.sessions_lost == 0 and rt.stats.reconnect_attempts == 0
        return want


@pytest.fixture
def room(net: Net) -> Iterator[Room]:
    with RoomServer(heartbeat_timeout=30) as server:
        yield Room(net, server)


def counter(x: Raw) -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield dynamic_model_id(x.client_id, n)


# ----------------------------------------------------------------------------- case 5

def test_1500_nested_dynamic_models_in_one_update_then_a_destroy_of_the_root(
        room: Room) -> None:
    """Case 5: a destroy of the root of a 1,500-deep chain used to hit RecursionError after
    983 deletions nobody was told about. Now creates below level 64 are refused (and the
    ones under them name a parent that never was); the destroy takes all 64 levels."""
    x = room.x
    ids = [dynamic_model_id(x.client_id, i + 1) for i in range(1500)]
    runs = [[ids[0], CREATE, ["HNode", 0], 2, 0]]
    runs += [[ids[i], CREATE, ["HNode", 0, ids[i - 1]], 2, i] for i in range(1, 1500)]
    x.update(*runs)
    x.sync()
    assert {e.code for e in x.errors} <= {"over_limit", "bad_update"}
    assert any("64" in e.message for e in x.errors)
    want = room.check()
    nodes = [mid for mid, rec in want.items() if rec[0] == "HNode"]
    assert len(nodes) == 64 and set(nodes) == set(ids[:64])
    x.update([ids[0], DESTROY, None])
    want = room.check()
    assert not [mid for mid, rec in want.items() if rec[0] == "HNode"]


def test_a_chain_grown_one_level_per_update_stops_at_the_depth_limit(room: Room) -> None:
    x = room.x
    ids = counter(x)
    parent = next(ids)
    x.update([parent, CREATE, ["HNode", 0]])
    made = 1
    for _ in range(80):
        mid = next(ids)
        x.update([mid, CREATE, ["HNode", 0, parent], 2, made])
        parent = mid
        made += 1
    x.sync()
    assert sum(e.code == "over_limit" for e in x.errors) >= 1
    want = room.check()
    assert sum(rec[0] == "HNode" for rec in want.values()) == 64


# ----------------------------------------------------------------------------- ids

def test_writes_to_ids_never_allocated_are_bad_input_and_change_nothing(room: Room) -> None:
    x = room.x
    honest_next = dynamic_model_id(room.a.client_id, 500)
    for run in ([999_999, 1, "x"], [honest_next, 1, "x"], [(0, 77), 1, "x"],
                [(0, 4, 1), 1, "x"], [tuple([0] + [1] * 200), 1, "x"],
                [dynamic_model_id(x.client_id, 1), 1, "never created"],
                [INT_MAX, 1, "x"], [honest_next, DESTROY, None], [honest_next, OWNER, 3]):
        x.update(run)
    x.sync()
    assert len(x.errors) >= 5 and {e.code for e in x.errors} == {"bad_update"}
    assert not any(e.fatal for e in x.errors)
    want = room.check()
    assert 999_999 not in want and honest_next not in want


def test_creates_in_another_clients_id_space_are_refused_and_burn_nothing(room: Room) -> None:
    """The attacker may not create with the honest clients' ids (their counters are not
    burned: their own creates keep working), nor reuse or zero its own counters."""
    x = room.x
    a_next = [dynamic_model_id(room.a.client_id, n) for n in range(1, 20)]
    for mid in a_next:
        x.update([mid, CREATE, ["HNode", 0], 1, "squatted"])
    mine = dynamic_model_id(x.client_id, 1)
    x.update([mine, CREATE, ["HNode", 0], 1, "first"])
    x.update([mine, CREATE, ["HNode", 0], 1, "again"])                  # reused
    x.update([dynamic_model_id(x.client_id, 0), CREATE, ["HNode", 0]])  # counter 0
    x.update([0, CREATE, ["HGame", 0]])                                  # the room model
    x.sync()
    assert sum(e.code == "bad_update" for e in x.errors) >= 3
    for i in range(5):
        room.a.create(HNode(label=f"honest {i}"))
    want = room.check()
    labels = sorted(dict(rec[2])[1][1] for rec in want.values() if rec[0] == "HNode")
    # the reused id's create is refused, but the write after it lands on the existing model
    # (which the attacker may write anyway)
    assert labels == ["again"] + [f"honest {i}" for i in range(5)]


def test_other_clients_owned_models_cannot_be_written_destroyed_adopted_or_taken(
        room: Room) -> None:
    x = room.x
    avatar, entity = room.avatar_a.model_id, room.avatar_a.parent.model_id  # type: ignore
    ids = counter(x)
    x.update([avatar, 1, "pwned", 3, 0])
    x.update([entity, OWNER, x.client_id])
    x.update([avatar, OWNER, x.client_id])
    x.update([avatar, DESTROY, None])
    x.update([entity, DESTROY, None])
    x.update([next(ids), CREATE, ["HNode", 0, entity]])   # creating under it is writing it
    x.update([next(ids), CREATE, ["HNode", 0, avatar], 1, "inside"])
    x.update([entity, OWNER, -1])                         # clearing someone else's
    x.sync()
    want = room.check()
    assert want[entity][1] == room.a.client_id
    assert dict(want[avatar][2])[1] == ("str", "ann")
    assert not [rec for rec in want.values() if rec[0] == "HNode"]


def test_bad_parents_and_self_parents(room: Room) -> None:
    x = room.x
    ids = counter(x)
    me = next(ids)
    x.update([me, CREATE, ["HNode", 0, me]])                         # its own parent
    x.update([next(ids), CREATE, ["HNode", 0, 999_999]])             # never created
    x.update([next(ids), CREATE, ["HNode", 0, (0, 3)]])              # no such child
    x.update([next(ids), CREATE, ["HNode", 0, 0, 5]])                # keyed, no collection
    x.update([next(ids), CREATE, ["HNode", 0, 0, "k", None]])
    gone = next(ids)
    x.update([gone, CREATE, ["HNode", 0]])
    x.update([gone, DESTROY, None])
    x.update([next(ids), CREATE, ["HNode", 0, gone]])                # destroyed: a race
    x.update([next(ids), CREATE, ["NoSuchType", 0]])
    x.update([next(ids), CREATE, ["HNode", 0]], [next(ids), CREATE, ["HNode", 0, 0]])
    x.sync()
    assert {e.code for e in x.errors} <= {"bad_update"} and len(x.errors) >= 5
    want = room.check()
    assert sum(rec[0] == "HNode" for rec in want.values()) <= 2


def test_the_room_model_and_declared_children_cannot_be_destroyed(room: Room) -> None:
    x = room.x
    x.update([0, DESTROY, None])
    x.update([(0, 1), DESTROY, None])
    x.update([0, DESTROY, None], [0, 1, "after the destroy"])
    x.sync()
    assert any("only dynamic models" in e.message for e in x.errors)
    want = room.check()
    assert 0 in want and want[0][0] == "HGame"


# ----------------------------------------------------------------------------- values

def test_wrong_value_types_are_refused_each_on_its_own(room: Room) -> None:
    x = room.x
    mid = dynamic_model_id(x.client_id, 1)
    x.update([mid, CREATE, ["HNode", 0], 1, "ok", 2, 1])
    for run in ([0, 1, 12345], [0, 2, "seven"], [0, 2, True], [0, 2, 1.5], [0, 1, b"bytes"],
                [0, 1, None], [0, 2, None], [0, 4, "nan"], [mid, 99, "unknown property"]):
        x.update(run)
    x.update([0, 2, 41, 2, "x", 2, 42])   # the good writes around a bad one still apply
    x.sync()
    assert len(x.errors) >= 5 and {e.code for e in x.errors} == {"bad_update"}
    x.update([mid, 2, [1, 2]])            # no scalar at all: undecodable, so resynced
    x.expect_error("protocol")
    x.expect(lambda m: m.__class__.__name__ == "Welcome" and len(x.welcomes) == 2)
    want = room.check()
    assert dict(want[0][2])[2] == ("int", 42)
    assert dict(want[mid][2]) == {1: ("str", "ok"), 2: ("int", 1)}


def test_boundary_ints_nan_and_infinities_converge(room: Room) -> None:
    x = room.x
    for value in (INT_MAX, INT_MIN, 2**63, -1):
        x.update([0, 2, value])
        x.sync()
        want = room.check()
        assert dict(want[0][2])[2] == ("int", value)
    for number in (math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308):
        x.update([0, 4, number], [0, 3, number])
        x.sync()
        want = room.check()
        ratio = room.a.room_model.ratio  # type: ignore[attr-defined]
        assert ratio == number or (math.isnan(number) and math.isnan(ratio))
    room.a.room_model.ratio = 0.5  # type: ignore[attr-defined]
    want = room.check()
    assert dict(want[0][2])[4] == ("float", 0.5)


def test_values_and_frames_at_each_size_limit(room: Room, net: Net) -> None:
    """Just under each limit passes, just over is refused, nothing else is lost: the
    update frame (125 KB), the HELLO frame (1 MiB), the frame the socket reads at all
    (MAXMSGSIZE: libzmq drops the connection silently; the client then uses a new one)."""
    limits = Limits()
    x = room.x

    def update_of(size: int) -> bytes:
        base = encode(Update(x.seq + 1, [[0, 1, ""]], x.epoch))
        frame = encode(Update(x.seq + 1, [[0, 1, "z" * (size - len(base) - 4)]], x.epoch))
        assert len(frame) == size
        return frame

    x.send_raw(update_of(limits.max_update_bytes))
    x.seq += 1
    x.sync()
    assert not x.errors
    x.send_raw(update_of(limits.max_update_bytes + 1))
    assert x.expect_error("over_limit").fatal is False
    x.expect(lambda m: m.__class__.__name__ == "Welcome" and len(x.welcomes) == 2)

    def hello_of(size: int) -> bytes:
        base = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", {"HGame": {}}, ""))
        frame = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", {"HGame": {}},
                             "t" * (size - len(base) - 4)))
        assert len(frame) == size
        return frame

    h = net.raw(room.endpoint)
    h.send_raw(hello_of(limits.max_hello_bytes))
    assert h.expect(lambda m: m.__class__.__name__ == "Welcome", 10)
    h2 = net.raw(room.endpoint)
    h2.send_raw(hello_of(limits.max_hello_bytes + 1))
    assert not h2.expect_error("over_limit").fatal
    huge = net.raw(room.endpoint)
    huge.send_raw(b"\x00" * (max_message_size(limits) + 1))
    assert not huge.quiet_for(0.3)
    room.check()


# ----------------------------------------------------------------------------- sessions

def test_repeated_hellos_each_end_the_previous_session(net: Net) -> None:
    """A hello on a joined connection ends its session and opens one in the hello's room,
    once the resync cooldown since its last welcome has passed (the server's clock is
    stepped); before that it is refused, not fatal, and the session goes on."""
    clock = ManualClock()
    with RoomServer(heartbeat_timeout=30, clock=clock) as server:
        room = Room(net, server)
        x = room.x
        lobby_ids = []
        for i in range(6):
            x.update([dynamic_model_id(x.client_id, 1), CREATE,
                      ["HNode", DESTROY_WHEN_OWNER_LEAVES], OWNER, x.client_id, 1, f"n{i}"])
            x.sync()
            if i % 2 == 0:
                lobby_ids.append(x.client_id)
            before = x.client_id
            x.hello("lobby")   # too soon: refused, the session goes on
            err = x.expect_error("rate_limit")
            assert not err.fatal and "waits" in err.message
            x.ping()
            x.expect(lambda m: isinstance(m, Pong))
            assert x.client_id == before
            clock.advance(RESYNC_COOLDOWN)
            x.join("elsewhere" if i % 2 == 0 else "lobby")   # ids count per room
        assert len(set(lobby_ids)) == 3
        want = room.check()
        assert not [rec for rec in want.values() if rec[0] == "HNode"]  # each left with it
        present = room.a.clients
        assert x.client_id in present and not present & set(lobby_ids)


def test_bye_then_more(room: Room) -> None:
    x = room.x
    x.bye()
    x.bye()
    x.update([0, 1, "after bye"])
    x.expect_error("not_joined")
    x.ping()
    x.expect_error("not_joined")
    x.send(Resync())
    x.send(Update(2, [[0, 1, "after bye"]], 1))
    x.expect_error("not_joined")
    settle(lambda: any(LeaveEntry(x.client_id) in b.entries for b in room.x.batches())
           or x.client_id not in room.a.clients, room.honest)
    room.check()
    x.join()
    x.update([0, 2, 99])
    x.sync()
    want = room.check()
    assert dict(want[0][2])[2] == ("int", 99)


def test_a_takeover_protected_model_survives_its_owners_impostor_and_the_owner_leaving(
        room: Room, net: Net) -> None:
    """The attacker owns a protected model; nobody else can take it; when the attacker's
    session ends its model stays, unowned (it was not flagged destroy_when_owner_leaves)."""
    x = room.x
    mid = dynamic_model_id(x.client_id, 1)
    x.update([mid, CREATE, ["HNode", PREVENT_OWNERSHIP_TAKEOVER], OWNER, x.client_id,
              1, "attacker's"])
    x.sync()
    settle(lambda: room.a.datastore.get(mid) is not None, room.honest)
    model = room.a.datastore.get(mid)
    assert model is not None
    from rtecs.errors import OwnershipError

    with pytest.raises(OwnershipError):
        model.label = "mine"  # type: ignore[attr-defined]
    x.bye()
    settle(lambda: model.owner_id == -1, room.honest)
    model.label = "mine"  # type: ignore[attr-defined]
    want = room.check()
    assert dict(want[mid][2])[1] == ("str", "mine")
    assert truth(room.endpoint) == want


# ----------------------------------------------------------------------------- random

def test_a_seeded_random_mix_of_hostile_updates(room: Room) -> None:
    """300 structurally valid updates drawn (seed 11) from everything above — ids known,
    foreign, never allocated and declared; every key; values of every type; creates with
    random parents and flags; destroys; ownership claims — interleaved with honest writes.
    The server serves, and every honest client converges after each third of it."""
    import random

    rng = random.Random(11)
    x = room.x
    mine = counter(x)
    made: list[int] = []
    avatars = [room.avatar_a.model_id, room.avatar_b.model_id,
               room.avatar_a.parent.model_id, room.avatar_b.parent.model_id]  # type: ignore
    values: list[Any] = [None, True, False, 0, -1, 7, INT_MAX, INT_MIN, 1.5, math.inf,
                         math.nan, "", "text", "x" * 2000, b"", b"\x00\xff"]

    def some_id() -> Any:
        if made and rng.random() < 0.5:
            return rng.choice(made)
        return rng.choice([0, 0, (0, 1), (0, 9), 999_999, *avatars,
                           dynamic_model_id(room.a.client_id, rng.randrange(1, 50)),
                           dynamic_model_id(x.client_id, rng.randrange(1, 400))])

    def some_run() -> list[Any]:
        kind = rng.randrange(6)
        if kind == 0:
            mid = next(mine)
            made.append(mid)
            parent = [] if rng.random() < 0.5 else [some_id()]
            return [mid, CREATE, [rng.choice(["HNode", "HPlayer", "HGame", "Nope"]),
                                  rng.randrange(8), *parent], 1, rng.choice(values)]
        if kind == 1:
            return [some_id(), DESTROY, None]
        if kind == 2:
            return [some_id(), OWNER, rng.choice([-1, x.client_id, room.a.client_id, 99])]
        run: list[Any] = [some_id()]
        for _ in range(rng.randrange(1, 6)):
            run += [rng.choice([1, 1, 2, 2, 3, 4, 9]), rng.choice(values)]
        return run

    for _third in range(3):
        for _ in range(100):
            x.update(*[some_run() for _ in range(rng.randrange(1, 4))])
            if rng.random() < 0.1:   # (the attacker may own the room model by now)
                room.avatar_a.hp = rng.randrange(1000)
                room.a.tick()
        x.sync(30)
        assert not any(e.fatal for e in x.errors), [e for e in x.errors if e.fatal][:1]
        room.avatar_b.name = f"bob {_third}"
        want = converge(room.honest, room.endpoint)
        assert room.server.running
        assert dict(want[room.avatar_b.model_id][2])[1] == ("str", f"bob {_third}")
        assert dict(want[room.avatar_a.model_id][2])[1] == ("str", "ann")
        assert want[avatars[2]][1] == room.a.client_id
