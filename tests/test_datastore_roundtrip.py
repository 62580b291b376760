"""Datastore deltas through the real codec: a replica fed a client's updates (as another
client's entries in the server stream) always equals the writer, and a snapshot of the writer
equals the replay of all its deltas."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, given, settings

from rtecs.datastore import Datastore
from rtecs.model import RealtimeModel, prop
from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    decode_client_message,
    decode_server_message,
    dynamic_model_id,
    encode,
)

WRITER, OTHER = 1, 2

# ----------------------------------------------------------------------------- random classes

PYTYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str,
                            "bytes": bytes}


class Scalar(NamedTuple):
    tag: str            # bool int float str bytes
    optional: bool
    reliable: bool
    default: tuple[Any, ...]  # () = no default, else (value,)


class Node(NamedTuple):
    fields: tuple[tuple[int, Any], ...]  # (property id, Scalar | Node)


def values_of(tag: str, optional: bool) -> st.SearchStrategy[Any]:
    base: st.SearchStrategy[Any] = {
        "bool": st.booleans(),
        "int": st.integers(-(2**63), 2**64 - 1) | st.integers(-3, 3),
        "float": (st.floats(allow_nan=False) | st.integers(-(2**53), 2**53)  # int → float
                  | st.sampled_from([0.0, -0.0, 1.5])),
        "str": st.text(max_size=8),
        "bytes": st.binary(max_size=8) | st.binary(max_size=4).map(bytearray),
    }[tag]
    return st.none() | base if optional else base


@st.composite
def scalars(draw: st.DrawFn) -> Scalar:
    tag = draw(st.sampled_from(sorted(PYTYPES)))
    optional = draw(st.booleans())
    default = draw(st.just(()) | values_of(tag, optional).map(lambda v: (v,)))
    return Scalar(tag, optional, draw(st.booleans()), default)


def nodes(depth: int, min_size: int = 0) -> st.SearchStrategy[Node]:
    kinds: st.SearchStrategy[Any] = scalars()
    if depth < 2:
        kinds = st.one_of(scalars(), scalars(), st.deferred(lambda: nodes(depth + 1)))
    return st.lists(kinds, min_size=min_size, max_size=5).flatmap(
        lambda fs: st.lists(st.integers(1, 40), min_size=len(fs), max_size=len(fs),
                            unique=True).map(lambda ids: Node(tuple(zip(ids, fs, strict=True)))))


def build(node: Node, prefix: str, names: itertools.count[int]) -> type[RealtimeModel]:
    """A RealtimeModel subclass (and its child classes) for a node spec."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    for pid, spec in node.fields:
        name = f"p{pid}"
        if isinstance(spec, Node):
            annotations[name] = build(spec, prefix, names)
            namespace[name] = prop(pid)
        else:
            pytype = PYTYPES[spec.tag]
            annotations[name] = pytype | None if spec.optional else pytype
            kw: dict[str, Any] = {"default": spec.default[0]} if spec.default else {}
            namespace[name] = prop(pid, reliable=spec.reliable, **kw)
    return type(f"{prefix}{next(names)}", (RealtimeModel,), namespace)


# ----------------------------------------------------------------------------- helpers

def welcome(client_id: int, snapshot: Any = ()) -> Welcome:
    return Welcome(client_id=client_id, room_seq=0, server_time=0.0, snapshot=list(snapshot),
                   clients=[client_id])


def datastore(room_type: type[RealtimeModel], *types: type[RealtimeModel],
              client_id: int = WRITER) -> Datastore:
    ds = Datastore(room_type(), types)
    ds.load_snapshot(welcome(client_id))
    return ds


def scalar_props(model: RealtimeModel) -> list[tuple[int, str, str]]:
    """(id, name, tag) of every non-child property, from the public schema."""
    return [(pid, name, tag) for pid, (name, tag, _) in type(model).schema().items()
            if not tag.startswith("model:")]


def state(ds: Datastore) -> dict[Any, Any]:
    """Everything a datastore shows, with value types (1 and 1.0 and True differ)."""
    out = {}
    for mid, m in ds.models.items():
        out[mid] = (m.type_name, m._flags, state_of_values(m))
    return out


def snapshot_of(ds: Datastore) -> list[SnapshotRecord]:
    """Snapshot records as the server would send them, parents before children."""
    return [SnapshotRecord(mid, m.type_name, m.owner_id, m._flags,
                           {pid: getattr(m, name) for pid, name, _ in scalar_props(m)})
            for mid, m in ds.models.items()]


def through_the_wire(update: Update) -> Update:
    decoded = decode_client_message(encode(update))
    assert isinstance(decoded, Update)
    assert decoded.seq == update.seq
    return decoded


