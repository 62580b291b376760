"""Storage (issue 5, phase 1): checkpoints in real SQLite files and a real redis-server; the
room directory's leases and fencing tokens."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import RedisServer, redis_server, start_redis

from rtecs.clock import ManualClock
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    PREVENT_OWNERSHIP_TAKEOVER,
    SnapshotRecord,
    dynamic_model_id,
)
from rtecs_server.storage import (
    FORMAT_VERSION,
    LIVE_FORMAT_VERSION,
    CorruptRoomError,
    FencedOut,
    Owner,
    RedisStorage,
    RoomInfo,
    SavedRoom,
    SavedSession,
    SQLiteStorage,
    Storage,
    StorageError,
    StorageUnavailable,
    decode_room,
    encode_room,
    open_storage,
    persistent_models,
)

__all__ = ["redis_server"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Room": {1: ("title", "str", True), 2: ("score", "int", True),
             3: ("board", "model:Board", True)},
    "Board": {1: ("cells", "bytes", True), 2: ("owner", "str", False)},
    "Cube": {1: ("x", "float", True), 2: ("n", "int", True), 3: ("name", "str", True),
             4: ("blob", "bytes", True), 5: ("flag", "bool", True),
             6: ("inner", "model:Board", True)},
}


R = SnapshotRecord


def sample_room(name: str = "lobby", n: int = 3) -> SavedRoom:
    cube = dynamic_model_id(2, 1)
    models: list[SnapshotRecord] = [
        R(0, "Room", -1, 0, {1: "Grüße, 世界 🎲", 2: -7}),
        R((0, 3), "Board", -1, 0, {1: b"\x00\xff\x00", 2: None}),
        R(cube, "Cube", 2, 1, {1: 1.0, 2: 2**63 - 1, 3: "", 4: b"", 5: False}),
        R((cube, 6), "Board", -1, 0, {1: b"\x01" * 300}),
        R((17, 2, 1), "Board", -1, 0, {}),
        R(dynamic_model_id(3, 1), "Board", 3, 4, {2: "child"}, cube),
        R(dynamic_model_id(3, 2), "Board", -1, 0, {2: "keyed"}, cube, "slot-ß"),
        R(dynamic_model_id(3, 3), "Board", -1, 0, {}, (0, 3), 5),
    ]
    for i in range(n):
        models.append(R(dynamic_model_id(4, i + 1), "Cube", -1, 0,
                         {1: i / 3, 2: i, 3: f"cube {i}", 4: bytes([i % 256]) * 4, 5: True}))
    return SavedRoom(name, "Room", SCHEMA, 5, {2: 1, 3: 3, 4: n}, models)


def same(a: SavedRoom, b: SavedRoom) -> None:
    """Equal content, and equal types all the way down (bool is not int, tuple not list)."""
    assert (a.name, a.root_type, a.next_client_id) == (b.name, b.root_type, b.next_client_id)
    assert a.schema == b.schema and a.created == b.created
    assert len(a.models) == len(b.models)
    for ra, rb in zip(a.models, b.models, strict=True):
        assert ra == rb
        assert type(ra[0]) is type(rb[0])
        for k, v in ra[4].items():
            assert type(rb[4][k]) is type(v), (ra[0], k)
    for spec in b.schema["Cube"].values():
        assert type(spec) is tuple


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    with SQLiteStorage(tmp_path / "rooms.sqlite3") as s:
        yield s


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.fresh_url()


@pytest.fixture
def redis_storage(redis_url: str) -> Iterator[RedisStorage]:
    with RedisStorage(redis_url) as s:
        yield s


@pytest.fixture(params=["sqlite", "redis"])
def storage(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(f"{request.param}_storage")  # type: ignore[no-any-return]


@pytest.fixture
def storage_url(request: pytest.FixtureRequest, storage: Storage) -> str:
    """The URL of ``storage`` (for subprocesses and second handles)."""
    if isinstance(storage, RedisStorage):
        return str(request.getfixturevalue("redis_url"))
    assert isinstance(storage, SQLiteStorage)
    return f"sqlite://{storage.path}"


@pytest.fixture
def second(storage: Storage, storage_url: str) -> Iterator[Storage]:
    """Another handle on the same stored data: a second server instance."""
    if isinstance(storage, SQLiteStorage):
        other: Storage = SQLiteStorage(storage.path)
    else:
        other = open_storage(storage_url)
    with other:
        yield other


def put_raw(storage: Storage, name: str, blob: bytes) -> None:
    """Overwrite a stored blob behind the storage's back (a damaged record)."""
    if isinstance(storage, SQLiteStorage):
        with sqlite3.connect(storage.path) as conn:
            conn.execute("UPDATE rooms SET data = ? WHERE name = ?", (blob, name))
    else:
        assert isinstance(storage, RedisStorage)
        storage._r.set(f"rtecs:room:{name}", blob)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or cond}")
        time.sleep(0.005)


