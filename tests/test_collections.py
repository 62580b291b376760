"""The four collections between clients on the memory transport: add / remove / replace from
two clients, change streams with the right remote flags, races resolved without flicker,
transactions, array order, late joiners, resyncs, entities holding collections."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, cast

import pytest

import rtecs
from harness import LocalRoom
from rtecs.realtime import Realtime


class Item(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    n: int = rtecs.prop(2)


class Other(rtecs.RealtimeModel):
    v: int = rtecs.prop(1)


class Board(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    bag: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    log: rtecs.RealtimeArray[Item] = rtecs.prop(3)
    slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(4)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(5)


class Bag(rtecs.RealtimeModel):  # an entity component that holds a collection
    items: rtecs.RealtimeSet[Item] = rtecs.prop(1)


def room_of(clients: int = 2) -> LocalRoom:
    return LocalRoom(Board, clients=clients, types=[Bag])


def board(rt: Realtime) -> Board:
    return cast(Board, rt.room_model)


Seen = tuple[str, Any, str, str | None, bool]


def watch(collection: Any) -> list[Seen]:
    """Every record the collection's streams emit, as (stream, key, name, previous, remote)."""
    seen: list[Seen] = []

    def on(stream: str) -> Any:
        return lambda c: seen.append((stream, c.key, c.element.name,
                                      None if c.previous is None else c.previous.name,
                                      c.remote))

    collection.added.subscribe(on("added"))
    collection.removed.subscribe(on("removed"))
    if hasattr(collection, "replaced"):
        collection.replaced.subscribe(on("replaced"))
    return seen


def names(collection: Any) -> Any:
    if isinstance(collection, rtecs.RealtimeSet):
        return sorted(e.name for e in collection)
    if isinstance(collection, rtecs.RealtimeArray):
        return [e.name for e in collection]
    return {k: e.name for k, e in collection.items()}


def outcome(future: Future[bool]) -> bool | None:
    return future.result() if future.done() else None


@pytest.fixture
def no_warnings(caplog: pytest.LogCaptureFixture) -> Any:
    """Fails the test if anything logged a warning or worse (races are no news)."""
    caplog.set_level(logging.DEBUG)
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


# ----------------------------------------------------------------------------- declaration

def test_a_collection_type_is_a_cached_model_subclass_named_by_its_element() -> None:
    t = rtecs.RealtimeSet[Item]
    assert t is rtecs.RealtimeSet[Item] and issubclass(t, rtecs.RealtimeSet)
    assert t.type_name == "rtecs.Set<Item>" and t.element_type is Item
    assert rtecs.StringKeyDictionary[Item].type_name == "rtecs.StrDict<Item>"
    assert Board._props_by_name["log"].tag == "model:rtecs.Array<Item>"
    assert isinstance(Board().names, rtecs.StringKeyDictionary)
    with pytest.raises(TypeError, match="RealtimeSet\\[YourModel\\]"):
        rtecs.RealtimeSet()
    with pytest.raises(TypeError, match="RealtimeModel subclass"):
        rtecs.RealtimeSet[int]  # type: ignore[type-var]


def test_registering_a_model_registers_its_collections_element_types() -> None:
    room = room_of(1)
    schema = room.clients[0].datastore.schema()
    assert schema["rtecs.Dict<Item>"] == {} and schema["Item"][1] == ("name", "str", True)
    assert "Item" in room.host.rooms["test"].room.schema


def test_operations_need_a_room_and_the_element_type() -> None:
    with pytest.raises(rtecs.NotConnectedError):
        Board().bag.add(Item())
    room = room_of(1)
    b = board(room.clients[0])
    with pytest.raises(TypeError, match="holds Item models, not Other"):
        b.bag.add(Other())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        b.slots["one"] = Item()  # type: ignore[index]
    with pytest.raises(TypeError, match="str"):
        b.names.set(1, Item())  # type: ignore[arg-type]
    assert len(b.bag) == len(b.slots) == len(b.names) == 0


def test_nobody_subscribed_means_no_subjects() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).bag.add(Item())
    board(a).names.set("k", Item())
    room.sync()
    for rt in (a, b):
        assert board(rt).bag._streams is None and board(rt).names._streams is None


# ----------------------------------------------------------------------------- sets

