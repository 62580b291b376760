"""Client per-frame cost: property writes + ``collect()`` + ``encode()`` (DESIGN §7).

Run from the project root::

    .venv/bin/python -m bench.client_tick [--sizes 100,10000,100000] [--quick]

For datastores of 100, 10,000 and 100,000 dynamic models (4 properties each) it times one
frame of 100 property writes to 100 random models, ``Datastore.collect()`` and
``rtecs.protocol.encode()`` of the update, and, separately, applying the server's answer
(the confirm that empties the in-flight cache again). The floor, measured in the same run, is
the same 100 writes as plain dict assignments followed by ``msgpack.packb`` of the dict.
Every figure is the median per-frame time, best of several repeats, with gc disabled while
timing. Then ``tracemalloc`` measures 100,000 idle models attached to a datastore.
``--quick`` (about 2 s: 100 and 1,000 models, fewer frames, 5,000 models for the memory) is a
smoke run, not a measurement.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

import msgpack

from bench._harness import ratio_line
from rtecs.datastore import Datastore
from rtecs.model import RealtimeModel, prop
from rtecs.protocol import UpdateEntry, Welcome, encode

SIZES: tuple[int, ...] = (100, 10_000, 100_000)
WRITES_PER_FRAME = 100  # 25 to each of the 4 properties, each to a different model
WARMUP_FRAMES = 200
FRAMES_PER_REPEAT = 400
REPEATS = 5
MEMORY_MODELS = 100_000

TARGET_FLOOR_RATIO = 3.0
TARGET_SCALING = 1.5
TARGET_MEMORY_MB = 100.0

CLIENT_ID = 1


class Room(RealtimeModel):
    title: str = prop(1, default="bench")


class Unit(RealtimeModel):
    name: str = prop(1, default="")
    x: float = prop(2)
    y: float = prop(3)
    hp: int = prop(4, default=100)


# pid of each property, for the floor's keys (i * 8 + pid)
_PID = {"name": 1, "x": 2, "y": 3, "hp": 4}


def build(n: int) -> tuple[Datastore, list[Unit]]:
    """A datastore of ``n`` dynamic Units, created, sent and answered: nothing dirty, the
    in-flight cache empty."""
    ds = Datastore(Room(), [Unit])
    ds.load_snapshot(Welcome(CLIENT_ID, 0, 0.0, [], [CLIENT_ID]))
    models = [Unit(name=f"m{i}", x=float(i), y=-float(i), hp=100) for i in range(n)]
    for m in models:
        ds.create(m)
    settle(ds)
    return ds, models


def settle(ds: Datastore) -> None:
    """Collect whatever is dirty and apply the server's answer accepting all of it."""
    update = ds.collect()
    if update is not None:
        ds.apply_entry(UpdateEntry(CLIENT_ID, update.seq, update.changes, ()))
        ds.flush_emissions()
    if ds.has_unsent_changes or len(ds.cache):
        raise RuntimeError(f"datastore not settled: {len(ds.cache)} keys in the cache")


Frame = tuple[list[tuple[Unit, str]], list[tuple[Unit, float]], list[tuple[Unit, float]],
              list[tuple[Unit, int]], list[tuple[int, Any]]]