# ----------------------------------------------------------------------------- checkpoints

def test_round_trip_keeps_values_and_types(storage: Storage) -> None:
    room = sample_room()
    before = time.time()
    assert storage.save(room) == 1
    loaded = storage.load("lobby")
    assert loaded is not None
    same(room, loaded)
    assert loaded.format == FORMAT_VERSION and loaded.version == 1
    assert before <= loaded.saved_at <= time.time()
    assert loaded.models[1][0] == (0, 3) and loaded.models[4][0] == (17, 2, 1)
    assert loaded.models[5][5] == dynamic_model_id(2, 1)       # parent extra
    assert loaded.models[6][5:] == (dynamic_model_id(2, 1), "slot-ß")  # parent and key
    assert loaded.models[7][5:] == ((0, 3), 5)
    assert loaded.models[0][4][1] == "Grüße, 世界 🎲" and loaded.models[1][4][2] is None


def test_missing_room_loads_as_none(storage: Storage) -> None:
    assert storage.load("nowhere") is None
    assert storage.list_rooms() == []
    assert storage.delete("nowhere") is False


def test_unicode_room_names(storage: Storage) -> None:
    for name in ["salle à manger", "部屋:1", "a/b\\c", ""]:
        storage.save(sample_room(name, n=1))
    for name in ["salle à manger", "部屋:1", "a/b\\c", ""]:
        loaded = storage.load(name)
        assert loaded is not None and loaded.name == name
    assert sorted(r.name for r in storage.list_rooms()) == sorted(
        ["salle à manger", "部屋:1", "a/b\\c", ""])


def test_overwrite_keeps_only_the_new_version(storage: Storage) -> None:
    storage.save(sample_room(n=500))
    small = sample_room(n=2)
    small.next_client_id = 99
    assert storage.save(small) == 2
    loaded = storage.load("lobby")
    assert loaded is not None
    same(small, loaded)
    assert loaded.version == 2
    [info] = storage.list_rooms()
    assert info == RoomInfo("lobby", len(encode_room(small)), loaded.saved_at,
                            len(small.models), 2)


def test_list_and_delete(storage: Storage) -> None:
    rooms = {n: sample_room(n, n=i * 10) for i, n in enumerate(["c", "a", "b"])}
    for r in rooms.values():
        storage.save(r)
    listed = storage.list_rooms()
    assert [r.name for r in listed] == ["a", "b", "c"]
    for info in listed:
        assert info.size_bytes == len(encode_room(rooms[info.name]))
        assert info.models == len(rooms[info.name].models)
        assert info.saved_at > 0 and info.version == 1
    assert storage.delete("b") is True
    assert storage.delete("b") is False
    assert storage.load("b") is None
    assert [r.name for r in storage.list_rooms()] == ["a", "c"]
    loaded = storage.load("c")
    assert loaded is not None
    same(rooms["c"], loaded)
    storage.save(rooms["b"])                 # a deleted room can be saved again
    loaded = storage.load("b")
    assert loaded is not None and loaded.version == 1