def test_set_add_and_remove_from_two_clients(no_warnings: None) -> None:
    room = room_of(2)
    a, b = room.clients
    seen_a, seen_b = watch(board(a).bag), watch(board(b).bag)
    sword = Item(name="sword")
    board(a).bag.add(sword)
    assert sword in board(a).bag and seen_a == [("added", None, "sword", None, False)]
    room.sync()
    theirs = next(iter(board(b).bag))
    assert names(board(b).bag) == ["sword"] and seen_b == [("added", None, "sword", None, True)]
    board(b).bag.add(Item(name="shield"))
    sword.n = 3
    done = board(b).bag.remove(theirs)
    assert names(board(b).bag) == ["shield"]
    room.sync()
    assert outcome(done) is True
    for rt in (a, b):
        assert names(board(rt).bag) == ["shield"]
    assert seen_a[1:] == [("added", None, "shield", None, True),
                          ("removed", None, "sword", None, True)]
    assert seen_b[1:] == [("added", None, "shield", None, False),
                          ("removed", None, "sword", None, False)]
    with pytest.raises(rtecs.ModelDestroyedError):
        sword.n = 4
    assert outcome(board(a).bag.remove(sword)) is False  # idempotent: gone already


def test_concurrent_removal_of_one_item_one_wins_the_other_is_told(no_warnings: None) -> None:
    room = room_of(3)
    a, b, c = room.clients
    board(a).bag.add(Item(name="gem"))
    room.sync()
    seen_c = watch(board(c).bag)
    gem_a, gem_b = next(iter(board(a).bag)), next(iter(board(b).bag))
    first, second = board(a).bag.remove(gem_a), board(b).bag.remove(gem_b)
    assert board(a).bag.remove(gem_a) is first  # asking again: the same answer
    assert len(board(a).bag) == len(board(b).bag) == 0
    room.send(a, b)
    room.server_receives(b, a)  # b's removal reaches the server first
    room.sync()
    assert (outcome(first), outcome(second)) == (False, True)
    for rt in (a, b, c):
        assert names(board(rt).bag) == []
    assert seen_c == [("removed", None, "gem", None, True)]
    assert all(rt.last_error is None for rt in (a, b, c))


def test_a_removal_the_server_refuses_rolls_back() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).bag.add(Item(name="gem"))
    room.sync()
    seen_b = watch(board(b).bag)
    board(a).bag.request_ownership()          # a takes the set...
    done = board(b).bag.remove(next(iter(board(b).bag)))  # ...while b removes from it
    room.send(a, b)
    room.server_receives(a, b)
    room.sync()
    assert outcome(done) is False
    for rt in (a, b):
        assert names(board(rt).bag) == ["gem"]
    assert seen_b == [("removed", None, "gem", None, False), ("added", None, "gem", None, True)]
    with pytest.raises(rtecs.OwnershipError):  # now b knows
        board(b).bag.add(Item())


def test_an_add_the_server_refuses_rolls_back() -> None:
    room = room_of(2)
    a, b = room.clients
    seen_b = watch(board(b).bag)
    board(a).bag.request_ownership()
    board(b).bag.add(Item(name="late"))
    room.send(a, b)
    room.server_receives(a, b)
    room.sync()
    for rt in (a, b):
        assert names(board(rt).bag) == []
    assert seen_b == [("added", None, "late", None, False), ("removed", None, "late", None, True)]


# ----------------------------------------------------------------------------- arrays

def test_array_order_is_the_servers_on_every_client_and_for_late_joiners() -> None:
    room = room_of(2)
    a, b = room.clients
    seen_a = watch(board(a).log)
    board(a).log.append(Item(name="a1"))
    board(a).log.append(Item(name="a2"))
    board(b).log.append(Item(name="b1"))
    assert names(board(a).log) == ["a1", "a2"]
    room.send(a, b)
    room.server_receives(b, a)  # b's append is ordered first
    room.deliver(a)
    assert names(board(a).log) == ["b1", "a1", "a2"]  # confirmed first, then pending, in place
    room.sync()
    late = room.add_client()
    room.sync()
    for rt in (a, b, late):
        assert names(board(rt).log) == ["b1", "a1", "a2"]
        assert board(rt).log.index(board(rt).log[1]) == 1
    assert seen_a == [("added", 0, "a1", None, False), ("added", 1, "a2", None, False),
                      ("added", 0, "b1", None, True)]


def test_pending_appends_sort_after_confirmed_items_until_answered() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).log.append(Item(name="mine"))
    room.send(a)
    board(b).log.append(Item(name="theirs"))
    room.send(b)
    room.server_receives(b)
    room.deliver(a)  # theirs arrives; mine is still unanswered
    assert names(board(a).log) == ["theirs", "mine"]
    room.server_receives(a)
    room.sync()
    assert names(board(a).log) == names(board(b).log) == ["theirs", "mine"]


# ----------------------------------------------------------------------------- int keys

