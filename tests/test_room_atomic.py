"""An update is applied whole or not at all (DESIGN §5 "internal error"): an exception in the
room's own code while applying one undoes every change it made, and its entry still goes out,
with nothing accepted and every change rejected. Deep model trees are walked without
recursion (DESIGN §8: recursive input is handled without recursion)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from test_room_core import batch, upd

from rtecs.protocol import (
    CREATE,
    DESTROY,
    OWNER,
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    Limits,
    UpdateEntry,
    dynamic_model_id,
)
from rtecs_server import JoinRefused, Room, UpdateStatus
from rtecs_server.tree import Model

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Game": {1: ("title", "str", True), 2: ("score", "int", True),
             3: ("bag", "model:rtecs.Dict<Item>", True)},
    "rtecs.Dict<Item>": {},
    "Item": {1: ("name", "str", True), 2: ("hand", "model:Hand", True)},
    "Hand": {1: ("cards", "int", True)},
    "Link": {1: ("n", "int", True), 2: ("tag", "model:Tag", True)},
    "Tag": {1: ("t", "int", True)},
    "Marker": {1: ("v", "int", True)},
}
BAG = (0, 3)
#: Limits that let models nest far deeper than the default 64 levels: the tree walks must
#: not recurse however deep a room allows them to go.
DEEP = Limits(max_depth=10_000)


def hello() -> Hello:
    return Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, None)


class Fault:
    """Makes ``Model.held_by_other`` (asked before every write) raise for Marker models once
    armed: an internal error after the changes before it were applied."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        original = Model.held_by_other

        def held_by_other(m: Model, sender: int) -> bool:
            if self.armed and m.type.name == "Marker":
                raise RuntimeError("injected fault")
            return original(m, sender)

        monkeypatch.setattr(Model, "held_by_other", held_by_other)


