"""Convergence under any interleaving (DESIGN §4): a hypothesis state machine drives 2-5
clients' writes, sends, server receipts and deliveries in random orders, with a plugin that
rejects and transforms some values. Invariants: no client ever shows another client's value
over its own pending write, and once everyone is quiet every client equals the room core."""

from __future__ import annotations

import contextlib
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import rtecs
from harness import LocalRoom, assert_same_models
from rtecs.model import Change, ChangeSource
from rtecs.realtime import Realtime
from rtecs_server.plugins import Change as ServerChange
from rtecs_server.plugins import Reject
from rtecs_server.room import Room


class Inner(rtecs.RealtimeModel):
    level: int = rtecs.prop(1)
    tag: str = rtecs.prop(2, default="")


class Board(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    count: int = rtecs.prop(2)
    x: float = rtecs.prop(3, reliable=False)
    inner: Inner = rtecs.prop(4)


def referee(room: Room, sender: int, change: ServerChange) -> Any:
    """Rejects some values and transforms others, decided by the value itself."""
    value = change.value
    if isinstance(value, int) and not isinstance(value, bool):
        if value % 7 == 3:
            raise Reject("sevens")
        if value > 50:
            return 50
    if isinstance(value, str) and value.startswith("x"):
        raise Reject("no x")
    if isinstance(value, str) and value.startswith("t"):
        return value.upper()
    return value


FIELDS = {
    "title": (lambda b: b, "title", st.sampled_from(["", "a", "b", "xa", "tb", "c"])),
    "count": (lambda b: b, "count", st.integers(0, 60)),
    "x": (lambda b: b, "x", st.sampled_from([0.0, 1.5, 2.5, -3.0])),
    "level": (lambda b: b.inner, "level", st.integers(0, 60)),
    "tag": (lambda b: b.inner, "tag", st.sampled_from(["", "q", "xq", "tq"])),
}


class Convergence(RuleBasedStateMachine):
    @initialize(n=st.integers(2, 5), reorder=st.booleans(), seed=st.integers(0, 100))
    def start(self, n: int, reorder: bool, seed: int) -> None:
        self.room = LocalRoom(Board, clients=n, plugins=[referee], reorder=reorder, seed=seed)
        self.violations: list[str] = []
        for rt in self.room.clients:
            rt.changes.subscribe(lambda c, rt=rt: self.check_not_stale(rt, c))

    def check_not_stale(self, rt: Realtime, change: Change) -> None:
        if change.source is not ChangeSource.REMOTE:
            return
        prop = type(change.model)._props_by_name[change.prop]
        key = (change.model, prop)
        if prop.reliable and (key in rt.datastore.cache or
                              rt.datastore.delta.is_dirty(key)):
            self.violations.append(f"client {rt.client_id} showed remote {change} "
                                   "over its own pending write")

    def client(self, i: int) -> Realtime:
        return self.room.clients[i % len(self.room.clients)]

    @rule(i=st.integers(0, 4), field=st.sampled_from(sorted(FIELDS)), data=st.data())
    def write(self, i: int, field: str, data: st.DataObject) -> None:
        target, name, values = FIELDS[field]
        model = target(self.client(i).room_model)
        value = data.draw(values)
        # A model known to be owned by another client refuses the write locally.
        with contextlib.suppress(rtecs.OwnershipError):
            setattr(model, name, value)

    @rule(i=st.integers(0, 4), take=st.booleans())
    def ownership(self, i: int, take: bool) -> None:
        inner = self.client(i).room_model.inner  # type: ignore[attr-defined]
        with contextlib.suppress(rtecs.OwnershipError):
            if take:
                inner.request_ownership()
            else:
                inner.clear_ownership()

    @rule(i=st.integers(0, 4))
    def send(self, i: int) -> None:
        self.room.send(self.client(i))

    @rule(order=st.permutations(range(5)))
    def server_receives(self, order: list[int]) -> None:
        n = len(self.room.clients)
        self.room.server_receives(*[self.room.clients[k] for k in order if k < n])

    @rule(i=st.integers(0, 4))
    def deliver(self, i: int) -> None:
        self.room.deliver(self.client(i))

    @invariant()
    def never_stale(self) -> None:
        assert not getattr(self, "violations", [])

    @precondition(lambda self: hasattr(self, "room"))
    @rule()
    def settle_and_compare(self) -> None:
        self.room.sync()
        assert_converged(self.room)

    def teardown(self) -> None:
        if hasattr(self, "room"):
            self.room.sync()
            assert_converged(self.room)
            assert not self.violations


def assert_converged(room: LocalRoom) -> None:
    records = room.host.rooms[room.room].room.snapshot()
    for rt in room.clients:
        assert_same_models(rt, records)


Convergence.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestConvergence = Convergence.TestCase
