"""The pure room core: joins, sequencing, authority, plugins, schema, lifetime, limits."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    PROTOCOL_VERSION,
    Batch,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Value,
    decode_client_message,
    decode_server_message,
    dynamic_model_id,
    encode,
)
from rtecs_server import (
    BadUpdate,
    Change,
    JoinRefused,
    Reject,
    Room,
    UpdateOutcome,
    UpdateStatus,
)

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Game": {1: ("title", "str", True), 2: ("score", "int", True),
             3: ("board", "model:Board", True), 4: ("ratio", "float", True),
             5: ("note", "str?", True)},
    "Board": {1: ("label", "str", True), 2: ("cursor", "model:Cursor", True)},
    "Cursor": {1: ("x", "float", False)},
    "Player": {1: ("name", "str", True), 2: ("x", "float", False), 3: ("hand", "model:Hand", True)},
    "Hand": {1: ("cards", "int", True)},
}

BOARD = (0, 3)
CURSOR = (0, 3, 2)


def hello(schema: dict[str, dict[int, tuple[str, str, bool]]] = SCHEMA,
          root: str = "Game") -> Hello:
    return Hello(PROTOCOL_VERSION, "lobby", root, schema, None)


def upd(seq: int, *runs: list[Any]) -> Update:
    """An update as the host sees it: encoded and decoded like a real frame."""
    msg = decode_client_message(encode(Update(seq, runs)))
    assert isinstance(msg, Update)
    return msg


def batch(frame: bytes | None) -> Batch:
    assert frame is not None
    msg = decode_server_message(frame)
    assert isinstance(msg, Batch)
    return msg


def value(room: Room, model_id: Any, pid: int) -> Value:
    rec = room.record(model_id)
    assert rec is not None
    return rec[4].get(pid)


def owner(room: Room, model_id: Any) -> int:
    rec = room.record(model_id)
    assert rec is not None
    return rec[2]


def rejected(out: UpdateOutcome) -> list[Any]:
    """The rejected list of an applied update's entry."""
    assert out.status is UpdateStatus.APPLIED and out.entry is not None
    return list(out.entry.rejected)


def room_with(n: int, **kwargs: Any) -> tuple[Room, list[int]]:
    """A room with ``n`` members and an empty stream."""
    room = Room("lobby", **kwargs)
    ids = [room.join(hello(), 0.0).client_id for _ in range(n)]
    room.flush(0.0)
    return room, ids


def spawn(room: Room, client: int, seq: int, counter: int, flags: int = 0,
          own: bool = True) -> int:
    """Client creates a Player (and owns it); returns its model id."""
    mid = dynamic_model_id(client, counter)
    run: list[Any] = [mid, CREATE, ("Player", flags)]
    if own:
        run += [OWNER, client]
    out = room.apply_update(client, upd(seq, run))
    assert out.entry is not None and not out.entry.rejected and not out.problems
    return mid


def test_join_assigns_growing_client_ids() -> None:
    room = Room("lobby")
    ids = [room.join(hello(), 0.0).client_id for _ in range(3)]
    assert ids == [1, 2, 3]
    room.leave(3, 1.0)
    room.flush(1.0)
    assert room.join(hello(), 2.0).client_id == 4
    assert room.next_client_id == 5
    assert Room("lobby", next_client_id=41).join(hello(), 0.0).client_id == 41  # restored


def test_welcome_snapshot_reflects_prior_writes() -> None:
    room, (a,) = room_with(1)
    room.apply_update(a, upd(1, [0, 1, "Blue Team"], [BOARD, 1, "b"]))
    room.flush(1.0)
    welcome = room.join(hello(), 2.0)
    assert welcome.room_seq == 2
    assert welcome.server_time == 2.0
    assert welcome.clients == [a, welcome.client_id]
    records = {rec[0]: rec for rec in welcome.snapshot}
    assert records[0] == SnapshotRecord(0, "Game", -1, 0, {1: "Blue Team"})
    assert records[BOARD] == SnapshotRecord(BOARD, "Board", -1, 0, {1: "b"})
    assert records[CURSOR] == SnapshotRecord(CURSOR, "Cursor", -1, 0, {})


