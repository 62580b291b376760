"""The wire codec (rtecs.protocol): round trips, strict decoding, limits, ids, value coercion."""

from __future__ import annotations

import enum
import re
from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import given, settings

from rtecs.errors import ProtocolError
from rtecs.model import RealtimeModel, prop
from rtecs.protocol import (
    CREATE,
    DEFAULT_LIMITS,
    DESTROY,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Error,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    Ping,
    Pong,
    Redirect,
    Resume,
    Resumed,
    Schema,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    check_tag,
    coerce_value,
    decode_client_message,
    decode_server_message,
    dynamic_model_id,
    encode,
    is_model_id,
    split_dynamic_model_id,
)

# ----------------------------------------------------------------------------- strategies

U64 = 2**64 - 1
I64 = -(2**63)
TAGS = ["bool", "int", "float", "str", "bytes", "int?", "str?", "float?", "model:Child"]

texts = st.text(max_size=12)
room_names = st.text(st.characters(categories=["L", "N", "P", "S"], include_characters=" "),
                     min_size=1, max_size=12)
ints64 = st.integers(I64, U64)
floats = st.floats(allow_nan=False)
scalars = st.one_of(st.none(), st.booleans(), ints64, floats, texts, st.binary(max_size=12))
model_ids = st.one_of(
    st.integers(0, U64),
    st.lists(st.integers(1, 300), min_size=1, max_size=3).flatmap(
        lambda rest: st.integers(0, 2**40).map(lambda top: (top, *rest))),
)
flags = st.integers(0, 7)


@st.composite
def runs(draw: st.DrawFn) -> tuple[Any, ...]:
    pairs = draw(st.lists(st.one_of(
        st.tuples(st.integers(OWNER, 500), scalars),
        st.tuples(st.just(CREATE), st.tuples(texts, flags)),
        st.tuples(st.just(DESTROY), st.none()),
    ), min_size=1, max_size=4))
    return (draw(model_ids), *(x for pair in pairs for x in pair))


changes = st.lists(runs(), max_size=4).map(tuple)
rejected = st.lists(st.tuples(model_ids, st.integers(DESTROY, 500)), max_size=3).map(tuple)
schemas = st.dictionaries(
    texts, st.dictionaries(st.integers(1, 10_000),
                           st.tuples(texts, st.sampled_from(TAGS), st.booleans()), max_size=4),
    max_size=3)
snapshot_records = st.builds(SnapshotRecord, model_ids, texts, st.integers(-1, 2**32),
                             st.integers(0, 7),
                             st.dictionaries(st.integers(1, 10_000), scalars, max_size=4),
                             st.none() | model_ids, st.none() | st.integers(0, U64) | texts)

client_messages = st.one_of(
    st.builds(Hello, st.integers(0, U64), room_names, texts, schemas, st.none() | texts),
    st.builds(Update, st.integers(1, U64), changes, st.integers(1, U64)),
    st.builds(Ping, floats, st.integers(0, U64)),
    st.just(Bye()),
    st.builds(Schema, schemas),
    st.builds(Resume, room_names, st.binary(max_size=16), st.binary(max_size=32),
              st.integers(1, U64), st.integers(0, U64), st.integers(0, U64)),
)
entries = st.one_of(
    st.builds(UpdateEntry, st.integers(0, U64), st.integers(0, U64), changes, rejected),
    st.builds(JoinEntry, st.integers(1, U64)),
    st.builds(LeaveEntry, st.integers(1, U64)),
)
server_messages = st.one_of(
    st.builds(Welcome, st.integers(1, U64), st.integers(0, U64), floats,
              st.lists(snapshot_records, max_size=4).map(tuple),
              st.lists(st.integers(1, U64), max_size=4).map(tuple), st.integers(1, U64),
              st.integers(0, U64), st.dictionaries(texts, st.integers(1, U64), max_size=3),
              st.binary(max_size=16), st.binary(max_size=32), st.integers(0, U64)),
    st.builds(Resumed, st.integers(1, U64), st.integers(1, U64), st.integers(0, U64),
              st.integers(0, U64), floats, st.integers(0, U64), st.binary(max_size=32),
              st.dictionaries(texts, st.integers(1, U64), max_size=3)),
    st.builds(Batch, st.integers(0, U64), floats, st.lists(entries, max_size=4)),
    st.builds(Pong, floats, floats, st.integers(0, U64)),
    st.builds(Error, st.sampled_from(list(ErrorCode)) | texts, texts, st.booleans()),
    st.builds(Redirect, texts.filter(bool), room_names),
)


