"""The wire side of collections: keyed CREATE and 7-field snapshot records in the codec, and
the room core's rules for elements (element type, key kind, replace, expected)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rtecs.errors import ProtocolError
from rtecs.protocol import (
    CREATE,
    DESTROY,
    OWNER,
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    collection_type_name,
    decode_client_message,
    decode_server_message,
    dynamic_model_id,
    encode,
    split_collection_type,
)
from rtecs_server import Room, UpdateOutcome

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Game": {1: ("bag", "model:rtecs.Set<Item>", True), 2: ("dict", "model:rtecs.Dict<Item>", True),
             3: ("names", "model:rtecs.StrDict<Item>", True), 4: ("plain", "model:Item", True)},
    "rtecs.Set<Item>": {}, "rtecs.Dict<Item>": {}, "rtecs.StrDict<Item>": {},
    "Item": {1: ("name", "str", True)}, "Other": {},
}
BAG, DICT, NAMES, PLAIN = (0, 1), (0, 2), (0, 3), (0, 4)


def raw(*payload: Any) -> bytes:
    data: bytes = msgpack.packb(list(payload), use_bin_type=True)
    return data


def test_collection_type_names_round_trip() -> None:
    assert collection_type_name("StrDict", "Item") == "rtecs.StrDict<Item>"
    assert split_collection_type("rtecs.Set<rtecs.Set<Item>>") == ("Set", "rtecs.Set<Item>")
    for name in ("Item", "rtecs.Entity", "rtecs.Bag<Item>", "rtecs.Set<>", "rtecs.Set<Item"):
        assert split_collection_type(name) is None
    with pytest.raises(ValueError):
        collection_type_name("List", "Item")


@pytest.mark.parametrize("value", [
    ("Item", 0, (0, 1), 3), ("Item", 0, (0, 1), -(2**63)), ("Item", 0, 7, "ключ"),
    ("Item", 0, (0, 1), "k", None), ("Item", 0, (0, 1), "k", 12345),
])
def test_keyed_creates_decode(value: tuple[Any, ...]) -> None:
    msg = decode_client_message(encode(Update(1, [[10, CREATE, value]])))
    assert isinstance(msg, Update) and msg.changes[0][2] == value


@pytest.mark.parametrize("value", [
    ["Item", 0, [0, 1], True], ["Item", 0, [0, 1], 1.5], ["Item", 0, [0, 1], None],
    ["Item", 0, [0, 1], b"k"], ["Item", 0, [0, 1], "k", "x"], ["Item", 0, [0, 1], "k", 0],
    ["Item", 0, [0, 1], "k", True], ["Item", 0, [0, 1], "k", None, 1], ["Item", 0, -1, 3],
])
def test_malformed_keyed_creates_are_refused(value: list[Any]) -> None:
    with pytest.raises(ProtocolError, match="a create must carry"):
        decode_client_message(raw(2, 1, [[10, CREATE, value]], 1))


def test_snapshot_records_carry_an_optional_key() -> None:
    welcome = Welcome(1, 0, 0.0, [SnapshotRecord(0, "G", -1, 0, {}),
                                  SnapshotRecord(9, "Item", -1, 0, {}, (0, 2), 4),
                                  SnapshotRecord(10, "Item", -1, 0, {}, (0, 3), "k")], (1,))
    assert decode_server_message(encode(welcome)) == welcome
    for bad, match in ((7, "Item", -1, 0, {}, (0, 2), 1.5), "key must be nil, an int or"), \
                      ((7, "Item", -1, 0, {}, "p", 1), "invalid model id"), \
                      ((7, "Item", -1, 0, {}, (0, 2), 1, 2), "array of 7"):
        with pytest.raises(ProtocolError, match=match):
            decode_server_message(raw(10, 1, 0, 0.0, [bad], [], 1, 0, {}, b"", b"", 0))


# ----------------------------------------------------------------------------- room core

def joined(n: int = 2) -> tuple[Room, list[int]]:
    room = Room("lobby")
    ids = [room.join(Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, None), 0.0).client_id
           for _ in range(n)]
    room.flush(0.0)
    return room, ids


class Client:
    """Numbers one client's updates and model ids."""

    def __init__(self, room: Room, cid: int) -> None:
        self.room, self.cid, self.seq, self.counter = room, cid, 0, 0

    def new_id(self) -> int:
        self.counter += 1
        return dynamic_model_id(self.cid, self.counter)

    def send(self, *runs: list[Any]) -> UpdateOutcome:
        self.seq += 1
        msg = decode_client_message(encode(Update(self.seq, list(runs))))
        assert isinstance(msg, Update)
        return self.room.apply_update(self.cid, msg)

    def create(self, parent: Any, *extra: Any, type_name: str = "Item",
               ) -> tuple[int, UpdateOutcome]:
        mid = self.new_id()
        return mid, self.send([mid, CREATE, (type_name, 0, parent, *extra), 1, "x"])


