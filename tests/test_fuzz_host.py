"""Fuzzing the server's message handling (issue 11): hypothesis draws sequences of hostile
messages from three peers of different addresses — hellos to two rooms with clashing and
nesting schemas, updates naming real, foreign and never-allocated ids with any keys and
values, out-of-order sequence numbers and epochs, pings, byes, resyncs, schema extensions,
resumes, undecodable bytes — with the clock stepped between them, while an observer that
joined first reads the room's stream. Whatever arrives:

- the host never raises (bad input is answered, never an exception);
- the stream has no holes (the observer's mirror refuses a skipped ``room_seq``);
- the stream and the room agree: a client joining at the end is given a snapshot equal to
  what the observer built from the stream (convergence), in both rooms.

The peers start joined (two in one room, one in the other), so most messages reach a room.

CI runs 150 sequences (about 10 s). For a longer run outside CI::

    RTECS_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz_host.py \\
        -p no:randomly --timeout 0

(hypothesis prints the shortest failing sequence it finds).
"""

from __future__ import annotations

import math
import os
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from zmq_helpers import Mirror

from rtecs.protocol import (
    CREATE,
    DESTROY,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Hello,
    Ping,
    Resume,
    Resync,
    Schema,
    Update,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)
from rtecs.transport.memory import MemoryNetwork
from rtecs_server import RoomHost
from rtecs_server.ratelimit import RateLimit
from rtecs_server.tree import child_id

EXAMPLES = int(os.environ.get("RTECS_FUZZ_EXAMPLES", "150"))

BASE = {"Game": {1: ("title", "str", True), 2: ("score", "int", True),
                 3: ("slot", "model:Slot", True), 4: ("pos", "float", False)},
        "Slot": {1: ("label", "str", True), 2: ("n", "int", True)},
        "Unit": {1: ("name", "str", True), 2: ("hp", "int", True), 3: ("x", "float", False),
                 4: ("blob", "bytes", True)}}
SCHEMAS = [
    BASE,
    {**BASE, "Unit": {**BASE["Unit"], 5: ("extra", "bool", True)}},       # grows a type
    {**BASE, "Unit": {1: ("name", "int", True)}},                          # contradicts
    {**BASE, "Deep": {1: ("kid", "model:Slot", True)},
     "Unit": {**BASE["Unit"], 6: ("deep", "model:Deep", True)}},           # new declared kids
    {"Game": {1: ("title", "str", True)}, "Loop": {1: ("me", "model:Loop", True)}},  # cycle
]
ROOMS = ["lobby", "other", "lob\x00by", "x" * 200]

values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                   st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20),
                   st.lists(st.integers(-2**63, 2**63 - 1), max_size=3))
create_payloads = st.one_of(
    st.tuples(st.sampled_from(["Unit", "Slot", "Game", "Nope", "Deep"]),
              st.integers(-1, 8)).map(list),
    st.tuples(st.sampled_from(["Unit", "Slot"]), st.integers(0, 6),
              st.sampled_from([0, [0, 3], 99]), st.integers(-2, 2)).map(list),
    values)


@st.composite
def model_ids(draw: st.DrawFn) -> Any:
    return draw(st.one_of(
        st.just(0), st.just([0, 3]), st.just([0, 9]),
        st.builds(dynamic_model_id, st.integers(1, 5), st.integers(1, 4)),
        st.integers(-3, 2**40), st.text(max_size=3)))


@st.composite
def runs(draw: st.DrawFn) -> list[Any]:
    run: list[Any] = [draw(model_ids())]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 9, OWNER, CREATE, DESTROY]))
        value = (draw(create_payloads) if key == CREATE
                 else draw(st.integers(-2, 6)) if key == OWNER else draw(values))
        run += [key, value]
    return run