def canon(obj: Any) -> Any:
    """Lists and tuples alike (the decoder returns tuples); message types kept apart."""
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return (type(obj).__name__, *(canon(x) for x in obj))
    if isinstance(obj, list | tuple):
        return tuple(canon(x) for x in obj)
    if isinstance(obj, dict):
        return {canon(k): canon(v) for k, v in obj.items()}
    return (type(obj).__name__, obj) if isinstance(obj, bool | int | float) else obj


# ----------------------------------------------------------------------------- round trips

@settings(max_examples=300, deadline=None)
@given(client_messages)
def test_client_messages_round_trip(message: Any) -> None:
    data = encode(message)
    decoded = decode_client_message(data)
    assert type(decoded) is type(message)
    assert canon(decoded) == canon(message)
    assert encode(decoded) == data
    with pytest.raises(ProtocolError, match="unknown server message kind"):
        decode_server_message(data)


@settings(max_examples=300, deadline=None)
@given(server_messages)
def test_server_messages_round_trip(message: Any) -> None:
    data = encode(message)
    decoded = decode_server_message(data)
    assert type(decoded) is type(message)
    assert canon(decoded) == canon(message)
    assert encode(decoded) == data
    with pytest.raises(ProtocolError, match="unknown client message kind"):
        decode_client_message(data)


def test_every_kind_round_trips_by_example() -> None:
    schema = {"Room": {1: ("score", "int", True), 2: ("pos", "model:Vec", True)},
              "Vec": {1: ("x", "float?", False)}}
    change_list: list[list[Any]] = [
        [0, 1, 5, OWNER, 3], [(0, 2), 1, None], [10005, CREATE, ["Vec", 3], 1, 1.5],
        [7, DESTROY, None], [(17, 2, 1), 3, b"\x00\xff", 4, "é", 5, True]]
    client: list[Any] = [Hello(PROTOCOL_VERSION, "lobby", "Room", schema, "tok"),
              Hello(PROTOCOL_VERSION, "lobby", "Room", {}, None),
              Update(1, change_list), Update(2, [], 7), Ping(12.5), Ping(1.0, 3), Bye(),
              Resume("lobby", b"s" * 16, b"k" * 32, 2, 40, 5),
              Schema({"Vec2": {1: ("y", "f32", False)}})]
    server: list[Any] = [
        Welcome(3, 40, 99.5, [SnapshotRecord(0, "Room", -1, 0, {1: 5}),
                              SnapshotRecord((0, 2), "Vec", 3, 0, {})], [1, 3],
                2, 17, {"update_bytes": 128_000, "datastore_bytes": 10_000_000},
                b"s" * 16, b"k" * 32, 5),
        Resumed(3, 2, 17, 40, 99.5, 5, b"n" * 32, {"update_bytes": 128_000}),
        Batch(41, 100.0, [UpdateEntry(3, 2, change_list, [(0, 1), ((0, 2), 1)]),
                          UpdateEntry(0, 0, [[7, DESTROY, None]], []),
                          JoinEntry(4), LeaveEntry(1)]),
        Batch(42, 100.5, []),
        Pong(12.5, 100.25, 41),
        Error(ErrorCode.SEQUENCE, "gap after 3", False),
        Error("kicked", "bye", True),
        Error(ErrorCode.UNAVAILABLE, "room moved", True),
        Redirect("tcp://10.0.0.7:7777", "lobby"),
        Redirect("tcp://[::1]:1", "r" * 128),
    ]
    for message in client:
        assert canon(decode_client_message(encode(message))) == canon(message)
    for message in server:
        assert canon(decode_server_message(encode(message))) == canon(message)
    batch = decode_server_message(encode(server[2]))
    assert isinstance(batch, Batch)
    assert [type(e) for e in batch.entries] == [UpdateEntry, UpdateEntry, JoinEntry, LeaveEntry]
    first = batch.entries[0]
    assert isinstance(first, UpdateEntry)
    assert first.changes[1][0] == (0, 2)  # arrays decode as tuples: hashable ids
    assert hash(first.changes[4][0]) == hash((17, 2, 1))


def test_bye_encodes_as_a_one_element_array() -> None:
    assert msgpack.unpackb(encode(Bye())) == [4]


def test_encode_accepts_a_raw_array_and_refuses_unsendable_values() -> None:
    assert decode_client_message(encode((2, 1, [[0, 1, 2]], 3))) == Update(1, ((0, 1, 2),), 3)
    with pytest.raises(TypeError, match=r"cannot send.*object"):
        encode(Update(1, [[0, 1, object()]]))


