"""Per-frame cost of an rtecs SyncSystem with 10,000 replicated entities, 1% changing.

    python -m bench.sync_system [--entities 10000] [--frames 300] [--quick]

One client in its own esper world, spawned 10,000 entities (a Position model each), talks to
an in-process RoomHost over the memory transport. A frame: move 100 entities (x and y), run
``esper.process()`` in the client's world (SyncSystem: collect, encode, send, then apply what
arrived, including the previous frame's answers). The server's work between frames is not
counted. The floor, measured in the same run: the same 200 property changes put in a dict
and encoded with ``msgpack.packb``. Target: at most 3x the floor. ``--quick`` (1,000
entities, 60 frames) is a smoke run.
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import random
import statistics
import sys
import time

import esper
import msgpack

import rtecs
from bench._harness import ratio_line
from rtecs.ecs import in_world
from rtecs.realtime import Realtime
from rtecs.transport.memory import MemoryNetwork
from rtecs_server.host import RoomHost

ENTITIES = 10_000
CHANGED = 100
FRAMES = 300


class Position(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, reliable=False)
    y: float = rtecs.prop(2, reliable=False)


class Arena(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")


def setup() -> tuple[Realtime, MemoryNetwork, RoomHost, list[Position]]:
    net = MemoryNetwork()
    host = RoomHost(net.server)
    clock = [0.0]
    rt = Realtime(net.connect("bench"), "bench", Arena(), types=[Position], world="bench",
                  frame_duration=0.0, ping_interval=1e9, heartbeat_timeout=1e9,
                  clock=lambda: clock[0])
    with in_world("bench"):
        esper.add_processor(rtecs.SyncSystem(rt), priority=100)

    def pump() -> None:
        net.step()
        host.pump(0.0)
        net.step()

    pump()
    rt.tick()
    positions = [Position(x=float(i), y=0.0) for i in range(ENTITIES)]
    for p in positions:
        rt.spawn(p)
    for _ in range(3):
        rt.tick()
        pump()
    rt.tick()
    return rt, net, host, positions


def main(argv: list[str] | None = None) -> None:
    global ENTITIES, FRAMES
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=ENTITIES)
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1,000 entities, 60 frames")
    args = parser.parse_args(argv)
    ENTITIES, FRAMES = (1_000, 60) if args.quick else (args.entities, args.frames)
    rt, net, host, positions = setup()
    rng = random.Random(1)
    changes: dict[int, float] = {}
    times, floors = [], []
    gc.disable()
    try:
        for frame in range(FRAMES + 50):
            chosen = rng.sample(positions, CHANGED)
            t0 = time.perf_counter()
            for p in chosen:
                p.x += 1.0
                p.y = frame * 0.5
            with in_world("bench"):
                esper.process()
            t1 = time.perf_counter()
            net.step()
            host.pump(0.0)
            net.step()
            # the floor: the same 200 changes as plain dict writes + one packb
            t2 = time.perf_counter()
            changes.clear()
            for i, p in enumerate(chosen):
                changes[i * 2] = p.x
                changes[i * 2 + 1] = p.y
            msgpack.packb(changes)
            t3 = time.perf_counter()
            if frame >= 50:
                times.append(t1 - t0)
                floors.append(t3 - t2)
    finally:
        gc.enable()
    cost, floor = statistics.median(times) * 1e6, statistics.median(floors) * 1e6
    with in_world("bench"):
        alive = len(esper.get_component(Position))
    print(f"machine: Python {platform.python_version()}, {platform.platform()}, "
          f"{__import__('os').cpu_count()} CPUs")
    print("command: python -m bench.sync_system")
    print(f"{alive} replicated entities, {CHANGED} moved per frame (x and y), "
          f"median of {FRAMES} frames")
    print(f"  SyncSystem frame (writes + esper.process): {cost:8.1f} µs")
    print(f"  floor (dict writes + msgpack.packb):       {floor:8.1f} µs")
    ratio = cost / floor
    print(ratio_line(f"sync system, {alive} entities", ratio, 3.0))
    logging.getLogger("rtecs").setLevel(logging.ERROR)  # the last answer is not awaited
    rt.close(timeout=0)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
