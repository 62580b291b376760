"""Persistence (issue 5): room checkpoints in the room core, the room lifecycle of real
``rtecs-server`` processes on real SQLite files (unload, kill -9, SIGTERM, a corrupt room)
and the operator commands (``rtecs-server rooms|dump|delete``)."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import esper
import pytest
from zmq_helpers import (
    PATIENCE,
    SERVER_SCRIPT,
    ClockedServerProcess,
    RawClient,
    ServerProcess,
    advance,
    raw_clients,
    settle,
    wait_until,
)

import rtecs
from rtecs.clock import ManualClock
from rtecs.ecs import in_world
from rtecs.errors import NotConnectedError
from rtecs.protocol import (
    CREATE,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Hello,
    Update,
    UpdateEntry,
    Welcome,
    collection_type_name,
    decode_client_message,
    dynamic_model_id,
    encode,
)
from rtecs_server import Room, RoomServer
from rtecs_server.persistence import CHECKPOINT_BURST, Persistence
from rtecs_server.storage import (
    CorruptRoomError,
    Lease,
    SavedRoom,
    SQLiteStorage,
    StorageUnavailable,
    decode_room,
    encode_room,
)

__all__ = ["raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

_WORLDS = itertools.count(1)


# ----------------------------------------------------------------------------- the room core

SET = collection_type_name("Set", "Item")
STRDICT = collection_type_name("StrDict", "Item")
SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Hall": {1: ("title", "str", True), 2: ("bag", f"model:{SET}", True),
             3: ("names", f"model:{STRDICT}", True), 4: ("sign", "model:Sign", True)},
    "Sign": {1: ("text", "str", True), 2: ("data", "bytes?", True)},
    SET: {}, STRDICT: {},
    "Item": {1: ("name", "str", True)},
    "Tank": {1: ("hp", "int", True), 2: ("x", "float", False), 3: ("turret", "model:Sign", True)},
}
BAG, NAMES, SIGN = (0, 2), (0, 3), (0, 4)


def hello(room: str = "hall") -> Hello:
    return Hello(PROTOCOL_VERSION, room, "Hall", SCHEMA, None)


def upd(seq: int, *runs: list[Any]) -> Update:
    msg = decode_client_message(encode(Update(seq, runs)))
    assert isinstance(msg, Update)
    return msg


def apply(room: Room, client: int, seq: int, *runs: list[Any]) -> None:
    out = room.apply_update(client, upd(seq, *runs))
    assert out.entry is not None and not out.entry.rejected and not out.problems, out


def populated() -> tuple[Room, dict[str, int]]:
    """A room after one client wrote everything a checkpoint keeps or drops, and left."""
    room = Room("hall")
    c = room.join(hello(), 0.0).client_id
    ids = {name: dynamic_model_id(c, n) for n, name in enumerate(
        ["kept", "gone", "owned_gone", "sword", "king", "queen", "part"], start=1)}
    apply(room, c, 1,
          [0, 1, "Great Hall"], [SIGN, 1, "welcome", 2, b"\x00\xff"],
          [ids["kept"], CREATE, ["Tank", 0], 1, 7, OWNER, c], [(ids["kept"], 3), 1, "top"],
          [ids["gone"], CREATE, ["Tank", DESTROY_WHEN_LAST_CLIENT_LEAVES], 1, 99],
          [ids["owned_gone"], CREATE, ["Tank", DESTROY_WHEN_OWNER_LEAVES], OWNER, c],
          [ids["sword"], CREATE, ["Item", 0, BAG], 1, "sword"],
          [ids["king"], CREATE, ["Item", 0, NAMES, "king", None], 1, "ann"],
          [ids["queen"], CREATE, ["Item", 0, NAMES, "queen", None], 1, "bea"],
          [ids["part"], CREATE, ["Item", 0, ids["gone"]], 1, "under a volatile tank"])
    room.flush(0.0)
    room.leave(c, 0.0)
    room.flush(0.0)
    return room, ids


def test_export_then_restore_gives_the_room_as_everyone_left_it() -> None:
    room, ids = populated()
    saved = room.export()
    again = Room.restore(decode_room("hall", encode_room(saved)))
    assert again.snapshot() == room.snapshot()  # the volatile ones are already gone
    kept = {rec[0] for rec in again.snapshot()}
    assert ids["kept"] in kept and (ids["kept"], 3) in kept and ids["sword"] in kept
    assert not kept & {ids["gone"], ids["owned_gone"], ids["part"]}
    assert again.record(ids["king"])[5:] == (NAMES, "king")  # type: ignore[index]
    assert again.record(SIGN)[4] == {1: "welcome", 2: b"\x00\xff"}  # type: ignore[index]
    assert all(rec[2] == -1 for rec in again.snapshot())
    assert again.size == room.size and again.room_seq == 0
    assert again.next_client_id == room.next_client_id == 2
    assert again.store.created == {1: 7}


def test_a_restored_room_keeps_working_and_never_reuses_ids() -> None:
    room, ids = populated()
    again = Room.restore(room.export())
    c = again.join(hello(), 0.0).client_id
    assert c == 2
    # keyed collections, declared children and the sets are live again
    apply(again, c, 1, [dynamic_model_id(c, 1), CREATE, ["Item", 0, NAMES, "king", ids["king"]],
                        1, "cid"],
          [(ids["kept"], 3), 1, "turret"], [ids["sword"], 1, "blade"])
    assert again.record(ids["king"]) is None
    # a write to a model that existed before the restore is a quiet race, not bad input
    out = again.apply_update(c, upd(2, [ids["gone"], 1, 5]))
    assert out.entry is not None and out.entry.rejected and not out.problems
    # client 1's counters are known: its ids can never be created again
    saved = again.export()
    saved.next_client_id = 1  # even a wrong counter cannot hand out a used id
    third = Room.restore(saved)
    assert third.join(hello(), 0.0).client_id == 3


def test_only_persistent_changes_count_for_checkpoints() -> None:
    room = Room("hall")
    c = room.join(hello(), 0.0).client_id
    store = room.store
    tank, volatile = dynamic_model_id(c, 1), dynamic_model_id(c, 2)
    dwol = dynamic_model_id(c, 3)
    apply(room, c, 1, [tank, CREATE, ["Tank", 0]],
          [volatile, CREATE, ["Tank", DESTROY_WHEN_LAST_CLIENT_LEAVES], OWNER, c],
          [dwol, CREATE, ["Tank", DESTROY_WHEN_OWNER_LEAVES]])
    before = store.persistent_changes
    for seq in range(2, 6):  # a player's position, 20 times a second: never saved
        apply(room, c, seq, [volatile, 2, float(seq)], [(volatile, 3), 1, "x"])
    assert store.persistent_changes == before
    apply(room, c, 6, [tank, 2, 1.5])
    assert store.persistent_changes == before + 1
    apply(room, c, 7, [dwol, OWNER, c])  # now left out of a checkpoint: that counts
    assert store.persistent_changes == before + 2
    apply(room, c, 8, [dwol, 1, 3])      # owned destroy_when_owner_leaves: not saved
    assert store.persistent_changes == before + 2
    room.leave(c, 0.0)  # destroys the volatile ones only
    assert store.persistent_changes == before + 2


def _broken(**change: Any) -> SavedRoom:
    room, _ = populated()
    saved = room.export()
    for key, value in change.items():
        setattr(saved, key, value(saved) if callable(value) else value)
    return saved


@pytest.mark.parametrize(("saved", "reason"), [
    (_broken(schema=lambda s: {**s.schema, "Item": {1: ("name", "vector3", True)}}),
     "its schema is invalid"),
    (_broken(schema=lambda s: {**s.schema, "Sign": {1: ("me", "model:Sign", True)}}),
     "its schema is invalid"),
    (_broken(models=lambda s: s.models[1:]), "is not a declared .* child of a model stored"),
    (_broken(models=lambda s: [m for m in s.models if m.model_id != 0 and m.parent is None]),
     "no room model|declared"),
    (_broken(models=lambda s: [s.models[0]._replace(props={1: 5}), *s.models[1:]]),
     "expected str, got int"),
    (_broken(models=lambda s: [s.models[0]._replace(props={9: 5}), *s.models[1:]]),
     "property 9, which type Hall does not have"),
    (_broken(models=lambda s: [*s.models, s.models[-1]]), "stored twice"),
    (_broken(models=lambda s: [m for m in s.models if m[0] != BAG]), "before its parent"),
])
def test_a_checkpoint_that_contradicts_itself_is_a_corrupt_room(saved: SavedRoom,
                                                                 reason: str) -> None:
    with pytest.raises(CorruptRoomError, match=reason) as exc:
        Room.restore(saved)
    assert exc.value.room == "hall"


# ----------------------------------------------------------------------------- real servers

class Item(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")


class Tank(rtecs.RealtimeModel):
    hp: int = rtecs.prop(1, default=100)


class Hall(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    bag: rtecs.RealtimeSet[Item] = rtecs.prop(2)
    names: rtecs.StringKeyDictionary[Item] = rtecs.prop(3)


def connect(endpoint: str, room: str = "hall", **kwargs: Any) -> rtecs.Realtime:
    rt = rtecs.connect(endpoint, room, Hall(), types=[Tank], frame_duration=0.0,
                       world=f"persistence-{next(_WORLDS)}", **kwargs)
    rt.wait_connected(timeout=10)
    return rt




def tanks(rt: rtecs.Realtime) -> list[int]:
    with in_world(rt.world):
        return sorted(t.hp for _, t in esper.get_component(Tank))


def answered(rt: rtecs.Realtime) -> bool:
    return rt.updates_in_flight == 0 and not rt.has_unsent_changes


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``rtecs-server --data-dir tmp_path ARGS`` processes; all killed at the end."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess("--data-dir", str(tmp_path), *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def logged(server: ServerProcess, text: str, timeout: float = 10.0) -> None:
    wait_until(lambda: text in server.stderr, timeout=timeout, what=f"log {text!r}")


def stored(tmp_path: Path, room: str) -> SavedRoom | None:
    with SQLiteStorage(tmp_path / "rooms.sqlite3") as storage:
        return storage.load(room)


def test_a_room_unloads_and_a_new_server_process_loads_it(
        servers: Callable[..., ServerProcess]) -> None:
    # no checkpoint comes in time: the unload saves it
    first = servers("--empty-room-timeout", "0.3", "--checkpoint-interval", "3600")
    a, b = connect(first.endpoint), connect(first.endpoint)
    hall = cast(Hall, a.room_model)
    hall.title = "kept"
    hall.bag.add(Item(name="sword"))
    hall.bag.add(Item(name="shield"))
    king = hall.names.set("king", Item(name="ann"))
    a.spawn(Tank(hp=7), destroy_when_last_client_leaves=False,
            destroy_when_owner_leaves=False)
    a.spawn(Tank(hp=99))  # the defaults: gone when its owner (or everyone) leaves
    b.spawn(Tank(hp=55), destroy_when_owner_leaves=False)  # gone once the room empties
    settle(lambda: king.done() and tanks(b) == [7, 55, 99] and answered(a) and answered(b),
           a, b)
    assert king.result()
    a.close()
    b.close()
    logged(first, "room 'hall' closed after")
    assert "empty, saved" in first.stderr
    first.process.kill()  # nothing left to save: the unload did it
    first.wait(5)

    second = servers()
    c = connect(second.endpoint)
    try:
        hall = cast(Hall, c.room_model)
        assert hall.title == "kept"
        assert sorted(i.name for i in hall.bag) == ["shield", "sword"]
        assert {k: v.name for k, v in hall.names.items()} == {"king": "ann"}
        assert tanks(c) == [7]
        assert c.client_id == 3  # ids only grow: 1 and 2 were used before the restart
        logged(second, "opened from its checkpoint")  # read by a thread: an event, not racy
    finally:
        c.close()


def _write(client: RawClient, *runs: list[Any]) -> None:
    """Send an update and wait until the server has ordered it (its entry came back)."""
    seq = client.update(*runs)
    client.expect(lambda m: isinstance(m, Batch) and any(
        isinstance(e, UpdateEntry) and e.sender == client.client_id and e.seq == seq
        for e in m.entries), what=f"the answer to update {seq}")


def _title(welcome: Welcome) -> Any:
    return next(rec[4].get(1) for rec in welcome.snapshot if rec[0] == 0)


GAME = {"Game": {1: ("title", "str", True), 2: ("score", "int", True)}}


def test_kill_9_loses_at_most_the_last_checkpoint_interval(
        servers: Callable[..., ServerProcess], tmp_path: Path,
        raw_clients: Callable[..., RawClient]) -> None:
    # a server process on a manual clock: checkpoints come when its time says, not the load
    interval = 0.375
    server = ClockedServerProcess(storage="sqlite:", data_dir=str(tmp_path),
                                  checkpoint_interval=interval)
    try:
        client = raw_clients(server.endpoint)
        opened = client.join("crash", schema=GAME).server_time
        _write(client, [0, 1, "older than the interval"])
        client.barrier()
        assert stored(tmp_path, "crash") is None  # not yet: the interval has not passed
        at = server.advance(interval)
        assert at - opened == interval
        client.barrier(at)
        # the pass that read the clock at ``at`` checkpoints after it has answered the pings it
        # read (fair turns: it may answer the barrier's last ping too), so wait for the save
        wait_until(lambda: stored(tmp_path, "crash") is not None, PATIENCE,
                   what="the checkpoint due at the interval")
        saved = stored(tmp_path, "crash")
        assert saved is not None and saved.models[0][4].get(1) == "older than the interval"
        _write(client, [0, 2, 42])  # not checkpointed: the clock stands still
        client.barrier()
        server.process.send_signal(signal.SIGKILL)
        assert server.wait(PATIENCE) == -signal.SIGKILL
    finally:
        server.kill()

    again = servers()
    welcome = raw_clients(again.endpoint).join("crash", schema=GAME)
    assert _title(welcome) == "older than the interval"
    assert 2 not in welcome.snapshot[0][4]  # the write after the checkpoint was lost
    assert welcome.client_id == 2


def test_sigterm_saves_everything(servers: Callable[..., ServerProcess],
                                  raw_clients: Callable[..., RawClient]) -> None:
    server = servers("--checkpoint-interval", "3600")  # only the shutdown can save it
    clients = [raw_clients(server.endpoint) for _ in range(3)]
    for i, client in enumerate(clients):
        client.join(f"room-{i}", schema=GAME)
        for n in range(20):
            _write(client, [0, 1, f"room {i} write {n}", 2, n])
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    for client in clients:
        client.expect_error("shutdown")
    assert "saved 3 room(s)" in server.stderr

    again = servers()
    for i in range(3):
        welcome = raw_clients(again.endpoint).join(f"room-{i}", schema=GAME)
        assert welcome.snapshot[0][4] == {1: f"room {i} write 19", 2: 19}


def test_a_corrupt_room_is_refused_clearly_and_other_rooms_load(
        servers: Callable[..., ServerProcess], tmp_path: Path,
        raw_clients: Callable[..., RawClient]) -> None:
    schema = {"Game": {1: ("title", "str", True)}}
    with SQLiteStorage(tmp_path / "rooms.sqlite3") as storage:
        for name in ("good", "damaged", "odd-schema"):
            storage.save(SavedRoom(name, "Game", schema, 4, {}, [(0, "Game", -1, 0,
                                                                   {1: f"I am {name}"})]))
        storage.save(SavedRoom("odd-schema", "Game", {"Game": {1: ("t", "vec3", True)}}, 1,
                               {}, [(0, "Game", -1, 0, {})]))
    with sqlite3.connect(tmp_path / "rooms.sqlite3") as conn:
        blob = conn.execute("SELECT data FROM rooms WHERE name = 'damaged'").fetchone()[0]
        conn.execute("UPDATE rooms SET data = ? WHERE name = 'damaged'",
                     (blob[:-3] + b"xyz",))
    server = servers()
    for name, reason in [("damaged", "checksum mismatch"),
                         ("odd-schema", "unknown property type tag 'vec3'")]:
        client = raw_clients(server.endpoint)
        client.hello(name, schema=schema)
        error = client.expect_error("room_corrupt")
        assert error.fatal and reason in error.message and repr(name) in error.message
        assert "operator" in error.message
        logged(server, f"stored room {name!r} cannot be loaded: ")
    assert " ERROR " in server.stderr
    welcome = raw_clients(server.endpoint).join("good", schema=schema)
    assert _title(welcome) == "I am good" and welcome.client_id == 4
    # the client library gives up with a clear reason
    with pytest.raises(NotConnectedError, match=r"room_corrupt.*checksum mismatch"):
        connect(server.endpoint, "damaged")


# ----------------------------------------------------------------------------- CLI

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SERVER_SCRIPT), *args], capture_output=True, text=True,
                          timeout=20)


@pytest.mark.timeout(180)  # a dozen CLI processes: each takes seconds to start when loaded
def test_operator_commands_list_dump_and_delete(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    empty = cli("rooms", *data)
    assert empty.returncode == 0 and "no stored rooms" in empty.stdout
    assert not (tmp_path / "rooms.sqlite3").exists()  # a command creates no database
    room, ids = populated()
    with SQLiteStorage(tmp_path / "rooms.sqlite3") as storage:
        storage.save(room.export())
        storage.save(SavedRoom("lobby", "Hall", SCHEMA, 1, {}, [(0, "Hall", -1, 0, {})]))

    listed = cli("rooms", *data)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ROOM", "MODELS", "SIZE", "VERSION", "LAST", "SAVE"]
    hall = next(line.split() for line in lines if line.startswith("hall "))
    assert hall[1] == str(len(room.export().models)) and hall[3] in ("B", "kB")
    assert any(line.startswith("lobby ") for line in lines) and "2 rooms in sqlite:" in lines[-1]

    dumped = cli("dump", "hall", "--storage", f"sqlite://{tmp_path / 'rooms.sqlite3'}")
    assert dumped.returncode == 0, dumped.stderr
    doc = json.loads(dumped.stdout)
    assert doc["room"] == "hall" and doc["root_type"] == "Hall" and doc["next_client_id"] == 2
    by_id = {json.dumps(m["id"]): m for m in doc["models"]}
    assert by_id["0"]["props"] == {"title": "Great Hall"}
    assert by_id["[0, 4]"]["props"] == {"text": "welcome", "data": {"base64": "AP8="}}
    assert by_id[str(ids["king"])]["key"] == "king"
    assert by_id[str(ids["king"])]["parent"] == [0, 3]
    assert doc["schema"]["Tank"]["1"] == {"name": "hp", "tag": "int", "reliable": True}
    assert doc["created"] == {"1": 7}

    missing = cli("dump", "nowhere", *data)
    assert missing.returncode == 1 and "no stored room 'nowhere'" in missing.stderr
    deleted = cli("delete", "hall", *data)
    assert deleted.returncode == 0 and "deleted room 'hall'" in deleted.stdout
    assert cli("delete", "hall", *data).returncode == 1
    assert "hall " not in cli("rooms", *data).stdout
    with sqlite3.connect(tmp_path / "rooms.sqlite3") as conn:
        conn.execute("UPDATE rooms SET data = x'00' WHERE name = 'lobby'")
    broken = cli("dump", "lobby", *data)
    assert broken.returncode == 1 and "too short for a header" in broken.stderr
    usage = cli("dump", *data)
    assert usage.returncode == 2 and "ROOM" in usage.stderr
    assert "--force" in cli("delete", "--help").stdout


# ----------------------------------------------------------------------------- embedded

class FlakySQLite(SQLiteStorage):
    """A SQLite storage whose saves fail with StorageUnavailable while ``down``."""

    down = False
    saves = 0

    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int:
        if self.down:
            raise StorageUnavailable(f"saving room {name!r}: the disk went away (test)")
        self.saves += 1
        return super()._write(name, blob, models, saved_at, fence)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[FlakySQLite]:
    with FlakySQLite(tmp_path / "rooms.sqlite3") as storage:
        yield storage


def test_stop_saves_every_room(flaky: FlakySQLite) -> None:
    server = RoomServer(storage=flaky, checkpoint_interval=3600).start()
    a = connect(server.endpoint)
    cast(Hall, a.room_model).title = "saved by stop()"
    settle(lambda: answered(a), a)
    server.stop()
    saved = flaky.load("hall")
    assert saved is not None and saved.models[0][4] == {1: "saved by stop()"}
    a.close(timeout=0)
    flaky.list_rooms()  # the server left the caller's storage open


def test_a_live_room_is_checkpointed_with_its_sessions_as_its_stream_moves(
        tmp_path: Path, raw_clients: Callable[..., RawClient]) -> None:
    """With members, a checkpoint is *live* (DESIGN §8): every model as it stands, owners
    and all, and the members' sessions; it is taken again in every interval the stream
    moved (a moving player of a destroy_when_last_client_leaves kind included), never in
    one it did not. Once everyone left, the checkpoint holds the persistent models only."""
    interval = 0.125
    clock = ManualClock()
    with FlakySQLite(tmp_path / "rooms.sqlite3", clock=clock) as flaky, RoomServer(
            storage=flaky, checkpoint_interval=interval, clock=clock) as server:
        client = raw_clients(server.endpoint)
        client.join("quiet", schema=GAME | {"Player": {1: ("x", "float", False)}})
        advance(server, interval, keep_alive=[client])
        assert flaky.saves == 1  # the first checkpoint
        player = dynamic_model_id(client.client_id, 1)
        _write(client, [player, CREATE, ["Player", DESTROY_WHEN_LAST_CLIENT_LEAVES], OWNER,
                        client.client_id, 1, 0.0])
        for n in range(1, 9):  # eight checkpoint intervals of movement
            _write(client, [player, 1, float(n)])
            advance(server, interval, keep_alive=[client])
        assert flaky.saves == 9
        advance(server, 3 * interval, keep_alive=[client])   # pings only: nothing to save
        assert flaky.saves == 9
        saved = flaky.load("quiet")
        assert saved is not None and saved.format == 2
        assert [(m[0], m[2]) for m in saved.models] == [(0, -1), (player, client.client_id)]
        assert saved.models[1][4] == {1: 8.0}
        [session] = saved.sessions
        live = server.host.sessions[next(iter(server.host.sessions))]
        assert (session.session_id, session.secret_hash, session.client_id) == (
            live.session_id, live.secret_hash, client.client_id)
        assert (session.epoch, session.last_applied) == (1, client.seq)
        client.bye()
        wait_until(lambda: not server.host.sessions, what="the client to leave")
        advance(server, interval)
        wait_until(lambda: flaky.saves == 10,     # everyone left: saved without them
                   what="the checkpoint of the room left empty")
        saved = flaky.load("quiet")
        assert saved is not None and saved.format == 1 and saved.sessions == []
        assert [m[0] for m in saved.models] == [0]


def test_a_room_that_cannot_be_saved_stays_in_memory_until_it_can(
        flaky: FlakySQLite, raw_clients: Callable[..., RawClient]) -> None:
    with RoomServer(storage=flaky, checkpoint_interval=0.05,
                    empty_room_timeout=0.05) as server:
        client = raw_clients(server.endpoint)
        client.join("fragile", schema=GAME)
        flaky.down = True
        _write(client, [0, 1, "not lost"])
        client.bye()
        wait_until(lambda: not server.host.sessions, what="the client to leave")
        other = raw_clients(server.endpoint)
        # still hosted (the same room, not a fresh one): a joiner sees the unsaved write
        assert _title(other.join("fragile", schema=GAME)) == "not lost"
        other.bye()
        wait_until(lambda: not server.host.sessions, what="the second client to leave")
        flaky.down = False
        wait_until(lambda: "fragile" not in server.host.rooms, what="the room to close")
    saved = flaky.load("fragile")
    assert saved is not None and saved.models[0][4] == {1: "not lost"}


class SlowSQLite(SQLiteStorage):
    """A SQLite storage whose saves take ``took`` seconds of its (manual) clock."""

    took = 0.0

    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int:
        assert isinstance(self.clock, ManualClock)
        self.clock.advance(self.took)
        return super()._write(name, blob, models, saved_at, fence)


def test_the_checkpoint_budget_spreads_out_expensive_saves(tmp_path: Path) -> None:
    clock = ManualClock()
    with SlowSQLite(tmp_path / "rooms.sqlite3", clock=clock) as storage:
        p = Persistence(storage, advertise="tcp://127.0.0.1:1", clock=clock)
        room, keeping = p.open("hall", now=clock.now)
        assert p.may_checkpoint()
        storage.took = CHECKPOINT_BURST + 0.05  # a save overspends the budget by 50 ms
        room.join(hello(), clock.now)
        p.save(room, keeping, clock.now)
        assert keeping.last_save == pytest.approx(CHECKPOINT_BURST + 0.05)
        assert not p.may_checkpoint()
        clock.advance(0.25)  # 25 ms refilled: still overspent
        assert not p.may_checkpoint()
        clock.advance(0.35)  # 0.6 s after the save the budget has refilled by 60 ms
        assert p.may_checkpoint() and p._tokens <= CHECKPOINT_BURST


class UnreachableSQLite(SQLiteStorage):
    """A SQLite storage whose lease renewals fail with StorageUnavailable while ``down``."""

    down = False

    def renew(self, lease: Lease) -> bool:
        if self.down:
            raise StorageUnavailable(f"renewing room {lease.room!r}: unreachable (test)")
        return super().renew(lease)


def test_a_lease_that_runs_out_on_the_servers_clock_stops_hosting(
        tmp_path: Path, raw_clients: Callable[..., RawClient]) -> None:
    ttl = 3.0
    clock = ManualClock()
    with UnreachableSQLite(tmp_path / "rooms.sqlite3", clock=clock) as storage, RoomServer(
            storage=storage, lease_ttl=ttl, checkpoint_interval=3600, heartbeat_timeout=60,
            clock=clock) as server:
        client = raw_clients(server.endpoint)
        client.join("leased", schema=GAME)
        advance(server, 2 * ttl, keep_alive=[client])  # renewed on time: still hosted
        assert "leased" in server.host.rooms and not client.errors
        storage.down = True
        keeping = server.host.rooms["leased"].keeping
        assert keeping is not None
        left = keeping.lease.time_left()  # the last renewal's ttl, counted on the clock
        assert ttl * 2 / 3 <= left <= ttl
        advance(server, left - 0.125, keep_alive=[client])  # renewals fail, time is left
        assert "leased" in server.host.rooms and not client.errors
        clock.advance(0.125)  # the lease runs out now
        error = client.expect_error("unavailable", timeout=PATIENCE)
        assert error.fatal and "no longer hosted" in error.message
        assert "leased" not in server.host.rooms
    with SQLiteStorage(tmp_path / "rooms.sqlite3") as check:
        saved = check.load("leased")
    assert saved is not None  # its last fenced save went through
