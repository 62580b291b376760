"""Convergence of entities and collections under any interleaving: a hypothesis state machine
spawns and destroys replicated entities, adds to / removes from / replaces in every kind of
collection (on the room model and inside entities), writes properties and takes or gives up
ownership of collections, across 3 clients (and a late joiner), with sends, server receipts
and deliveries in random orders. After quiescence every client equals the room core: models,
types, owners, properties, collection contents and array order, esper components. Along the
way: no client ever shows a string-key value whose transaction failed, and nothing logs a
warning (races are no news)."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future
from typing import Any, cast

import esper
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import rtecs
from harness import LocalRoom, assert_same_models
from rtecs.ecs import in_world
from rtecs.realtime import Realtime


class Item(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    n: int = rtecs.prop(2)


class Bag(rtecs.RealtimeModel):
    label: str = rtecs.prop(1, default="")
    items: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    log: rtecs.RealtimeArray[Item] = rtecs.prop(3)


class Tag(rtecs.RealtimeModel):
    v: int = rtecs.prop(1)


class Board(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    pool: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    order: rtecs.RealtimeArray[Item] = rtecs.prop(3)
    slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(4)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(5)


COLLECTIONS = (rtecs.RealtimeSet, rtecs.RealtimeArray, rtecs.RealtimeDictionary,
               rtecs.StringKeyDictionary)
INT_KEYS, STR_KEYS = (0, 1, 2), ("a", "b")


class _Loud(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def collections_of(rt: Realtime) -> list[Any]:
    found = [m for m in rt.datastore.models.values() if isinstance(m, COLLECTIONS)]
    return sorted(found, key=lambda m: m.model_id)


def pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)] if items else None


class EntityConvergence(RuleBasedStateMachine):
    @initialize(reorder=st.booleans(), seed=st.integers(0, 100))
    def start(self, reorder: bool, seed: int) -> None:
        self.loud = _Loud()
        logging.getLogger().addHandler(self.loud)
        self.room = LocalRoom(Board, clients=3, types=[Bag, Tag], reorder=reorder, seed=seed)
        self.transactions: list[tuple[Item, Future[bool]]] = []
        self.shown: set[Item] = set()  # every element any client's names ever showed
        for rt in self.room.clients:
            self.watch(rt)
        self.counter = 0

    def watch(self, rt: Realtime) -> None:
        names = cast(Board, rt.room_model).names
        names.added.subscribe(lambda c: self.shown.add(c.element))
        names.replaced.subscribe(lambda c: self.shown.add(c.element))

    def client(self, i: int) -> Realtime:
        """One of the clients that have their welcome (a late joiner acts once it has)."""
        ready = [rt for rt in self.room.clients if rt.connected]
        return ready[i % len(ready)]

    def new_item(self) -> Item:
        self.counter += 1
        return Item(name=f"i{self.counter}", n=self.counter)

    # ----------------------------------------------------------------- actions

    @rule(i=st.integers(0, 3), owned=st.booleans())
    def spawn(self, i: int, owned: bool) -> None:
        self.counter += 1
        self.client(i).spawn(Bag(label=f"b{self.counter}"), Tag(v=self.counter), owned=owned)

    @rule(i=st.integers(0, 3), which=st.integers(0, 20))
    def destroy(self, i: int, which: int) -> None:
        rt = self.client(i)
        bags = sorted((m for m in rt.datastore.models.values() if isinstance(m, Bag)),
                      key=lambda m: cast(int, m.model_id))
        bag = pick(bags, which)
        entity = rt.entity_of(bag) if bag is not None else None
        if entity is not None:
            with contextlib.suppress(rtecs.OwnershipError):
                rt.destroy(entity)

    @rule(i=st.integers(0, 3), which=st.integers(0, 20), take=st.booleans())
    def entity_ownership(self, i: int, which: int, take: bool) -> None:
        """Take over or give up an entity (races with destroys and writes elsewhere)."""
        rt = self.client(i)
        bags = sorted((m for m in rt.datastore.models.values() if isinstance(m, Bag)),
                      key=lambda m: cast(int, m.model_id))
        bag = pick(bags, which)
        entity = rt.entity_of(bag) if bag is not None else None
        record = rt.entity_model(entity) if entity is not None else None
        if record is not None:
            with contextlib.suppress(rtecs.OwnershipError):
                if take:
                    record.request_ownership()
                else:
                    record.clear_ownership()

    def collection(self, i: int, kind: type, which: int) -> Any:
        return pick([c for c in collections_of(self.client(i)) if isinstance(c, kind)], which)

    @rule(i=st.integers(0, 3), which=st.integers(0, 9), remove=st.booleans(),
          element=st.integers(0, 30))
    def set_op(self, i: int, which: int, remove: bool, element: int) -> None:
        coll = self.collection(i, rtecs.RealtimeSet, which)
        with contextlib.suppress(rtecs.OwnershipError):
            if remove and len(coll):
                coll.remove(pick(list(coll), element))
            else:
                coll.add(self.new_item())

    @rule(i=st.integers(0, 3), which=st.integers(0, 9))
    def append(self, i: int, which: int) -> None:
        with contextlib.suppress(rtecs.OwnershipError):
            self.collection(i, rtecs.RealtimeArray, which).append(self.new_item())

    @rule(i=st.integers(0, 3), remove=st.booleans(), key=st.sampled_from(INT_KEYS))
    def dict_op(self, i: int, remove: bool, key: int) -> None:
        slots = cast(Board, self.client(i).room_model).slots
        with contextlib.suppress(rtecs.OwnershipError):
            if remove:
                slots.remove(key)
            else:
                slots[key] = self.new_item()

    @rule(i=st.integers(0, 3), remove=st.booleans(), key=st.sampled_from(STR_KEYS))
    def transaction(self, i: int, remove: bool, key: str) -> None:
        names = cast(Board, self.client(i).room_model).names
        with contextlib.suppress(rtecs.OwnershipError):
            if remove:
                names.remove(key)
            else:
                item = self.new_item()
                self.transactions.append((item, names.set(key, item)))

    @rule(i=st.integers(0, 3), which=st.integers(0, 60), value=st.integers(0, 9))
    def write(self, i: int, which: int, value: int) -> None:
        rt = self.client(i)
        targets = sorted((m for m in rt.datastore.models.values()
                          if isinstance(m, Item | Bag | Tag | Board)),
                         key=lambda m: str(m.model_id))
        target = pick(targets, which)
        with contextlib.suppress(rtecs.OwnershipError):
            if isinstance(target, Item):
                target.n = value
            elif isinstance(target, Tag):
                target.v = value
            elif isinstance(target, Bag):
                target.label = f"l{value}"
            else:
                target.title = f"t{value}"

    @rule(i=st.integers(0, 3), which=st.integers(0, 3), take=st.booleans())
    def ownership(self, i: int, which: int, take: bool) -> None:
        board = cast(Board, self.client(i).room_model)
        coll = (board.pool, board.order, board.slots, board.names)[which]
        with contextlib.suppress(rtecs.OwnershipError):
            if take:
                coll.request_ownership()
            else:
                coll.clear_ownership()

    @precondition(lambda self: len(self.room.clients) < 4)
    @rule()
    def late_join(self) -> None:
        self.watch(self.room.add_client())

    # ----------------------------------------------------------------- delivery

    @rule(i=st.integers(0, 3))
    def send(self, i: int) -> None:
        self.room.send(self.room.clients[i % len(self.room.clients)])

    @rule(order=st.permutations(range(4)))
    def server_receives(self, order: list[int]) -> None:
        n = len(self.room.clients)
        self.room.server_receives(*[self.room.clients[k] for k in order if k < n])

    @rule(i=st.integers(0, 3))
    def deliver(self, i: int) -> None:
        self.room.deliver(self.room.clients[i % len(self.room.clients)])

    @rule()
    def settle_and_compare(self) -> None:
        self.room.sync()
        self.check()

    def check(self) -> None:
        assert_converged(self.room)
        failed = {item for item, future in self.transactions
                  if future.done() and not future.result()}
        assert not failed & self.shown, "a client showed a transaction that failed"
        assert all(f.done() for _, f in self.transactions)
        assert not self.loud.messages, self.loud.messages

    def teardown(self) -> None:
        if hasattr(self, "room"):
            try:
                self.room.sync()
                self.check()
            finally:
                logging.getLogger().removeHandler(self.loud)


def assert_converged(room: LocalRoom) -> None:
    records = room.host.rooms[room.room].room.snapshot()
    under: dict[Any, list[Any]] = {}
    for rec in records:
        if len(rec) >= 6:
            under.setdefault(rec[5], []).append(rec)
    for rt in room.clients:
        who = f"client {rt.client_id}"
        assert_same_models(rt, records)
        for coll in collections_of(rt):
            elements = under.get(coll.model_id, [])
            if isinstance(coll, rtecs.RealtimeArray):
                assert [e.model_id for e in coll] == [r[0] for r in elements], (
                    f"{who}: order of {coll!r}")
            elif isinstance(coll, rtecs.RealtimeSet):
                assert {e.model_id for e in coll} == {r[0] for r in elements}, f"{who}: {coll!r}"
            else:
                assert {k: e.model_id for k, e in coll.items()} == {r[6]: r[0] for r in elements}
        bags = sum(isinstance(m, Bag) for m in rt.datastore.models.values())
        with in_world(rt.world):
            in_esper = esper.get_components(Bag, Tag)
        assert len(in_esper) == bags, f"{who}: esper has {len(in_esper)} entities, not {bags}"


EntityConvergence.TestCase.settings = settings(
    max_examples=500, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEntityConvergence = EntityConvergence.TestCase
