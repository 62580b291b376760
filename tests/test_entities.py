"""Replicated entities in esper worlds: spawn, destroy, late joiners, lifetime flags,
SyncSystem, two clients in one process each in its own world."""

from __future__ import annotations

from typing import Any

import esper
import pytest

import rtecs
from harness import LocalRoom
from rtecs.ecs import in_world


class Player(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    hp: int = rtecs.prop(2, default=100)


class Position(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, reliable=False)
    y: float = rtecs.prop(2, reliable=False)


class Velocity:  # a plain, local (non-replicated) component
    def __init__(self, dx: float) -> None:
        self.dx = dx


class Lobby(rtecs.RealtimeModel):
    topic: str = rtecs.prop(1, default="")


def room_of(clients: int = 3) -> LocalRoom:
    return LocalRoom(Lobby, clients=clients, types=[Player, Position])


def players(rt: rtecs.Realtime) -> dict[str, tuple[int, Any]]:
    with in_world(rt.world):
        return {p.name: (p.hp, (pos.x, pos.y))
                for _, (p, pos) in esper.get_components(Player, Position)}


def test_spawn_appears_everywhere_with_equal_components() -> None:
    room = room_of()
    a, b, c = room.clients
    events: list[rtecs.EntityEvent] = []
    b.entities.subscribe(events.append)
    e = a.spawn(Player(name="ann"), Position(x=1.0, y=2.0))
    with in_world(a.world):
        esper.add_component(e, Velocity(3.0))  # local only
    room.sync()
    for rt in (a, b, c):
        assert players(rt) == {"ann": (100, (1.0, 2.0))}
    assert [(ev.spawned, ev.remote, len(ev.components)) for ev in events] == [(True, True, 2)]
    with in_world(b.world):
        assert esper.get_component(Velocity) == []
    theirs = events[0].components[0]
    assert isinstance(theirs, Player) and b.entity_of(theirs) == events[0].entity


def test_writes_sync_and_only_the_owner_may_write() -> None:
    room = room_of(2)
    a, b = room.clients
    player = Player(name="ann")
    a.spawn(player, Position())
    room.sync()
    with in_world(b.world):
        [(_, theirs)] = esper.get_component(Player)
    player.hp = 42
    room.sync()
    assert theirs.hp == 42
    with pytest.raises(rtecs.OwnershipError):
        theirs.hp = 1
    with pytest.raises(rtecs.OwnershipError):
        b.destroy(b.entity_of(theirs))  # type: ignore[arg-type]


def test_destroy_removes_it_everywhere_and_stale_writes_raise() -> None:
    room = room_of()
    a, b, c = room.clients
    player = Player(name="ann")
    e = a.spawn(player, Position())
    room.sync()
    gone: list[rtecs.EntityEvent] = []
    c.entities.subscribe(gone.append)
    a.destroy(e)
    room.sync()
    for rt in (a, b, c):
        assert players(rt) == {}
    assert [(ev.spawned, ev.remote) for ev in gone] == [(False, True)]
    with pytest.raises(rtecs.ModelDestroyedError):
        player.hp = 3


def test_late_joiner_sees_spawned_entities_and_initial_values_emit() -> None:
    room = room_of(1)
    (a,) = room.clients
    a.spawn(Player(name="ann", hp=7), Position(x=5.0))
    room.sync()
    seen: list[rtecs.EntityEvent] = []
    late = room.add_client()
    late.entities.subscribe(seen.append)
    room.sync()
    assert players(late) == {"ann": (7, (5.0, 0.0))}
    assert len(seen) == 1 and seen[0].remote


def test_owner_leaving_destroys_its_entities_unless_told_otherwise() -> None:
    room = room_of(2)
    a, b = room.clients
    a.spawn(Player(name="doomed"), Position())
    a.spawn(Player(name="kept"), Position(), destroy_when_owner_leaves=False)
    room.sync()
    assert set(players(b)) == {"doomed", "kept"}
    a.close()
    room.sync()
    assert set(players(b)) == {"kept"}
    with in_world(b.world):
        [(e, _)] = esper.get_component(Player)
    record = b.entity_model(e)
    assert record is not None and record.is_unowned


def test_room_emptying_keeps_only_entities_that_outlive_their_clients() -> None:
    room = room_of(1)
    (a,) = room.clients
    a.spawn(Player(name="temp"), Position())
    a.spawn(Player(name="stays"), Position(), destroy_when_owner_leaves=False,
            destroy_when_last_client_leaves=False)
    room.sync()
    a.close()
    room.sync()
    b = room.add_client()
    room.sync()
    assert set(players(b)) == {"stays"}


def test_sync_system_runs_the_tick_inside_esper_process() -> None:
    room = room_of(2)
    a, b = room.clients
    for rt in (a, b):
        with in_world(rt.world):
            esper.add_processor(rtecs.SyncSystem(rt), priority=100)
    a.spawn(Player(name="ann"), Position())
    with in_world(a.world):
        esper.process()  # sends
    room.net.step()
    room.host.pump(room.clock())
    room.net.step()
    with in_world(b.world):
        esper.process()  # receives and applies, in b's world
    assert set(players(b)) == {"ann"}
    assert esper.current_world == "default"


def test_spawn_before_the_welcome_is_refused() -> None:
    room = room_of(0)
    rt = room.add_client()
    with pytest.raises(rtecs.NotConnectedError):
        rt.spawn(Player())


def test_a_type_not_listed_in_types_is_announced_and_found_by_name() -> None:
    class Stranger(rtecs.RealtimeModel):
        v: int = rtecs.prop(1)

    room = room_of(2)
    a, b = room.clients
    e = a.spawn(Stranger(v=7))               # not in types=: its schema goes out first
    room.sync()
    assert "Stranger" in room.host.rooms[room.room].room.schema
    theirs = [m for m in b.datastore.models.values() if isinstance(m, Stranger)]
    assert [m.v for m in theirs] == [7]       # b found the class by its name
    a.destroy(e)
    room.sync()
    assert not [m for m in b.datastore.models.values() if isinstance(m, Stranger)]


def test_two_classes_of_one_name_must_be_passed_explicitly() -> None:
    def make() -> type[rtecs.RealtimeModel]:
        class Twin(rtecs.RealtimeModel):
            v: int = rtecs.prop(1)
        return Twin

    first, second = make(), make()
    room = room_of(2)
    a, b = room.clients
    errors: list[BaseException] = []
    b.errors.subscribe(errors.append)
    a.spawn(first(v=1))
    room.sync()                               # b cannot tell which Twin: reported, kept
    assert any("Twin" in str(e) for e in errors)
    with pytest.raises(ValueError, match="Twin"):
        a.spawn(second(v=2))                  # a already has the other one


def test_a_frame_too_big_for_one_update_goes_out_as_several() -> None:
    room = room_of(2)
    a, b = room.clients
    outcomes: list[rtecs.UpdateOutcome] = []
    a.outcomes.subscribe(outcomes.append)
    for i in range(3000):
        a.spawn(Player(name=f"p{i}" + "x" * 20), Position(x=float(i)))
    room.sync()
    sent = [o for o in outcomes if o.status is rtecs.UpdateStatus.SENT]
    assert len(sent) > 1, "one frame of 3,000 spawns must be split under the update limit"
    assert all(o.status is not rtecs.UpdateStatus.REJECTED for o in outcomes)
    assert len(players(b)) == 3000


def test_a_refused_destroy_brings_the_entity_back_as_the_server_has_it() -> None:
    room = room_of(2)
    a, b = room.clients
    e = a.spawn(Player(name="shared"), Position(), owned=False)
    room.sync()
    with in_world(b.world):
        [(theirs_e, theirs)] = esper.get_component(Player)
    # B takes the entity over and writes to it; A, not knowing yet, destroys it.
    record = b.entity_model(theirs_e)
    assert record is not None
    record.request_ownership()
    theirs.hp = 7
    room.send(b)
    room.server_receives(b)
    a.destroy(e)
    assert players(a) == {}
    events: list[rtecs.EntityEvent] = []
    a.entities.subscribe(events.append)
    room.send(a)
    room.server_receives(a)  # refused: B owns it now
    room.sync()
    assert players(a) == players(b) == {"shared": (7, (0.0, 0.0))}
    assert [(ev.spawned, ev.remote) for ev in events] == [(True, True)]
    with in_world(a.world):
        [(back, _)] = esper.get_component(Player)
    restored = a.entity_model(back)
    assert restored is not None and restored.owner_id == b.client_id
