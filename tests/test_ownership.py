"""Ownership in the in-flight cache: rejected writes roll back, and a refused ownership
request rolls back with every write that needed it (DESIGN §3, §4b)."""

from __future__ import annotations

import pytest

import rtecs
from harness import LocalRoom
from rtecs.model import Change, ChangeSource
from rtecs.protocol import PREVENT_OWNERSHIP_TAKEOVER


class Stats(rtecs.RealtimeModel):
    hp: int = rtecs.prop(1, default=10)


class Avatar(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    stats: Stats = rtecs.prop(2)


class World(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    stats: Stats = rtecs.prop(2)


def test_non_owner_write_is_rejected_and_rolled_back() -> None:
    room = LocalRoom(World, clients=2)
    a, b = room.clients
    a.room_model.request_ownership()
    a.room_model.title = "mine"  # type: ignore[attr-defined]
    room.send(a)
    room.server_receives(a)
    # B writes before it has heard that A owns the room model.
    b.room_model.title = "theirs"  # type: ignore[attr-defined]
    seen: list[Change] = []
    b.room_model.changes.subscribe(seen.append)
    room.send(b)
    room.server_receives(b)
    room.deliver(a, b)
    assert b.room_model.title == "mine"  # type: ignore[attr-defined]
    assert b.room_model.owner_id == a.client_id
    assert [c.source for c in seen if c.prop == "title"] == [ChangeSource.ROLLBACK]
    assert a.room_model.title == "mine"  # type: ignore[attr-defined]


def test_write_to_known_owned_model_raises_at_once() -> None:
    room = LocalRoom(World, clients=2)
    a, b = room.clients
    a.room_model.request_ownership()
    room.sync()
    with pytest.raises(rtecs.OwnershipError, match="owned by client"):
        b.room_model.title = "no"  # type: ignore[attr-defined]
    with pytest.raises(rtecs.OwnershipError):  # children are covered by the parent's owner
        b.room_model.stats.hp = 3  # type: ignore[attr-defined]
    assert b.room_model.title == ""  # type: ignore[attr-defined]


def test_refused_ownership_rolls_back_with_the_writes_that_needed_it() -> None:
    room = LocalRoom(World, clients=2, types=[Avatar])
    a, b = room.clients
    avatar = Avatar(name="ann")
    a.create(avatar, flags=PREVENT_OWNERSHIP_TAKEOVER, owned=True)
    room.sync()
    theirs = b.datastore.get(avatar.model_id)  # type: ignore[arg-type]
    assert isinstance(theirs, Avatar)
    assert theirs.owner_id == a.client_id and theirs.name == "ann"

    # A gives the avatar up and takes it back, both in flight; B, not knowing, tries to take
    # it over (allowed locally: B thinks it is unowned) and writes to it and its child.
    avatar.clear_ownership()
    room.send(a)
    room.server_receives(a)
    room.deliver(b)
    assert theirs.is_unowned
    avatar.request_ownership()
    room.send(a)
    room.server_receives(a)  # A owns it again on the server; B has not heard yet

    seen: list[tuple[str, object, ChangeSource]] = []
    theirs.changes.subscribe(lambda c: seen.append((c.prop, c.new, c.source)))
    theirs.stats.changes.subscribe(lambda c: seen.append((c.prop, c.new, c.source)))
    theirs.request_ownership()
    theirs.name = "bob"
    theirs.stats.hp = 1
    assert theirs.is_owned_locally and theirs.name == "bob"
    room.send(b)
    room.server_receives(b)
    room.deliver(a, b)
    assert theirs.owner_id == a.client_id
    assert (theirs.name, theirs.stats.hp) == ("ann", 10)
    assert (avatar.name, avatar.stats.hp, avatar.owner_id) == ("ann", 10, a.client_id)
    rollbacks = {(p, v) for p, v, s in seen if s is ChangeSource.ROLLBACK}
    assert rollbacks == {("owner_id", a.client_id), ("name", "ann"), ("hp", 10)}


def test_owner_leaving_unowns_or_destroys() -> None:
    room = LocalRoom(World, clients=2, types=[Avatar])
    a, b = room.clients
    kept, doomed = Avatar(name="kept"), Avatar(name="doomed")
    a.create(kept, owned=True)
    a.create(doomed, flags=rtecs.protocol.DESTROY_WHEN_OWNER_LEAVES, owned=True)
    room.sync()
    assert b.datastore.get(doomed.model_id) is not None  # type: ignore[arg-type]
    a.close()
    room.sync()
    assert b.datastore.get(doomed.model_id) is None  # type: ignore[arg-type]
    survivor = b.datastore.get(kept.model_id)  # type: ignore[arg-type]
    assert survivor is not None and survivor.is_unowned
    assert b.clients == {b.client_id}
