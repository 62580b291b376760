"""The records codec's checks (rtecs_server.codec): every record read from storage is checked,
whichever way it is read, and the fast paths pass nothing the protocol's one record check
(check_snapshot_record) and the schema test would refuse."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from rtecs.errors import ProtocolError
from rtecs.protocol import F32, SnapshotRecord, check_snapshot_record, dynamic_model_id
from rtecs.protocol._codec import _check_field_by_field
from rtecs_server import codec
from rtecs_server.storage import (
    FORMAT_VERSION,
    CorruptRoomError,
    SavedRoom,
    StorageError,
    decode_room,
    encode_room,
)

pytestmark = pytest.mark.timeout(60)

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Room": {1: ("title", "str", True), 2: ("board", "model:Board", True)},
    "Board": {1: ("cells", "bytes", True), 2: ("n", "int", True), 3: ("x", "float", True)},
}
CUBE = dynamic_model_id(2, 1)
ROOM: list[Any] = [0, "Room", -1, 0, {1: "t"}, None, None]


def blob_of(models: Any, *, name: str = "lobby", schema: Any = SCHEMA,
            created: Any = None) -> bytes:
    """A stored blob with a valid header and checksum around whatever ``models`` is."""
    body = msgspec.msgpack.encode([name, "Room", schema, 3, created or {}, models])
    return struct.pack(">4sHI", b"RTRM", FORMAT_VERSION, zlib.crc32(body)) + body


# ----------------------------------------------------------------------------- what loads

def test_decoded_records_are_snapshot_records() -> None:
    room = SavedRoom("lobby", "Room", SCHEMA, 3, {2: 1}, [
        SnapshotRecord(0, "Room", -1, 0, {1: "t"}),
        SnapshotRecord((0, 2), "Board", -1, 0, {1: b"\x00", 2: 2**63 - 1, 3: 0.5}),
        SnapshotRecord(CUBE, "Board", -1, 0, {}, (0, 2), "slot"),
        SnapshotRecord(dynamic_model_id(2, 2), "Board", -1, 0, {}, CUBE, 4)])
    loaded = decode_room("lobby", encode_room(room))
    assert loaded.models == room.models
    assert all(type(rec) is SnapshotRecord for rec in loaded.models)
    assert type(loaded.models[1].model_id) is tuple


def test_format_1_records_of_5_and_6_fields_still_load() -> None:
    """Checkpoints written before protocol 3 left a nil parent and key out."""
    stored = [[0, "Room", -1, 0, {1: "t"}],
              [CUBE, "Board", -1, 0, {2: 1}],
              [dynamic_model_id(2, 2), "Board", -1, 0, {}, CUBE],
              [dynamic_model_id(2, 3), "Board", -1, 0, {}, CUBE, "k"]]
    loaded = decode_room("lobby", blob_of(stored))
    assert loaded.models == [
        SnapshotRecord(0, "Room", -1, 0, {1: "t"}),
        SnapshotRecord(CUBE, "Board", -1, 0, {2: 1}),
        SnapshotRecord(dynamic_model_id(2, 2), "Board", -1, 0, {}, CUBE),
        SnapshotRecord(dynamic_model_id(2, 3), "Board", -1, 0, {}, CUBE, "k")]
    assert all(type(rec) is SnapshotRecord for rec in loaded.models)


def test_f32_values_are_saved() -> None:
    room = SavedRoom("lobby", "Room", SCHEMA, 3, {}, [
        SnapshotRecord(0, "Room", -1, 0, {}), SnapshotRecord((0, 2), "Board", -1, 0,
                                                             {3: F32(0.25)})])
    assert decode_room("lobby", encode_room(room)).models[1].props == {3: 0.25}


# ----------------------------------------------------------------------------- what does not

BAD_RECORDS: list[tuple[Any, str]] = [
    ([-1, "Room", -1, 0, {}, None, None], "invalid model id"),
    ([True, "Room", -1, 0, {}, None, None], "invalid model id"),
    ([1.0, "Room", -1, 0, {}, None, None], "invalid model id"),
    (["0", "Room", -1, 0, {}, None, None], "invalid model id"),
    ([[0], "Board", -1, 0, {}, None, None], "invalid model id"),
    ([[0, 0], "Board", -1, 0, {}, None, None], "invalid model id"),
    ([[0, True], "Board", -1, 0, {}, None, None], "invalid model id"),
    ([[-1, 2], "Board", -1, 0, {}, None, None], "invalid model id"),
    ([CUBE, "Board", -1, 0, {}, -1, None], "invalid model id"),
    ([CUBE, "Board", -1, 0, {}, [0], None], "invalid model id"),
    ([CUBE, "Board", -1, 0, {}, False, None], "invalid model id"),
    ([CUBE, "Board", -1, 0, {}, 0, b"k"], "key must be nil, an int or a string"),
    ([CUBE, "Board", -1, 0, {}, 0, 1.5], "key must be nil, an int or a string"),
    ([CUBE, "Board", -1, 0, {}, 0, True], "key must be nil, an int or a string"),
    ([CUBE, b"Board", -1, 0, {}, None, None], "type name must be a string"),
    ([CUBE, "Nope", -1, 0, {}, None, None], "not in the schema"),
    ([CUBE, "Board", -2, 0, {}, None, None], "owner must be an int ≥ -1"),
    ([CUBE, "Board", True, 0, {}, None, None], "owner must be an int ≥ -1"),
    ([CUBE, "Board", -1.0, 0, {}, None, None], "owner must be an int ≥ -1"),
    ([CUBE, "Board", -1, -1, {}, None, None], "flags must be an int ≥ 0"),
    ([CUBE, "Board", -1, False, {}, None, None], "flags must be an int ≥ 0"),
    ([CUBE, "Board", -1, None, {}, None, None], "flags must be an int ≥ 0"),
    ([CUBE, "Board", -1, 0, [], None, None], "properties must be a map"),
    ([CUBE, "Board", -1, 0, None, None, None], "properties must be a map"),
    ([CUBE, "Board", -1, 0, {0: 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {-3: 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {True: 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {1.0: 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {"1": 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {2: 1, True: 1}, None, None], "property id must be an int ≥ 1"),
    ([CUBE, "Board", -1, 0, {1: [1]}, None, None], "value must be a scalar"),
    ([CUBE, "Board", -1, 0, {1: {1: 2}}, None, None], "value must be a scalar"),
    ([CUBE, "Board", -1, 0, {1: msgspec.msgpack.Ext(1, b"x")}, None, None], "MessagePack"),
    ([CUBE, "Board", -1, 0, {}, None], "array of 7"),        # 6 fields need a parent
    ([CUBE, "Board", -1, 0], "array of 7"),
    ([CUBE, "Board", -1, 0, {}, None, None, None], "array of 7"),
    (CUBE, "array of 7"),
    ("Board", "array of 7"),
    ({1: 2}, "array of 7"),
]


@pytest.mark.parametrize(("record", "expected"), BAD_RECORDS)
def test_a_bad_record_is_refused_on_load(record: Any, expected: str) -> None:
    """Whichever way the body is read, among good records or alone."""
    for models in ([ROOM, record], [record, ROOM],
                   [ROOM] + [[dynamic_model_id(3, i), "Board", -1, 0, {2: i}, None, None]
                             for i in range(1, 50)] + [record]):
        with pytest.raises(CorruptRoomError, match=expected) as err:
            decode_room("lobby", blob_of(models))
        assert err.value.room == "lobby"


@pytest.mark.parametrize(("record", "expected"),
                         [(r, e) for r, e in BAD_RECORDS if e != "MessagePack"])
def test_a_bad_record_is_refused_on_save(record: Any, expected: str) -> None:
    if type(record) is list:
        record = tuple(tuple(f) if type(f) is list else f for f in record)
    room = SavedRoom("lobby", "Room", SCHEMA, 3, {}, [SnapshotRecord(*ROOM), record])
    with pytest.raises(StorageError, match="cannot be saved"):
        encode_room(room)


def test_models_must_be_an_array() -> None:
    with pytest.raises(CorruptRoomError, match="models must be a list"):
        decode_room("lobby", blob_of({0: ROOM}))


def test_a_bad_header_is_refused_with_good_records() -> None:
    with pytest.raises(CorruptRoomError, match="property 1 of Room"):
        decode_room("lobby", blob_of([ROOM], schema={"Room": {1: ["title", "str", 1]}}))
    with pytest.raises(CorruptRoomError, match="created counter"):
        decode_room("lobby", blob_of([ROOM], created={2: -1}))


# ----------------------------------------------------------------------------- fast = authority

FUZZ = settings(max_examples=600, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ints = st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**64 - 1), st.booleans())
anything = st.one_of(ints, st.floats(allow_nan=False), st.text(max_size=3),
                     st.binary(max_size=3), st.none(),
                     st.tuples(ints, ints), st.tuples(ints, ints, ints), st.tuples(ints),
                     st.lists(ints, max_size=2), st.dictionaries(ints, ints, max_size=2))
good_ids = st.one_of(st.integers(0, 2**40), st.tuples(st.integers(0, 9), st.integers(1, 9)),
                     st.tuples(st.integers(0, 9), st.integers(1, 9), st.integers(1, 9)))
good_props = st.dictionaries(st.integers(1, 4), st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=3),
    st.binary(max_size=3), st.none(), st.booleans()), max_size=4)
hashable = st.one_of(ints, st.floats(allow_nan=False), st.text(max_size=3),
                     st.binary(max_size=3), st.none(), st.tuples(ints, ints))
bad_props = st.tuples(good_props, hashable, anything).map(lambda t: {**t[0], t[1]: t[2]})
good_records = st.tuples(
    good_ids, st.sampled_from(["Room", "Board"]), st.integers(-1, 3), st.integers(0, 7),
    good_props, st.one_of(st.none(), good_ids),
    st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)))


def _mutated(args: tuple[tuple[Any, ...], int, Any]) -> tuple[Any, ...]:
    rec, i, value = args
    return (*rec[:i], value, *rec[i + 1:])


#: Well-formed records, each sometimes with one field (or one property) gone wrong, short
#: format-1 records, and anything at all.
records = st.one_of(
    good_records,
    st.tuples(good_records, st.integers(0, 6), anything).map(_mutated),
    st.tuples(good_records, st.just(4), bad_props).map(_mutated),
    good_records.map(lambda r: r[:5]),
    good_records.map(lambda r: r[:6]),
    st.lists(anything, max_size=8).map(tuple),
    anything)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except (ProtocolError, codec._Malformed, CorruptRoomError) as exc:
        return "refused", str(exc)


@FUZZ
@given(records)
def test_check_snapshot_record_fast_path_is_the_field_by_field_check(rec: Any) -> None:
    fast, slow = outcome(check_snapshot_record, rec), outcome(_check_field_by_field, rec)
    assert fast == slow
    if fast[0] == "ok":
        assert type(fast[1]) is SnapshotRecord


@FUZZ
@given(st.lists(records, max_size=4))
def test_the_bulk_check_passes_what_the_record_check_passes(models: list[Any]) -> None:
    """codec._check_models (one expression per record) against _check_record (padding, then
    check_snapshot_record and the schema test) record by record."""
    bulk = outcome(codec._check_models, models, SCHEMA)
    one_by_one = outcome(lambda: [codec._check_record(rec, SCHEMA) for rec in models])
    assert bulk == one_by_one
    if bulk[0] == "ok":
        assert all(type(rec) is SnapshotRecord for rec in bulk[1])


def as_stored(value: Any) -> Any:
    """``value`` as MessagePack can carry it (ints out of its range as strings)."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    if type(value) in (tuple, list):
        return [as_stored(v) for v in value]
    if type(value) is dict:
        return {as_stored(k): as_stored(v) for k, v in value.items()
                if type(as_stored(k)) is not list}
    return value


@FUZZ
@given(st.lists(records, max_size=4),
       st.sampled_from([SCHEMA, {"Room": {}}, {"Room": {1: ("t", "str", True), 0: ("x", "int",
                                                                                   True)}}]))
def test_the_typed_read_passes_what_the_checked_read_passes(models: list[Any],
                                                            schema: Any) -> None:
    """codec._typed_body (msgspec's types, then what they cannot say) against
    codec._checked_body (msgpack, then record by record): the same room or refused."""
    body = memoryview(blob_of([ROOM, *map(as_stored, models)], schema=schema))[10:]
    typed = codec._typed_body(body)
    checked = outcome(codec._checked_body, "lobby", body)
    if typed is not None:
        assert checked[0] == "ok", checked
        room = checked[1]
        assert (typed.name, typed.root_type, typed.schema, typed.next_client_id,
                typed.created) == (room.name, room.root_type, room.schema,
                                   room.next_client_id, room.created)
        assert typed.models == room.models
        for a, b in zip(typed.models, room.models, strict=True):
            assert type(a) is type(b) is SnapshotRecord
            assert [type(v) for v in a] == [type(v) for v in b]
            assert [type(v) for v in a.props.values()] == [type(v) for v in b.props.values()]
