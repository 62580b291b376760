"""What a checkpoint costs: saving and loading a big room with SQLite and Redis, against the
floor of moving the same bytes as one blob.

Run from the project root::

    .venv/bin/python -m bench.storage [--models 100000] [--reps 7] [--redis URL] [--quick]

The room has ``--models`` dynamic models of 4 properties (a float, an int, a 10-char string,
8 bytes) plus the room model, as :class:`~rtecs_server.storage.SavedRoom` records. For each
backend (SQLite in a temporary directory on the same disk; Redis: ``--redis`` or a
``redis-server`` this script starts on a free loopback port, without persistence) it
reports the median of ``--reps``:

- save: :meth:`Storage.save` (shape check + MessagePack encode + the atomic write; SQLite is
  WAL, ``synchronous=FULL``, one transaction), split into encode (check + encode + CRC) and
  write; floor: the blob written to a file with ``fsync`` (SQLite's row) or one Redis ``SET``
  (Redis's row);
- load: :meth:`Storage.load` (read + CRC + decode + shape check); floor: the file read back,
  or one Redis ``GET``.

Then the checkpoint cost of a live room where 1,000 persistent properties change per second:
the host saves the whole room once per second (issue 5's default interval), so the cost per
second is one full save against one floor write per second. The room is a real
:class:`~rtecs_server.Room` restored from the records, written by a member's updates; the
checkpoint is what the host does: :meth:`Room.export` (the live records and
:func:`persistent_models`), then :meth:`Storage.save`. Ten simulated seconds run back to back
(one update of 1,000 writes to random models, then export and save): no time is spent
sleeping.
``--quick`` (5,000 models, 3 reps, 2 simulated seconds) is a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench._harness import ratio_line
from rtecs.gcpause import paused_gc
from rtecs.protocol import PROTOCOL_VERSION, Hello, SnapshotRecord, Update, dynamic_model_id
from rtecs_server import Room
from rtecs_server.storage import (
    RedisStorage,
    SavedRoom,
    SQLiteStorage,
    Storage,
    decode_room,
    encode_room,
)

SCHEMA = {"Room": {1: ("title", "str", True)},
          "Cube": {1: ("x", "float", True), 2: ("n", "int", True), 3: ("name", "str", True),
                   4: ("tag", "bytes", True)}}


def make_room(models: int, seed: int = 1) -> SavedRoom:
    rng = random.Random(seed)
    records: list[SnapshotRecord] = [SnapshotRecord(0, "Room", -1, 0, {1: "benchmark"})]
    clients = 20
    for i in range(models):
        owner = -1 if i % 3 else 1 + i % clients
        records.append(SnapshotRecord(
            dynamic_model_id(1 + i % clients, 1 + i // clients), "Cube", owner, 0,
            {1: rng.random() * 100, 2: i, 3: f"cube-{i:05d}", 4: rng.randbytes(8)}))
    return SavedRoom("bench", "Room", SCHEMA, clients + 1,
                     {c: models // clients + 1 for c in range(1, clients + 1)}, records)


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def paired(a: Callable[[], object], b: Callable[[], object],
           reps: int) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, called in turns so that drift (other processes, the
    allocator's state) weighs on both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta) * 1000, statistics.median(tb) * 1000


def alternating(fn: Callable[[SavedRoom], object], rooms: list[SavedRoom]) -> Callable[[], None]:
    """Each call saves the other room: SQLite skips rewriting overflow pages whose bytes
    did not change, so saving one room again and again would flatter it."""
    turn = iter(range(1 << 30))

    def call() -> None:
        fn(rooms[next(turn) % len(rooms)])

    return call


def file_floor(path: str, blob: bytes) -> tuple[Callable[[], None], Callable[[], bytes]]:
    """SQLite's floor: the blob written to a file with fsync, and read back."""
    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return write, read


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="rtecs-bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def checkpoint_cost(storage: Storage, room: SavedRoom, seconds: int,
                    pause_gc: bool) -> tuple[float, float]:
    """(export, save) ms per simulated second of a live room where 1,000 persistent
    properties change per second, each the mean over ``seconds``. The room is a real
    :class:`~rtecs_server.Room` restored from ``room``, written by a member's updates;
    export is :meth:`Room.export` (its live records and :func:`persistent_models`), save
    :meth:`Storage.save` — what the host's checkpoint does. With ``pause_gc`` the cyclic GC
    is paused around both, as the host does (:func:`rtecs.gcpause.paused_gc`)."""
    rng = random.Random(2)
    live = Room.restore(room)
    member = live.join(Hello(PROTOCOL_VERSION, room.name, room.root_type, room.schema, None),
                       0.0).client_id
    live.flush(0.0)
    ids = [r.model_id for r in room.models[1:]]
    export_t = save_t = 0.0
    for s in range(seconds):
        runs = [[mid, 2, s] for mid in rng.sample(ids, 1000)]
        live.apply_update(member, Update(s + 1, runs, 1))
        live.flush(float(s))
        with paused_gc() if pause_gc else contextlib.nullcontext():
            t0 = time.perf_counter()
            saved = live.export()
            t1 = time.perf_counter()
            storage.save(saved)
            t2 = time.perf_counter()
        export_t += t1 - t0
        save_t += t2 - t1
    return export_t / seconds * 1000, save_t / seconds * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=10, help="simulated checkpoint seconds")
    ap.add_argument("--redis", help="use this Redis instead of starting one")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: --models 5000 --reps 3 --seconds 2")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.reps, args.seconds = 5_000, 3, 2

    start = time.monotonic()
    room = make_room(args.models)
    rooms = [room, make_room(args.models, seed=2)]
    blob = encode_room(room)
    encode_ms = median_ms(lambda: encode_room(room), args.reps)
    decode_ms = median_ms(lambda: decode_room("bench", blob), args.reps)
    print(f"room: {args.models:,} models x 4 props, blob {len(blob) / 1e6:.2f} MB; "
          f"check + encode + CRC {encode_ms:.1f} ms, CRC + decode + check {decode_ms:.1f} ms "
          f"(medians of {args.reps})")
    rows: list[tuple[str, float, float, float, float, float, float]] = []
    blobs = [blob, encode_room(rooms[1])]

    def parts(st: Storage, floor_write: Callable[[], object],
              floor_read: Callable[[], object]) -> tuple[float, float, float, float]:
        """The storage's own part (writing and reading the encoded blob) and the floor's."""
        w, fw = paired(alternating(
            lambda r: st._write("bench", blobs[r is rooms[1]], len(r.models), 0.0, None),
            rooms), floor_write, args.reps)
        r, fr = paired(lambda: st._read("bench"), floor_read, args.reps)
        return w, fw, r, fr

    costs: list[tuple[str, float, float, float]] = []
    tmp = tempfile.mkdtemp(prefix="rtecs-bench-")
    try:
        with SQLiteStorage(os.path.join(tmp, "rooms.sqlite3")) as sq:
            save = median_ms(alternating(sq.save, rooms), args.reps)
            load = median_ms(lambda: sq.load("bench"), args.reps)
            w, fw, r, fr = parts(sq, *file_floor(os.path.join(tmp, "floor.bin"), blob))
            rows.append(("SQLite", save, w, fw, load, r, fr))
            for pause in (False, True):
                costs.append((f"SQLite{'*' * pause}",
                              *checkpoint_cost(sq, room, args.seconds, pause), fw))
        with redis_server() if args.redis is None else _given(args.redis) as url:
            if url is None:
                print("(redis-server is not installed: no Redis rows; "
                      "apt-get install redis-server)")
            else:
                with RedisStorage(url, prefix="rtecs-bench:") as rs:
                    client = rs._r
                    save = median_ms(alternating(rs.save, rooms), args.reps)
                    load = median_ms(lambda: rs.load("bench"), args.reps)
                    w, fw, rd, fr = parts(rs, lambda: client.set("rtecs-bench:floor", blob),
                                          lambda: client.get("rtecs-bench:floor"))
                    rows.append(("Redis", save, w, fw, load, rd, fr))
                    for pause in (False, True):
                        costs.append((f"Redis{'*' * pause}",
                                      *checkpoint_cost(rs, room, args.seconds, pause), fw))
                    client.delete("rtecs-bench:floor", "rtecs-bench:room:bench",
                             "rtecs-bench:rooms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'backend':8} {'save ms':>8} {'write':>7} {'floor':>7} {'ratio':>6} {'w/fl':>5}"
          f"   {'load ms':>8} {'read':>7} {'floor':>7} {'ratio':>6} {'r/fl':>5}")
    for name, save, w, fw, load, r, fr in rows:
        print(f"{name:8} {save:8.1f} {w:7.1f} {fw:7.1f} {save / fw:6.1f} {w / fw:5.1f}"
              f"   {load:8.1f} {r:7.1f} {fr:7.1f} {load / fr:6.1f} {r / fr:5.1f}")
    print("  (write, read: the storage's own part, moving the encoded blob; ratio: the whole"
          " save or\n   load over its floor; w/fl, r/fl: the storage's part over the floor)")
    print()
    print("checkpoint of a live room, 1,000 persistent property changes/s, one full save/s:")
    print(f"{'backend':8} {'export':>9} {'save':>7} {'s/fl':>5} {'total':>7}"
          f" {'floor':>7} {'t/fl':>6} {'core %':>7}")
    for name, export_ms, ck, fw in costs:
        total = export_ms + ck
        print(f"{name:8} {export_ms:9.1f} {ck:7.1f} {ck / fw:5.1f} {total:7.1f}"
              f" {fw:7.1f} {total / fw:6.1f} {total / 10:7.1f}")
    print(f"  (ms per second of room time. export: Room.export, the live room's records and"
          f"\n   persistent_models; save: Storage.save; floor: one blob write; core % = total /"
          f" 1000 ms;\n   * = the cyclic GC paused around both, as the host's checkpoint does."
          f" It writes\n   {len(blob) / 1e6:.1f} MB/s for about 12 kB/s of changed values.)")
    print()
    for name, save, _w, fw, load, _r, fr in rows:
        print(ratio_line(f"storage {name} save", save / fw, detail=f"{save:.1f} vs {fw:.1f} ms"))
        print(ratio_line(f"storage {name} load", load / fr, detail=f"{load:.1f} vs {fr:.1f} ms"))
    for name, export_ms, ck, fw in costs:
        total = export_ms + ck
        print(ratio_line(f"storage {name} checkpoint per second", total / fw,
                         detail=f"{total:.1f} vs {fw:.1f} ms"))
    print(f"\nran in {time.monotonic() - start:.1f} s")


@contextmanager
def _given(url: str) -> Iterator[str | None]:
    yield url


if __name__ == "__main__":
    main()
