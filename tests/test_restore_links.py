"""A checkpoint is input too: a stored model whose place in the tree contradicts itself — a
key where there can be none, a key of the wrong type, a parent on a declared model — is
refused at load with a clear reason, never silently loaded."""

from __future__ import annotations

from typing import Any

import pytest

from rtecs.protocol import SnapshotRecord, dynamic_model_id
from rtecs_server import Room, SavedRoom
from rtecs_server.errors import CorruptRoomError

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Room": {1: ("title", "str", True), 2: ("items", "model:rtecs.Dict<Item>", True),
             3: ("board", "model:Board", True), 4: ("bag", "model:rtecs.Set<Item>", True)},
    "Board": {1: ("n", "int", True)}, "rtecs.Dict<Item>": {}, "rtecs.Set<Item>": {},
    "Item": {1: ("n", "int", True)}}
E = dynamic_model_id(2, 1)
BASE = [SnapshotRecord(0, "Room", -1, 0, {1: "t"}), SnapshotRecord((0, 2), "rtecs.Dict<Item>",
        -1, 0, {}), SnapshotRecord((0, 3), "Board", -1, 0, {}),
        SnapshotRecord((0, 4), "rtecs.Set<Item>", -1, 0, {})]


def saved(*records: SnapshotRecord) -> SavedRoom:
    return SavedRoom("r", "Room", SCHEMA, 3, {2: 1}, [*BASE, *records])


def test_well_placed_elements_load() -> None:
    room = Room.restore(saved(SnapshotRecord(E, "Item", -1, 0, {1: 1}, (0, 2), 4),
                              SnapshotRecord(dynamic_model_id(2, 2), "Item", -1, 0, {}, (0, 4))))
    assert room.record(E) == SnapshotRecord(E, "Item", -1, 0, {1: 1}, (0, 2), 4)


@pytest.mark.parametrize(("record", "reason"), [
    (SnapshotRecord(E, "Item", -1, 0, {}, (0, 2), "x"),
     "has key 'x' in a Dict, whose keys are ints"),
    (SnapshotRecord(E, "Item", -1, 0, {}, (0, 2), None), "has key None in a Dict"),
    (SnapshotRecord(E, "Item", -1, 0, {}, (0, 4), 3), "has a key (3) in an unkeyed Set"),
    (SnapshotRecord(E, "Board", -1, 0, {}, (0, 2), 3), "is a Board in a collection of Item"),
    (SnapshotRecord(E, "Board", -1, 0, {}, None, "k"), "but is no element of a keyed collection"),
    (SnapshotRecord(E, "Item", -1, 0, {}, (0, 3), 7), "but is no element of a keyed collection"),
])
def test_a_dynamic_model_in_a_place_it_cannot_be_is_refused(record: SnapshotRecord,
                                                             reason: str) -> None:
    with pytest.raises(CorruptRoomError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Room.restore(saved(record))


@pytest.mark.parametrize("records", [
    [SnapshotRecord(0, "Room", -1, 0, {}, E)],
    [BASE[0], SnapshotRecord((0, 3), "Board", -1, 0, {}, 0)],
    [BASE[0], SnapshotRecord((0, 3), "Board", -1, 0, {}, None, 5)],
])
def test_the_room_model_and_declared_children_have_no_parent_or_key(
        records: list[Any]) -> None:
    room = SavedRoom("r", "Room", SCHEMA, 3, {}, records)
    with pytest.raises(CorruptRoomError, match="declared model or the room model but names"):
        Room.restore(room)