def entry(out: UpdateOutcome) -> UpdateEntry:
    assert out.entry is not None
    return out.entry


def kids(room: Room, parent: Any) -> dict[Any, Any]:
    """key (or None) → id of every element under ``parent``, from the snapshot."""
    return {rec[6] if len(rec) == 7 else rec[0]: rec[0] for rec in room.snapshot()
            if len(rec) >= 6 and rec[5] == parent}


def test_a_keyed_create_replaces_the_element_at_its_key_in_the_same_change() -> None:
    room, (a, b) = joined()
    ca, cb = Client(room, a), Client(room, b)
    first, _ = ca.create(DICT, 5)
    second, out = cb.create(DICT, 5)
    assert entry(out).rejected == [] and entry(out).changes[0][2] == ("Item", 0, DICT, 5)
    assert kids(room, DICT) == {5: second} and room.record(first) is None
    assert room.record(second) == (second, "Item", -1, 0, {1: "x"}, DICT, 5)
    assert cb.send([second, DESTROY, None]).problems == ()
    assert kids(room, DICT) == {}


def test_a_transactional_create_needs_the_expected_element() -> None:
    room, (a, b) = joined()
    ca, cb = Client(room, a), Client(room, b)
    mine, out = ca.create(NAMES, "k", None)
    assert entry(out).rejected == []
    theirs, out = cb.create(NAMES, "k", None)  # b thought the key was empty: refused, quietly
    assert entry(out).rejected == [(theirs, CREATE), (theirs, 1)] and out.problems == ()
    again, out = cb.create(NAMES, "k", mine)
    assert entry(out).rejected == [] and kids(room, NAMES) == {"k": again}
    late = ca.send([mine, DESTROY, None])  # a removes what it saw: gone already, quietly
    assert entry(late).rejected == [(mine, DESTROY)] and late.problems == ()


def test_replacing_an_element_owned_by_another_client_is_refused() -> None:
    room, (a, b) = joined()
    ca, cb = Client(room, a), Client(room, b)
    owned = ca.new_id()
    ca.send([owned, CREATE, ("Item", 0, DICT, 1), OWNER, a])
    theirs, out = cb.create(DICT, 1)
    assert entry(out).rejected[0] == (theirs, CREATE) and kids(room, DICT) == {1: owned}


@pytest.mark.parametrize(("parent", "extra", "type_name", "problem"), [
    (BAG, (1,), "Item", "created with no key"),
    (DICT, (), "Item", "created with an int key"),
    (DICT, ("k",), "Item", "created with an int key"),
    (DICT, (1, None), "Item", "created with an int key"),
    (NAMES, ("k",), "Item", "a string key and the expected element"),
    (NAMES, (1, None), "Item", "a string key"),
    (BAG, (), "Other", "holds Item models, not Other"),
    (PLAIN, (1,), "Item", "not a keyed collection"),
])
def test_elements_of_the_wrong_shape_are_bad_input(parent: Any, extra: tuple[Any, ...],
                                                   type_name: str, problem: str) -> None:
    room, (a, _) = joined()
    mid, out = Client(room, a).create(parent, *extra, type_name=type_name)
    assert entry(out).rejected[0] == (mid, CREATE)
    assert [p.code for p in out.problems] == [ErrorCode.BAD_UPDATE]
    assert problem in out.problems[0].message


def test_destroying_a_collections_owner_destroys_its_elements_and_keys() -> None:
    room, (a,) = joined(1)
    ca = Client(room, a)
    holder = ca.new_id()
    ca.send([holder, CREATE, ("Game", 0)])
    dict_id = (holder, 2)
    element, out = ca.create(dict_id, 3)
    assert entry(out).rejected == [] and kids(room, dict_id) == {3: element}
    ca.send([holder, DESTROY, None])
    assert room.record(element) is None and len(room.snapshot()) == 5
