"""The datastore's parts (issue 10 item 1): the applier returns the visible changes as data,
the notifier emits them, a model reaches its datastore only through ``mark_dirty`` (refused
writes leave the value unchanged), and the datastore imports no reactivex."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import rtecs
from rtecs.datastore import Datastore
from rtecs.datastore._apply import Applier
from rtecs.datastore._delta import DeltaTracker
from rtecs.datastore._tree import ModelTree
from rtecs.errors import ModelDestroyedError, NotConnectedError
from rtecs.model import Change, ChangeSource, Notifier, Prop, RealtimeModel
from rtecs.protocol import UpdateEntry, Welcome, dynamic_model_id

ROOT = Path(__file__).resolve().parent.parent
PIECE = dynamic_model_id(2, 1)  # another client's first model


class Room(rtecs.RealtimeModel, type_name="parts.Room"):
    title: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2, default=0)


class Piece(rtecs.RealtimeModel, type_name="parts.Piece"):
    n: int = rtecs.prop(1, default=0)


def welcomed(room: Room) -> Datastore:
    ds = Datastore(room, [Piece])
    ds.load_snapshot(Welcome(1, 0, 0.0, [], [1]))
    ds.flush_emissions()
    return ds


class _Owner:
    """Just enough of a datastore for the parts: the id and the narrow interface."""

    client_id = 1
    max_value_bytes = 1000

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> None:
        raise AssertionError("nothing is written locally here")

    def check_write(self, model: RealtimeModel) -> None:
        pass

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        pass

    def report_error(self, exc: BaseException) -> None:
        raise AssertionError(exc)


def test_the_applier_returns_the_visible_changes_as_data() -> None:
    owner, room = _Owner(), Room()
    tree, delta = ModelTree(owner), DeltaTracker()
    notifier = Notifier(owner, delta.written_locally)
    applier = Applier(owner, tree, delta, notifier, {"parts.Piece": Piece}.get)
    tree.attach(room, 0, None)
    notifier.changes.subscribe(lambda change: None)  # somebody listens: changes are kept
    applier.apply_entry(UpdateEntry(2, 1, [[0, 1, "hi", 2, 5], [PIECE, -1, ("parts.Piece", 0)],
                                           [PIECE, 1, 9]], ()))
    visible = applier.take_changes()
    piece = tree.get(PIECE)
    assert isinstance(piece, Piece) and piece.n == 9 and room.title == "hi"
    assert visible.props == [(room, Room.title, "", "hi", ChangeSource.REMOTE),
                             (room, Room.score, 0, 5, ChangeSource.REMOTE),
                             (piece, Piece.n, 0, 9, ChangeSource.REMOTE)]
    assert visible.lifecycle == [(piece, True)] and visible.kids == []
    assert not applier.take_changes()  # taken: nothing is emitted twice


def test_the_notifier_emits_collections_lifecycle_then_properties() -> None:
    room = Room()
    ds = welcomed(room)
    heard: list[Any] = []
    ds.lifecycle_listeners.append(lambda model, alive: heard.append(("lifecycle", alive)))
    ds.changes.subscribe(lambda change: heard.append(("change", change.prop, change.new)))
    ds.apply_entry(UpdateEntry(2, 1, [[0, 2, 7], [PIECE, -1, ("parts.Piece", 0)]], ()))
    assert heard == []  # applied, not emitted yet
    assert room.score == 7
    ds.flush_emissions()
    assert heard == [("lifecycle", True), ("change", "score", 7)]


def test_a_closed_datastore_refuses_a_write_with_the_value_unchanged() -> None:
    room = Room(title="a")
    ds = welcomed(room)
    ds.close()
    with pytest.raises(NotConnectedError):
        room.title = "b"
    assert room.title == "a" and not ds.has_unsent_changes


def test_a_destroyed_model_refuses_a_write_with_the_value_unchanged() -> None:
    ds = welcomed(Room())
    piece = Piece(n=1)
    ds.create(piece)
    ds.collect()
    ds.destroy(piece)
    with pytest.raises(ModelDestroyedError):
        piece.n = 2
    assert piece.n == 1


def test_a_local_write_marks_dirty_and_emits_datastore_wide() -> None:
    room = Room()
    ds = welcomed(room)
    seen: list[Change] = []
    ds.changes.subscribe(seen.append)
    room.score = 3
    room.title = "x"
    room.score = 4
    assert [(c.prop, c.old, c.new, c.source) for c in seen] == [
        ("score", 0, 3, ChangeSource.LOCAL), ("title", "", "x", ChangeSource.LOCAL),
        ("score", 3, 4, ChangeSource.LOCAL)]
    assert list(ds.delta.dirty.items()) == [((room, Room.title), ""), ((room, Room.score), 0)]


def test_the_datastore_imports_no_reactivex() -> None:
    for path in sorted((ROOT / "rtecs" / "datastore").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "reactivex" for n in names), path.name