def relay(update: Update, replica: Datastore, sender: int = WRITER) -> None:
    """Apply a writer's update to a replica as the server would relay it to other clients."""
    decoded = through_the_wire(update)
    replica.apply_entry(UpdateEntry(sender=sender, seq=decoded.seq, changes=decoded.changes,
                                    rejected=()))
    replica.flush_emissions()


def written(update: Update) -> list[tuple[Any, int]]:
    return [(run[0], run[i]) for run in update.changes for i in range(1, len(run), 2)]


# ----------------------------------------------------------------------------- the property

@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(room_spec=nodes(0, min_size=1), dyn_spec=nodes(1), data=st.data())
def test_replica_equals_writer_after_every_frame_and_snapshot_equals_deltas(
        room_spec: Node, dyn_spec: Node, data: st.DataObject) -> None:
    names = itertools.count()
    room_type = build(room_spec, "Room", names)
    dyn_type = build(dyn_spec, "Dyn", names)
    src = datastore(room_type)
    replica = datastore(room_type, dyn_type, client_id=OTHER)
    room_models = set(src.models)
    assert state(replica) == state(src)
    seq = 0
    for _frame in range(data.draw(st.integers(2, 8), label="frames")):
        visible_at_start = state(src)
        for _ in range(data.draw(st.integers(1, 6), label="ops")):
            live = [m for m in src.models.values() if scalar_props(m)] or [src.room_model]
            op = data.draw(st.sampled_from(
                ["write"] * 4 + ["write back", "create", "create", "destroy", "own", "unown"]))
            if op in ("write", "write back"):
                model = data.draw(st.sampled_from(live))
                if not scalar_props(model):
                    continue
                _, name, tag = data.draw(st.sampled_from(scalar_props(model)))
                before = getattr(model, name)
                values = values_of(tag.rstrip("?"), tag.endswith("?"))
                for _attempt in range(3):  # mostly a write that changes something
                    value = data.draw(values, label=name)
                    if value != before or type(value) is not type(before):
                        break
                setattr(model, name, value)
                if op == "write back":
                    setattr(model, name, before)
            elif op == "create":
                model = dyn_type()
                src.create(model, flags=data.draw(st.integers(0, 7)),
                           owned=data.draw(st.booleans()))
            elif op == "destroy":
                dynamic = [m for m in src.models.values() if type(m.model_id) is int
                           and m.model_id != 0]
                if dynamic:
                    src.destroy(data.draw(st.sampled_from(dynamic)))
            elif op == "own":
                data.draw(st.sampled_from(list(src.models.values()))).request_ownership()
            else:
                data.draw(st.sampled_from(list(src.models.values()))).clear_ownership()
        update = src.collect()
        assert src.collect() is None  # a frame's delta is collected once
        if update is None:
            assert state(src) == visible_at_start
            continue
        seq += 1
        assert update.seq == seq
        shown = state(replica)
        relay(update, replica)
        now = state(replica)
        assert now == state(src)
        assert_minimal(update, shown, now, replica)
    event(f"updates: {min(seq, 5)}{'+' if seq >= 5 else ''}")
    event(f"dynamic models: {'some' if len(src.models) > len(room_models) else 'none'}")
    # A snapshot of the writer, through the codec, equals the replay of all deltas.
    message = decode_server_message(encode(welcome(3, snapshot_of(src))))
    assert isinstance(message, Welcome)
    fresh = Datastore(room_type(), [dyn_type])
    fresh.load_snapshot(message)
    assert state(fresh) == state(replica) == state(src)


def assert_minimal(update: Update, before: dict[Any, Any], after: dict[Any, Any],
                   replica: Datastore) -> None:
    """Every property change an update carries changes what the replica shows: nothing
    redundant is sent (values compared with their types) — except an unreliable property
    written during the frame, which is always sent (no "changed back" suppression for
    unreliable properties, DESIGN §4)."""
    for mid, key in written(update):
        if key < 0 or mid not in after:
            continue
        model = replica.get(mid)
        if model is not None and not type(model)._props[key].reliable:
            continue
        if mid in before:
            old = before[mid][2][key]
        else:  # created by this update: compare with the class defaults
            model = replica.get(mid)
            assert model is not None
            old = state_of_values(type(model)())[key]
        assert old != after[mid][2][key], (mid, key, old)


def state_of_values(model: RealtimeModel) -> dict[int, Any]:
    values: dict[int, Any] = {OWNER: model.owner_id}
    for pid, name, _ in scalar_props(model):
        v = getattr(model, name)
        values[pid] = (type(v).__name__, v)
    return values


# ----------------------------------------------------------------------------- fixed classes

class Vec(RealtimeModel):
    x: float = prop(1)
    y: float = prop(2, reliable=False)
    label: str | None = prop(3, default=None)


class Body(RealtimeModel):
    pos: Vec = prop(1)
    vel: Vec = prop(2)
    mass: int = prop(3, default=1)
    raw: bytes = prop(4, reliable=False)