@st.composite
def actions(draw: st.DrawFn) -> tuple[str, int, Any]:
    peer = draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["hello", "update", "update", "create", "create", "claim",
                                 "ping", "bye", "resync", "schema", "resume", "bytes",
                                 "wait"]))
    if kind == "hello":
        arg: Any = (draw(st.sampled_from(ROOMS[:2] if draw(st.booleans()) else ROOMS)),
                    draw(st.integers(0, len(SCHEMAS) - 1)))
    elif kind == "update":
        # None (mostly): the next seq, its epoch; else a gap, a duplicate, a stale epoch
        arg = (draw(st.sampled_from([None] * 6 + [-1, 0, 1, 2, 5])),
               draw(st.sampled_from([None] * 6 + [0, 1, 3])),
               draw(st.lists(runs(), max_size=4)))
    elif kind == "create":   # a model of its own, maybe owned, flagged, under a parent
        arg = (draw(st.sampled_from(["Unit", "Slot"])), draw(st.integers(0, 7)),
               draw(st.booleans()), draw(st.sampled_from([None, 0, [0, 3], "mine"])))
    elif kind == "claim":    # ownership of the room model, a declared child or its own
        arg = (draw(st.sampled_from([0, [0, 3], "mine"])), draw(st.booleans()))
    elif kind == "ping":
        arg = draw(st.one_of(st.just(None), st.integers(0, 4)))
    elif kind == "schema":
        arg = draw(st.integers(0, len(SCHEMAS) - 1))
    elif kind == "bytes":
        arg = draw(st.binary(max_size=40))
    elif kind == "wait":
        arg = draw(st.sampled_from([0.01, 0.5, 1.5, 4.0]))
    else:
        arg = None
    return kind, peer, arg


class ImpliedMirror(Mirror):
    """A :class:`Mirror` that, like an rtecs client, takes a declared child model as
    implied by its parent's type: the stream never creates one (a client's model class
    does), so a write to one it has not seen makes it, its type filled in by
    :func:`implied`."""

    def apply_changes(self, changes: Any) -> None:
        for run in changes:
            if type(run[0]) is tuple and run[0] not in self.models:
                self.models[run[0]] = [None, -1, 0, {}]
        super().apply_changes(changes)


def implied(models: dict[Any, list[Any]], schema: Any) -> dict[Any, list[Any]]:
    """``models`` with every declared child its models' types imply under the room's
    ``schema`` (a ``RoomSchema``), pristine where missing."""
    out = {mid: list(m) for mid, m in models.items()}
    todo = list(out)
    while todo:
        mid = todo.pop()
        mtype = schema.types.get(out[mid][0])
        for pid, child in mtype.children if mtype is not None else ():
            cid = child_id(mid, pid)
            if cid not in out:
                out[cid] = [child.name, -1, 0, {}]
                todo.append(cid)
            elif out[cid][0] is None:
                out[cid][0] = child.name
                todo.append(cid)
    return out


class Client:
    """A raw client over the memory transport that mirrors the stream it reads."""

    def __init__(self, net: MemoryNetwork, name: str, address: str) -> None:
        self.link = net.connect(name, address=address)
        self.mirror = ImpliedMirror()
        self.seq = 0
        self.epoch = 1
        self.welcomed = False
        self.client_id = -1
        self.made = 0   # dynamic models it numbered

    def send(self, message: Any) -> None:
        self.link.send(encode(message))

    def read(self) -> None:
        for frame in self.link.receive():
            msg = decode_server_message(frame)
            if isinstance(msg, Welcome):
                self.mirror.load(msg)
                self.seq, self.epoch, self.welcomed = 0, msg.epoch, True
                self.client_id, self.made = msg.client_id, 0
            elif isinstance(msg, Batch) and msg.room_seq > self.mirror.room_seq:
                self.mirror.apply(msg)   # asserts the stream has no hole


