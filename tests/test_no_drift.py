"""Situations that once left one client showing a different room from everyone else, for
good, with no error (issue 9, item 4). Each test drives the real room host and real clients
over the deterministic memory transport (tests/harness.py), through the public API.

DESIGN §4 (unreliable rejections roll back, no "changed back" suppression for unreliable
properties), §4b (callback writes, raising subscribers, no holes in the stream, unknown
types), §5 (session epochs, duplicates dropped, pings without a session).
"""

from __future__ import annotations

from typing import Any

import pytest

import rtecs
from harness import LocalRoom, assert_same_models
from rtecs.datastore import OpaqueModel
from rtecs.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Hello,
    Ping,
    Resync,
    Update,
    Welcome,
    decode_server_message,
    encode,
)
from rtecs_server.host import RESYNC_COOLDOWN
from rtecs_server.plugins import Change as ServerChange
from rtecs_server.plugins import Reject
from rtecs_server.room import Room

pytestmark = pytest.mark.timeout(30)


class Spot(rtecs.RealtimeModel):
    label: str = rtecs.prop(1, default="")
    x: float = rtecs.prop(2, reliable=False)


class Board(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2)
    x: float = rtecs.prop(3, reliable=False)
    y: float = rtecs.prop(4, reliable=False)
    spot: Spot = rtecs.prop(5)


def no_big_x(room: Room, sender: int, change: ServerChange) -> Any:
    if change.prop_name == "x" and isinstance(change.value, float) and change.value > 100:
        raise Reject("x too large")
    return change.value


def state(room: LocalRoom) -> None:
    """Every client equals the room core."""
    records = room.host.rooms[room.room].room.snapshot()
    for rt in room.clients:
        assert_same_models(rt, records)


# ----------------------------------------------------------------------------- §4


def test_a_rejected_unreliable_write_rolls_back_to_the_server_value() -> None:
    room = LocalRoom(Board, plugins=[no_big_x])
    a, b = room.clients
    a.room_model.x = 5.0
    room.sync()
    seen: list[float] = []
    a.room_model.observe("x").subscribe(seen.append)
    a.room_model.x = 500.0           # the plugin refuses it
    room.sync()
    assert a.room_model.x == 5.0, "the refused unreliable write is still shown"
    assert b.room_model.x == 5.0
    assert seen == [5.0, 500.0, 5.0]
    state(room)


def test_an_unreliable_write_before_learning_the_owner_rolls_back() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    b.room_model.spot.request_ownership()
    room.send(b)
    room.server_receives(b)          # ordered: b owns the spot
    a.room_model.spot.x = 7.0        # a does not know yet
    room.send(a)
    room.server_receives(a)          # refused: owned by b
    room.sync()
    assert a.room_model.spot.owner_id == b.client_id
    assert a.room_model.spot.x == 0.0, "a non-owner's refused write is still shown"
    state(room)


def test_an_unreliable_write_back_to_the_frame_start_value_is_sent() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    a.room_model.x = 74.0
    room.sync()
    b.room_model.x = 2.5             # ordered after a's 74, not yet seen by a
    room.send(b)
    room.server_receives(b)
    a.room_model.x = 1.0             # a writes twice in one frame, back to 74
    a.room_model.x = 74.0
    room.send(a)
    room.server_receives(a)          # a's 74 is the last write the server orders
    room.sync()
    assert (a.room_model.x, b.room_model.x) == (74.0, 74.0)
    state(room)


# ----------------------------------------------------------------------------- §4b


def test_a_write_inside_a_callback_drops_the_stale_queued_emission() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    seen: list[float] = []
    a.room_model.observe("y").subscribe(seen.append)

    def react(title: str) -> None:
        if title == "go":
            a.room_model.y = 10.0

    a.room_model.observe("title").subscribe(react)
    b.room_model.title = "go"        # one batch: title first, then y
    b.room_model.y = 2.0
    room.send(b)
    room.server_receives(b)
    room.deliver(a)                  # a's callback writes y = 10 while y = 2 is queued
    assert a.room_model.y == 10.0
    assert seen[-1] == a.room_model.y, f"observe('y') saw {seen} while y == {a.room_model.y}"
    room.sync()
    assert seen[-1] == a.room_model.y
    state(room)


def test_a_raising_subscriber_neither_aborts_the_tick_nor_loses_frames() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    errors: list[BaseException] = []
    a.errors.subscribe(errors.append)
    later: list[str] = []

    def explode(title: str) -> None:
        if title == "boom":
            raise RuntimeError("a bug in a subscriber")

    a.room_model.observe("title").subscribe(explode)
    a.room_model.observe("title").subscribe(later.append)
    b.room_model.title = "boom"
    room.send(b)
    room.server_receives(b)
    b.room_model.score = 5           # a second batch, received in the same tick
    room.send(b)
    room.server_receives(b)
    room.net.deliver_to(room.peer(a))
    a.tick()                         # both batches in one tick: must not raise
    assert later[-1] == "boom", "the other subscriber missed the change"
    assert a.room_model.score == 5, "the frame after the raising emission was lost"
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    room.sync()
    state(room)