def test_dictionary_add_replace_remove_from_two_clients(no_warnings: None) -> None:
    room = room_of(2)
    a, b = room.clients
    seen_a, seen_b = watch(board(a).slots), watch(board(b).slots)
    board(a).slots[1] = Item(name="x")
    assert board(a).slots[1].name == "x"
    room.sync()
    board(b).slots[1] = Item(name="y")
    assert board(b).slots[1].name == "y"
    room.sync()
    assert names(board(a).slots) == {1: "y"}
    del board(a).slots[1]
    assert 1 not in board(a).slots
    room.sync()
    for rt in (a, b):
        assert names(board(rt).slots) == {}
    assert seen_a == [("added", 1, "x", None, False), ("replaced", 1, "y", "x", True),
                      ("removed", 1, "y", None, False)]
    assert seen_b == [("added", 1, "x", None, True), ("replaced", 1, "y", "x", False),
                      ("removed", 1, "y", None, True)]
    with pytest.raises(KeyError):
        del board(a).slots[1]
    assert outcome(board(a).slots.remove(1)) is False


def test_racing_sets_of_one_key_resolve_without_flicker() -> None:
    room = room_of(2)
    a, b = room.clients
    seen_a, seen_b = watch(board(a).slots), watch(board(b).slots)
    board(a).slots[7] = Item(name="a")
    board(b).slots[7] = Item(name="b")
    room.send(a, b)
    room.server_receives(a)  # a first: b's set replaces it (last writer wins)
    room.deliver(b)          # a's set reaches b while b's is in flight: hidden
    assert names(board(b).slots) == {7: "b"}
    room.server_receives(b)
    room.sync()
    for rt in (a, b):
        assert names(board(rt).slots) == {7: "b"}
    assert seen_b == [("added", 7, "b", None, False)]  # never showed a's
    assert seen_a == [("added", 7, "a", None, False), ("replaced", 7, "b", "a", True)]


def test_a_remove_that_loses_to_a_replace_shows_the_winner(no_warnings: None) -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).slots[1] = Item(name="x")
    room.sync()
    seen_a = watch(board(a).slots)
    done = board(a).slots.remove(1)
    board(b).slots[1] = Item(name="y")
    room.send(a, b)
    room.server_receives(b, a)
    room.sync()
    assert outcome(done) is False
    for rt in (a, b):
        assert names(board(rt).slots) == {1: "y"}
    assert seen_a == [("removed", 1, "x", None, False), ("added", 1, "y", None, True)]


def test_a_refused_set_rolls_back_to_the_servers_element() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).slots[2] = Item(name="w")
    room.sync()
    seen_a = watch(board(a).slots)
    board(b).slots.request_ownership()
    board(a).slots[2] = Item(name="z")
    room.send(b, a)
    room.server_receives(b, a)
    room.sync()
    for rt in (a, b):
        assert names(board(rt).slots) == {2: "w"}
    assert seen_a == [("replaced", 2, "z", "w", False), ("replaced", 2, "w", "z", True)]


def test_set_then_remove_in_one_frame_leaves_the_key_empty_everywhere() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).slots[3] = Item(name="old")
    room.sync()
    board(a).slots[3] = Item(name="new")
    done = board(a).slots.remove(3)
    assert names(board(a).slots) == {}
    room.sync()
    assert outcome(done) is True
    for rt in (a, b):
        assert names(board(rt).slots) == {}


# ----------------------------------------------------------------------------- string keys

def test_string_key_conflict_exactly_one_wins_and_the_loser_never_shows_its_value() -> None:
    room = room_of(2)
    a, b = room.clients
    seen_a, seen_b = watch(board(a).names), watch(board(b).names)
    told: list[bool] = []
    fa = board(a).names.set("k", Item(name="a"))
    fb = board(b).names.set("k", Item(name="b"), on_done=told.append)
    assert names(board(a).names) == {} and names(board(b).names) == {}  # not confirmed yet
    room.send(a, b)
    room.server_receives(a, b)
    room.sync()
    assert (outcome(fa), outcome(fb), told) == (True, False, [False])
    for rt in (a, b):
        assert names(board(rt).names) == {"k": "a"}
    assert seen_a == [("added", "k", "a", None, False)]
    assert seen_b == [("added", "k", "a", None, True)]
    assert [m for m in b.datastore.models.values() if getattr(m, "name", None) == "b"] == []


def test_string_key_writes_after_seeing_the_change_succeed() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).names.set("k", Item(name="a"))
    room.sync()
    seen_a = watch(board(a).names)
    replace = board(b).names.set("k", Item(name="b"))
    room.sync()
    remove = board(a).names.remove("k")
    assert names(board(a).names) == {"k": "b"}  # shows only once confirmed
    room.sync()
    assert (outcome(replace), outcome(remove)) == (True, True)
    assert seen_a == [("replaced", "k", "b", "a", True), ("removed", "k", "b", None, False)]
    assert outcome(board(a).names.remove("k")) is False  # nothing there


def test_string_key_remove_after_another_clients_change_is_refused() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).names.set("k", Item(name="x"))
    room.sync()
    remove = board(a).names.remove("k")
    board(b).names.set("k", Item(name="y"))
    room.send(a, b)
    room.server_receives(b, a)
    room.sync()
    assert outcome(remove) is False
    for rt in (a, b):
        assert names(board(rt).names) == {"k": "y"}


