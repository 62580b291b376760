"""The seed document's story, word for word (../shared/seed/datastore.md, "Instant updates
and caching"), over the memory transport with the interleaving forced step by step."""

from __future__ import annotations

from typing import Any

import rtecs
from harness import LocalRoom
from rtecs.model import Change, ChangeSource
from rtecs_server.plugins import Change as ServerChange
from rtecs_server.plugins import Reject
from rtecs_server.room import Room


class Team(rtecs.RealtimeModel):
    team_name: str = rtecs.prop(1, default="")


def watch(model: rtecs.RealtimeModel, name: str) -> list[Any]:
    seen: list[Any] = []
    model.observe(name).subscribe(seen.append)
    return seen


def records(model: rtecs.RealtimeModel) -> list[Change]:
    seen: list[Change] = []
    model.changes.subscribe(seen.append)
    return seen


def test_last_to_reach_the_server_wins_without_flicker() -> None:
    room = LocalRoom(Team, clients=2)
    a, b = room.clients
    a_seen, b_seen = watch(a.room_model, "team_name"), watch(b.room_model, "team_name")

    # 1. Both clients send their values; while waiting they show different values.
    a.room_model.team_name = "Blue Team"  # type: ignore[attr-defined]
    b.room_model.team_name = "Red Team"  # type: ignore[attr-defined]
    room.send(a, b)
    assert a.room_model.team_name == "Blue Team"  # type: ignore[attr-defined]
    assert b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]

    # 2. The server receives A's packet first, then B's.
    room.server_receives(a, b)

    # 3. and 4. Both receive the stream: A's update, then B's.
    room.deliver(a, b)
    assert a.room_model.team_name == "Red Team"  # type: ignore[attr-defined]
    assert b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]
    assert "Blue Team" not in b_seen, "B must never show A's older value"
    assert b_seen == ["", "Red Team"]
    assert a_seen == ["", "Blue Team", "Red Team"]


def test_b_sees_a_before_its_own_answer_and_keeps_red() -> None:
    """Step 4 in isolation: A's update reaches B in an earlier batch than B's own answer."""
    room = LocalRoom(Team, clients=2)
    a, b = room.clients
    b_seen = watch(b.room_model, "team_name")
    a.room_model.team_name = "Blue Team"  # type: ignore[attr-defined]
    b.room_model.team_name = "Red Team"  # type: ignore[attr-defined]
    room.send(a, b)
    room.server_receives(a)          # batch 1: A's update only
    room.deliver(b)                  # B learns of Blue Team while Red Team is in flight
    assert b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]
    room.server_receives(b)          # batch 2: B's update
    room.deliver(a, b)
    assert b_seen == ["", "Red Team"]
    assert a.room_model.team_name == b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]


def test_rejected_update_rewinds_to_blue_team() -> None:
    """The seed's rewind: B's update is rejected after A's was suppressed → B shows Blue."""

    def refuse_red(room: Room, sender: int, change: ServerChange) -> Any:
        if change.value == "Red Team":
            raise Reject("red is taken")
        return change.value

    room = LocalRoom(Team, clients=2, plugins=[refuse_red])
    a, b = room.clients
    b_seen = watch(b.room_model, "team_name")
    b_records = records(b.room_model)
    a.room_model.team_name = "Blue Team"  # type: ignore[attr-defined]
    b.room_model.team_name = "Red Team"  # type: ignore[attr-defined]
    room.send(a, b)
    room.server_receives(a)
    room.deliver(b)
    assert b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]
    room.server_receives(b)
    room.deliver(a, b)
    assert b.room_model.team_name == "Blue Team"  # type: ignore[attr-defined]
    assert a.room_model.team_name == "Blue Team"  # type: ignore[attr-defined]
    assert b_seen == ["", "Red Team", "Blue Team"]
    rollbacks = [c for c in b_records if c.source is ChangeSource.ROLLBACK]
    assert len(rollbacks) == 1
    assert (rollbacks[0].old, rollbacks[0].new) == ("Red Team", "Blue Team")


class Score(rtecs.RealtimeModel):
    score: int = rtecs.prop(1)


def clamp(room: Room, sender: int, change: ServerChange) -> Any:
    if change.prop_name == "score":
        return max(0, min(100, change.value))  # type: ignore[type-var]
    return change.value


def test_server_transformation_reaches_writer_as_transformed() -> None:
    room = LocalRoom(Score, clients=3, plugins=[clamp])
    a, b, c = room.clients
    a_records, b_records = records(a.room_model), records(b.room_model)
    a.room_model.score = 250  # type: ignore[attr-defined]
    room.sync()
    assert [rt.room_model.score for rt in room.clients] == [100, 100, 100]  # type: ignore[attr-defined]
    assert [(r.new, r.source) for r in a_records] == [
        (250, ChangeSource.LOCAL), (100, ChangeSource.TRANSFORMED)]
    assert [(r.new, r.source) for r in b_records] == [(100, ChangeSource.REMOTE)]
    assert c.room_model.score == 100  # type: ignore[attr-defined]