def make_frames(models: list[Unit], count: int, rng: random.Random,
                counter: list[int]) -> list[Frame]:
    """Pre-built writes for ``count`` frames: 100 distinct random models per frame, values
    that never equal the current one (so no write short-circuits), plus the floor's writes."""
    frames: list[Frame] = []
    n = len(models)
    quarter = WRITES_PER_FRAME // 4
    for _ in range(count):
        picked = rng.sample(range(n), WRITES_PER_FRAME)
        names: list[tuple[Unit, str]] = []
        xs: list[tuple[Unit, float]] = []
        ys: list[tuple[Unit, float]] = []
        hps: list[tuple[Unit, int]] = []
        floor: list[tuple[int, Any]] = []
        for k, i in enumerate(picked):
            counter[0] += 1
            c = counter[0]
            attr = ("name", "x", "y", "hp")[k // quarter]
            value: Any
            if attr == "name":
                value = f"w{c}"
                names.append((models[i], value))
            elif attr == "x":
                value = c + 0.5
                xs.append((models[i], value))
            elif attr == "y":
                value = -c - 0.5
                ys.append((models[i], value))
            else:
                value = 1_000_000 + c
                hps.append((models[i], value))
            floor.append((i * 8 + _PID[attr], value))
        frames.append((names, xs, ys, hps, floor))
    return frames


def time_rtecs(ds: Datastore, frames: list[Frame]) -> dict[str, list[float]]:
    """Per-frame seconds of each phase; every frame's answer is applied before the next."""
    perf = time.perf_counter
    collect = ds.collect
    apply_entry = ds.apply_entry
    flush = ds.flush_emissions
    out: dict[str, list[float]] = {"write": [], "collect": [], "encode": [], "total": [],
                                   "confirm": []}
    w_, c_, e_, t_, a_ = (out[k].append for k in ("write", "collect", "encode", "total",
                                                  "confirm"))
    nbytes = 0
    for names, xs, ys, hps, _ in frames:
        t0 = perf()
        for m, s in names:
            m.name = s
        for m, f in xs:
            m.x = f
        for m, f in ys:
            m.y = f
        for m, h in hps:
            m.hp = h
        t1 = perf()
        update = collect()
        t2 = perf()
        data = encode(update)  # type: ignore[arg-type]
        t3 = perf()
        apply_entry(UpdateEntry(CLIENT_ID, update.seq, update.changes, ()))  # type: ignore[union-attr]
        flush()
        t4 = perf()
        w_(t1 - t0)
        c_(t2 - t1)
        e_(t3 - t2)
        t_(t3 - t0)
        a_(t4 - t3)
        nbytes = len(data)
    out["bytes"] = [float(nbytes)]
    return out


def time_floor(frames: list[Frame]) -> list[float]:
    perf = time.perf_counter
    packb = msgpack.packb
    out: list[float] = []
    add = out.append
    for *_, writes in frames:
        t0 = perf()
        d: dict[int, Any] = {}
        for k, v in writes:
            d[k] = v
        packb(d)
        add(perf() - t0)
    return out


def measure(n: int, rng: random.Random) -> dict[str, float]:
    ds, models = build(n)
    counter = [0]
    warm = make_frames(models, WARMUP_FRAMES, rng, counter)
    runs = [make_frames(models, FRAMES_PER_REPEAT, rng, counter) for _ in range(REPEATS)]
    gc.collect()
    gc.disable()
    try:
        time_rtecs(ds, warm)
        time_floor(warm)
        best: dict[str, float] = {}
        floors: list[float] = []
        for frames in runs:
            # alternate floor and rtecs so both see the same machine state
            floors.append(statistics.median(time_floor(frames)))
            result = time_rtecs(ds, frames)
            medians = {k: statistics.median(v) for k, v in result.items()}
            if not best or medians["total"] < best["total"]:
                best = medians
    finally:
        gc.enable()
    settle(ds)  # also checks the cache really is empty after every frame was answered
    best["floor"] = min(floors)
    return best


def measure_memory(n: int) -> tuple[int, int]:
    """Bytes held by ``n`` idle Units in a datastore (created, sent, answered), and the peak."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ds, models = build(n)
    del models  # the datastore holds every model; the bench's list is not client memory
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if len(ds.models) != n + 1:
        raise RuntimeError("models missing from the datastore")
    return current - base, peak - base


def main(argv: list[str] | None = None) -> None:
    global SIZES, WARMUP_FRAMES, FRAMES_PER_REPEAT, REPEATS, MEMORY_MODELS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="datastore sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: sizes 100,1000, 3x100 frames, 5,000 models for "
                             "the memory")
    args = parser.parse_args(argv)
    SIZES = tuple(int(v) for v in args.sizes.split(","))
    REPEATS = args.repeats
    if args.quick:
        SIZES, WARMUP_FRAMES, FRAMES_PER_REPEAT, REPEATS = (100, 1000), 50, 100, 3
        MEMORY_MODELS = 5_000
    start = time.perf_counter()
    rng = random.Random(7)
    print(f"machine: Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.platform()}, {os.cpu_count()} CPUs; msgpack {msgpack.version}")
    exe = os.path.relpath(sys.executable) if sys.executable else "python"
    print(f"command: {exe} -m bench.client_tick")
    print(f"frame: {WRITES_PER_FRAME} writes to {WRITES_PER_FRAME} random Units (4 props, all "
          f"reliable) + collect() + encode(); median per frame, best of {REPEATS}x"
          f"{FRAMES_PER_REPEAT} frames after {WARMUP_FRAMES} warm-up, gc off")
    print("floor: the same 100 writes as d[i*8+pid] = v into a fresh dict + msgpack.packb(d)")
    print()

    rows = {n: measure(n, rng) for n in SIZES}

    us = 1e6
    head = (f"{'models':>8} | {'writes':>7} {'collect':>7} {'encode':>7} | {'TOTAL':>7} | "
            f"{'floor':>6} | {'x floor':>7} | {'per write':>9} | {'confirm':>7} | {'bytes':>5}")
    print("per-frame µs (columns are separate medians; the parts need not sum to TOTAL)")
    print(head)
    print("-" * len(head))
    for n, r in rows.items():
        print(f"{n:>8,} | {r['write'] * us:7.1f} {r['collect'] * us:7.1f} "
              f"{r['encode'] * us:7.1f} | {r['total'] * us:7.1f} | {r['floor'] * us:6.1f} | "
              f"{r['total'] / r['floor']:6.1f}x | "
              f"{r['total'] * 1e9 / WRITES_PER_FRAME:6.0f} ns | "
              f"{r['confirm'] * us:7.1f} | {r['bytes']:5.0f}")
    print()

    small, large = rows[SIZES[0]], rows[SIZES[-1]]
    worst = max(r["total"] / r["floor"] for r in rows.values())
    scaling = large["total"] / small["total"]

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    worst_n = max(rows, key=lambda n: rows[n]["total"] / rows[n]["floor"])
    print(ratio_line(f"client tick, worst row ({worst_n:,} models)", worst,
                     TARGET_FLOOR_RATIO))
    print(f"scaling {SIZES[-1]:,} vs {SIZES[0]:,} models:     {scaling:6.2f}x   target ≤ "
          f"{TARGET_SCALING:g}x   {verdict(scaling <= TARGET_SCALING)}")

    held, peak = measure_memory(MEMORY_MODELS)
    mb = held / 1e6
    print(f"memory, {MEMORY_MODELS:,} idle models (4 props, no subscribers, after collect + "
          f"confirm): {mb:.1f} MB = {held / MEMORY_MODELS:.0f} bytes/model "
          f"(peak while building {peak / 1e6:.1f} MB)   target < {TARGET_MEMORY_MB:g} MB   "
          f"{verdict(mb < TARGET_MEMORY_MB)}")
    print(f"\nruntime {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
