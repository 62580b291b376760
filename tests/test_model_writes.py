"""Values are refused at the write (DESIGN §4b, issue 9): ints outside 64 bits and str/bytes
values over the datastore's ``max_value_bytes`` raise ``ValueError`` at the assignment, with
the value unchanged and nothing marked dirty; a typo'd attribute raises ``AttributeError``."""

from __future__ import annotations

from typing import Any

import pytest

import rtecs
from rtecs.datastore import Datastore
from rtecs.errors import SchemaError
from rtecs.model import DEFAULT_MAX_VALUE_BYTES, Change, Prop, RealtimeModel
from rtecs.protocol import DEFAULT_LIMITS, UPDATE_OVERHEAD


class Owner:
    """A stand-in datastore implementing the model layer's ``_Owner`` interface."""

    def __init__(self, max_value_bytes: int = 100) -> None:
        self.client_id = 1
        self.max_value_bytes = max_value_bytes
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


class Thing(rtecs.RealtimeModel):
    n: int = rtecs.prop(1, default=7)
    maybe: int | None = rtecs.prop(2)
    s: str = rtecs.prop(3, default="start")
    blob: bytes = rtecs.prop(4, default=b"")
    note: str | None = rtecs.prop(5)
    f: float = rtecs.prop(6, default=0.5)
    flag: bool = rtecs.prop(7, default=False)


def attached(limit: int = 100) -> tuple[Thing, Owner]:
    thing = Thing()
    owner = Owner(limit)
    thing._ds = owner
    return thing, owner


# ----------------------------------------------------------------- ints


@pytest.mark.parametrize("value", [2**64, 2**64 + 5, -(2**63) - 1, -(2**80)])
def test_an_int_outside_64_bits_is_refused_at_the_assignment(value: int) -> None:
    thing, owner = attached()
    with pytest.raises(ValueError, match=r"Thing\.n: .* does not fit in 64 bits"):
        thing.n = value
    assert thing.n == 7 and owner.dirty == {}


def test_the_64_bit_range_ends_are_accepted() -> None:
    thing, owner = attached()
    thing.n = 2**64 - 1
    assert thing.n == 2**64 - 1
    thing.n = -(2**63)
    assert thing.n == -(2**63) and (thing, Thing.n) in owner.dirty


def test_an_optional_int_and_a_float_are_range_checked_too() -> None:
    thing, _ = attached()
    with pytest.raises(ValueError, match=r"Thing\.maybe: .*64 bits"):
        thing.maybe = 2**64
    with pytest.raises(ValueError, match=r"Thing\.f: .*64 bits"):
        thing.f = -(2**70)
    thing.maybe = 5
    assert thing.maybe == 5 and thing.f == 0.5


def test_bool_is_not_affected_and_is_still_no_int() -> None:
    thing, _ = attached()
    thing.flag = True
    assert thing.flag is True
    with pytest.raises(TypeError, match=r"Thing\.n"):
        thing.n = True


def test_a_real_datastore_marks_nothing_dirty_for_a_refused_int() -> None:
    thing = Thing()
    ds = Datastore(thing)
    with pytest.raises(ValueError):
        thing.n = 2**64
    assert thing.n == 7 and not ds.has_unsent_changes


def test_the_constructor_checks_the_range() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        Thing(n=2**64)


# ----------------------------------------------------------------- str and bytes


def test_an_ascii_str_over_the_datastores_limit_is_refused() -> None:
    thing, owner = attached(limit=100)
    thing.s = "x" * 100  # exactly the limit is fine
    owner.dirty.clear()
    with pytest.raises(ValueError, match=r"Thing\.s: .*101 bytes.*limit of 100 bytes.*server "
                                         r"announces"):
        thing.s = "y" * 101
    assert thing.s == "x" * 100 and owner.dirty == {}