def test_snapshot_lists_parents_before_children() -> None:
    room, (a,) = room_with(1)
    mid = spawn(room, a, 1, 1)
    order = [rec[0] for rec in room.snapshot()]
    assert order == [0, BOARD, CURSOR, mid, (mid, 3)]


def test_join_and_leave_entries_in_stream() -> None:
    room = Room("lobby")
    a = room.join(hello(), 0.0).client_id
    b = room.join(hello(), 0.0).client_id
    first = batch(room.flush(1.0))
    assert first.entries == [JoinEntry(a), JoinEntry(b)]
    assert room.leave(a, 2.0)
    second = batch(room.flush(2.0))
    assert second.room_seq == first.room_seq + 1
    assert second.entries == [LeaveEntry(a)]
    assert room.members == (b,)


def test_leave_of_non_member_is_a_no_op() -> None:
    room, _ = room_with(1)
    assert not room.leave(99, 1.0)
    assert room.flush(1.0) is None


def test_join_requires_pending_updates_flushed() -> None:
    room, (a,) = room_with(1)
    room.apply_update(a, upd(1, [0, 2, 5]))
    with pytest.raises(RuntimeError):
        room.join(hello(), 1.0)
    room.flush(1.0)
    assert room.join(hello(), 1.0).client_id == a + 1


def test_room_full_refused() -> None:
    room, _ = room_with(2, max_clients=2)
    with pytest.raises(JoinRefused) as info:
        room.join(hello(), 1.0)
    assert info.value.code is ErrorCode.ROOM_FULL


def test_protocol_version_mismatch_refused() -> None:
    room = Room("lobby")
    with pytest.raises(JoinRefused) as info:
        room.join(Hello(PROTOCOL_VERSION + 1, "lobby", "Game", SCHEMA), 0.0)
    assert info.value.code is ErrorCode.VERSION


def test_two_clients_applied_in_arrival_order_in_one_frame() -> None:
    room, (a, b) = room_with(2)
    assert room.apply_update(a, upd(1, [0, 1, "Blue Team"])).status is UpdateStatus.APPLIED
    assert room.apply_update(b, upd(1, [0, 1, "Red Team"])).status is UpdateStatus.APPLIED
    assert value(room, 0, 1) == "Red Team"
    frame = batch(room.flush(3.5))
    assert frame.server_time == 3.5
    assert frame.entries == [
        UpdateEntry(a, 1, ((0, 1, "Blue Team"),), ()),
        UpdateEntry(b, 1, ((0, 1, "Red Team"),), ()),
    ]


def test_flush_with_nothing_pending_returns_none() -> None:
    room, _ = room_with(1)
    seq = room.room_seq
    assert room.flush(1.0) is None
    assert room.room_seq == seq


def test_duplicate_is_not_reapplied_and_dropped_silently() -> None:
    room, (a, b) = room_with(2)
    first = room.apply_update(a, upd(1, [0, 2, 5]))
    assert first.entry is not None
    room.flush(1.0)
    room.apply_update(b, upd(1, [0, 2, 7]))
    room.flush(2.0)
    again = room.apply_update(a, upd(1, [0, 2, 5]))
    assert again.status is UpdateStatus.DUPLICATE
    assert again.entry is None  # its answer went out in batch 1: nothing outside the stream
    assert value(room, 0, 2) == 7
    assert room.flush(3.0) is None


def test_a_resync_opens_a_new_epoch_naming_the_last_update_applied() -> None:
    room, (a,) = room_with(1)
    room.apply_update(a, upd(1, [0, 2, 5]))
    room.apply_update(a, upd(2, [0, 2, 6]))
    room.flush(1.0)
    welcome = room.resync(a, 2.0)
    assert (welcome.epoch, welcome.last_applied) == (2, 2)
    stale = room.apply_update(a, Update(3, ((0, 2, 99),), 1))  # sent before the welcome
    assert stale.status is UpdateStatus.STALE
    assert value(room, 0, 2) == 6
    assert room.apply_update(a, Update(1, ((0, 2, 7),), 2)).status is UpdateStatus.APPLIED
    assert value(room, 0, 2) == 7
    with pytest.raises(BadUpdate):
        room.apply_update(a, Update(2, ((0, 2, 8),), 3))  # an epoch never opened