# ----------------------------------------------------------------------------- strict decoding

def raw(*payload: Any) -> bytes:
    data: bytes = msgpack.packb(list(payload), use_bin_type=True)
    return data


def wel(*fields: Any) -> bytes:
    """A WELCOME frame with these first eight fields and no session."""
    return raw(10, *fields, b"", b"", 0)


CLIENT_BAD: list[tuple[bytes, str]] = [
    (b"\xc1", "malformed MessagePack"),
    (encode(Ping(1.0)) + b"\x00", "malformed MessagePack"),  # trailing bytes
    (msgpack.packb(5), "a message must be a non-empty array"),
    (msgpack.packb({2: 1}), "a message must be a non-empty array"),
    (raw(), "a message must be a non-empty array"),
    (raw(99), "unknown client message kind"),
    (raw(7, "lobby", b"s", b"k", 1, 0), "resume must be an array of 7"),
    (raw(7, 5, b"s", b"k", 1, 0, 0), "room must be a string"),
    (raw(7, "lobby", "s", b"k", 1, 0, 0), "session id must be bytes"),
    (raw(7, "lobby", b"s", None, 1, 0, 0), "session secret must be bytes"),
    (raw(7, "lobby", b"s", b"k", 0, 0, 0), "resume epoch must be an int ≥ 1"),
    (raw(7, "lobby", b"s", b"k", 1, -1, 0), "resume room seq must be an int ≥ 0"),
    (raw(7, "lobby", b"s", b"k", 1, 0, 1.0), "incarnation must be an int ≥ 0"),
    (raw(True, 1, "r", "R", {}, None), "unknown client message kind"),
    (raw(2.0, 1, []), "unknown client message kind"),
    (raw("2", 1, []), "unknown client message kind"),
    (raw(11, 1, 0.0, []), "unknown client message kind"),
    # update
    (raw(2, 1, []), r"update must be an array of 4"),
    (raw(2, 1, [], 1, 5), r"update must be an array of 4"),
    (raw(2, 1, [], 0), r"update epoch must be an int ≥ 1"),
    (raw(2, 1, [], True), r"update epoch must be an int ≥ 1"),
    (raw(2, 1, [], None), r"update epoch must be an int ≥ 1"),
    (raw(2, 0, [], 1), r"update seq must be an int ≥ 1"),
    (raw(2, True, [], 1), r"update seq must be an int ≥ 1"),
    (raw(2, 1.0, [], 1), r"update seq must be an int ≥ 1"),
    (raw(2, 1, {}, 1), r"changes must be an array"),
    (raw(2, 1, [5], 1), r"a change run must be \[model_id, key, value, \.\.\.\] of odd length"),
    (raw(2, 1, [[0, 1]], 1), r"odd length"),
    (raw(2, 1, [[0]], 1), r"odd length"),
    (raw(2, 1, [[0, 1, 2, 3]], 1), r"odd length"),
    (raw(2, 1, [[-1, 1, 2]], 1), r"invalid model id \(got -1\)"),
    (raw(2, 1, [[[0], 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[[0, 0], 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[[-1, 1], 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[[0, True], 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [["x", 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[1.0, 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[True, 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[None, 1, 2]], 1), r"invalid model id"),
    (raw(2, 1, [[0, -3, 2]], 1), r"a change key must be an int ≥ -2 \(got -3\)"),
    (raw(2, 1, [[0, True, 2]], 1), r"a change key must be an int ≥ -2"),
    (raw(2, 1, [[0, "x", 2]], 1), r"a change key must be an int ≥ -2"),
    (raw(2, 1, [[0, 1.0, 2]], 1), r"a change key must be an int ≥ -2"),
    (raw(2, 1, [[5, CREATE, "T"]], 1), r"a create must carry \[type_name, flags\]"),
    (raw(2, 1, [[5, CREATE, ["T"]]], 1), r"a create must carry"),
    (raw(2, 1, [[5, CREATE, ["T", 8]]], 1), r"a create must carry"),
    (raw(2, 1, [[5, CREATE, ["T", -1]]], 1), r"a create must carry"),
    (raw(2, 1, [[5, CREATE, ["T", True]]], 1), r"a create must carry"),
    (raw(2, 1, [[5, CREATE, [1, 0]]], 1), r"a create must carry"),
    (raw(2, 1, [[5, CREATE, None]], 1), r"a create must carry"),
    (raw(2, 1, [[0, 1, [1, 2]]], 1), r"a value must be nil, bool, int, float, str or bytes"),
    (raw(2, 1, [[0, 1, {1: 2}]], 1), r"a value must be nil"),
    (raw(2, 1, [[0, 1, 5, 2, [1]]], 1), r"a value must be nil"),
    # ping
    (raw(3), r"ping must be an array of 3"),
    (raw(3, 1.0), r"ping must be an array of 3"),
    (raw(3, 1.0, 2, 3), r"ping must be an array of 3"),
    (raw(3, "now", 0), r"ping time must be a number \(got 'now'\)"),
    (raw(3, True, 0), r"ping time must be a number"),
    (raw(3, None, 0), r"ping time must be a number"),
    (raw(3, 1.0, -1), r"ping epoch must be an int ≥ 0"),
    (raw(3, 1.0, 2.0), r"ping epoch must be an int ≥ 0"),
    # hello
    (raw(1, 1, "r", "R", {}), r"hello must be an array of 6"),
    (raw(1, -1, "r", "R", {}, None), r"protocol version must be an int ≥ 0"),
    (raw(1, "1", "r", "R", {}, None), r"protocol version must be an int ≥ 0"),
    (raw(1, 1, 5, "R", {}, None), r"room must be a string"),
    (raw(1, 1, b"r", "R", {}, None), r"room must be a string"),
    (raw(1, 1, "", "R", {}, None), r"a room name has 1 to 128 characters, got 0"),
    (raw(1, 1, "r" * 129, "R", {}, None), r"a room name has 1 to 128 characters, got 129"),
    (raw(1, 1, "r" * 900_000, "R", {}, None), r"a room name has 1 to 128 characters"),
    (raw(1, 1, "lob\x00by", "R", {}, None), r"room must be printable .*'lob\\x00by'"),
    (raw(1, 1, "lob\nby", "R", {}, None), r"room must be printable"),
    (raw(1, 1, "r", None, {}, None), r"root type must be a string"),
    (raw(1, 1, "r", "R", [], None), r"schema must be a map"),
    (raw(1, 1, "r", "R", {1: {}}, None), r"a schema type name must be a string"),
    (raw(1, 1, "r", "R", {"R": []}, None), r"schema of R must be a map"),
    (raw(1, 1, "r", "R", {"R": {0: ["a", "int", True]}}, None),
     r"a property id of R must be an int ≥ 1 \(got 0\)"),
    (raw(1, 1, "r", "R", {"R": {"1": ["a", "int", True]}}, None), r"a property id of R"),
    (raw(1, 1, "r", "R", {"R": {1: ["a", "int"]}}, None),
     r"property 1 of R must be \[name, tag, reliable\]"),
    (raw(1, 1, "r", "R", {"R": {1: ["a", "int", 1]}}, None), r"property 1 of R must be"),
    (raw(1, 1, "r", "R", {"R": {1: [1, "int", True]}}, None), r"property 1 of R must be"),
    (raw(1, 1, "r", "R", {"R": {1: ["a", 3, True]}}, None), r"property 1 of R must be"),
    (raw(1, 1, "r", "R", {"R": {1: "a"}}, None), r"property 1 of R must be"),
    (raw(1, 1, "r", "R", {}, 7), r"token must be a string \(got 7\)"),
    (raw(1, 1, "r", "R", {}, b"tok"), r"token must be a string"),
    # schema
    (raw(6), r"schema must be an array of 2"),
    (raw(6, {}, 1), r"schema must be an array of 2"),
    (raw(6, []), r"schema must be a map"),
    (raw(6, {"R": {0: ["a", "int", True]}}), r"a property id of R must be an int ≥ 1"),
]


@pytest.mark.parametrize(("data", "expected"), CLIENT_BAD)
def test_client_decoder_rejects(data: bytes, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        decode_client_message(data)


SERVER_BAD: list[tuple[bytes, str]] = [
    (b"", "malformed MessagePack"),
    (b"\x94\x0b", "malformed MessagePack"),  # truncated
    (msgpack.packb("hello"), "a message must be a non-empty array"),
    (raw(), "a message must be a non-empty array"),
    (raw(2, 1, []), "unknown server message kind"),
    (raw(False, 1), "unknown server message kind"),
    (raw(11.0, 1, 0.0, []), "unknown server message kind"),
    (raw(None), "unknown server message kind"),
    # batch
    (raw(11, 1, 0.0), r"batch must be an array of 4"),
    (raw(11, -1, 0.0, []), r"room seq must be an int ≥ 0"),
    (raw(11, 1, "t", []), r"server time must be a number"),
    (raw(11, 1, 0.0, {}), r"batch entries must be an array"),
    (raw(11, 1, 0.0, [5]), r"a batch entry must be an array"),
    (raw(11, 1, 0.0, [[]]), r"unknown batch entry"),
    (raw(11, 1, 0.0, [[3, 1]]), r"unknown batch entry \(got \(3, 1\)\)"),
    (raw(11, 1, 0.0, [[0, 1, 1, []]]), r"unknown batch entry"),
    (raw(11, 1, 0.0, [[1, 1, 2]]), r"unknown batch entry"),
    (raw(11, 1, 0.0, [[0, -1, 1, [], []]]), r"sender must be an int ≥ 0"),
    (raw(11, 1, 0.0, [[0, 1, -1, [], []]]), r"seq must be an int ≥ 0"),
    (raw(11, 1, 0.0, [[0, 1, 1, [[0, 1]], []]]), r"odd length"),
    (raw(11, 1, 0.0, [[0, 1, 1, [], {}]]), r"rejected must be an array"),
    (raw(11, 1, 0.0, [[0, 1, 1, [], [[0]]]]), r"a rejection must be \[model_id, key\]"),
    (raw(11, 1, 0.0, [[0, 1, 1, [], [[-5, 1]]]]), r"a rejection must be"),
    (raw(11, 1, 0.0, [[0, 1, 1, [], [[0, "k"]]]]), r"a rejection must be"),
    (raw(11, 1, 0.0, [[1, 0]]), r"client id must be an int ≥ 1"),
    (raw(11, 1, 0.0, [[2, "x"]]), r"client id must be an int ≥ 1"),
    # pong
    (raw(12, 1.0, 2.0), r"pong must be an array of 4"),
    (raw(12, "a", 1.0, 0), r"ping time must be a number"),
    (raw(12, 1.0, [1], 0), r"server time must be a number"),
    (raw(12, 1.0, 2.0, -1), r"pong room seq must be an int ≥ 0"),
    (raw(12, 1.0, 2.0, 1.5), r"pong room seq must be an int ≥ 0"),
    # welcome
    (raw(10, 1, 0, 0.0, [], []), r"welcome must be an array of 12"),
    (wel(1, 0, 0.0, [], [], 0, 0, {}), r"welcome epoch must be an int ≥ 1"),
    (wel(1, 0, 0.0, [], [], 1, -1, {}), r"last applied must be an int ≥ 0"),
    (wel(1, 0, 0.0, [], [], 1, 0, []), r"announced limits must map names to positive ints"),
    (wel(1, 0, 0.0, [], [], 1, 0, {"update_bytes": 0}), r"announced limits must map"),
    (wel(1, 0, 0.0, [], [], 1, 0, {1: 5}), r"announced limits must map"),
    (wel(0, 0, 0.0, [], [], 1, 0, {}), r"client id must be an int ≥ 1"),
    (wel(1, -1, 0.0, [], [], 1, 0, {}), r"room seq must be an int ≥ 0"),
    (wel(1, 0, None, [], [], 1, 0, {}), r"server time must be a number"),
    (wel(1, 0, 0.0, {}, [], 1, 0, {}), r"snapshot must be an array"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0]], [], 1, 0, {}),
     r"a snapshot record must be an array of 7"),
    (wel(1, 0, 0.0, [[-1, "R", -1, 0, {}, None, None]], [], 1, 0, {}),
     r"invalid model id in snapshot"),
    (wel(1, 0, 0.0, [[0, 5, -1, 0, {}, None, None]], [], 1, 0, {}),
     r"snapshot type name must be a string"),
    (wel(1, 0, 0.0, [[0, "R", -2, 0, {}, None, None]], [], 1, 0, {}),
     r"snapshot owner must be an int ≥ -1"),
    (wel(1, 0, 0.0, [[0, "R", -1, -1, {}, None, None]], [], 1, 0, {}),
     r"snapshot flags must be an int ≥ 0"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0, [], None, None]], [], 1, 0, {}),
     r"snapshot properties must be a map"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0, {0: 1}, None, None]], [], 1, 0, {}),
     r"snapshot property id must be"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0, {"a": 1}, None, None]], [], 1, 0, {}),
     r"snapshot property id must be"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0, {1: [1]}, None, None]], [], 1, 0, {}),
     r"a snapshot value must be a scalar"),
    (wel(1, 0, 0.0, [], {}, 1, 0, {}), r"clients must be an array"),
    (wel(1, 0, 0.0, [], [0], 1, 0, {}), r"client id must be an int ≥ 1"),
    (raw(10, 1, 0, 0.0, [], [], 1, 0, {}, "s", b"", 0), r"session id must be bytes"),
    (raw(10, 1, 0, 0.0, [], [], 1, 0, {}, b"", None, 0), r"session secret must be bytes"),
    (raw(10, 1, 0, 0.0, [], [], 1, 0, {}, b"", b"", -1), r"incarnation must be an int ≥ 0"),
    (wel(1, 0, 0.0, [[0, "R", -1, 0, {}, None, 1.5]], [], 1, 0, {}),
     r"snapshot key must be nil, an int or a string"),
    (wel(1, 0, 0.0, [[5, "R", -1, 0, {}, "p", None]], [], 1, 0, {}),
     r"invalid model id in snapshot"),
    # resumed
    (raw(15, 1, 1, 0, 0, 0.0, 0, b""), r"resumed must be an array of 9"),
    (raw(15, 0, 1, 0, 0, 0.0, 0, b"", {}), r"client id must be an int ≥ 1"),
    (raw(15, 1, 0, 0, 0, 0.0, 0, b"", {}), r"resumed epoch must be an int ≥ 1"),
    (raw(15, 1, 1, -1, 0, 0.0, 0, b"", {}), r"last applied must be an int ≥ 0"),
    (raw(15, 1, 1, 0, -1, 0.0, 0, b"", {}), r"room seq must be an int ≥ 0"),
    (raw(15, 1, 1, 0, 0, "t", 0, b"", {}), r"server time must be a number"),
    (raw(15, 1, 1, 0, 0, 0.0, -1, b"", {}), r"incarnation must be an int ≥ 0"),
    (raw(15, 1, 1, 0, 0, 0.0, 0, "k", {}), r"session secret must be bytes"),
    (raw(15, 1, 1, 0, 0, 0.0, 0, b"", []), r"announced limits must map"),
    # error
    (raw(13, "protocol", "bad"), r"error must be an array of 4"),
    (raw(13, "protocol", "bad", 1), r"error 'fatal' must be a bool \(got 1\)"),
    (raw(13, 5, "bad", True), r"error code must be a string"),
    (raw(13, "protocol", None, True), r"error message must be a string"),
    # redirect
    (raw(14, "tcp://h:1"), r"redirect must be an array of 3"),
    (raw(14, "tcp://h:1", "lobby", 1), r"redirect must be an array of 3"),
    (raw(14, b"tcp://h:1", "lobby"), r"redirect endpoint must be a string"),
    (raw(14, "", "lobby"), r"redirect endpoint must not be empty"),
    (raw(14, None, "lobby"), r"redirect endpoint must be a string"),
    (raw(14, "tcp://h:1", 7), r"redirect room must be a string"),
    (raw(14.0, "tcp://h:1", "lobby"), r"unknown server message kind"),
]


