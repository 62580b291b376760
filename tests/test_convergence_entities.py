"""Convergence of entities and collections under any interleaving: a hypothesis state machine
spawns (with and without ``prevent_ownership_takeover``) and destroys replicated entities, adds
to / removes from / replaces in every kind of collection (on the room model and inside
entities), writes reliable and unreliable properties (a plugin rejects and transforms some
values), takes or gives up ownership of entities and collections, across 3 clients (and a late
joiner), with sends, server receipts and deliveries in random orders, subscribers that write
(properties and collections) when they see a change and one that raises, and batches lost on
their way to a client (it must notice the ``room_seq`` gap and resync).

After every step (see tests/convergence_checks.py): the last value of every ``observe()``
stream equals the model's value; no client showed another client's value over its own
unsent or unanswered write; every write a sent frame made was in its update with the frame's
last value; every stream entry is what an independent model of the server's rules says
(ownership of a model and its ancestors, takeover prevention, collection creates and
replaces, destroys, the plugin's verdicts, update order and session epochs); every subscriber
exception was reported on ``rt.errors``. After quiescence every client equals the room core
(models, types, owners, properties, collection contents and array order, esper components),
the room core equals the rules' model, and every client is at the room's last batch. Along the
way: no client ever shows a string-key value whose transaction failed, and nothing logs a
warning (races are no news)."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future
from typing import Any, cast

import esper
import hypothesis.strategies as st
import pytest
from convergence_checks import (
    REJECT,
    Authority,
    Boom,
    Errors,
    InFlight,
    Streams,
    same,
    scalar_names,
)
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import rtecs
from harness import LocalRoom, assert_same_models
from rtecs.ecs import Entity, in_world
from rtecs.model import Change, ChangeSource
from rtecs.realtime import Realtime
from rtecs_server.plugins import Change as ServerChange
from rtecs_server.plugins import Reject
from rtecs_server.room import Room

pytestmark = pytest.mark.timeout(400)  # generous: shrinking a failure can take minutes


class Item(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    n: int = rtecs.prop(2)


class Bag(rtecs.RealtimeModel):
    label: str = rtecs.prop(1, default="")
    items: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    log: rtecs.RealtimeArray[Item] = rtecs.prop(3)


class Tag(rtecs.RealtimeModel):
    v: int = rtecs.prop(1)
    pos: float = rtecs.prop(2, reliable=False)  # unreliable, in an ownable entity


class Board(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    pool: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    order: rtecs.RealtimeArray[Item] = rtecs.prop(3)
    slots: rtecs.RealtimeDictionary[Item] = rtecs.prop(4)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(5)


COLLECTIONS = (rtecs.RealtimeSet, rtecs.RealtimeArray, rtecs.RealtimeDictionary,
               rtecs.StringKeyDictionary)
INT_KEYS, STR_KEYS = (0, 1, 2), ("a", "b")
POSITIONS = (0.0, 1.5, 2.5, -1.0)

VERDICTS: dict[tuple[str, str], dict[Any, Any]] = {
    ("Item", "n"): {7: REJECT, 8: 80},
    ("Tag", "v"): {4: REJECT, 5: 50},
    ("Tag", "pos"): {-1.0: REJECT, 2.5: 2.0},
    ("Bag", "label"): {"l3": REJECT, "l5": "L5"},
    ("Board", "title"): {"t3": REJECT, "t5": "T5"},
}


def verdict(type_name: str, prop_name: str, value: Any) -> Any:
    """The plugin's rule: REJECT or the value to accept."""
    return VERDICTS.get((type_name, prop_name), {}).get(value, value)


def referee(room: Room, sender: int, change: ServerChange) -> Any:
    result = verdict(change.type_name, change.prop_name, change.value)
    if result is REJECT:
        raise Reject("the referee says no")
    return result


# Subscribers that write when they see a change (bits of a client's mask), one that raises.
SAME_PROP, OTHER_MODELS, ON_OBSERVE, RAISES = 1, 2, 4, 8


def foreign_owner(model: rtecs.RealtimeModel, me: int) -> bool:
    """The client knows that another client owns ``model`` or one of its ancestors."""
    m: rtecs.RealtimeModel | None = model
    while m is not None:
        if m.owner_id not in (-1, me):
            return True
        m = m.parent
    return False


class _Loud(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], Boom):
            return  # a raising subscriber is logged with its traceback, by design
        self.messages.append(f"{record.name}: {record.getMessage()}")


