"""float32 properties: rounded at the write, 4-byte floats on the wire both ways, the same
value on every client, and through the server's storage."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import rtecs
from harness import LocalRoom
from rtecs.protocol import F32, Welcome, encode
from rtecs_server.storage import SavedRoom, open_storage


class Pos(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, reliable=False, float32=True)
    y: float = rtecs.prop(2, reliable=False, float32=True)
    label: str = rtecs.prop(3, default="")


class WidePos(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, reliable=False)
    y: float = rtecs.prop(2, reliable=False)
    label: str = rtecs.prop(3, default="")


def f32(v: float) -> float:
    rounded: float = struct.unpack("<f", struct.pack("<f", v))[0]
    return rounded


def test_a_write_is_rounded_to_float32_at_once() -> None:
    p = Pos()
    p.x = 0.1
    assert p.x == f32(0.1) != 0.1
    assert type(p.x) is float
    with pytest.raises(TypeError, match="float32"):
        p.y = 1e39


def test_float32_needs_a_float_property() -> None:
    with pytest.raises(rtecs.SchemaError, match="float32"):
        class Bad(rtecs.RealtimeModel):
            n: int = rtecs.prop(1, float32=True)


def collect_one(model_type: type[rtecs.RealtimeModel]) -> bytes:
    from rtecs.datastore import Datastore

    ds = Datastore(model_type())
    ds.load_snapshot(Welcome(1, 0, 0.0, [], [1]))
    room = ds.room_model
    room.x, room.y = 0.1, 2.5  # type: ignore[attr-defined]
    update = ds.collect()
    assert update is not None
    return encode(update)


def test_an_update_carries_4_byte_floats() -> None:
    narrow, wide = collect_one(Pos), collect_one(WidePos)
    assert len(wide) - len(narrow) == 8  # two floats, 9 bytes each -> 5 bytes each
    assert b"\xca" + struct.pack(">f", 0.1) in narrow


def test_every_client_shows_the_same_rounded_value_and_the_relay_stays_narrow() -> None:
    room = LocalRoom(Pos, clients=2)
    a, b = room.clients
    a.room_model.x = 0.1  # type: ignore[attr-defined]
    a.flush()
    room.net.deliver_from(room.peer(a))
    batches: list[bytes] = []
    send = room.net.server.send

    def spy(peer: bytes, frame: bytes, reliable: bool = True) -> bool:
        batches.append(frame)
        return send(peer, frame, reliable)

    room.net.server.send = spy  # type: ignore[method-assign]
    room.host.pump(room.clock())
    room.sync()
    assert b.room_model.x == a.room_model.x == f32(0.1)  # type: ignore[attr-defined]
    assert any(b"\xca" + struct.pack(">f", 0.1) in frame for frame in batches)


def test_float32_values_survive_storage(tmp_path: Path) -> None:
    with open_storage(None, str(tmp_path)) as storage:
        saved = SavedRoom("r", "Pos", {"Pos": {1: ("x", "f32", False)}}, 2, {},
                          [(0, "Pos", -1, 0, {1: F32(f32(0.1))})])
        storage.save(saved)
        loaded = storage.load("r")
    assert loaded is not None and loaded.models[0][4] == {1: f32(0.1)}
