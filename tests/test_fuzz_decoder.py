"""Fuzzing the decoders: whatever bytes arrive, decoding returns a message or raises
ProtocolError, nothing else, and never hangs."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings

from rtecs.errors import ProtocolError
from rtecs.protocol import (
    CREATE,
    DESTROY,
    Batch,
    Bye,
    Error,
    Hello,
    JoinEntry,
    LeaveEntry,
    Ping,
    Pong,
    Redirect,
    Resume,
    Resumed,
    Resync,
    Schema,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    decode_client_message,
    decode_server_message,
    encode,
)

FUZZ = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CLIENT_TYPES = (Hello, Resume, Update, Ping, Bye, Resync, Schema)
SERVER_TYPES = (Welcome, Resumed, Batch, Pong, Error, Redirect)
KINDS = [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]


def check(data: bytes, *, events: bool = True) -> None:
    """Decode in both directions: a well-formed message or ProtocolError, nothing else.
    (``events`` feeds hypothesis's statistics: which checks the inputs reach.)"""
    for decode, types in ((decode_client_message, CLIENT_TYPES),
                          (decode_server_message, SERVER_TYPES)):
        try:
            message = decode(data)
        except ProtocolError as exc:
            assert str(exc)
            if events:
                event(f"{decode.__name__}: {str(exc).split(' (got')[0][:40]}")
            continue
        if events:
            event(f"{decode.__name__}: ok {type(message).__name__}")
        assert isinstance(message, types)
        again = encode(message)  # what decodes must be sendable, and decode the same
        assert encode(decode(again)) == again


# ----------------------------------------------------------------------------- valid messages

ints = st.one_of(st.integers(-3, 300), st.integers(-(2**63), 2**64 - 1))
texts = st.text(max_size=8)
room_names = st.text(st.characters(categories=["L", "N", "P", "S"], include_characters=" "),
                     min_size=1, max_size=8)
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts, st.binary(max_size=8))
model_ids = st.one_of(st.integers(0, 2**40),
                      st.tuples(st.integers(0, 99), st.integers(1, 9)),
                      st.tuples(st.integers(0, 99), st.integers(1, 9), st.integers(1, 9)))
pairs = st.one_of(st.tuples(st.integers(0, 300), scalars),
                  st.tuples(st.just(CREATE), st.tuples(texts, st.integers(0, 7))),
                  st.tuples(st.just(DESTROY), st.none()))
runs = st.tuples(model_ids, st.lists(pairs, min_size=1, max_size=3)).map(
    lambda t: [t[0], *(x for p in t[1] for x in p)])
changes = st.lists(runs, max_size=3)
schema = st.dictionaries(texts, st.dictionaries(
    st.integers(1, 99), st.tuples(texts, st.sampled_from(["int", "str?", "model:X"]),
                                  st.booleans()), max_size=3), max_size=2)
valid_messages = st.one_of(
    st.builds(Hello, st.integers(0, 9), room_names, texts, schema, st.none() | texts),
    st.builds(Update, st.integers(1, 2**32), changes, st.integers(1, 2**32)),
    st.builds(Schema, schema),
    st.builds(Ping, st.floats(), st.integers(0, 2**40)),
    st.just(Bye()),
    st.builds(Welcome, st.integers(1, 99), st.integers(0, 99), st.floats(),
              st.lists(st.builds(SnapshotRecord, model_ids, texts, st.integers(-1, 9),
                                 st.integers(0, 7),
                                 st.dictionaries(st.integers(1, 99), scalars, max_size=3),
                                 st.none() | model_ids, st.none() | ints | texts),
                       max_size=3),
              st.lists(st.integers(1, 99), max_size=3), st.integers(1, 99), st.integers(0, 99),
              st.dictionaries(texts, st.integers(1, 2**40), max_size=2),
              st.binary(max_size=16), st.binary(max_size=32), st.integers(0, 2**40)),
    st.builds(Resume, room_names, st.binary(max_size=16), st.binary(max_size=32),
              st.integers(1, 99), st.integers(0, 99), st.integers(0, 2**40)),
    st.builds(Resumed, st.integers(1, 99), st.integers(1, 99), st.integers(0, 99),
              st.integers(0, 99), st.floats(), st.integers(0, 2**40), st.binary(max_size=32),
              st.dictionaries(texts, st.integers(1, 2**40), max_size=2)),
    st.builds(Batch, st.integers(0, 99), st.floats(), st.lists(st.one_of(
        st.builds(UpdateEntry, st.integers(0, 9), st.integers(0, 9), changes,
                  st.lists(st.tuples(model_ids, st.integers(-2, 9)), max_size=2)),
        st.builds(JoinEntry, st.integers(1, 99)),
        st.builds(LeaveEntry, st.integers(1, 99))), max_size=3)),
    st.builds(Pong, st.floats(), st.floats(), st.integers(0, 2**40)),
    st.builds(Error, texts, texts, st.booleans()),
    st.builds(Redirect, st.text(min_size=1, max_size=8), room_names),
)

# msgpack-valid objects of any shape
leaves = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts, st.binary(max_size=8))
hashable_keys = st.one_of(st.none(), st.booleans(), ints, texts, st.binary(max_size=4))
anything = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(hashable_keys, children, max_size=4)),
    max_leaves=25,
)


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


# ----------------------------------------------------------------------------- fuzz tests