def collections_of(rt: Realtime) -> list[Any]:
    found = [m for m in rt.datastore.models.values() if isinstance(m, COLLECTIONS)]
    return sorted(found, key=lambda m: m.model_id)


def pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)] if items else None


class EntityConvergence(RuleBasedStateMachine):
    @initialize(reorder=st.booleans(), seed=st.integers(0, 100),
                reactions=st.lists(st.integers(0, 15), min_size=4, max_size=4))
    def start(self, reorder: bool, seed: int, reactions: list[int]) -> None:
        self.loud = _Loud()
        logging.getLogger().addHandler(self.loud)
        self.room = LocalRoom(Board, clients=3, types=[Bag, Tag], plugins=[referee],
                              reorder=reorder, seed=seed, wire=True)
        self.authority = Authority(self.room, [Board, Bag, Tag, Item, Entity], verdict)
        self.inflight = InFlight(self.room)
        self.streams = Streams()
        self.errors = Errors()
        self.reactions = reactions
        self.adopted: set[tuple[int, int]] = set()
        self.transactions: list[tuple[Item, Future[bool]]] = []
        self.shown: set[Item] = set()  # every element any client's names ever showed
        self.counter = 0
        for rt in self.room.clients:
            self.watch(rt)

    def watch(self, rt: Realtime) -> None:
        names = cast(Board, rt.room_model).names
        names.added.subscribe(lambda c: self.shown.add(c.element))
        names.replaced.subscribe(lambda c: self.shown.add(c.element))
        self.errors.watch(rt)
        mask = self.reactions[self.room.clients.index(rt)]
        if mask & OTHER_MODELS:
            def other_models(c: Change) -> None:
                if c.source is not ChangeSource.REMOTE:
                    return
                with contextlib.suppress(rtecs.OwnershipError, rtecs.ModelDestroyedError):
                    if isinstance(c.model, Tag) and c.prop == "v" and c.new == 3:
                        c.model.pos = 1.5
                    elif isinstance(c.model, Board) and c.prop == "title" and c.new == "t1":
                        c.model.pool.add(self.new_item())  # a create inside a callback
            rt.changes.subscribe(other_models)
        if mask & RAISES:
            def raises(c: Change) -> None:
                if isinstance(c.model, Bag) and c.prop == "label" and c.new == "l4":
                    self.errors.boom(rt, f"label = {c.new!r} ({c.source.value})")
            rt.changes.subscribe(raises)
        self.adopt(rt)

    def adopt(self, rt: Realtime) -> None:
        """Follow every model of ``rt`` not followed yet: in-flight bookkeeping first, then
        ``observe()`` streams, then the subscribers that write."""
        mask = self.reactions[self.room.clients.index(rt)]
        for model in list(rt.datastore.models.values()):
            if (id(rt), id(model)) in self.adopted:
                continue
            self.adopted.add((id(rt), id(model)))
            self.inflight.track(rt, model)
            # elements and components are never owned by themselves here
            owner = not isinstance(model, Item | Bag | Tag)
            self.streams.watch(rt, model, scalar_names(model, owner))
            if mask & SAME_PROP and isinstance(model, Item):
                def same_prop(c: Change, item: Item = model) -> None:
                    if c.prop == "n" and c.new == 2 and c.source is ChangeSource.REMOTE:
                        with contextlib.suppress(rtecs.OwnershipError,
                                                 rtecs.ModelDestroyedError):
                            item.n = 6
                model.changes.subscribe(same_prop)
            if mask & ON_OBSERVE and isinstance(model, Tag):
                def on_v(v: int, tag: Tag = model) -> None:  # local and remote alike
                    if v == 6:
                        with contextlib.suppress(rtecs.OwnershipError,
                                                 rtecs.ModelDestroyedError):
                            tag.pos = 6.5
                model.observe("v").subscribe(on_v)

    def client(self, i: int) -> Realtime:
        """One of the clients that have their welcome (a late joiner acts once it has)."""
        ready = [rt for rt in self.room.clients if rt.connected]
        return ready[i % len(ready)]

    def new_item(self) -> Item:
        self.counter += 1
        return Item(name=f"i{self.counter}", n=self.counter % 10)

    # ----------------------------------------------------------------- actions

    @rule(i=st.integers(0, 3), owned=st.booleans(), prevent=st.booleans())
    def spawn(self, i: int, owned: bool, prevent: bool) -> None:
        self.counter += 1
        self.client(i).spawn(Bag(label=f"b{self.counter}"), Tag(v=self.counter % 10),
                             owned=owned, prevent_ownership_takeover=prevent)

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
        if record is None:
            return
        foreign = record.owner_id not in (-1, rt.client_id)
        try:
            if take:
                record.request_ownership()
            else:
                record.clear_ownership()
        except rtecs.OwnershipError:
            assert foreign and (not take or record.prevents_ownership_takeover), (
                f"client {rt.client_id} refused an ownership change it may make")
        else:
            assert not foreign or (take and not record.prevents_ownership_takeover), (
                f"client {rt.client_id} took over {record!r}, which prevents takeover")

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

    def assign(self, rt: Realtime, model: rtecs.RealtimeModel, name: str, value: Any) -> None:
        """Write as a user would; a client that knows another owner refuses at once."""
        foreign = foreign_owner(model, rt.client_id)
        if same(getattr(model, name), value):
            setattr(model, name, value)  # no change: nothing to refuse
            return
        try:
            setattr(model, name, value)
        except rtecs.OwnershipError:
            assert foreign, f"client {rt.client_id} refused a write nobody else owns"
        else:
            assert not foreign, f"client {rt.client_id} took a write to a model another owns"

    def target(self, rt: Realtime, which: int, value: int, unreliable: bool,
               ) -> tuple[rtecs.RealtimeModel, str, Any] | None:
        targets = sorted((m for m in rt.datastore.models.values()
                          if isinstance(m, Tag if unreliable else Item | Bag | Tag | Board)),
                         key=lambda m: str(m.model_id))
        target = pick(targets, which)
        if target is None:
            return None
        if unreliable:
            return target, "pos", POSITIONS[value % len(POSITIONS)]
        if isinstance(target, Item):
            return target, "n", value
        if isinstance(target, Tag):
            return target, "v", value
        if isinstance(target, Bag):
            return target, "label", f"l{value}"
        return target, "title", f"t{value}"

    @rule(i=st.integers(0, 3), which=st.integers(0, 60), value=st.integers(0, 9),
          unreliable=st.booleans())
    def write(self, i: int, which: int, value: int, unreliable: bool) -> None:
        rt = self.client(i)
        found = self.target(rt, which, value, unreliable)
        if found is not None:
            self.assign(rt, *found)

    @rule(i=st.integers(0, 3), which=st.integers(0, 60), value=st.integers(0, 9),
          unreliable=st.booleans())
    def write_and_back(self, i: int, which: int, value: int, unreliable: bool) -> None:
        """Two writes in one frame, the second back to the frame-start value."""
        rt = self.client(i)
        found = self.target(rt, which, value, unreliable)
        if found is not None:
            model, name, new = found
            before = getattr(model, name)
            self.assign(rt, model, name, new)
            self.assign(rt, model, name, before)

    @rule(i=st.integers(0, 3), which=st.integers(0, 3), take=st.booleans())
    def ownership(self, i: int, which: int, take: bool) -> None:
        board = cast(Board, self.client(i).room_model)
        coll = (board.pool, board.order, board.slots, board.names)[which]
        with contextlib.suppress(rtecs.OwnershipError):
            if take:
                coll.request_ownership()
            else:
                coll.clear_ownership()

    @rule(i=st.integers(0, 3), j=st.integers(0, 3), which=st.integers(0, 20),
          take=st.booleans(), act=st.integers(0, 4), j_first=st.booleans(),
          again=st.booleans())
    def contest(self, i: int, j: int, which: int, take: bool, act: int, j_first: bool,
                again: bool) -> None:
        """A race on purpose: client ``i`` takes (or gives up) an entity or a collection
        while client ``j``, who does not know yet, writes to it, adds to it, destroys it or
        takes it too; the server hears them in either order (the rules say which it must
        refuse: a second claim of an entity that prevents takeover, say).
        ``again``: ``j`` acts once more, unsent when the answer to its first act comes."""
        a, b = self.client(i), self.client(j)
        if which % 2:
            name = ("pool", "order", "slots", "names")[which // 2 % 4]
            mine: rtecs.RealtimeModel = getattr(a.room_model, name)
            theirs: rtecs.RealtimeModel | None = getattr(b.room_model, name)
        else:
            records = sorted((m for m in a.datastore.models.values() if isinstance(m, Entity)),
                             key=lambda m: cast(int, m.model_id))
            mine = pick(records, which // 2)
            if mine is None:
                return
            theirs = b.datastore.get(cast(int, mine.model_id))
        with contextlib.suppress(rtecs.OwnershipError):
            if take:
                mine.request_ownership()
            else:
                mine.clear_ownership()
        if theirs is not None and b is not a:
            with contextlib.suppress(rtecs.OwnershipError, rtecs.ModelDestroyedError):
                self.meddle(b, theirs, act)
        self.room.send(a, b)
        self.room.server_receives(*((b, a) if j_first else (a, b)))
        if again and theirs is not None and b is not a:
            with contextlib.suppress(rtecs.OwnershipError, rtecs.ModelDestroyedError):
                self.meddle(b, theirs, act)

    def meddle(self, rt: Realtime, target: rtecs.RealtimeModel, act: int) -> None:
        """Client ``rt`` changes something under ``target`` (an entity or a collection)."""
        if act == 4:
            target.request_ownership()
        elif isinstance(target, Entity):
            entity = rt.entity_of(target)
            kids: tuple[Any, ...] = ()
            if entity is not None:
                with in_world(rt.world):
                    kids = esper.components_for_entity(entity)
            tag = next((k for k in kids if isinstance(k, Tag)), None)
            bag = next((k for k in kids if isinstance(k, Bag)), None)
            if act == 0 and tag is not None:
                tag.v = (tag.v + 1) % 10
            elif act == 1 and tag is not None:
                tag.pos = POSITIONS[(POSITIONS.index(tag.pos) + 1) % len(POSITIONS)] if (
                    tag.pos in POSITIONS) else 0.0
            elif act == 2 and bag is not None:
                bag.items.add(self.new_item())
            elif entity is not None:
                rt.destroy(entity)
        elif isinstance(target, rtecs.RealtimeSet):
            if act == 0 and len(target):
                target.remove(next(iter(target)))
            else:
                target.add(self.new_item())
        elif isinstance(target, rtecs.RealtimeArray):
            target.append(self.new_item())
        elif isinstance(target, rtecs.RealtimeDictionary):
            if act == 0:
                target.remove(0)
            else:
                target[act % 3] = self.new_item()
        elif isinstance(target, rtecs.StringKeyDictionary):
            if act == 0:
                target.remove("a")
            else:
                item = self.new_item()
                self.transactions.append((item, target.set(STR_KEYS[act % 2], item)))

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

    @rule(i=st.integers(0, 3), which=st.integers(0, 3))
    def lose_a_batch(self, i: int, which: int) -> None:
        self.room.drop_batch(self.room.clients[i % len(self.room.clients)], which)

    @invariant()
    def after_every_step(self) -> None:
        if not hasattr(self, "room"):
            return
        for rt in self.room.clients:
            self.adopt(rt)
        self.streams.check()
        assert not self.inflight.violations, self.inflight.violations
        assert not self.authority.violations, self.authority.violations
        self.errors.check()

    @rule()
    def settle_and_compare(self) -> None:
        self.room.sync()
        self.check()

    def check(self) -> None:
        assert not self.authority.violations, self.authority.violations
        assert_converged(self.room)
        self.authority.check_quiet()
        for rt in self.room.clients:
            assert rt.room_seq == self.authority.room_seq, (
                f"client {rt.client_id} is at batch {rt.room_seq} of "
                f"{self.authority.room_seq}")
            if hasattr(rt, "updates_in_flight"):
                assert rt.updates_in_flight == 0
            if hasattr(rt, "has_unsent_changes"):
                assert not rt.has_unsent_changes
        failed = {item for item, future in self.transactions
                  if future.done() and not future.result()}
        assert not failed & self.shown, "a client showed a transaction that failed"
        assert all(f.done() for _, f in self.transactions)
        loud = self.loud.messages
        if self.room.dropped:  # a lost batch is news: the client says so as it resyncs
            loud = [m for m in loud if "asking the server for a fresh snapshot" not in m]
        assert not loud, loud

    def teardown(self) -> None:
        if hasattr(self, "room"):
            try:
                self.room.sync()
                self.check()
                self.after_every_step()
            finally:
                logging.getLogger().removeHandler(self.loud)
                self.room.close()


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
    report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow])
TestEntityConvergence = EntityConvergence.TestCase