def test_a_non_ascii_str_is_measured_in_utf8_bytes() -> None:
    thing, owner = attached(limit=100)
    thing.s = "é" * 50  # 100 bytes
    owner.dirty.clear()
    with pytest.raises(ValueError, match="UTF-8 encoding is 102 bytes"):
        thing.s = "é" * 51  # 51 characters, 102 bytes
    with pytest.raises(ValueError, match="limit of 100"):
        thing.note = "€" * 34  # an optional str: 102 bytes
    assert thing.s == "é" * 50 and thing.note is None and owner.dirty == {}


def test_a_lone_surrogate_is_still_a_type_error() -> None:
    thing, _ = attached()
    with pytest.raises(TypeError, match="not valid Unicode"):
        thing.s = "a\ud800"
    assert thing.s == "start"


def test_bytes_over_the_limit_are_refused_whatever_their_type() -> None:
    thing, owner = attached(limit=100)
    thing.blob = b"\0" * 100
    owner.dirty.clear()
    values: list[object] = [b"\1" * 101, bytearray(101), memoryview(b"\2" * 101)]
    for value in values:
        with pytest.raises(ValueError, match=r"Thing\.blob: the value is 101 bytes"):
            thing.blob = value
    assert thing.blob == b"\0" * 100 and owner.dirty == {}


def test_a_model_in_no_datastore_uses_the_default_limit() -> None:
    assert DEFAULT_LIMITS.max_update_bytes - UPDATE_OVERHEAD == DEFAULT_MAX_VALUE_BYTES
    thing = Thing()
    thing.s = "x" * DEFAULT_MAX_VALUE_BYTES
    with pytest.raises(ValueError, match=f"limit of {DEFAULT_MAX_VALUE_BYTES} bytes"):
        thing.blob = b"x" * (DEFAULT_MAX_VALUE_BYTES + 1)
    with pytest.raises(ValueError, match="limit"):
        Thing(s="x" * (DEFAULT_MAX_VALUE_BYTES + 1))


def test_a_default_over_the_limit_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match=r"Huge\.s: bad default"):
        class Huge(rtecs.RealtimeModel):
            s: str = rtecs.prop(1, default="x" * (DEFAULT_MAX_VALUE_BYTES + 1))
    with pytest.raises(SchemaError, match=r"Wide\.n: bad default"):
        class Wide(rtecs.RealtimeModel):
            n: int = rtecs.prop(1, default=2**64)


def test_a_refused_write_emits_nothing() -> None:
    thing, _ = attached(limit=10)
    seen: list[Change] = []
    thing.changes.subscribe(seen.append)
    with pytest.raises(ValueError):
        thing.s = "x" * 11
    with pytest.raises(ValueError):
        thing.n = 2**64
    thing.s = "ok"
    assert [(c.prop, c.new) for c in seen] == [("s", "ok")]


# ----------------------------------------------------------------- undeclared attributes


class Player(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2)
    kind = "player"  # a class attribute

    @property
    def title(self) -> str:
        return self.name.title()

    @title.setter
    def title(self, value: str) -> None:
        self.name = value.lower()

    @property
    def shout(self) -> str:
        return self.name.upper()


def test_a_typo_raises_naming_the_model_and_suggesting_the_property() -> None:
    player = Player(name="ann")
    with pytest.raises(AttributeError, match=r"Player has no property 'nmae': did you mean "
                                             r"'name'\? its properties are name, score"):
        player.nmae = "bob"  # type: ignore[attr-defined]
    assert player.name == "ann" and not hasattr(player, "nmae")
    with pytest.raises(AttributeError, match="its properties are name, score"):
        player.level = 3  # type: ignore[attr-defined]


def test_private_names_class_attributes_and_properties_still_work() -> None:
    player = Player()
    player._cache = {"x": 1}  # type: ignore[attr-defined]
    assert player._cache == {"x": 1}  # type: ignore[attr-defined]
    player.kind = "boss"
    assert player.kind == "boss" and Player.kind == "player"
    player.title = "Ann"
    assert player.name == "ann" and player.title == "Ann"
    with pytest.raises(AttributeError):
        player.shout = "no setter"  # type: ignore[misc]


