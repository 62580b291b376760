"""A subscriber that raises is isolated (DESIGN §4b): the write or tick that emitted goes on,
the state is already applied, the other subscribers still hear of it, and the error is
reported to the datastore's ``report_error`` (or logged, for a model in no datastore)."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from reactivex import operators as ops
from reactivex.subject import Subject

import rtecs
from harness import LocalRoom
from rtecs.datastore import Datastore
from rtecs.model import Change, Prop, RealtimeModel, guarded


class Boom(Exception):
    pass


def explode(value: object) -> None:
    raise Boom(f"subscriber saw {value!r}")


class Owner:
    """A stand-in datastore implementing the model layer's ``_Owner`` interface."""

    def __init__(self) -> None:
        self.client_id = 1
        self.max_value_bytes = 1000
        self.dirty: dict[tuple[RealtimeModel, Prop], Any] = {}
        self.errors: list[BaseException] = []

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> None:
        self.dirty[(model, p)] = self.dirty.pop((model, p), old)

    def check_write(self, model: RealtimeModel) -> None:
        pass

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        pass

    def report_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


class Player(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    hp: int = rtecs.prop(2, default=10)


class Crate(rtecs.RealtimeModel):
    label: str = rtecs.prop(1, default="")


class Hold(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    crates: rtecs.RealtimeSet[Crate] = rtecs.prop(2)
    shelf: rtecs.RealtimeDictionary[Crate] = rtecs.prop(3)


def attached() -> tuple[Player, Owner]:
    player, owner = Player(), Owner()
    player._ds = owner
    return player, owner


# ----------------------------------------------------------------- guarded()


def test_guarded_catches_reports_and_goes_on_to_the_next_subscriber() -> None:
    subject: Subject[int] = Subject()
    errors: list[BaseException] = []
    stream = guarded(subject, errors.append)
    first: list[int] = []
    after: list[int] = []
    stream.subscribe(lambda v: (first.append(v), explode(v)))
    stream.subscribe(after.append)
    subject.on_next(1)
    subject.on_next(2)
    assert first == [1, 2] and after == [1, 2]  # the raising one stays subscribed
    assert [str(e) for e in errors] == ["subscriber saw 1", "subscriber saw 2"]


def test_guarded_disposal_and_completion_pass_through() -> None:
    subject: Subject[int] = Subject()
    stream = guarded(subject, lambda exc: None)
    seen: list[object] = []
    done: list[str] = []
    subscription = stream.subscribe(seen.append, on_completed=lambda: done.append("done"))
    other = stream.subscribe(lambda v: seen.append(("other", v)))
    subject.on_next(1)
    other.dispose()
    subject.on_next(2)
    subject.on_completed()
    assert seen == [1, ("other", 1), 2] and done == ["done"]
    subscription.dispose()
    assert not subject.observers


def test_a_failing_report_never_reaches_the_emitter(caplog: pytest.LogCaptureFixture) -> None:
    subject: Subject[int] = Subject()
    stream = guarded(subject, explode)
    stream.subscribe(explode)
    subject.on_next(1)  # does not raise
    assert any(r.exc_info and isinstance(r.exc_info[1], Boom) for r in caplog.records)


def test_operators_downstream_are_isolated_too() -> None:
    subject: Subject[int] = Subject()
    errors: list[BaseException] = []
    seen: list[int] = []
    guarded(subject, errors.append).pipe(ops.map(lambda v: 1 // v)).subscribe(seen.append)
    guarded(subject, errors.append).subscribe(seen.append)
    subject.on_next(0)
    assert seen == [0] and isinstance(errors[0], ZeroDivisionError)


# ----------------------------------------------------------------- a local write


def test_a_raising_observer_does_not_stop_the_write_nor_the_others() -> None:
    player, owner = attached()
    before: list[str] = []
    after: list[str] = []
    records: list[Change] = []
    player.observe("name").subscribe(before.append)
    player.observe("name").subscribe(explode)  # raises on the current value too
    player.observe("name").subscribe(after.append)
    player.changes.subscribe(explode)
    player.changes.subscribe(records.append)
    player.name = "ann"  # does not raise
    assert player.name == "ann" and (player, Player.name) in owner.dirty
    assert before == ["", "ann"] and after == ["", "ann"]
    assert [(c.prop, c.old, c.new) for c in records] == [("name", "", "ann")]
    assert [str(e) for e in owner.errors] == [
        "subscriber saw ''",  # observe() sends the current value on subscribe
        "subscriber saw 'ann'",
        f"subscriber saw {records[0]!r}",
    ]
    assert all(isinstance(e, Boom) and e.__traceback__ is not None for e in owner.errors)


def test_errors_go_to_the_datastore_the_model_is_in_at_error_time() -> None:
    player = Player()
    player.observe("hp").subscribe(lambda v: explode(v) if v == 11 else None)
    owner = Owner()
    player._ds = owner
    player.hp = 11
    assert player.hp == 11 and [str(e) for e in owner.errors] == ["subscriber saw 11"]


def test_a_model_in_no_datastore_logs_with_the_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    player = Player()
    seen: list[int] = []
    player.observe("hp").subscribe(explode)
    player.observe("hp").subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="rtecs.model"):
        player.hp = 3
    assert player.hp == 3 and seen == [10, 3]
    logged = [r for r in caplog.records if r.name == "rtecs.model"]
    assert len(logged) == 2  # the current value on subscribe, and the write
    assert all(r.exc_info and isinstance(r.exc_info[1], Boom) for r in logged)


def test_a_model_nobody_observes_has_no_subjects() -> None:
    player, _ = attached()
    player.name = "x"
    player.hp = 4
    assert player._subs is None


def test_a_destroyed_models_stand_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    from rtecs.model import DESTROYED

    with caplog.at_level(logging.ERROR, logger="rtecs.model"):
        DESTROYED.report_error(Boom("late"))
    assert any(r.exc_info and isinstance(r.exc_info[1], Boom) for r in caplog.records)


# ----------------------------------------------------------------- collections


def test_a_raising_collection_subscriber_does_not_stop_the_operation() -> None:
    hold = Hold()
    ds = Datastore(hold)
    ds.client_id = 1
    errors: list[BaseException] = []
    ds.error_listeners.append(errors.append)  # what report_error tells (rt.errors)
    added: list[str] = []
    replaced: list[tuple[str, str]] = []
    hold.crates.added.subscribe(explode)
    hold.crates.added.subscribe(lambda c: added.append(c.element.label))
    hold.crates.add(Crate(label="a"))  # does not raise
    assert [c.label for c in hold.crates] == ["a"] and added == ["a"]
    hold.shelf.replaced.subscribe(explode)
    hold.shelf.replaced.subscribe(
        lambda c: replaced.append((c.previous.label if c.previous else "", c.element.label)))
    hold.shelf.removed.subscribe(explode)
    hold.shelf[1] = Crate(label="x")
    hold.shelf[1] = Crate(label="y")
    del hold.shelf[1]
    assert replaced == [("x", "y")] and 1 not in hold.shelf
    assert len(errors) == 3 and all(isinstance(e, Boom) for e in errors)


# ----------------------------------------------------------------- a remote change, ticked


def test_a_raising_subscriber_never_stops_the_tick() -> None:
    room = LocalRoom(Hold, clients=2)
    a, b = room.clients
    theirs = cast(Hold, b.room_model)
    errors: list[BaseException] = []
    b.datastore.error_listeners.append(errors.append)
    seen: list[str] = []
    labels: list[str] = []
    theirs.observe("title").subscribe(lambda v: explode(v) if v else None)
    theirs.observe("title").subscribe(seen.append)
    theirs.crates.added.subscribe(explode)
    theirs.crates.added.subscribe(lambda c: labels.append(c.element.label))
    mine = cast(Hold, a.room_model)
    mine.title = "hello"
    mine.crates.add(Crate(label="c1"))
    room.sync()
    assert theirs.title == "hello" and seen == ["", "hello"]
    assert [c.label for c in theirs.crates] == ["c1"] and labels == ["c1"]
    assert len(errors) == 2 and all(isinstance(e, Boom) for e in errors)
    assert "subscriber saw 'hello'" in [str(e) for e in errors]
    mine.title = "again"  # the client goes on syncing
    room.sync()
    assert seen == ["", "hello", "again"]