def test_a_lost_batch_is_noticed_and_repaired_by_a_resync() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    b.room_model.title = "lost"
    room.send(b)
    room.server_receives(b)
    room.net.downlinks[room.peer(a)].clear()    # the batch never reaches a
    b.room_model.score = 3
    room.send(b)
    room.server_receives(b)
    room.sync()
    assert a.room_model.title == "lost"
    assert a.room_seq == b.room_seq
    state(room)


def test_a_lost_last_batch_is_noticed_through_the_pong() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    b.room_model.title = "last"
    room.send(b)
    room.server_receives(b)
    room.net.downlinks[room.peer(a)].clear()    # nothing follows it
    a.ping_interval = 1.0
    for _ in range(3):
        room.clock.advance(RESYNC_COOLDOWN + 1.0)
        room.sync()
    assert a.room_model.title == "last"
    state(room)


def test_a_model_type_this_client_has_no_class_for_is_kept_not_raised() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    raw = room.net.connect("raw-newer-client")
    schema = {"Board": Board.schema(), "Spot": Spot.schema(),
              "Ghost": {1: ("mood", "str", True)}}
    raw.send(encode(Hello(PROTOCOL_VERSION, room.room, "Board", schema, None)))
    room.net.step()
    room.host.pump(room.clock())
    room.net.step()
    welcome = next(m for m in map(decode_server_message, raw.receive())
                   if isinstance(m, Welcome))
    ghost = rtecs.protocol.dynamic_model_id(welcome.client_id, 1)
    raw.send(encode(Update(1, [[ghost, -1, ("Ghost", 0), 1, "sad"]], welcome.epoch)))
    room.sync()                      # must not raise
    late = room.add_client()
    room.sync()                      # the late joiner's welcome holds the Ghost
    assert late.connected
    for rt in (a, b, late):
        assert rt.room_seq == room.host.rooms[room.room].room.room_seq
        kept = rt.datastore.get(ghost)  # kept, counted, never shown
        assert isinstance(kept, OpaqueModel)
        assert (kept.opaque_type, kept.values) == ("Ghost", {1: "sad"})


# ----------------------------------------------------------------------------- §5


def _server_frames(room: LocalRoom, peer: str) -> list[Any]:
    return [decode_server_message(f) for f in room.net.clients[peer.encode()].receive()]


def test_a_duplicate_update_is_dropped_silently() -> None:
    room = LocalRoom(Board)
    raw = room.net.connect("raw")
    raw.send(encode(Hello(PROTOCOL_VERSION, room.room, "Board", {"Board": Board.schema(),
                                                                "Spot": Spot.schema()}, None)))
    room.sync()
    welcome = next(m for m in _server_frames(room, "raw") if isinstance(m, Welcome))
    update = encode(Update(1, [[0, 1, "once"]], welcome.epoch))
    raw.send(update)
    room.sync()
    first = _server_frames(room, "raw")
    assert [type(m) for m in first] == [Batch]
    raw.send(update)                 # the same update again
    room.sync()
    assert _server_frames(room, "raw") == [], "a duplicate was answered outside the stream"
    state(room)


def test_updates_from_before_a_resync_welcome_are_not_taken_for_the_new_epoch() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    link = room.transports[a]
    link.send(encode(Resync()))      # the first resync is served at once
    room.sync()
    link.send(encode(Resync()))      # the second waits out the cooldown
    room.net.step()
    room.host.pump(room.clock())
    room.clock.advance(RESYNC_COOLDOWN)
    link.send(encode(Ping(room.clock())))
    room.net.step()
    room.host.pump(room.clock())     # at the ping the second welcome goes out
    a.room_model.title = "before"    # sent before a has seen that welcome
    room.send(a)
    room.net.step()
    room.host.pump(room.clock())
    room.sync()
    a.room_model.title = "after"
    room.sync()
    b.room_model.score = 9
    room.sync()
    assert a.updates_in_flight == 0, "a write of a stays pending forever"
    assert a.room_model.score == 9, "everyone else's writes are hidden"
    assert a.room_model.title == b.room_model.title == "after"
    state(room)