class FaultyChildren(list[Any]):
    """A type's declared-children list that raises on its ``after``-th walk once armed."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self.after: int | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.after is not None:
            self.after -= 1
            if self.after < 0:
                raise RuntimeError("injected fault in a destroy")
        return super().__iter__()


def state(room: Room) -> tuple[Any, ...]:
    """Everything of the room an update may change."""
    return (room.snapshot(), room.size, room.store.created, room.store.persistent_changes,
            len(room.store))


def chain(client: int, first: int, n: int, parent: Any = None) -> list[list[Any]]:
    """Runs creating ``n`` Links, each under the one before (the first under ``parent``)."""
    runs: list[list[Any]] = []
    for i in range(n):
        mid = dynamic_model_id(client, first + i)
        spec = ("Link", 0) if parent is None else ("Link", 0, parent)
        runs.append([mid, CREATE, spec, 1, i])
        parent = mid
    return runs


def assert_all_rejected(entry: UpdateEntry | None, sender: int, seq: int,
                        every: list[tuple[Any, int]]) -> None:
    """``entry`` answers update ``seq`` of ``sender`` with nothing accepted, all rejected."""
    assert entry is not None
    assert (entry.sender, entry.seq) == (sender, seq)
    assert list(entry.changes) == []
    assert [tuple(r) for r in entry.rejected] == every


@pytest.fixture
def room() -> Room:
    """Two members; client 1 owns an Item in the bag at key 1 and a Marker, and has a chain
    of three Links; client 2 wrote the title."""
    room = Room("lobby", limits=DEEP)
    a = room.join(hello(), 0.0).client_id
    b = room.join(hello(), 0.0).client_id
    item, marker = dynamic_model_id(a, 1), dynamic_model_id(a, 2)
    runs = [[item, CREATE, ("Item", 0, BAG, 1), 1, "sword", OWNER, a],
            [(item, 2), 1, 3],
            [marker, CREATE, ("Marker", 0), 1, 1],
            *chain(a, 3, 3)]
    for seq, run in enumerate(runs, 1):
        out = room.apply_update(a, upd(seq, run))
        assert out.entry is not None and not out.entry.rejected, run
    out = room.apply_update(b, upd(1, [0, 1, "lobby"]))
    assert out.entry is not None and not out.entry.rejected
    room.flush(0.0)
    return room


def test_an_internal_error_undoes_the_whole_update(room: Room, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    a = 1
    fault = Fault(monkeypatch)
    before = state(room)
    item, marker, link = (dynamic_model_id(a, c) for c in (1, 2, 3))
    new_item = dynamic_model_id(a, 10)
    runs = [[0, 1, "mine", 2, 7],                                # writes
            [new_item, CREATE, ("Item", 0, BAG, 1), 1, "axe"],  # replaces the item at key 1
            [(new_item, 2), 1, 9],
            [link, OWNER, a, 1, 40],                            # claim and write
            *chain(a, 11, 20),                                  # a deep subtree made...
            [dynamic_model_id(a, 11), DESTROY, None],           # ...and destroyed
            [dynamic_model_id(a, 31), CREATE, ("Marker", 0)],
            [link, DESTROY, None],                               # destroys the whole chain
            [0, 1, "still mine"],
            [marker, 1, 2]]                                     # the internal error
    fault.armed = True
    seq = 7
    with caplog.at_level(logging.ERROR, logger="rtecs_server"):
        out = room.apply_update(a, upd(seq, *runs))
    assert out.status is UpdateStatus.APPLIED
    every = [(run[0], run[i]) for run in runs for i in range(1, len(run), 2)]
    assert_all_rejected(out.entry, a, seq, every)
    assert state(room) == before
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    (sent,) = batch(room.flush(1.0)).entries
    assert isinstance(sent, UpdateEntry)
    assert_all_rejected(sent, a, seq, every)

    # The room carries on where it was: the next update is the next seq, the owner maps
    # are as before (the leaver's item becomes unowned, nothing else changes owner).
    fault.armed = False
    out = room.apply_update(a, upd(seq + 1, [0, 2, 8]))
    assert out.entry is not None and not out.entry.rejected
    room.leave(a, 2.0)
    assert batch(room.flush(2.0)).entries[-1] == UpdateEntry(0, 0, ((item, OWNER, -1),), ())
    assert room.record(link) is not None and room.record(item) is not None


def test_the_undone_update_can_be_sent_again(room: Room, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    a = 1
    fault = Fault(monkeypatch)
    new_item = dynamic_model_id(a, 10)
    runs = [[new_item, CREATE, ("Item", 0, BAG, 1), 1, "axe"],
            [dynamic_model_id(a, 2), 1, 5]]
    fault.armed = True
    out = room.apply_update(a, upd(7, *runs))
    assert out.entry is not None and not out.entry.changes
    fault.armed = False
    out = room.apply_update(a, upd(8, *runs))  # the counter was given back with the rest
    assert out.entry is not None and not out.entry.rejected and not out.problems
    assert room.record(dynamic_model_id(a, 1)) is None  # replaced
    rec = room.record(new_item)
    assert rec is not None and rec.key == 1 and rec.parent == BAG


def test_an_error_in_the_middle_of_a_destroy_is_undone(room: Room,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    a = 1
    out = room.apply_update(a, upd(7, *chain(a, 20, 30)))
    assert out.entry is not None and not out.entry.rejected
    before = state(room)
    link = room.store.schema.types["Link"]
    faulty = FaultyChildren(list(link.children))
    link.children = faulty
    faulty.after = 10  # ten Links of the chain are gone when the walk fails
    with caplog.at_level(logging.ERROR, logger="rtecs_server"):
        out = room.apply_update(a, upd(8, [0, 2, 1], [dynamic_model_id(a, 20), DESTROY, None]))
    faulty.after = None
    assert_all_rejected(out.entry, a, 8, [(0, 2), (dynamic_model_id(a, 20), DESTROY)])
    assert state(room) == before
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_a_deep_chain_of_dynamic_models_is_destroyed_without_recursion(room: Room) -> None:
    a = 1
    before = state(room)
    runs = chain(a, 20, 1500, parent=dynamic_model_id(a, 3))
    out = room.apply_update(a, upd(7, *runs))
    assert out.entry is not None and not out.entry.rejected and not out.problems
    assert len(room.store) == before[4] + 2 * 1500  # each Link has its Tag
    out = room.apply_update(a, upd(8, [dynamic_model_id(a, 20), DESTROY, None]))
    assert out.entry is not None and not out.entry.rejected
    snap, size, _created, _persistent, count = before
    assert room.snapshot() == snap and room.size == size and len(room.store) == count
    # ...and with the chain's root, under which it hung
    out = room.apply_update(a, upd(9, *chain(a, 2000, 1500, parent=dynamic_model_id(a, 5)),
                                   [dynamic_model_id(a, 3), DESTROY, None]))
    assert out.entry is not None and not out.entry.rejected
    assert room.record(dynamic_model_id(a, 2000)) is None
    assert len(room.store) == count - 6


def test_a_deep_chain_of_declared_children_joins_without_recursion() -> None:
    depth = 1000
    schema: dict[str, dict[int, tuple[str, str, bool]]] = {
        f"T{i}": {1: ("n", "int", True), 2: ("next", f"model:T{i + 1}", True)}
        for i in range(depth)}
    schema[f"T{depth}"] = {1: ("n", "int", True)}
    room = Room("deep", limits=DEEP)
    welcome = room.join(Hello(PROTOCOL_VERSION, "deep", "T0", schema, None), 0.0)
    assert len(welcome.snapshot) == depth + 1
    assert room.store.schema.types["T0"].subtree_models == depth + 1
    deepest = (0, *([2] * depth))
    out = room.apply_update(welcome.client_id, upd(1, [deepest, 1, 5]))
    assert out.entry is not None and not out.entry.rejected
    cyclic = {**schema, f"T{depth}": {1: ("back", "model:T0", True)}}
    with pytest.raises(JoinRefused, match="cycle"):
        Room("loop", limits=DEEP).join(Hello(PROTOCOL_VERSION, "loop", "T0", cyclic, None), 0.0)


def test_models_nest_at_most_64_levels_and_a_deeper_chain_stops_there() -> None:
    """Issue 11 case 5: one update nesting 1,500 dynamic models, then a destroy of its root,
    used to hit RecursionError after 983 models were deleted that nobody was told about."""
    room = Room("lobby")
    a = room.join(hello(), 0.0).client_id
    room.flush(0.0)
    # Link (with its declared Tag) under Link: a top-level model is level 1, so Link n is
    # level n and its Tag n + 1: 63 Links fit, the 64th Link's Tag would be level 65.
    out = room.apply_update(a, upd(1, *chain(a, 1, 1500)))
    assert out.entry is not None
    made = [r for r in room.snapshot() if r.type_name == "Link"]
    assert len(made) == 63
    assert out.problems[0].code is ErrorCode.OVER_LIMIT
    assert "would nest 65 levels deep, over the limit of 64" in out.problems[0].message
    accepted = {c[0] for c in out.entry.changes}
    assert all(r.model_id in accepted for r in made)
    out = room.apply_update(a, upd(2, [dynamic_model_id(a, 1), DESTROY, None]))
    assert out.entry is not None and not out.entry.rejected
    assert len(room.store) == 2  # the room model and its bag: nothing else
