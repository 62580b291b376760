"""Entities, collections and ownership across real sockets: three rtecs clients, each in
its own esper world, against an embedded RoomServer over ZeroMQ on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import cast

import esper
import pytest
from zmq_helpers import settle

import rtecs
from rtecs.ecs import in_world
from rtecs_server import RoomServer

pytestmark = pytest.mark.timeout(30)
_WORLDS = itertools.count(1)


class Item(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")


class Tank(rtecs.RealtimeModel):
    hp: int = rtecs.prop(1, default=100)
    x: float = rtecs.prop(2, reliable=False)


class Hall(rtecs.RealtimeModel):
    bag: rtecs.RealtimeSet[Item] = rtecs.prop(1)
    log: rtecs.RealtimeArray[Item] = rtecs.prop(2)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(3)
    slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(4)


class Hosted:
    """An embedded server and the clients joined to it (closed at the end)."""

    def __init__(self, server: RoomServer) -> None:
        self.server = server
        self.clients: list[rtecs.Realtime] = []

    def join(self) -> rtecs.Realtime:
        rt = rtecs.connect(self.server.endpoint, "hall", Hall(), types=[Tank],
                           world=f"ecs-zmq-{next(_WORLDS)}", frame_duration=0.0)
        rt.wait_connected(timeout=10)
        self.clients.append(rt)
        return rt


@pytest.fixture
def hosted() -> Iterator[Hosted]:
    with RoomServer(bind="tcp://127.0.0.1:0") as server:
        room = Hosted(server)
        try:
            yield room
        finally:
            for rt in room.clients:
                rt.close(timeout=0.2)




def tanks(rt: rtecs.Realtime) -> list[tuple[int, float]]:
    with in_world(rt.world):
        return sorted((t.hp, t.x) for _, t in esper.get_component(Tank))


def test_spawn_write_destroy_and_a_late_joiner(hosted: Hosted) -> None:
    a, b, c = hosted.join(), hosted.join(), hosted.join()
    tank = Tank(hp=50, x=1.5)
    e = a.spawn(tank)
    settle(lambda: tanks(b) == tanks(c) == [(50, 1.5)], a, b, c)
    tank.hp, tank.x = 40, 2.5
    settle(lambda: tanks(b) == tanks(c) == [(40, 2.5)], a, b, c)
    d = hosted.join()
    assert tanks(d) == [(40, 2.5)]
    a.destroy(e)
    settle(lambda: tanks(b) == tanks(c) == tanks(d) == [], a, b, c, d)


def test_takeover_of_a_known_prevented_owner_is_refused_at_once(hosted: Hosted) -> None:
    a, b = hosted.join(), hosted.join()
    e = a.spawn(Tank(), prevent_ownership_takeover=True)
    settle(lambda: tanks(b) == [(100, 0.0)], a, b)
    with in_world(b.world):
        [(theirs_e, theirs)] = esper.get_component(Tank)
    record = b.entity_model(theirs_e)
    assert record is not None
    with pytest.raises(rtecs.OwnershipError, match="prevents ownership takeover"):
        record.request_ownership()
    with pytest.raises(rtecs.OwnershipError):
        theirs.hp = 1  # a component: covered by the entity's owner
    assert a.entity_model(e) is not None and a.entity_model(e).is_owned_locally  # type: ignore[union-attr]


def test_collections_converge_and_string_keys_are_transactional(hosted: Hosted) -> None:
    a, b, c = hosted.join(), hosted.join(), hosted.join()
    ha, hb, hc = (cast(Hall, rt.room_model) for rt in (a, b, c))
    ha.bag.add(Item(name="sword"))
    hb.log.append(Item(name="first"))
    settle(lambda: [i.name for i in hc.log] == ["first"] and len(hc.bag) == 1, a, b, c)
    ha.log.append(Item(name="second"))
    settle(lambda: all([i.name for i in h.log] == ["first", "second"]
                       for h in (ha, hb, hc)), a, b, c)
    # Both write the same string key at once: exactly one succeeds.
    fa = ha.names.set("king", Item(name="ann"))
    fb = hb.names.set("king", Item(name="bob"))
    settle(lambda: fa.done() and fb.done(), a, b, c)
    assert sorted([fa.result(), fb.result()]) == [False, True]
    winner = "ann" if fa.result() else "bob"
    settle(lambda: all("king" in h.names and h.names["king"].name == winner
                       for h in (ha, hb, hc)), a, b, c)


def test_int_key_dictionary_replaces_and_removes_everywhere(hosted: Hosted) -> None:
    a, b = hosted.join(), hosted.join()
    ha, hb = cast(Hall, a.room_model), cast(Hall, b.room_model)
    ha.slots[1] = Item(name="one")
    settle(lambda: 1 in hb.slots and hb.slots[1].name == "one", a, b)
    hb.slots[1] = Item(name="uno")  # a replace from the other client
    settle(lambda: ha.slots[1].name == "uno", a, b)
    del ha.slots[1]
    settle(lambda: 1 not in hb.slots and 1 not in ha.slots, a, b)