def test_gap_applies_nothing() -> None:
    room, (a,) = room_with(1)
    out = room.apply_update(a, upd(2, [0, 2, 5]))
    assert out.status is UpdateStatus.GAP
    assert value(room, 0, 2) is None
    assert room.flush(1.0) is None
    assert room.apply_update(a, upd(1, [0, 2, 6])).status is UpdateStatus.APPLIED


def test_resync_restarts_numbering() -> None:
    room, (a,) = room_with(1)
    room.apply_update(a, upd(1, [0, 2, 5]))
    room.flush(1.0)
    welcome = room.resync(a, 2.0)
    assert welcome.client_id == a and welcome.room_seq == room.room_seq
    fresh = room.apply_update(a, Update(1, ((0, 2, 6),), welcome.epoch))
    assert fresh.status is UpdateStatus.APPLIED


def test_update_from_non_member_raises() -> None:
    room, _ = room_with(1)
    with pytest.raises(BadUpdate) as info:
        room.apply_update(42, upd(1, [0, 2, 5]))
    assert info.value.code is ErrorCode.NOT_JOINED


def test_non_owner_write_rejected_without_value() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    out = room.apply_update(b, upd(1, [mid, 1, "mallory"]))
    assert out.problems == ()
    entry = batch(room.flush(1.0)).entries[-1]
    assert entry == UpdateEntry(b, 1, (), ((mid, 1),))
    assert value(room, mid, 1) is None


def test_owner_write_accepted() -> None:
    room, (a, _) = room_with(2)
    mid = spawn(room, a, 1, 1)
    assert rejected(room.apply_update(a, upd(2, [mid, 1, "ann"]))) == []
    assert value(room, mid, 1) == "ann"


def test_ancestor_ownership_covers_children() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    out = room.apply_update(b, upd(1, [(mid, 3), 1, 9], [(mid, 3), OWNER, b]))
    assert out.entry is not None
    assert out.entry.rejected == [((mid, 3), 1), ((mid, 3), OWNER)]
    assert value(room, (mid, 3), 1) is None
    assert rejected(room.apply_update(a, upd(2, [(mid, 3), 1, 9]))) == []


def test_room_model_ownership_covers_declared_children() -> None:
    room, (a, b) = room_with(2)
    room.apply_update(a, upd(1, [0, OWNER, a]))
    assert rejected(room.apply_update(b, upd(1, [CURSOR, 1, 1.5]))) == [(CURSOR, 1)]


def test_prevent_takeover_rejects_claim_and_the_writes_after_it() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1, flags=PREVENT_OWNERSHIP_TAKEOVER)
    out = room.apply_update(b, upd(1, [0, 2, 10], [mid, OWNER, b, 1, "bob", 2, 3.0], [0, 2, 11]))
    assert out.entry is not None
    assert out.entry.rejected == [(mid, OWNER), (mid, 1), (mid, 2)]
    assert owner(room, mid) == a
    assert value(room, mid, 1) is None
    assert value(room, 0, 2) == 11
    entry = batch(room.flush(1.0)).entries[-1]
    assert isinstance(entry, UpdateEntry)
    assert entry.changes == ((0, 2, 10, 2, 11),)  # re-merged around the rejected run


def test_takeover_allowed_without_prevent_flag() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    assert rejected(room.apply_update(b, upd(1, [mid, OWNER, b, 1, "bob"]))) == []
    assert owner(room, mid) == b
    assert value(room, mid, 1) == "bob"


def test_only_owner_can_clear_ownership() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    assert rejected(room.apply_update(b, upd(1, [mid, OWNER, -1]))) == [(mid, OWNER)]
    assert rejected(room.apply_update(a, upd(2, [mid, OWNER, -1]))) == []
    assert owner(room, mid) == -1


def test_giving_ownership_to_another_client_rejected() -> None:
    room, (a, b) = room_with(2)
    assert rejected(room.apply_update(a, upd(1, [0, OWNER, b]))) == [(0, OWNER)]
    assert owner(room, 0) == -1