def test_string_key_operations_of_one_client_chain() -> None:
    room = room_of(2)
    a, b = room.clients
    first = board(a).names.set("k", Item(name="1"))
    second = board(a).names.set("k", Item(name="2"))  # expects "1"
    gone = board(a).names.remove("k")                  # expects "2"
    again = board(a).names.set("k", Item(name="3"))    # expects nothing
    room.sync()
    assert [outcome(f) for f in (first, second, gone, again)] == [True, True, True, True]
    for rt in (a, b):
        assert names(board(rt).names) == {"k": "3"}


# ----------------------------------------------------------------------------- joins, resyncs

def test_late_joiner_gets_every_collection() -> None:
    room = room_of(1)
    (a,) = room.clients
    b = board(a)
    b.bag.add(Item(name="s"))
    for i in range(5):
        b.log.append(Item(name=f"l{i}"))
    b.slots[-4] = Item(name="d")
    b.names.set("ü", Item(name="u"))
    room.sync()
    late = room.add_client()
    seen = watch(board(late).log)
    room.sync()
    for coll in ("bag", "log", "slots", "names"):
        assert names(getattr(board(late), coll)) == names(getattr(b, coll))
    assert [(s[0], s[1], s[4]) for s in seen] == [("added", i, True) for i in range(5)]


def test_a_resync_rebases_pending_operations_instead_of_dropping_them() -> None:
    room = room_of(2)
    a, b = room.clients
    board(a).bag.add(Item(name="gem"))
    room.sync()
    seen_a = watch(board(a).bag)
    removal = board(a).bag.remove(next(iter(board(a).bag)))
    transaction = board(a).names.set("k", Item(name="kept"))
    a.datastore.delta.next_seq += 1  # the server sees a gap, drops the update and resyncs us
    room.sync()
    # The welcome names the last update applied: the dropped one is renumbered and sent
    # again in the new epoch (DESIGN §5), so both operations happen, exactly once.
    assert (outcome(removal), outcome(transaction)) == (True, True)
    for rt in (a, b):
        assert names(board(rt).bag) == [] and names(board(rt).names) == {"k": "kept"}
    assert seen_a == [("removed", None, "gem", None, False)]
    board(a).names.set("k", Item(name="ok"))  # and the session carries on
    room.sync()
    assert names(board(b).names) == {"k": "ok"}


# ----------------------------------------------------------------------------- entities

def test_an_entitys_collection_goes_with_the_entity(no_warnings: None) -> None:
    room = room_of(2)
    a, b = room.clients
    bag = Bag()
    e = a.spawn(bag, owned=False)
    bag.items.add(Item(name="in"))
    room.sync()
    theirs = next(iter(b.datastore.kids(b.datastore.models[a.entity_model(e).model_id])))
    assert isinstance(theirs, Bag) and names(theirs.items) == ["in"]
    theirs.items.add(Item(name="racing"))  # b adds while a destroys the entity
    a.destroy(e)
    room.send(a, b)
    room.server_receives(a, b)
    room.sync()
    for rt in (a, b):
        assert [m for m in rt.datastore.models.values() if isinstance(m, Item)] == []


class Crate(rtecs.RealtimeModel):  # every kind of pending operation, inside an entity
    cargo: rtecs.RealtimeSet[Item] = rtecs.prop(1)
    slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(2)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(3)


@pytest.mark.parametrize("destroyer", ["same client", "other client"])
def test_operations_of_a_collection_destroyed_with_its_entity_resolve(destroyer: str) -> None:
    room = LocalRoom(Board, clients=2, types=[Crate])
    a, b = room.clients
    crate = Crate()
    entity = a.spawn(crate, owned=False)
    crate.cargo.add(Item(name="c"))
    crate.slots[1] = Item(name="s")
    crate.names.set("k", Item(name="n"))
    room.sync()
    pending = [crate.cargo.remove(next(iter(crate.cargo))), crate.slots.remove(1),
               crate.names.set("k", Item(name="m"))]
    room.send(a)                      # the operations are in flight...
    if destroyer == "same client":
        a.destroy(entity)             # ...when the entity holding them goes
        room.send(a)
    else:
        record = a.entity_model(entity)
        assert record is not None
        theirs = b.entity_of(b.datastore.kids(b.datastore.models[record.model_id])[0])
        assert theirs is not None
        b.destroy(theirs)
        room.send(b)
        room.server_receives(b)       # ordered before a's operations
    room.sync()
    assert [f.done() for f in pending] == [True, True, True], "a future never resolved"
    assert [f.result() for f in pending] == [False, False, False]
    assert a.entity_model(entity) is None