class Ship(RealtimeModel):
    name: str = prop(1, default="")
    body: Body = prop(2)
    alive: bool = prop(3, default=True)


class Room(RealtimeModel):
    title: str = prop(1)
    score: int = prop(2)
    ratio: float = prop(3, reliable=False)
    flag: bool = prop(4)
    blob: bytes | None = prop(5)
    hp: int | None = prop(6, reliable=False)
    world: Body = prop(7)


def test_child_models_have_path_ids_and_are_in_the_datastore() -> None:
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    assert room.model_id == 0
    assert room.world.model_id == (0, 7)
    assert room.world.pos.model_id == (0, 7, 1)
    assert set(src.models) == {0, (0, 7), (0, 7, 1), (0, 7, 2)}
    ship = Ship()
    mid = src.create(ship)
    assert mid == dynamic_model_id(WRITER, 1)
    assert ship.body.vel.model_id == (mid, 2, 2)
    assert src.get((mid, 2, 2)) is ship.body.vel


def test_one_frame_of_every_kind_of_change_replicates() -> None:
    src, replica = datastore(Room), datastore(Room, Ship, client_id=OTHER)
    room = src.room_model
    assert isinstance(room, Room)
    room.title, room.score, room.ratio, room.flag = "hi", 2**64 - 1, 3, True
    room.blob, room.hp = bytearray(b"\x00\x01"), None  # type: ignore[assignment]
    room.world.pos.x, room.world.vel.y, room.world.raw = -1.5, 2.0, b"r"
    ship = Ship(name="enterprise")
    ship.body.mass = 7
    src.create(ship, flags=PREVENT_OWNERSHIP_TAKEOVER | DESTROY_WHEN_OWNER_LEAVES, owned=True)
    ship.body.pos.label = "bow"
    update = src.collect()
    assert update is not None and update.seq == 1
    relay(update, replica)
    assert state(replica) == state(src)
    copy = replica.get(ship.model_id)  # type: ignore[arg-type]
    assert isinstance(copy, Ship)
    assert copy.owner_id == WRITER and copy.prevents_ownership_takeover
    assert copy.body.pos.label == "bow" and copy.body.mass == 7
    assert type(replica.room_model.ratio) is float  # type: ignore[attr-defined]
    # destroy replicates too
    src.destroy(ship)
    update = src.collect()
    assert update is not None and update.seq == 2
    assert written(update) == [(ship.model_id, DESTROY)]
    relay(update, replica)
    assert ship.model_id not in replica.models and (ship.model_id, 2) not in replica.models
    assert state(replica) == state(src)


# ----------------------------------------------------------------------------- changed back

def test_changed_and_changed_back_within_a_frame_sends_nothing() -> None:
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    room.title, room.title = "x", ""           # reliable
    room.blob, room.blob = b"x", None          # reliable, optional
    room.world.pos.x = 4.0
    room.world.pos.x = 0.0
    assert src.collect() is None
    assert src.next_seq == 1  # no sequence number used up


def test_an_unreliable_property_changed_back_within_a_frame_is_sent() -> None:
    # No "changed back" suppression for unreliable properties (DESIGN §4): the frame-start
    # value may not be what the server holds by the time this update is ordered.
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    room.ratio, room.ratio = 9.0, 0.0
    room.hp, room.hp = 3, None                 # optional
    update = src.collect()
    assert update is not None
    assert written(update) == [(0, Room.ratio.id), (0, Room.hp.id)]
    assert update.changes == [[0, Room.ratio.id, 0.0, Room.hp.id, None]]
    assert src.next_seq == 2


def test_changed_back_after_a_frame_is_sent() -> None:
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    room.score = 5
    first = src.collect()
    assert first is not None and written(first) == [(0, 2)]
    room.score = 0  # 5 is in flight: writing 0 still sends 0
    second = src.collect()
    assert second is not None and second.changes == [[0, 2, 0]]
    room.score = 7
    room.score = 0  # changed back within the frame, to the newest in-flight write
    assert src.collect() is None
    room.ratio = 2.0
    assert src.collect() is not None
    room.ratio = 0.0  # unreliable: compared with the frame start, no cache
    third = src.collect()
    assert third is not None and third.changes == [[0, 3, 0.0]]


def test_an_int_written_to_a_float_is_the_same_value() -> None:
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    room.world.pos.x = 0  # coerced to 0.0: no change at all
    assert src.collect() is None
    room.world.pos.x = 2
    update = src.collect()
    assert update is not None
    assert update.changes == [[(0, 7, 1), 1, 2.0]]
    assert type(update.changes[0][2]) is float


def test_create_and_destroy_within_one_frame_sends_nothing() -> None:
    """The server never heard of the model: a lone DESTROY for it is a bad update there
    ("model … was never created")."""
    src = datastore(Room)
    ship = Ship(name="gone")
    src.create(ship)
    src.destroy(ship)
    assert src.collect() is None