def test_a_forgotten_client_that_only_reads_finds_out_at_its_next_ping() -> None:
    room = LocalRoom(Board)
    a, _ = room.clients
    room.host.session_grace = 5.0
    room.clock.advance(10.0)
    room.host.expire(room.clock())   # the server forgot everyone (a link cut, say)
    a.ping_interval = 1.0
    room.clock.advance(1.0)
    room.sync()
    assert a.state is not rtecs.ConnectionState.CONNECTED, (
        "the server answered a ping without a session with PONG")
    assert a.last_error is not None and a.last_error.startswith("not_joined")


# ----------------------------------------------------------------------------- item 5


def test_values_that_can_never_be_sent_are_refused_at_the_write() -> None:
    room = LocalRoom(Board, clients=0)
    room.host.limits = rtecs.Limits(max_update_bytes=4096)  # announced in the welcome
    a = room.add_client()
    b = room.add_client()
    room.sync()
    assert a.limits.max_update_bytes == 4096
    a.room_model.title = "kept"
    room.sync()
    with pytest.raises(ValueError, match="64"):
        a.room_model.score = 2**70
    with pytest.raises(ValueError, match="bytes"):
        a.room_model.title = "x" * 5000          # over what one update may carry here
    with pytest.raises(AttributeError, match="titel"):
        a.room_model.titel = "typo"               # type: ignore[attr-defined]
    a.room_model._scratch = 1                     # type: ignore[attr-defined]
    assert a.room_model.title == "kept" and not a.has_unsent_changes
    a.room_model.score = 12                       # the next valid write is not rolled back
    room.sync()
    assert (a.room_model.score, b.room_model.score) == (12, 12)
    a.close()
    with pytest.raises(rtecs.NotConnectedError):
        a.room_model.score = 13
    assert a.room_model.score == 12


def test_connect_names_the_missing_transport() -> None:
    with pytest.raises(ValueError, match=r"'tcp://127\.0\.0\.1:7777'"):
        rtecs.connect("127.0.0.1:7777", room="lobby", room_model=Board())


def test_a_client_waiting_for_a_fresh_snapshot_does_not_look_settled() -> None:
    room = LocalRoom(Board)
    a, b = room.clients
    b.room_model.title = "lost on the way to a"
    room.send(b)
    room.server_receives(b)
    room.net.downlinks[room.peer(a)].clear()
    b.room_model.score = 1
    room.send(b)
    room.server_receives(b)
    room.deliver(a)                  # a sees the gap and asks for a snapshot
    assert not a.has_unsent_changes
    assert a.updates_in_flight == 1, "a client missing state looked settled"
    room.sync()
    assert a.updates_in_flight == 0 and a.room_model.title == "lost on the way to a"


def test_a_frame_of_more_changes_than_an_update_may_carry_goes_out_as_several() -> None:
    room = LocalRoom(Board, types=[Spot], clients=0)
    room.host.limits = rtecs.Limits(max_changes_per_update=10)  # announced in the welcome
    a = room.add_client()
    b = room.add_client()
    room.sync()
    assert a.limits.max_changes_per_update == 10
    for i in range(25):
        a.room_model.score = i        # one change, however often it is written
        a.room_model.title = f"t{i}"
    for i in range(12):
        a.spawn(Spot(label=f"spot {i}"), owned=True)
    outcomes: list[rtecs.UpdateOutcome] = []
    a.outcomes.subscribe(outcomes.append)
    room.sync()
    sent = [o for o in outcomes if o.status is rtecs.UpdateStatus.SENT]
    assert len(sent) >= 3 and all(o.changes <= 10 for o in sent)
    assert not [o for o in outcomes if o.status is rtecs.UpdateStatus.REJECTED]
    assert (b.room_model.score, b.room_model.title) == (24, "t24")
    records = room.host.rooms[room.room].room.snapshot()
    spawned = [r.props[1] for r in records if r.type_name == "Spot" and type(r.model_id) is int]
    assert sorted(spawned) == sorted(f"spot {i}" for i in range(12))
    state(room)


def test_a_create_deeper_than_the_announced_nesting_is_refused_at_once() -> None:
    room = LocalRoom(Board, types=[Spot], clients=0)
    room.host.limits = rtecs.Limits(max_depth=6)  # announced in the welcome
    a = room.add_client()
    room.sync()
    assert a.datastore.max_depth == 6
    parent = None  # a top-level model is level 1
    made = []
    for _ in range(6):
        spot = Spot(label=f"level {len(made) + 1}")
        a.datastore.create(spot, parent=parent)
        made.append(spot)
        parent = spot
    with pytest.raises(ValueError, match=r"would nest 7 levels deep .*over the limit of 6"):
        a.datastore.create(Spot(), parent=parent)
    room.sync()
    state(room)  # the six made it to the server and to every client; the seventh never left
    records = room.host.rooms[room.room].room.snapshot()
    assert len([r for r in records if type(r.model_id) is int and r.model_id != 0]) == 6