def clamp(room: Room, sender: int, change: Change) -> Value:
    if change.prop_name == "score":
        assert isinstance(change.value, int)
        return max(0, min(100, change.value))
    return change.value


def test_plugin_transform_carried_in_entry() -> None:
    room, (a,) = room_with(1, plugins=[clamp])
    room.apply_update(a, upd(1, [0, 1, "t", 2, 500, 4, 0.5]))
    assert value(room, 0, 2) == 100
    entry = batch(room.flush(1.0)).entries[-1]
    assert entry == UpdateEntry(a, 1, ((0, 1, "t", 2, 100, 4, 0.5),), ())


def test_plugin_sees_previous_value_and_sender() -> None:
    seen: list[tuple[int, Change]] = []

    def spy(room: Room, sender: int, change: Change) -> Value:
        seen.append((sender, change))
        return change.value

    room, (a,) = room_with(1, plugins=[spy])
    room.apply_update(a, upd(1, [0, 2, 1], [0, 2, 2]))
    assert seen[1] == (a, Change(0, "Game", 2, "score", 2, 1))


def test_plugin_transformed_value_is_coerced() -> None:
    def halve(room: Room, sender: int, change: Change) -> Value:
        return 1 if change.prop_name == "ratio" else change.value

    room, (a,) = room_with(1, plugins=[halve])
    room.apply_update(a, upd(1, [0, 4, 0.5]))
    assert value(room, 0, 4) == 1.0 and isinstance(value(room, 0, 4), float)


def test_plugin_reject() -> None:
    def no_swearing(room: Room, sender: int, change: Change) -> Value:
        if change.value == "darn":
            raise Reject("language")
        return change.value

    room, (a,) = room_with(1, plugins=[no_swearing])
    room.apply_update(a, upd(1, [0, 1, "ok"]))
    out = room.apply_update(a, upd(2, [0, 1, "darn"]))
    assert rejected(out) == [(0, 1)]
    assert out.problems == ()
    assert value(room, 0, 1) == "ok"


def test_plugin_crash_rejected_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(room: Room, sender: int, change: Change) -> Value:
        if change.prop_name == "title":
            raise ZeroDivisionError("oops")
        return change.value

    room, (a,) = room_with(1, plugins=[broken])
    with caplog.at_level(logging.ERROR, logger="rtecs_server"):
        out = room.apply_update(a, upd(1, [0, 1, "x", 2, 3]))
    assert rejected(out) == [(0, 1)]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    assert rejected(room.apply_update(a, upd(2, [0, 2, 4]))) == []
    assert value(room, 0, 2) == 4


def test_schema_conflict_refused_naming_type_and_property() -> None:
    room, _ = room_with(1)
    other = {**SCHEMA, "Player": {**SCHEMA["Player"], 2: ("x", "int", False)}}
    with pytest.raises(JoinRefused) as info:
        room.join(hello(other), 1.0)
    assert info.value.code is ErrorCode.SCHEMA
    for part in ("Player", "2", "'x'", "float", "int"):
        assert part in info.value.message
    assert room.members == (1,)


def test_reliability_or_name_mismatch_is_a_conflict() -> None:
    room, _ = room_with(1)
    for spec in (("x", "float", True), ("xpos", "float", False)):
        other = {**SCHEMA, "Player": {**SCHEMA["Player"], 2: spec}}
        with pytest.raises(JoinRefused):
            room.join(hello(other), 1.0)


def test_schema_union_of_compatible_schemas() -> None:
    room, (a,) = room_with(1)
    newer = {**SCHEMA, "Game": {**SCHEMA["Game"], 6: ("stats", "model:Stats", True)},
             "Stats": {1: ("kills", "int", True)}}
    older = {"Game": {1: ("title", "str", True)}}
    b = room.join(hello(newer), 1.0).client_id
    room.join(hello(older), 1.0)
    assert room.schema["Game"][6] == ("stats", "model:Stats", True)
    assert room.schema["Stats"] == {1: ("kills", "int", True)}
    assert room.record((0, 6)) is not None  # the existing room model got the new child
    room.flush(1.0)
    assert rejected(room.apply_update(b, upd(1, [(0, 6), 1, 3]))) == []
    assert rejected(room.apply_update(a, upd(1, [0, 2, 1]))) == []