# ----------------------------------------------------------------------------- delta size

def test_only_written_properties_appear_in_the_update() -> None:
    src = datastore(Room)
    ships = [Ship(name=f"s{i}") for i in range(300)]
    for ship in ships:
        src.create(ship)
    first = src.collect()
    assert first is not None
    assert len(written(first)) == 2 * 300  # create + name; defaults are not sent
    assert len(src.models) == 4 + 300 * 4
    room = src.room_model
    assert isinstance(room, Room)
    ships[17].body.pos.x = 1.0
    room.score = 3
    ships[17].body.pos.y = 2.0
    ships[200].alive = False
    room.score = 4  # written again: moves after the others
    update = src.collect()
    assert update is not None
    s17, s200 = ships[17].model_id, ships[200].model_id
    assert update.changes == [[(s17, 2, 1), 1, 1.0, 2, 2.0], [s200, 3, False], [0, 2, 4]]
    assert src.collect() is None


def test_consecutive_changes_to_one_model_share_a_run_and_keep_write_order() -> None:
    src = datastore(Room)
    room = src.room_model
    assert isinstance(room, Room)
    room.title = "a"
    room.world.mass = 3
    room.flag = True
    update = src.collect()
    assert update is not None
    assert update.changes == [[0, 1, "a"], [(0, 7), 3, 3], [0, 4, True]]


# ----------------------------------------------------------------------------- forward compat

def test_unknown_property_in_a_remote_change_is_skipped() -> None:
    replica = datastore(Room, client_id=OTHER)
    room = replica.room_model
    assert isinstance(room, Room)
    changes = decode_client_message(encode(Update(1, [
        [0, 99, "from a newer peer", 2, 5, 98, None, 7, "world is a child model", 1, "t"],
        [(0, 7), 1, b"pos is a child model", 3, 4, 60, 1.5],
        [(0, 7, 9), 1, 1.0],                             # an unknown child model
        [(0, 7, 1), 1, 8.0],
    ]))).changes  # type: ignore[union-attr]
    replica.apply_entry(UpdateEntry(sender=WRITER, seq=1, changes=changes, rejected=()))
    replica.flush_emissions()
    assert (room.score, room.title, room.world.mass, room.world.pos.x) == (5, "t", 4, 8.0)
    assert isinstance(room.world, Body)
    assert set(replica.models) == {0, (0, 7), (0, 7, 1), (0, 7, 2)}


def test_unknown_property_in_a_snapshot_is_skipped() -> None:
    records = [SnapshotRecord(0, "Room", -1, 0, {1: "t", 99: [1], 2: 5, 7: "child"}),
               SnapshotRecord((0, 7), "Body", WRITER, 0, {3: 2, 50: b"?"}),
               SnapshotRecord((0, 7, 1), "Vec", -1, 0, {1: 1.5, 3: None, 4: "new"})]
    fresh = Datastore(Room())
    fresh.load_snapshot(welcome(OTHER, records))
    room = fresh.room_model
    assert isinstance(room, Room)
    assert (room.title, room.score, room.world.mass, room.world.owner_id) == ("t", 5, 2, WRITER)
    assert (room.world.pos.x, room.world.pos.label) == (1.5, None)
    assert isinstance(room.world, Body)
    # The same records survive the codec when the unknown values are scalars.
    records[0][4][99] = "newer"
    message = decode_server_message(encode(welcome(OTHER, records)))
    other = Datastore(Room())
    other.load_snapshot(message)  # type: ignore[arg-type]
    assert state(other) == state(fresh)


def test_properties_absent_from_a_snapshot_keep_their_defaults() -> None:
    fresh = Datastore(Room(), [Ship])
    mid = dynamic_model_id(OTHER, 1)
    fresh.load_snapshot(welcome(WRITER, [SnapshotRecord(0, "Room", -1, 0, {}),
                                         SnapshotRecord(mid, "Ship", OTHER, 3, {})]))
    ship = fresh.get(mid)
    assert isinstance(ship, Ship)
    assert (ship.name, ship.alive, ship.body.mass, ship.owner_id) == ("", True, 1, OTHER)
    assert ship.body.pos.label is None
    assert (mid, 2, 1) in fresh.models


def test_a_remote_create_carries_flags_and_values() -> None:
    replica = datastore(Room, Ship, client_id=OTHER)
    mid = dynamic_model_id(5, 2)
    replica.apply_entry(UpdateEntry(5, 2, ((mid, CREATE, ("Ship", 1), 1, "x"),
                                           ((mid, 2), 3, 9)), ()))
    ship = replica.get(mid)
    assert isinstance(ship, Ship)
    assert (ship.name, ship.body.mass, ship.prevents_ownership_takeover) == ("x", 9, True)