def normal(models: dict[Any, list[Any]], schema: Any) -> dict[Any, Any]:
    """A mirror's models with their implied declared children (:func:`implied`), floats
    compared by representation (NaN equals NaN)."""
    def norm(v: Any) -> Any:
        if isinstance(v, float):
            return ("float", repr(v) if not math.isnan(v) else "nan")
        if isinstance(v, tuple | list):
            return tuple(norm(x) for x in v)
        return v
    return {repr(mid): (t, o, f, norm(tuple(sorted(p.items()))))
            for mid, (t, o, f, p) in implied(models, schema).items()}


@pytest.mark.timeout(300)
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(actions(), min_size=1, max_size=60))
def test_whatever_peers_send_the_stream_and_the_room_agree(
        steps: list[tuple[str, int, Any]]) -> None:
    now = 0.0
    net = MemoryNetwork()
    host = RoomHost(net.server, rate_limit=RateLimit(update_changes=200, update_bytes=4000),
                    heartbeat_timeout=3.0, empty_room_timeout=2.0, max_rooms=3,
                    max_empty_rooms_per_address=1)
    observers = {room: Client(net, f"observer-{room}", "10.0.0.100") for room in ROOMS[:2]}
    peers = [Client(net, f"peer{i}", f"10.0.0.{i + 1}") for i in range(3)]

    def step(dt: float = 0.0) -> None:
        nonlocal now
        now += dt
        for o in observers.values():   # the observers stay alive
            o.send(Ping(now, o.epoch))
        for _ in range(2):
            net.step()
            host.pump(now)
        for c in [*observers.values(), *peers]:
            c.read()

    for room, o in observers.items():
        o.send(Hello(PROTOCOL_VERSION, room, "Game", BASE, None))
    step()
    assert all(o.welcomed for o in observers.values())
    for p, room in zip(peers, ["lobby", "lobby", "other"], strict=True):  # start joined
        p.send(Hello(PROTOCOL_VERSION, room, "Game", BASE, None))
    step()
    for kind, i, arg in steps:
        p = peers[i]
        if kind == "hello":
            room, schema = arg
            p.send(Hello(PROTOCOL_VERSION, room, "Game", SCHEMAS[schema], None))
        elif kind == "update":
            seq, epoch, changes = arg
            if seq is None:
                p.seq += 1
                seq = p.seq
            p.send(Update(seq, changes, p.epoch if epoch is None else epoch))
        elif kind in ("create", "claim"):
            mine = dynamic_model_id(p.client_id, max(1, p.made))
            if kind == "create":
                type_name, flags, owned, parent = arg
                p.made += 1
                payload: list[Any] = [type_name, flags]
                if parent is not None:
                    payload += [mine if parent == "mine" else parent, 0]
                run: list[Any] = [dynamic_model_id(p.client_id, p.made), CREATE, payload]
                if owned:
                    run += [OWNER, p.client_id]
            else:
                target, take = arg
                run = [mine if target == "mine" else target, OWNER, p.client_id if take else -1]
            p.seq += 1
            p.send(Update(p.seq, [run], p.epoch))
        elif kind == "ping":
            p.send(Ping(now, p.epoch if arg is None else arg))
        elif kind == "bye":
            p.send(Bye())
        elif kind == "resync":
            p.send(Resync())
        elif kind == "schema":
            p.send(Schema(SCHEMAS[arg]))
        elif kind == "resume":
            p.send(Resume("lobby", b"s" * 16, b"x" * 32, 1, 0, 0))
        elif kind == "bytes":
            p.link.send(arg)
        step(arg if kind == "wait" else 0.001)
    step()
    for room, observer in observers.items():
        late = Client(net, f"late-{room}", "10.0.0.200")
        late.send(Hello(PROTOCOL_VERSION, room, "Game", BASE, None))
        step()
        late.read()
        assert late.welcomed, f"no welcome in room {room!r}"
        schema = host.rooms[room].room.store.schema
        assert normal(late.mirror.models, schema) == normal(observer.mirror.models, schema), room