def test_properties_are_written_through_setattr_too() -> None:
    player, owner = Player(), Owner()
    player._ds = owner
    setattr(player, "score", 3)  # noqa: B010 (the builtin goes the same way)
    player.name = "zed"
    assert player.score == 3 and player.name == "zed"
    assert list(owner.dirty) == [(player, Player.score), (player, Player.name)]


def test_owner_id_stays_read_only() -> None:
    with pytest.raises(AttributeError, match="owner_id is read-only"):
        Player().owner_id = 3  # type: ignore[misc]


def test_a_collection_refuses_undeclared_attributes() -> None:
    class Holder(rtecs.RealtimeModel):
        bag: rtecs.RealtimeSet[Player] = rtecs.prop(1)

    with pytest.raises(AttributeError, match="has no property 'size'"):
        Holder().bag.size = 3  # type: ignore[attr-defined]


def test_a_class_with_its_own_setattr_and_its_subclasses_still_write_properties() -> None:
    class Logged(rtecs.RealtimeModel):
        a: int = rtecs.prop(1)

        def __setattr__(self, name: str, value: Any) -> None:
            self.__dict__.setdefault("_log", []).append(name)
            super().__setattr__(name, value)

    class More(Logged):
        b: int = rtecs.prop(2)

    more, owner = More(), Owner()
    more._ds = owner
    more.a, more.b = 1, 2
    assert (more.a, more.b) == (1, 2) and more._log == ["_ds", "a", "b"]  # type: ignore[attr-defined]
    assert list(owner.dirty) == [(more, More.a), (more, More.b)]
    with pytest.raises(AttributeError, match="More has no property 'c'"):
        more.c = 3  # type: ignore[attr-defined]
    object.__setattr__(more, "a", 5)  # the descriptor path writes the same way
    assert more.a == 5 and list(owner.dirty)[-1] == (more, More.a)


# ----------------------------------------------------------------- the write log (DESIGN §1)


class Spy(Datastore):
    """A datastore that counts calls of ``mark_dirty`` (its models should not need it)."""

    __slots__ = ("calls",)

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> Any:
        self.calls = getattr(self, "calls", 0) + 1
        return super().mark_dirty(model, p, old)


def test_a_datastores_models_record_writes_in_its_write_log_without_calling_it() -> None:
    from rtecs.errors import ModelDestroyedError, NotConnectedError
    from rtecs.protocol import Welcome

    room = Player()
    ds = Spy(room, [Thing])
    ds.load_snapshot(Welcome(1, 0, 0.0, [], [1]))
    thing = Thing()
    ds.create(thing)
    ds.collect()
    seen: list[Change] = []
    ds.changes.subscribe(seen.append)  # after the binds: the models' log learns it too
    room.score, thing.n, room.score = 5, 8, 6
    assert list(ds.delta.dirty.items()) == [((thing, Thing.n), 7), ((room, Player.score), 0)]
    assert [(c.model, c.prop, c.old, c.new) for c in seen] == [
        (room, "score", 0, 5), (thing, "n", 7, 8), (room, "score", 5, 6)]
    assert getattr(ds, "calls", 0) == 0
    ds.destroy(thing)
    with pytest.raises(ModelDestroyedError):
        thing.n = 9
    assert thing.n == 8
    ds.close()
    with pytest.raises(NotConnectedError):
        room.score = 7
    assert room.score == 6 and len(seen) == 3


# ----------------------------------------------------------------- identity and reserved names


def test_model_id_is_a_read_only_attribute() -> None:
    player = Player()
    assert player.model_id is None
    with pytest.raises(AttributeError, match="model_id"):
        player.model_id = (1, 2)  # type: ignore[misc]
    assert player.model_id is None


@pytest.mark.parametrize("name", ["model_id", "parent", "owner_id", "changes", "observe"])
def test_a_property_cannot_take_a_model_attributes_name(name: str) -> None:
    with pytest.raises(SchemaError, match=f"{name}' is a RealtimeModel attribute"):
        type("Clash", (RealtimeModel,), {"__annotations__": {name: int}, name: rtecs.prop(1)})