@pytest.mark.parametrize(("data", "expected"), SERVER_BAD)
def test_server_decoder_rejects(data: bytes, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        decode_server_message(data)


def test_decoders_refuse_non_bytes() -> None:
    for decode in (decode_client_message, decode_server_message):
        with pytest.raises(ProtocolError, match="a frame must be bytes, not str"):
            decode("\x93\x02\x01\x90")  # type: ignore[arg-type]
        with pytest.raises(ProtocolError, match="a frame must be bytes, not list"):
            decode([2, 1, []])  # type: ignore[arg-type]


def test_decoders_accept_bytearray_and_memoryview() -> None:
    data = encode(Update(3, [[0, 1, 2]]))
    assert decode_client_message(bytearray(data)) == Update(3, ((0, 1, 2),))  # type: ignore[arg-type]
    assert decode_client_message(memoryview(data)) == Update(3, ((0, 1, 2),))  # type: ignore[arg-type]


def test_error_messages_show_the_offending_value_shortened() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message(raw(3, "x" * 500, 0))
    text = str(info.value)
    assert text.startswith("ping time must be a number (got 'xxx")
    assert "..." in text
    assert len(text) < 140


def test_batch_entry_kind_must_be_an_int_not_a_bool_or_float() -> None:
    """Strict decoding: ``False``/``0.0`` equal 0 in Python but are not the entry kind 0."""
    for kind in (False, 0.0):
        with pytest.raises(ProtocolError, match="unknown batch entry"):
            decode_server_message(raw(11, 1, 0.0, [[kind, 2, 1, [], []]]))
    for kind in (True, 1.0):
        with pytest.raises(ProtocolError, match="unknown batch entry"):
            decode_server_message(raw(11, 1, 0.0, [[kind, 2]]))


def test_bye_with_extra_elements_is_rejected() -> None:
    """``BYE [4]``: strict decoding refuses any other shape."""
    assert decode_client_message(raw(4)) == Bye()
    with pytest.raises(ProtocolError, match="bye"):
        decode_client_message(raw(4, "junk"))


# ----------------------------------------------------------------------------- limits

def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_update_bytes == 125 * 1024
    assert limits.max_datastore_bytes == 10 * 1024 * 1024
    assert limits.max_frame_bytes == limits.max_datastore_bytes + 1024 * 1024


def test_update_over_the_default_limit_is_rejected_and_names_the_limit() -> None:
    big = encode(Update(1, [[0, 1, b"x" * (125 * 1024)]]))
    assert len(big) > Limits().max_update_bytes
    with pytest.raises(ProtocolError,
                       match=rf"update of {len(big)} bytes is over the limit of 128000 bytes"):
        decode_client_message(big)


def test_update_limit_is_configurable_and_inclusive() -> None:
    limits = Limits(max_update_bytes=100)
    update = Update(1, [[0, 1, b""]])
    base = len(encode(update))
    exact = encode(Update(1, [[0, 1, b"y" * (100 - base)]]))
    assert len(exact) == 100
    assert decode_client_message(exact, limits) == Update(1, ((0, 1, b"y" * (100 - base)),))
    over = encode(Update(1, [[0, 1, b"y" * (101 - base)]]))
    assert len(over) == 101
    with pytest.raises(ProtocolError, match="over the limit of 100 bytes"):
        decode_client_message(over, limits)
    # The hello has its own, larger limit.
    hello = encode(Hello(1, "r" * 128, "Room", {"Room": {1: ("title", "str", True)}}, None))
    assert len(hello) > 100
    assert isinstance(decode_client_message(hello, limits), Hello)


def test_client_frame_over_every_limit_is_rejected_before_decoding() -> None:
    limits = Limits(max_update_bytes=50, max_hello_bytes=80)
    frame = b"\xc1" * 81  # not even MessagePack: the size check comes first
    with pytest.raises(ProtocolError, match="frame of 81 bytes is over the limit of 80 bytes"):
        decode_client_message(frame, limits)


def test_server_frame_limit_follows_the_datastore_limit() -> None:
    limits = Limits(max_datastore_bytes=0)
    ok = encode(Welcome(1, 0, 0.0, [SnapshotRecord(0, "R", -1, 0, {1: b"z" * 1000})], [1]))
    assert isinstance(decode_server_message(ok, limits), Welcome)
    big = b"\xc0" * (limits.max_frame_bytes + 1)
    with pytest.raises(ProtocolError, match=f"over the limit of {limits.max_frame_bytes} bytes"):
        decode_server_message(big, limits)


# ----------------------------------------------------------------------------- model ids

@given(st.integers(1, 2**32), st.integers(1, 2**32))
def test_split_inverts_dynamic_model_id(client: int, counter: int) -> None:
    model_id = dynamic_model_id(client, counter)
    assert model_id >= 3  # never the room model
    assert split_dynamic_model_id(model_id) == (client, counter)
    assert is_model_id(model_id)


@given(st.integers(0, 2**70))
def test_dynamic_model_id_is_a_bijection(model_id: int) -> None:
    assert dynamic_model_id(*split_dynamic_model_id(model_id)) == model_id


@given(st.integers(1, 255), st.integers(1, 255))
def test_small_ids_take_at_most_three_msgpack_bytes(client: int, counter: int) -> None:
    assert len(msgpack.packb(dynamic_model_id(client, counter))) <= 3


def test_dynamic_model_id_examples() -> None:
    assert dynamic_model_id(5, 100) == 10005
    assert len(msgpack.packb(10005)) == 3
    assert dynamic_model_id(255, 255) == 65535
    ids = {dynamic_model_id(a, b) for a in range(1, 60) for b in range(1, 60)}
    assert len(ids) == 59 * 59


def test_is_model_id() -> None:
    for good in (0, 7, 2**64 - 1, (0, 1), (17, 2, 1), (0, 3, 4, 5)):
        assert is_model_id(good), good
    for bad in (-1, True, 1.0, "0", None, (), (0,), (0, 0), (-1, 1), (0, True), [0, 1],
                (0, 1.0), ("0", 1)):
        assert not is_model_id(bad), bad


# ----------------------------------------------------------------------------- values

def test_int_becomes_float() -> None:
    assert coerce_value("float", 3) == 3.0
    assert type(coerce_value("float", 3)) is float
    assert type(coerce_value("float?", -7)) is float
    assert type(coerce_value("float", 2.5)) is float


def test_bool_is_never_a_number() -> None:
    for tag in ("int", "float", "int?", "float?"):
        with pytest.raises(TypeError, match="got bool"):
            coerce_value(tag, True)
    assert coerce_value("bool", False) is False
    with pytest.raises(TypeError):
        coerce_value("bool", 1)
    with pytest.raises(TypeError):
        coerce_value("int", 1.0)


def test_ints_must_fit_in_64_bits() -> None:
    assert coerce_value("int", 2**64 - 1) == 2**64 - 1
    assert coerce_value("int", -(2**63)) == -(2**63)
    with pytest.raises(TypeError, match="does not fit in 64 bits"):
        coerce_value("int", 2**64)
    with pytest.raises(TypeError, match="does not fit in 64 bits"):
        coerce_value("int?", -(2**63) - 1)
    with pytest.raises(TypeError):
        coerce_value("float", 2**64)


def test_none_only_for_optional_tags() -> None:
    for tag in ("bool", "int", "float", "str", "bytes"):
        assert coerce_value(tag + "?", None) is None
        with pytest.raises(TypeError, match="None is not a valid"):
            coerce_value(tag, None)
    with pytest.raises(TypeError):
        coerce_value("model:Child", None)


def test_bytes_like_become_bytes() -> None:
    for value in (bytearray(b"ab"), memoryview(b"ab"), b"ab"):
        result = coerce_value("bytes", value)
        assert type(result) is bytes
        assert result == b"ab"
    assert type(coerce_value("bytes?", bytearray(b"q"))) is bytes
    with pytest.raises(TypeError):
        coerce_value("bytes", "ab")
    with pytest.raises(TypeError):
        coerce_value("str", b"ab")


def test_subclasses_of_scalars_are_refused() -> None:
    class MyStr(str):
        pass

    class MyFloat(float):
        pass

    with pytest.raises(TypeError):
        coerce_value("str", MyStr("x"))
    with pytest.raises(TypeError):
        coerce_value("float", MyFloat(1.0))
    class Level(enum.IntEnum):
        HIGH = 3

    with pytest.raises(TypeError):
        coerce_value("int", Level.HIGH)


def test_child_model_tags_take_no_value() -> None:
    with pytest.raises(TypeError, match="child model property cannot be assigned"):
        coerce_value("model:Vec", 1)


def test_str_that_cannot_be_sent_is_refused_at_write_time() -> None:
    """A lone surrogate is a Python str but not UTF-8: MessagePack cannot send it. It must be
    refused where it is written (TypeError), not later inside collect/encode."""
    with pytest.raises(TypeError):
        coerce_value("str", "\ud800")

    class Named(RealtimeModel):
        name: str = prop(1)

    m = Named()
    with pytest.raises(TypeError):
        m.name = "a\udcffb"
    assert m.name == ""


def test_check_tag() -> None:
    for tag in ("bool", "int", "float", "str", "bytes", "int?", "bytes?", "model:Vec"):
        check_tag(tag)
    for tag in ("", "list", "int??", "model:", "model:Vec?", "?", "Int"):
        with pytest.raises(ProtocolError, match=re.escape(repr(tag))):
            check_tag(tag)


def test_resync_round_trips_and_is_strict() -> None:
    from rtecs.protocol import Resync

    assert decode_client_message(encode(Resync())) == Resync()
    with pytest.raises(ProtocolError, match="resync"):
        decode_client_message(msgpack.packb([5, "junk"]))


def test_an_update_of_more_changes_than_the_limit_is_refused_before_its_changes_are_read(
        ) -> None:
    limits = Limits(max_changes_per_update=1000, max_update_bytes=1 << 20)
    at = encode(Update(1, [[0, *([2, 1] * 600)], [7, *([1, 1] * 400)]]))
    assert isinstance(decode_client_message(at, limits), Update)
    over = encode(Update(1, [[0, *([2, 1] * 600)], [7, *([1, 1] * 401)]]))
    with pytest.raises(ProtocolError, match="update of 1001 changes is over the limit of "
                                            "1000 changes") as info:
        decode_client_message(over, limits)
    assert info.value.code == ErrorCode.OVER_LIMIT
    assert DEFAULT_LIMITS.announced()["changes_per_update"] == 4096
    assert Limits().with_announced({"changes_per_update": 5, "depth": 9}) == Limits(
        max_changes_per_update=5, max_depth=9)