def test_root_type_mismatch_refused() -> None:
    room, _ = room_with(1)
    with pytest.raises(JoinRefused) as info:
        room.join(hello(root="Player"), 1.0)
    assert info.value.code is ErrorCode.SCHEMA
    assert "Game" in info.value.message and "Player" in info.value.message


def test_cyclic_or_undeclared_child_types_refused() -> None:
    for schema in ({"Game": {1: ("me", "model:Game", True)}},
                   {"Game": {1: ("a", "model:Missing", True)}},
                   {"Game": {1: ("a", "list", True)}}):
        with pytest.raises(JoinRefused) as info:
            Room("lobby").join(hello(schema), 0.0)
        assert info.value.code is ErrorCode.SCHEMA


def test_create_own_id_allowed_with_declared_children() -> None:
    room, (a,) = room_with(1)
    mid = dynamic_model_id(a, 1)
    out = room.apply_update(a, upd(1, [mid, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES),
                                       OWNER, a, 1, "ann"]))
    assert rejected(out) == [] and out.problems == ()
    assert room.record(mid) == SnapshotRecord(mid, "Player", a, DESTROY_WHEN_OWNER_LEAVES,
                                            {1: "ann"})
    assert room.record((mid, 3)) == SnapshotRecord((mid, 3), "Hand", -1, 0, {})


def test_create_with_another_clients_id_refused() -> None:
    room, (a, b) = room_with(2)
    mid = dynamic_model_id(b, 1)
    out = room.apply_update(a, upd(1, [mid, CREATE, ("Player", 0)]))
    assert rejected(out) == [(mid, CREATE)]
    assert out.problems[0].code is ErrorCode.BAD_UPDATE
    assert room.record(mid) is None


def test_reused_counter_refused() -> None:
    room, (a,) = room_with(1)
    mid = spawn(room, a, 1, 2)
    room.apply_update(a, upd(2, [mid, DESTROY, None]))
    for seq, counter in ((3, 2), (4, 1)):
        again = dynamic_model_id(a, counter)
        out = room.apply_update(a, upd(seq, [again, CREATE, ("Player", 0)]))
        assert rejected(out) == [(again, CREATE)]
        assert out.problems and "never reused" in out.problems[0].message
        assert room.record(again) is None


def test_write_to_destroyed_model_quietly_rejected() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1, own=False)
    room.apply_update(a, upd(2, [mid, DESTROY, None]))
    assert room.record(mid) is None and room.record((mid, 3)) is None
    out = room.apply_update(b, upd(1, [mid, 1, "late"], [(mid, 3), 1, 2]))
    assert rejected(out) == [(mid, 1), ((mid, 3), 1)]
    assert out.problems == ()


def test_never_allocated_id_reported() -> None:
    room, (a,) = room_with(1)
    ghost = dynamic_model_id(a, 7)
    out = room.apply_update(a, upd(1, [ghost, 1, "x"], [0, 2, 1]))
    assert rejected(out) == [(ghost, 1)]
    assert out.problems[0].code is ErrorCode.BAD_UPDATE
    assert str(ghost) in out.problems[0].message
    assert value(room, 0, 2) == 1


def test_destroy_of_another_clients_model_rejected() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    assert rejected(room.apply_update(b, upd(1, [mid, DESTROY, None]))) == [(mid, DESTROY)]
    assert room.record(mid) is not None


def test_declared_child_cannot_be_destroyed() -> None:
    room, (a,) = room_with(1)
    out = room.apply_update(a, upd(1, [BOARD, DESTROY, None]))
    assert rejected(out) == [(BOARD, DESTROY)]
    assert out.problems[0].code is ErrorCode.BAD_UPDATE


def test_destroy_when_owner_leaves() -> None:
    room, (a, _) = room_with(2)
    mid = spawn(room, a, 1, 1, flags=DESTROY_WHEN_OWNER_LEAVES)
    room.flush(1.0)
    room.leave(a, 2.0)
    assert room.record(mid) is None and room.record((mid, 3)) is None
    assert batch(room.flush(2.0)).entries == [
        LeaveEntry(a), UpdateEntry(0, 0, ((mid, DESTROY, None),), ())]


