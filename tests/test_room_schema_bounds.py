"""A schema is hostile input (issue 11 cases 3, 4 and 8): every bound of a room's schema is
checked before anything is merged, and a refused schema changes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_room_core import SCHEMA, hello, room_with, upd

from rtecs.protocol import CREATE, PROTOCOL_VERSION, ErrorCode, Hello, Limits, dynamic_model_id
from rtecs_server import JoinRefused, Room
from rtecs_server.schema import DEFAULT_SCHEMA_BOUNDS as BOUNDS

Spec = dict[str, dict[int, tuple[str, str, bool]]]


def refused(room: Room, schema: Spec, root: str = "Game") -> str:
    """Join with ``schema``; assert it is refused as a schema error and nothing changed."""
    before = (room.schema, room.size, room.snapshot(), room.members)
    with pytest.raises(JoinRefused) as info:
        room.join(Hello(PROTOCOL_VERSION, "lobby", root, schema), 1.0)
    assert info.value.code is ErrorCode.SCHEMA
    assert (room.schema, room.size, room.snapshot(), room.members) == before
    return info.value.message


def chain(depth: int) -> Spec:
    """``depth`` types, each declaring one child of the next."""
    spec: Spec = {"Game": {**SCHEMA["Game"], 9: ("c", "model:T1", True)}}
    for i in range(1, depth):
        spec[f"T{i}"] = {1: ("c", f"model:T{i + 1}", True)}
    spec[f"T{depth}"] = {1: ("x", "int", True)}
    return spec


def test_a_deep_chain_of_declared_children_is_refused_and_the_room_still_admits() -> None:
    room, _ = room_with(1)
    message = refused(room, {**SCHEMA, **chain(700)})
    assert "nests 65 levels" in message and "limit of 64" in message
    # exactly at the bound: the room model and 63 levels below it
    ok = room.join(hello({**SCHEMA, **chain(63)}), 1.0)
    assert ok.client_id == 2
    deepest = (0, 9, *([1] * 62))
    assert room.record(deepest) is not None and room.record((*deepest, 1)) is None


def test_a_tiny_schema_that_expands_to_many_models_is_refused_fast() -> None:
    spec: Spec = {"Game": {1: ("a", "model:T0", True), 2: ("b", "model:T0", True)}}
    for i in range(16):
        spec[f"T{i}"] = {1: ("a", f"model:T{i + 1}", True), 2: ("b", f"model:T{i + 1}", True)}
    spec["T16"] = {1: ("x", "int", True)}
    room = Room("lobby")
    started = time.perf_counter()
    message = refused(room, spec)
    assert time.perf_counter() - started < 0.5  # it used to build 131,071 models: 3.3 s
    assert "would make" in message and f"limit of {BOUNDS.max_declared_models}" in message
    assert room.size == 0 and room.snapshot() == []


def test_new_declared_children_of_existing_models_count_against_the_datastore() -> None:
    room, (a,) = room_with(1, limits=Limits(max_datastore_bytes=200_000))
    runs: list[Any] = [[dynamic_model_id(a, i), CREATE, ("Player", 0)] for i in range(1, 201)]
    room.apply_update(a, upd(1, *runs))
    room.flush(1.0)
    # every Player gaining a child of 31 models: 200 * 31 models over the 200 kB limit
    wide: Spec = {**SCHEMA, "Player": {**SCHEMA["Player"], 9: ("gear", "model:Gear", True)},
                  "Gear": {i: (f"g{i}", "model:Slot", True) for i in range(1, 31)},
                  "Slot": {1: ("n", "int", True)}}
    message = refused(room, wide)
    assert "6200" in message and "datastore limit of 200000 bytes" in message
    # the same child for a room that has room for it is fine
    small = Room("lobby", limits=Limits(max_datastore_bytes=10_000_000))
    small.join(hello(), 0.0)
    assert small.join(hello(wide), 1.0).client_id == 2


def test_schema_size_names_and_counts_are_bounded() -> None:
    room, _ = room_with(1)
    # ~60 kB of new types per hello: the fifth one takes the union over 256 kB
    for i in range(4):
        spec = {**SCHEMA, **{f"Extra{i}_{t}": {p: (f"prop_{p:04d}_{'x' * 30}", "str", True)
                                               for p in range(1, 21)} for t in range(40)}}
        room.join(hello(spec), 1.0)
    spec = {**SCHEMA, **{f"Extra4_{t}": {p: (f"prop_{p:04d}_{'x' * 30}", "str", True)
                                         for p in range(1, 21)} for t in range(40)}}
    assert "over the limit of 262144" in refused(room, spec)
    assert "1 to 128 printable" in refused(room, {**SCHEMA, "T" * 129: {}})
    assert "1 to 128 printable" in refused(room, {**SCHEMA, "Bad\x00Type": {}})
    assert "1 to 128 printable" in refused(
        room, {**SCHEMA, "Hand": {**SCHEMA["Hand"], 2: ("n" * 200, "int", True)}})
    many = {p: (f"p{p}", "int", True) for p in range(1, BOUNDS.max_props + 2)}
    assert "more than 1024 properties" in refused(room, {**SCHEMA, "Wide": many})
    types = {f"K{i}": {1: ("x", "int", True)} for i in range(BOUNDS.max_types)}
    assert "at most 1024 model types" in refused(Room("other"), {**SCHEMA, **types})