def _corruptions() -> dict[str, Callable[[bytes], bytes]]:
    import struct
    import zlib

    import msgspec

    def reheader(body: bytes, fmt: int = FORMAT_VERSION) -> bytes:
        return struct.pack(">4sHI", b"RTRM", fmt, zlib.crc32(body)) + body

    return {
        "truncated": lambda b: b[: len(b) // 2],
        "flipped byte": lambda b: b[:-20] + bytes([b[-20] ^ 0x40]) + b[-19:],
        "too short": lambda b: b[:5],
        "not ours": lambda b: b"SQLite format 3\x00" + b[16:],
        "unknown format version": lambda b: reheader(b[10:], LIVE_FORMAT_VERSION + 1),
        "not messagepack": lambda b: reheader(b"\xc1\xc1\xc1"),
        "wrong shape": lambda b: reheader(msgspec.msgpack.encode([1, 2, 3])),
        "bad model record": lambda b: reheader(msgspec.msgpack.encode(
            ["lobby", "Room", SCHEMA, 2, {}, [[0, "Room", -1, 0, {1: [1, 2]}]]])),
        "unknown type": lambda b: reheader(msgspec.msgpack.encode(
            ["lobby", "Room", SCHEMA, 2, {}, [[0, "Nope", -1, 0, {}]]])),
        "other room's record": lambda b: reheader(msgspec.msgpack.encode(
            ["elsewhere", "Room", SCHEMA, 2, {}, [[0, "Room", -1, 0, {}]]])),
    }


@pytest.mark.parametrize("kind", list(_corruptions()))
def test_corrupt_record_fails_for_that_room_only(storage: Storage, kind: str) -> None:
    storage.save(sample_room("lobby"))
    storage.save(sample_room("other"))
    blob = encode_room(sample_room("lobby"))
    put_raw(storage, "lobby", _corruptions()[kind](blob))
    with pytest.raises(CorruptRoomError) as err:
        storage.load("lobby")
    assert err.value.room == "lobby" and "'lobby'" in str(err.value)
    if kind == "unknown format version":
        assert f"unknown format version {LIVE_FORMAT_VERSION + 1}" in str(err.value)
    other = storage.load("other")
    assert other is not None
    same(sample_room("other"), other)
    assert [r.name for r in storage.list_rooms()] == ["lobby", "other"]
    storage.save(sample_room("lobby"))       # a fresh save repairs it
    assert storage.load("lobby") is not None


def test_decode_room_is_the_inverse_of_encode_room() -> None:
    room = sample_room(n=50)
    same(room, decode_room("lobby", encode_room(room)))
    with pytest.raises(CorruptRoomError, match="of room 'lobby'"):
        decode_room("x", encode_room(room))


@pytest.mark.parametrize("record", [
    (5, "Cube", -1, 0, {1: {1, 2}}),          # a set would encode, as an array
    (5, "Cube", -1, 0, {1: [1]}),
    (5, "Cube", -1, 0, {0: 1}),
    (5, "Cube", -1, 0, {True: 1}),
    ([5, 1], "Cube", -1, 0, {}),
    (-5, "Cube", -1, 0, {}),
    (5, "Nope", -1, 0, {}),
    (5, "Cube", -2, 0, {}),
    (5, "Cube", -1, 0.0, {}),
    (5, "Cube", -1, 0, {}, None),
    (5, "Cube", -1, 0, {}, 0, b"key"),
    (5, "Cube", -1, 0, {}, 0, 1, 2),
    [5, "Cube", -1, 0, {}],
])
def test_malformed_room_is_refused_and_changes_nothing(storage: Storage,
                                                       record: Any) -> None:
    storage.save(sample_room())
    bad = sample_room()
    bad.models.append(record)
    with pytest.raises(StorageError, match="'lobby' cannot be saved"):
        storage.save(bad)
    loaded = storage.load("lobby")
    assert loaded is not None and loaded.version == 1
    same(sample_room(), loaded)


def live_sessions() -> list[SavedSession]:
    return [SavedSession(b"\x01" * 16, b"\xaa" * 32, 2, 3, 17, 2, 40, "ann",
                         {"team": "red", "lvl": 3}),
            SavedSession(b"\x02" * 16, b"\xbb" * 32, 3, 1, 0, 0, 0, None, {})]


def test_a_live_checkpoint_keeps_its_sessions(storage: Storage) -> None:
    """A room saved with members (format 2): its sessions come back exactly, owners and
    all; saved again without, it is format 1 again."""
    room = sample_room()
    room.sessions = live_sessions()
    storage.save(room)
    loaded = storage.load("lobby")
    assert loaded is not None and loaded.format == LIVE_FORMAT_VERSION
    same(room, loaded)
    assert loaded.sessions == live_sessions()
    assert all(type(s.session_id) is bytes and type(s.claims) is dict for s in loaded.sessions)
    assert loaded.models[2][2] == 2                         # an owner kept
    storage.save(sample_room())
    again = storage.load("lobby")
    assert again is not None and again.format == FORMAT_VERSION and again.sessions == []


@pytest.mark.parametrize("session", [
    (b"\x01" * 15, b"\xaa" * 32, 2, 1, 0, 0, 0, None, {}),     # a short id
    (b"\x01" * 16, b"\xaa" * 31, 2, 1, 0, 0, 0, None, {}),     # a short hash
    (b"\x01" * 16, b"\xaa" * 32, 0, 1, 0, 0, 0, None, {}),     # client 0 is the server
    (b"\x01" * 16, b"\xaa" * 32, 2, 0, 0, 0, 0, None, {}),     # epochs start at 1
    (b"\x01" * 16, b"\xaa" * 32, 2, 1, -1, 0, 0, None, {}),
    (b"\x01" * 16, b"\xaa" * 32, 2, 1, 0, 0, 0, 7, {}),        # a user id is a string
    (b"\x01" * 16, b"\xaa" * 32, 2, 1, 0, 0, 0, None, {1: 2}),  # claims by name
    (b"\x01" * 16, b"\xaa" * 32, 2, 1, 0, 0, 0, None),         # too short
])
def test_a_malformed_session_is_refused_at_save(storage: Storage, session: Any) -> None:
    bad = sample_room()
    bad.sessions = [session]
    with pytest.raises(StorageError, match="'lobby' cannot be saved"):
        storage.save(bad)
    assert storage.load("lobby") is None


def test_a_live_checkpoint_that_contradicts_itself_is_corrupt() -> None:
    room = sample_room()
    twice = live_sessions()[0]
    room.sessions = [twice, twice._replace(session_id=b"\x03" * 16)]   # one client, twice
    with pytest.raises(CorruptRoomError, match="share a session id or a client id"):
        decode_room("lobby", encode_room(room))


def test_persistent_models_are_the_room_after_everyone_left() -> None:
    A, B, C, D, E = (dynamic_model_id(1, i) for i in range(1, 6))
    snapshot: list[SnapshotRecord] = [
        R(0, "Room", 3, 0, {1: "kept, unowned"}),
        R((0, 3), "Board", -1, 0, {}),
        R(A, "Cube", 1, DESTROY_WHEN_LAST_CLIENT_LEAVES, {2: 1}),    # session-only
        R((A, 6), "Board", -1, 0, {}),                               # …its declared child
        R(B, "Board", -1, 0, {}, A),                                 # …made under it
        R((B, 9), "Board", -1, 0, {}),                               # …and under that
        R(C, "Cube", 2, DESTROY_WHEN_OWNER_LEAVES, {}),              # its owner is gone
        R(D, "Cube", -1, DESTROY_WHEN_OWNER_LEAVES, {2: 4}),         # unowned: stays
        R(E, "Board", 2, PREVENT_OWNERSHIP_TAKEOVER, {}, D, "k"),    # stays, unowned
        R((D, 6), "Board", 2, 0, {}),
    ]
    assert persistent_models(snapshot) == [
        R(0, "Room", -1, 0, {1: "kept, unowned"}),
        R((0, 3), "Board", -1, 0, {}),
        R(D, "Cube", -1, DESTROY_WHEN_OWNER_LEAVES, {2: 4}),
        R(E, "Board", -1, PREVENT_OWNERSHIP_TAKEOVER, {}, D, "k"),
        R((D, 6), "Board", -1, 0, {}),
    ]
    assert persistent_models(snapshot)[2][4] is snapshot[7][4]    # props are not copied


def test_sqlite_write_failing_mid_transaction_keeps_the_previous_checkpoint(
        sqlite_storage: SQLiteStorage) -> None:
    sqlite_storage.save(sample_room(n=10))
    with sqlite3.connect(sqlite_storage.path) as conn:  # fails after the row was written
        conn.execute("CREATE TRIGGER boom AFTER UPDATE ON rooms BEGIN "
                     "SELECT RAISE(ABORT, 'disk on fire'); END")
    with pytest.raises(StorageError, match="disk on fire"):
        sqlite_storage.save(sample_room(n=1000))
    loaded = sqlite_storage.load("lobby")
    assert loaded is not None and loaded.version == 1
    same(sample_room(n=10), loaded)
    with sqlite3.connect(sqlite_storage.path) as conn:
        conn.execute("DROP TRIGGER boom")
    assert sqlite_storage.save(sample_room(n=1000)) == 2


# Saves two rooms (markers 1 and 2) alternately, back to back, forever: checkpoint version v
# holds room 2 - v % 2. The loop calls the storage's write step with the two blobs encoded
# once, so nearly all of its time is spent inside a write and a SIGKILL lands mid-write.
_SAVER = """
import sys, time
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    PREVENT_OWNERSHIP_TAKEOVER,
    dynamic_model_id,
)
from rtecs_server.storage import SavedRoom, encode_room, open_storage

storage = open_storage(sys.argv[1])
n = int(sys.argv[2])
schema = {"Room": {}, "Cube": {1: ("x", "float", True), 2: ("n", "int", True),
                               3: ("s", "str", True), 4: ("b", "bytes", True)}}
rooms = []
for k in (1, 2):
    models = [(0, "Room", -1, 0, {})] + [
        (dynamic_model_id(1 + i % 10, i // 10 + 1), "Cube", -1, 0,
         {1: k + 0.5, 2: k, 3: f"v{k}" * 5, 4: bytes([k]) * 16}) for i in range(n)]
    rooms.append(SavedRoom("big", "Room", schema, k + 1,
                           {c: n // 10 + 1 for c in range(1, 11)}, models))
blobs = [encode_room(r) for r in rooms]
version = storage.save(rooms[0])
assert version == 1, version
while True:
    version = storage._write("big", blobs[version % 2], n + 1, time.time(), None)
    if version == 3:
        print("writing", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_kill_9_mid_save_leaves_a_whole_checkpoint(storage: Storage, storage_url: str,
                                                    delay: float) -> None:
    n = 40_000
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, storage_url, str(n)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'server'}"})
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "writing":
            pytest.fail(f"the saver exited early ({proc.wait()})")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_storage(storage_url) as fresh:
        room = fresh.load("big")                # a CRC-checked, whole record…
        if isinstance(fresh, RedisStorage):     # a blob staged by the dead saver expires
            for key in fresh._r.keys("rtecs:stage:*"):
                assert 0 < fresh._r.pttl(key) <= 60_000
    assert room is not None and room.version >= 3
    k = room.next_client_id - 1
    assert k == 2 - room.version % 2            # …and the version written with it
    assert len(room.models) == n + 1
    assert all(m[4][2] == k and m[4][3] == f"v{k}" * 5 for m in room.models[1:])


def test_redis_half_sent_write_is_never_applied(redis_server: RedisServer,
                                                redis_storage: RedisStorage,
                                                redis_url: str) -> None:
    redis_storage.save(sample_room(n=10))
    blob = encode_room(sample_room(n=5000))
    key = b"rtecs:room:lobby"
    db = redis_url.rsplit("/", 1)[1].encode()
    cmd = b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db)
    cmd += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(blob))
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        s.sendall(cmd + blob[: len(blob) // 2])  # the writer dies mid-command
    assert redis_storage._r.ping()
    loaded = redis_storage.load("lobby")
    assert loaded is not None and loaded.version == 1
    same(sample_room(n=10), loaded)


def test_sqlite_threads_share_one_storage(sqlite_storage: SQLiteStorage) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                sqlite_storage.save(sample_room(f"room-{t}", n=i))
                assert sqlite_storage.load(f"room-{t}") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=20)
    assert not errors
    assert [(r.name, r.version) for r in sqlite_storage.list_rooms()] == [
        (f"room-{t}", 20) for t in range(4)]


# ----------------------------------------------------------------------------- opening

def test_open_storage_default_creates_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "data"
    for url in [None, "", "sqlite:", "sqlite://"]:
        with open_storage(url, data_dir=str(data)) as s:
            assert isinstance(s, SQLiteStorage) and s.path == data / "rooms.sqlite3"
            s.save(sample_room(f"r{url}"))
    assert (data / "rooms.sqlite3").is_file()
    with sqlite3.connect(data / "rooms.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in conn.execute("PRAGMA table_info(rooms)")]
        assert cols[:3] == ["name", "version", "saved_at"] and "data" in cols
        assert len(conn.execute("SELECT * FROM rooms").fetchall()) == 4


def test_open_storage_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           redis_url: str) -> None:
    with open_storage(f"sqlite://{tmp_path}/x/abs.db") as s:
        assert isinstance(s, SQLiteStorage) and s.path == tmp_path / "x" / "abs.db"
        s.save(sample_room())
    with open_storage(f"sqlite:///{tmp_path}/x/abs.db") as s:  # extra slashes are fine
        assert s.load("lobby") is not None
    monkeypatch.chdir(tmp_path)
    with open_storage("sqlite:rel/r.db") as s:
        assert isinstance(s, SQLiteStorage)
        s.save(sample_room())
    assert (tmp_path / "rel" / "r.db").is_file()
    with open_storage(redis_url) as r:
        assert isinstance(r, RedisStorage) and r.location == redis_url
    with pytest.raises(StorageError, match="unknown storage URL"):
        open_storage("postgres://localhost/x")
    with pytest.raises(StorageError, match="sqlite:///absolute"):
        open_storage("sqlite://relative/x.db")


def test_unreachable_redis_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, never listening: connection refused
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match=rf"127\.0\.0\.1:{port}"):
            open_storage(f"redis://:secret@127.0.0.1:{port}/0")
        assert time.monotonic() - start < 5
    try:
        open_storage(f"redis://:secret@127.0.0.1:{port}/0")
    except StorageUnavailable as exc:
        assert "secret" not in str(exc)


def test_redis_going_away_is_storage_unavailable() -> None:
    server = start_redis()
    try:
        storage = RedisStorage(f"redis://127.0.0.1:{server.port}/0", socket_timeout=2)
        storage.save(sample_room())
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
        shutil.rmtree(server.workdir, ignore_errors=True)
    for call in (lambda: storage.save(sample_room()), lambda: storage.load("lobby"),
                 lambda: storage.claim("lobby", "a", "tcp://a:1", 5), storage.list_rooms):
        with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1"):
            call()
    storage.close()


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "rooms.sqlite3"
    path.write_bytes(b"hello, I am not a database" * 100)
    with pytest.raises(StorageError, match="cannot open"):
        SQLiteStorage(path)


def test_sqlite_from_a_newer_rtecs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rooms.sqlite3"
    SQLiteStorage(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="newer rtecs"):
        SQLiteStorage(path)


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "r.db") as s:
        s.save(sample_room())
        s.save(sample_room())
    with SQLiteStorage(tmp_path / "r.db") as s:
        loaded = s.load("lobby")
        assert loaded is not None and loaded.version == 2
        same(sample_room(), loaded)
    s.close()                                  # idempotent
    with pytest.raises(StorageError, match="closed"):
        s.load("lobby")


def test_redis_key_layout(redis_storage: RedisStorage) -> None:
    redis_storage.save(sample_room())
    lease = redis_storage.claim("lobby", "i1", "tcp://a:1", ttl=5)
    assert lease is not None
    r = redis_storage._r
    assert r.get("rtecs:room:lobby") == encode_room(sample_room())
    assert r.pttl("rtecs:room:lobby") == -1                    # no TTL: it stays
    assert r.hget("rtecs:meta:lobby", "version") == b"1"
    assert r.get("rtecs:fence:lobby") == str(lease.token).encode()
    assert r.smembers("rtecs:rooms") == {b"lobby"}
    assert 0 < r.pttl("rtecs:lease:lobby") <= 5000
    r.script_flush()                                            # as after a Redis restart
    redis_storage.save(sample_room(), fence=lease.token)
    second = redis_storage.claim("other", "i1", "tcp://a:1", ttl=5)
    assert second is not None and second.token == 1            # counters are per room
    r.incr("rtecs:fence:lobby")                                 # someone claimed lobby since
    with pytest.raises(FencedOut):
        redis_storage.save(sample_room(), fence=lease.token)
    assert sorted(r.keys("*")) == [b"rtecs:fence:lobby", b"rtecs:fence:other",
                                   b"rtecs:lease:lobby", b"rtecs:lease:other",
                                   b"rtecs:meta:lobby", b"rtecs:room:lobby", b"rtecs:rooms"]
    assert redis_storage.delete("lobby")
    assert sorted(r.keys("*")) == [b"rtecs:fence:lobby", b"rtecs:fence:other",
                                   b"rtecs:lease:lobby", b"rtecs:lease:other"]


# ----------------------------------------------------------------------------- directory

def test_only_one_of_two_racing_claimers_wins(redis_url: str) -> None:
    a, b = RedisStorage(redis_url), RedisStorage(redis_url)
    try:
        rounds = 150
        barrier = threading.Barrier(2, timeout=10)
        results: dict[str, list[Any]] = {"a": [], "b": []}

        def run(name: str, s: RedisStorage) -> None:
            for i in range(rounds):
                barrier.wait()
                results[name].append(s.claim(f"race-{i % 3}", name, f"tcp://{name}:1", ttl=10))
                barrier.wait()
                lease = results[name][-1]
                if lease is not None:
                    assert s.owner(lease.room) == Owner(name, f"tcp://{name}:1")
                    assert s.release(lease)
                barrier.wait()

        threads = [threading.Thread(target=run, args=("a", a)),
                   threading.Thread(target=run, args=("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=25)
        assert not any(t.is_alive() for t in threads)
        tokens: dict[str, list[int]] = {}
        for i, (la, lb) in enumerate(zip(results["a"], results["b"], strict=True)):
            winners = [x for x in (la, lb) if x is not None]
            assert len(winners) == 1, f"round {i}: {la} {lb}"
            tokens.setdefault(winners[0].room, []).append(winners[0].token)
        for room, ts in tokens.items():            # every claim of a room: a new, bigger token
            assert ts == list(range(1, len(ts) + 1)), room
    finally:
        a.close()
        b.close()


def test_held_room_redirects_to_its_owner(redis_storage: RedisStorage, redis_url: str) -> None:
    with RedisStorage(redis_url) as other:
        lease = redis_storage.claim("lobby", "host-a", "tcp://10.0.0.1:7777", ttl=10)
        assert lease is not None and lease.token == 1
        assert other.claim("lobby", "host-b", "tcp://b:7777", ttl=10) is None
        assert other.owner("lobby") == Owner("host-a", "tcp://10.0.0.1:7777")
        assert other.owner("elsewhere") is None
        assert redis_storage.claim("lobby", "host-a", "tcp://10.0.0.1:7777", ttl=10) is None
        assert redis_storage.release(lease) is True
        assert redis_storage.release(lease) is False
        assert other.owner("lobby") is None
        taken = other.claim("lobby", "host-b", "tcp://b:7777", ttl=10)
        assert taken is not None and taken.token == 2
        assert redis_storage.owner("lobby") == Owner("host-b", "tcp://b:7777")


def test_lease_renewal_and_expiry(redis_storage: RedisStorage, redis_url: str) -> None:
    ttl = 0.5
    before = time.monotonic()
    lease = redis_storage.claim("lobby", "a", "tcp://a:1", ttl=ttl)
    assert lease is not None
    assert before + ttl - 0.01 <= lease.expires_at <= time.monotonic() + ttl
    # Renewed every 0.1 s, it outlives several ttls.
    end = time.monotonic() + 2.5 * ttl
    while time.monotonic() < end:
        assert redis_storage.renew(lease) is True
        assert lease.time_left() > 0
        assert redis_storage.owner("lobby") == Owner("a", "tcp://a:1")
        time.sleep(0.1)
    # Left alone, it expires.
    wait_until(lambda: redis_storage.owner("lobby") is None, what="the lease to expire")
    assert lease.time_left() < 0                  # the local estimate is never late
    assert redis_storage.renew(lease) is False
    with RedisStorage(redis_url) as other:
        successor = other.claim("lobby", "b", "tcp://b:1", ttl=10)
        assert successor is not None and successor.token > lease.token
        assert redis_storage.renew(lease) is False   # the old holder can't take it back
        assert redis_storage.release(lease) is False  # nor remove the successor's lease
        assert other.owner("lobby") == Owner("b", "tcp://b:1")
        assert other.renew(successor) is True


def test_stale_fence_cannot_overwrite_the_successor(storage: Storage, second: Storage) -> None:
    first = storage.claim("lobby", "a", "tcp://a:1", ttl=0.2)
    assert first is not None
    storage.save(sample_room(n=3), fence=first.token)
    if isinstance(storage, RedisStorage):     # host a stalls past its lease…
        wait_until(lambda: storage.owner("lobby") is None, what="the lease to expire")
    succ = second.claim("lobby", "b", "tcp://b:1", ttl=10)   # …and b takes over
    assert succ is not None and succ.token > first.token
    loaded = second.load("lobby")
    assert loaded is not None and loaded.version == 1      # b resumes from a's checkpoint
    theirs = sample_room(n=7)
    theirs.next_client_id = 42
    assert second.save(theirs, fence=succ.token) == 2
    with pytest.raises(FencedOut) as err:                   # a wakes up and saves
        storage.save(sample_room(n=3000), fence=first.token)
    assert (err.value.room, err.value.fence, err.value.current) == (
        "lobby", first.token, succ.token)
    assert storage.renew(first) is False
    for s in (storage, second):
        kept = s.load("lobby")
        assert kept is not None and kept.version == 2
        same(theirs, kept)
    assert second.save(theirs, fence=succ.token) == 3       # the successor carries on


def test_fencing_tokens_only_grow(storage: Storage) -> None:
    tokens = []
    for _ in range(3):
        lease = storage.claim("lobby", "a", "tcp://a:1", ttl=10)
        assert lease is not None
        tokens.append(lease.token)
        storage.save(sample_room(), fence=lease.token)
        assert storage.delete("lobby")                       # deleting keeps the counter
        assert storage.release(lease)
    assert tokens == [1, 2, 3]


def test_sqlite_directory_always_grants(sqlite_storage: SQLiteStorage) -> None:
    a = sqlite_storage.claim("lobby", "only", "tcp://me:1", ttl=1)
    b = sqlite_storage.claim("lobby", "only", "tcp://me:1", ttl=1)
    assert a is not None and b is not None and b.token == a.token + 1
    assert sqlite_storage.owner("lobby") == Owner("only", "tcp://me:1")
    assert sqlite_storage.renew(b) is True and sqlite_storage.renew(a) is False
    assert sqlite_storage.release(b) is True
    assert sqlite_storage.owner("lobby") is None
    with pytest.raises(FencedOut):
        sqlite_storage.save(sample_room(), fence=a.token)
    assert sqlite_storage.save(sample_room(), fence=b.token) == 1


def test_leases_and_save_times_follow_the_storages_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_storage(None, str(tmp_path), clock=clock) as storage:
        assert storage.clock is clock
        lease = storage.claim("lobby", "a", "tcp://a:1", ttl=2.0)
        assert lease is not None and lease.expires_at == clock.now + 2.0
        clock.advance(1.5)
        assert lease.time_left() == 0.5
        assert storage.renew(lease) and lease.time_left() == 2.0
        clock.advance(2.5)
        assert lease.time_left() == -0.5  # the local estimate moves only with the clock
        storage.save(SavedRoom("lobby", "Game", {"Game": {}}, 1, {}, [(0, "Game", -1, 0, {})]))
        saved = storage.load("lobby")
        assert saved is not None and saved.saved_at == clock.wall()


def test_a_server_refuses_a_storage_on_another_clock(tmp_path: Path) -> None:
    from rtecs_server import RoomServer
    from rtecs_server.persistence import Persistence

    with SQLiteStorage(tmp_path / "rooms.sqlite3") as storage:
        with pytest.raises(ValueError, match="clock"):
            RoomServer(storage=storage, clock=ManualClock())
        with pytest.raises(ValueError, match="clock"):
            Persistence(storage, advertise="tcp://127.0.0.1:1", clock=ManualClock())
