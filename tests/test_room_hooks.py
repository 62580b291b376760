"""Server plugins as hook objects (DESIGN §5 "Server plugins"): ``on_write`` (property writes
and collection operations), ``on_create`` (type, parent and initial values together),
``on_destroy``, ``on_owner`` and ``authenticate``, each given a context; a plain callable is
``on_write``. Lifetime changes the server makes itself are never put to the hooks, and an
unexpected exception in a hook is logged and counts as a rejection."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_room_core import upd

from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PROTOCOL_VERSION,
    Hello,
    ModelId,
    Value,
    dynamic_model_id,
)
from rtecs_server import Change, Reject, Room
from rtecs_server.hooks import (
    CollectionChange,
    Context,
    Create,
    Hooks,
    Identity,
    authenticate,
)

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Game": {1: ("title", "str", True), 2: ("score", "int", True),
             3: ("bag", "model:rtecs.Dict<Item>", True), 4: ("ratio", "float", True)},
    "rtecs.Dict<Item>": {},
    "Item": {1: ("name", "str", True), 2: ("hand", "model:Hand", True)},
    "Hand": {1: ("cards", "int", True)},
}
BAG = (0, 3)


def hello() -> Hello:
    return Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, None)


def room_with(n: int, *plugins: Any) -> tuple[Room, list[int]]:
    room = Room("lobby", plugins)
    ids = [room.join(hello(), 0.0).client_id for _ in range(n)]
    room.flush(0.0)
    return room, ids


def rejected(room: Room, sender: int, seq: int, *runs: list[Any], **kw: Any) -> list[Any]:
    out = room.apply_update(sender, upd(seq, *runs), **kw)
    assert out.entry is not None
    return [tuple(r) for r in out.entry.rejected]


class Spy(Hooks):
    """Records every call; refuses what ``refuse`` says."""

    def __init__(self, refuse: Any = lambda *_: False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse = refuse

    def on_write(self, ctx: Context, change: Change | CollectionChange) -> Value:
        self.calls.append(("write", ctx, change))
        if self.refuse("write", change):
            raise Reject("no")
        return change.value if isinstance(change, Change) else None

    def on_create(self, ctx: Context, create: Create) -> None:
        self.calls.append(("create", ctx, create))
        if self.refuse("create", create):
            raise Reject("no")

    def on_destroy(self, ctx: Context, model_id: ModelId, type_name: str) -> None:
        self.calls.append(("destroy", ctx, model_id, type_name))
        if self.refuse("destroy", model_id):
            raise Reject("no")

    def on_owner(self, ctx: Context, model_id: ModelId, new_owner: int) -> None:
        self.calls.append(("owner", ctx, model_id, new_owner))
        if self.refuse("owner", (model_id, new_owner)):
            raise Reject("no")

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def test_on_write_gets_a_context_and_may_transform_or_refuse() -> None:
    class Clamp(Hooks):
        def __init__(self) -> None:
            self.contexts: list[Context] = []

        def on_write(self, ctx: Context, change: Change | CollectionChange) -> Value:
            self.contexts.append(ctx)
            assert isinstance(change, Change)
            if change.value == 13:
                raise Reject("unlucky")
            return min(change.value, 100) if change.prop_name == "score" else change.value

    clamp = Clamp()
    room, (a,) = room_with(1, clamp)
    assert rejected(room, a, 1, [0, 2, 500, 1, "t"]) == []
    assert room.record(0).props == {2: 100, 1: "t"}  # type: ignore[union-attr]
    assert rejected(room, a, 2, [0, 2, 13]) == [(0, 2)]
    ctx = clamp.contexts[0]
    assert ctx.room is room and ctx.sender == a
    assert ctx.user_id is None and dict(ctx.claims) == {}


def test_the_session_identity_reaches_the_context() -> None:
    spy = Spy()
    room, (a,) = room_with(1, spy)
    rejected(room, a, 1, [0, 1, "t"], user_id="u-7", claims={"role": "gm"})
    ctx = spy.calls[0][1]
    assert (ctx.user_id, dict(ctx.claims)) == ("u-7", {"role": "gm"})


def test_a_plain_callable_is_on_write_for_property_writes() -> None:
    seen: list[Any] = []

    def shout(room: Room, sender: int, change: Change) -> Value:
        seen.append((room, sender, change))
        return change.value.upper() if isinstance(change.value, str) else change.value

    spy = Spy()
    room, (a,) = room_with(1, shout, spy)
    item = dynamic_model_id(a, 1)
    assert rejected(room, a, 1, [0, 1, "hi"], [item, CREATE, ("Item", 0, BAG, 1), 1, "x"]) == []
    assert room.record(0).props[1] == "HI"  # type: ignore[union-attr]
    assert room.record(item).props[1] == "X"  # type: ignore[union-attr]
    # the callable sees property writes only; the hook object after it sees its result
    assert [(r, s, c.model_id, c.value) for r, s, c in seen] == [
        (room, a, 0, "hi"), (room, a, item, "x")]
    writes = [c[2] for c in spy.calls if c[0] == "write" and isinstance(c[2], Change)]
    assert [w.value for w in writes] == ["HI", "X"]


def test_on_write_sees_collection_operations_and_may_refuse_them() -> None:
    spy = Spy(lambda kind, c: kind == "write" and isinstance(c, CollectionChange)
              and c.key == 2)
    room, (a,) = room_with(1, spy)
    one, two, three = (dynamic_model_id(a, c) for c in (1, 2, 3))
    assert rejected(room, a, 1, [one, CREATE, ("Item", 0, BAG, 1), 1, "a"]) == []
    assert rejected(room, a, 2, [two, CREATE, ("Item", 0, BAG, 2), 1, "b"]) == [
        (two, CREATE), (two, 1)]
    assert rejected(room, a, 3, [three, CREATE, ("Item", 0, BAG, 1)]) == []  # replaces one
    assert rejected(room, a, 4, [three, DESTROY, None]) == []
    ops = [c[2] for c in spy.calls if c[0] == "write" and isinstance(c[2], CollectionChange)]
    assert ops == [
        CollectionChange(BAG, "rtecs.Dict<Item>", "add", one, "Item", 1, None),
        CollectionChange(BAG, "rtecs.Dict<Item>", "add", two, "Item", 2, None),
        CollectionChange(BAG, "rtecs.Dict<Item>", "add", three, "Item", 1, one),
        CollectionChange(BAG, "rtecs.Dict<Item>", "remove", three, "Item", 1, None)]
    assert room.record(two) is None and room.record(one) is None and room.record(three) is None


def test_on_create_sees_type_parent_and_initial_values_and_refuses_whole() -> None:
    spy = Spy(lambda kind, c: kind == "create" and c.values.get(1) == "cursed")
    room, (a,) = room_with(1, spy)
    ok, bad = dynamic_model_id(a, 1), dynamic_model_id(a, 2)
    assert rejected(room, a, 1, [ok, CREATE, ("Item", DESTROY_WHEN_OWNER_LEAVES, BAG, 4),
                                 1, "fine", OWNER, a]) == []
    creates = [c[2] for c in spy.calls if c[0] == "create"]
    assert creates == [Create(ok, "Item", DESTROY_WHEN_OWNER_LEAVES, BAG, 4, {1: "fine"})]
    runs = [[bad, CREATE, ("Item", 0), 1, "cursed", OWNER, a], [(bad, 2), 1, 3]]
    assert rejected(room, a, 2, *runs) == [(bad, CREATE), (bad, 1), (bad, OWNER), ((bad, 2), 1)]
    assert room.record(bad) is None and room.record((bad, 2)) is None
    assert rejected(room, a, 3, [0, 1, "later"]) == []


def test_on_destroy_may_refuse_a_clients_destroy() -> None:
    spy = Spy(lambda kind, mid: kind == "destroy" and mid == dynamic_model_id(1, 1))
    room, (a,) = room_with(1, spy)
    keep, go = dynamic_model_id(a, 1), dynamic_model_id(a, 2)
    rejected(room, a, 1, [keep, CREATE, ("Item", 0)], [go, CREATE, ("Item", 0)])
    assert rejected(room, a, 2, [keep, DESTROY, None], [go, DESTROY, None]) == [(keep, DESTROY)]
    assert room.record(keep) is not None and room.record(go) is None
    assert [c[2:] for c in spy.calls if c[0] == "destroy"] == [(keep, "Item"), (go, "Item")]


def test_on_owner_may_forbid_owning_the_room_model() -> None:
    class NoRoomOwner(Hooks):
        def on_owner(self, ctx: Context, model_id: ModelId, new_owner: int) -> None:
            if model_id == 0 and new_owner != -1:
                raise Reject("the room model belongs to nobody")

    room, (a,) = room_with(1, NoRoomOwner())
    item = dynamic_model_id(a, 1)
    assert rejected(room, a, 1, [0, OWNER, a, 1, "t"]) == [(0, OWNER)]
    assert room.record(0).owner == -1  # type: ignore[union-attr]
    assert rejected(room, a, 2, [item, CREATE, ("Item", 0), OWNER, a], [0, OWNER, -1]) == []
    assert room.record(item).owner == a  # type: ignore[union-attr]


def test_lifetime_changes_the_server_makes_are_not_put_to_the_hooks() -> None:
    spy = Spy()
    room, (a, _b) = room_with(2, spy)
    gone, kept = dynamic_model_id(a, 1), dynamic_model_id(a, 2)
    assert rejected(room, a, 1, [gone, CREATE, ("Item", DESTROY_WHEN_OWNER_LEAVES), OWNER, a],
                    [kept, CREATE, ("Item", 0), OWNER, a]) == []
    spy.refuse = lambda *_: True  # would refuse anything it were asked
    spy.calls.clear()
    assert room.leave(a, 1.0)
    assert spy.calls == []
    assert room.record(gone) is None
    assert room.record(kept).owner == -1  # type: ignore[union-attr]


@pytest.mark.parametrize("hook", ["on_write", "on_create", "on_destroy", "on_owner"])
def test_an_exception_in_a_hook_is_logged_and_counts_as_a_rejection(
        hook: str, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:  # a hook object needs no base class
        pass

    def boom(*_: Any) -> None:
        raise ZeroDivisionError(hook)

    broken = Broken()
    setattr(broken, hook, boom)
    room, (a,) = room_with(1, broken)
    item = dynamic_model_id(a, 1)
    if hook == "on_destroy":
        assert rejected(room, a, 1, [item, CREATE, ("Item", 0)]) == []
        runs = [[item, DESTROY, None]]
        expect = [(item, DESTROY)]
    else:
        runs = {"on_write": [[0, 1, "t"]], "on_create": [[item, CREATE, ("Item", 0)]],
                "on_owner": [[0, OWNER, a]]}[hook]
        expect = [(runs[0][0], runs[0][1])]
    with caplog.at_level(logging.ERROR, logger="rtecs_server"):
        assert rejected(room, a, 2 if hook == "on_destroy" else 1, *runs) == expect
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


def test_authenticate_has_its_shape() -> None:
    class Tokens(Hooks):
        def authenticate(self, hello: Hello) -> Identity | None:
            if hello.token is None:
                return None  # no opinion: the next hook (or the server) decides
            if hello.token != "open sesame":
                raise Reject("bad token")
            return Identity("u-1", {"role": "player"})

    def plain(room: Room, sender: int, change: Change) -> Value:
        return change.value

    tokens = Tokens()
    assert authenticate([plain, tokens], hello()) is None
    ok = Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, "open sesame")
    assert authenticate([plain, tokens], ok) == Identity("u-1", {"role": "player"})
    with pytest.raises(Reject, match="bad token"):
        authenticate([tokens], Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, "guess"))


def test_a_crashing_authenticate_refuses_the_hello(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Hooks):
        def authenticate(self, hello: Hello) -> Identity | None:
            raise KeyError("oops")

    with caplog.at_level(logging.ERROR, logger="rtecs_server"), pytest.raises(Reject):
        authenticate([Broken()], hello())
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