@pytest.mark.timeout(60)
@settings(FUZZ, max_examples=2000)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data)


@pytest.mark.timeout(60)
@FUZZ
@given(st.sampled_from([b"\x92", b"\x93", b"\x94", b"\x95", b"\x96", b"\xdc\x00\x06"]),
       st.sampled_from(KINDS), st.binary(max_size=200))
def test_random_bytes_after_a_valid_header(header: bytes, kind: int, rest: bytes) -> None:
    check(header + bytes([kind]) + rest)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(valid_messages)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC1, 0xC2, 0xC3,
                                            0xCC, 0xD0, 0xD9, 0xDC, 0xDE, 0xFF]))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 4))]
    return bytes(data)


@pytest.mark.timeout(60)
@FUZZ
@given(mutated())
def test_mutated_valid_messages(data: bytes) -> None:
    check(data)


@pytest.mark.timeout(60)
@FUZZ
@given(st.one_of(anything,
                 st.tuples(st.sampled_from(KINDS), st.lists(anything, max_size=6)).map(
                     lambda t: [t[0], *t[1]])))
def test_msgpack_valid_objects_of_any_shape(obj: Any) -> None:
    check(pack(obj))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, list):
        for i, child in enumerate(node):
            found.extend(_paths(child, (*path, i)))
    elif isinstance(node, dict):
        for key, child in node.items():
            found.extend(_paths(child, (*path, key)))
    return found


def _replace(node: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    node[path[0]] = _replace(node[path[0]], path[1:], new)
    return node


@pytest.mark.timeout(60)
@FUZZ
@given(st.data())
def test_valid_messages_with_one_part_replaced(data: st.DataObject) -> None:
    """Structure-aware: every field of every message kind gets a wrong-shaped value."""
    message = data.draw(valid_messages)
    tree = msgpack.unpackb(encode(message), raw=False, strict_map_key=False)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(_paths(tree)[1:]))  # the root is tested above
        tree = _replace(tree, path, data.draw(anything))
    check(pack(tree))


@pytest.mark.timeout(60)
@FUZZ
@given(valid_messages)
def test_valid_messages_decode_in_exactly_one_direction(message: Any) -> None:
    data = encode(message)
    client = isinstance(message, CLIENT_TYPES)
    decoded = (decode_client_message if client else decode_server_message)(data)
    assert type(decoded) is type(message)
    with pytest.raises(ProtocolError):
        (decode_server_message if client else decode_client_message)(data)
    for cut in range(len(data)):  # every proper prefix is malformed
        with pytest.raises(ProtocolError):
            (decode_client_message if client else decode_server_message)(data[:cut])


# ----------------------------------------------------------------------------- deep nesting

def _nested(depth: int, leaf: bytes = b"\xc0", header: bytes = b"\x91") -> bytes:
    return header * depth + leaf


@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [10, 500, 900, 1000, 1020, 1023, 1024, 2000, 100_000])
def test_deeply_nested_values_in_every_position(depth: int) -> None:
    """MessagePack allows ~1024 levels of nesting; error reporting must not recurse into them
    (a RecursionError from repr() is not a ProtocolError)."""
    deep = _nested(depth)
    deep_map = _nested(depth, header=b"\x81\x01")
    frames = [
        deep, deep_map,
        b"\x93\x02\x01" + deep,                        # update: changes
        b"\x93\x02\x01\x91" + deep,                    # update: a run
        b"\x93\x02\x01\x91\x93" + deep + b"\x01\x02",  # update: a model id
        b"\x93\x02\x01\x91\x93\x00\x01" + deep,        # update: a value
        b"\x93\x02\x01\x91\x93\x05\xff" + deep,        # update: a create
        b"\x92\x03" + deep,                            # ping
        b"\x96\x01\x01\xa1r\xa1R\x80" + deep,          # hello: token
        b"\x96\x01\x01\xa1r\xa1R" + deep_map,          # hello: schema
        b"\x94\x0b\x01\x00" + deep,                    # batch: entries
        b"\x94\x0b\x01\x00\x91" + deep,                # batch: an entry
        b"\x94\x0b\x01\x00\x91\x95\x00\x01\x01\x90" + deep,  # batch: rejected
        b"\x96\x0a\x01\x00\x00" + deep + b"\x90",      # welcome: snapshot
        b"\x96\x0a\x01\x00\x00\x91\x95\x00\xa1R\xff\x00" + deep + b"\x90",  # welcome: props
        b"\x94\x0d\xa1x\xa1y" + deep,                  # error: fatal
        b"\x93\x0c\x00" + deep,                        # pong
        b"\x93\x0e" + deep + b"\xa1r",                 # redirect: endpoint
        b"\x93\x0e\xa1e" + deep,                       # redirect: room
    ]
    for frame in frames:
        check(frame, events=False)


@pytest.mark.timeout(60)
def test_huge_declared_lengths_fail_fast() -> None:
    for frame in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                  b"\xc6\xff\xff\xff\xff", b"\x93\x02\x01\xdd\x00\x0f\xff\xff",
                  b"\xc9\x00\x00\x00\x05\x01abcde", b"\xd6\xff\x00\x00\x00\x00",
                  b"\xc7\x00\x05", b"\x93\x02\x01\x91\x93\x00\x01\xc7\x00\x05"):
        check(frame, events=False)