def test_owned_models_become_unowned_when_owner_leaves() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    room.apply_update(a, upd(2, [(mid, 3), OWNER, a], [0, OWNER, a]))
    room.flush(1.0)
    room.leave(a, 2.0)
    assert owner(room, mid) == -1 and owner(room, (mid, 3)) == -1 and owner(room, 0) == -1
    entries = batch(room.flush(2.0)).entries
    assert entries[1] == UpdateEntry(0, 0, ((mid, OWNER, -1), ((mid, 3), OWNER, -1),
                                            (0, OWNER, -1)), ())
    assert rejected(room.apply_update(b, upd(1, [mid, 1, "mine now"]))) == []


def test_destroy_when_last_client_leaves() -> None:
    room, (a, b) = room_with(2)
    temp = spawn(room, a, 1, 1, flags=DESTROY_WHEN_LAST_CLIENT_LEAVES, own=False)
    keep = spawn(room, a, 2, 2, own=False)
    room.flush(1.0)
    room.leave(a, 2.0)
    assert room.record(temp) is not None
    room.leave(b, 3.0)
    assert room.record(temp) is None and room.record(keep) is not None
    entries = batch(room.flush(3.0)).entries
    assert entries == [LeaveEntry(a), LeaveEntry(b),
                       UpdateEntry(0, 0, ((temp, DESTROY, None),), ())]


def test_wrong_value_type_rejected_and_reported() -> None:
    room, (a,) = room_with(1)
    out = room.apply_update(a, upd(1, [0, 2, "ten", 1, "ok"]))
    assert rejected(out) == [(0, 2)]
    assert out.problems[0].code is ErrorCode.BAD_UPDATE
    assert "score" in out.problems[0].message
    assert value(room, 0, 1) == "ok"


def test_int_coerced_to_float() -> None:
    room, (a,) = room_with(1)
    room.apply_update(a, upd(1, [0, 4, 2]))
    stored = value(room, 0, 4)
    assert stored == 2.0 and isinstance(stored, float)
    entry = batch(room.flush(1.0)).entries[-1]
    assert isinstance(entry, UpdateEntry)
    assert isinstance(entry.changes[0][2], float)


def test_nil_only_for_optional_properties() -> None:
    room, (a,) = room_with(1)
    assert rejected(room.apply_update(a, upd(1, [0, 5, None, 1, None]))) == [(0, 1)]


def test_unknown_property_and_child_model_property_reported() -> None:
    room, (a,) = room_with(1)
    out = room.apply_update(a, upd(1, [0, 99, 1, 3, 1]))
    assert rejected(out) == [(0, 99), (0, 3)]
    assert [p.code for p in out.problems] == [ErrorCode.BAD_UPDATE] * 2


def test_accepted_changes_are_remerged_into_runs() -> None:
    room, (a, b) = room_with(2)
    mid = spawn(room, a, 1, 1)
    out = room.apply_update(b, upd(1, [0, 1, "x"], [mid, 1, "no"], [0, 2, 3], [BOARD, 1, "y"]))
    assert out.entry is not None
    assert out.entry.changes == [[0, 1, "x", 2, 3], [BOARD, 1, "y"]]


def test_fully_accepted_update_reuses_its_changes() -> None:
    room, (a,) = room_with(1)
    update = upd(1, [0, 1, "x", 2, 3])
    out = room.apply_update(a, update)
    assert out.entry is not None and out.entry.changes is update.changes


def test_datastore_limit_refuses_growth() -> None:
    room, (a,) = room_with(1, limits=Limits(max_datastore_bytes=400))
    base = room.size
    out = room.apply_update(a, upd(1, [0, 1, "x" * 500]))
    assert rejected(out) == [(0, 1)]
    assert out.problems[0].code is ErrorCode.OVER_LIMIT
    assert room.size == base
    assert rejected(room.apply_update(a, upd(2, [0, 1, "short"]))) == []
    assert room.size > base
