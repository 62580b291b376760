"""How the server's tick interval trades relay latency for CPU (chooses ``--tick-ms``).

Run from the project root (``--quick``: about 3 s)::

    .venv/bin/python -m bench.server_tick [N ...] [--ticks 0,1,2,5,10,20] [--seconds 4]

For each N (clients in one room) and tick interval it starts a real ``rtecs-server``
(``--rate-limit 0``, a fresh ``--data-dir``) pinned to core 0, and then, as its floor, the
bare relay (:mod:`bench._relay_floor`) batching at the same interval (0: after every
receive). Pinned to core 1, the load generator (:class:`bench._load.RawClients`) runs N raw
clients: each sends an unreliable position update at 20 Hz (phases spread evenly over the
50 ms period) and reads everything relayed. Every update carries its send time, so 8 sampled
clients decode every batch and measure relay latency (send → receipt by another client; both
ends in this process, one clock). Reported per run: the server's (or relay's) CPU (% of one
core, from /proc/<pid>/stat), server ÷ floor CPU (``x floor``, and a ``ratio to floor``
line per row), the load generator's CPU (near 100 % the generator, not the server, is the
limit), latency p50/p99, batches and position updates received per sampled client per second
(updates should be 20 x N: every client's own included).

Measured on the 2-core development machine before the floor was added (4 s per row)::

        N tick ms  server %  gen %  p50 ms  p99 ms  batch/s   upd/s
       20       0      10.0   11.9    0.29    0.47    400.0     400
       20       5       5.2    7.3    3.43    6.10    178.1     400
       20      20       3.8    4.6   10.73   20.95     48.5     400
      100       0      48.2   56.2    2.48   10.53    834.9    1998
      100       5      22.5   24.2    4.23    6.95    180.7    2001
      100      20      12.5   16.2   11.33   21.74     48.8    1995
      300       0      81.7   97.7    9.87   22.78    497.6    6002
      300       5      59.8   60.7    5.40    9.39    183.0    6000
      300      20      31.8   40.5   13.30   25.62     49.0    6005

At N = 300 with ticks of 0-2 ms the generator nears 100 %, so those latencies include its
own queueing; for N = 1000 see :mod:`bench.room_fanout`, with a lighter generator.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from dataclasses import dataclass

import zmq

from bench import _harness as h
from bench._load import RawClients, hello
from rtecs.protocol import Batch, UpdateEntry

SCHEMA = {"Game": {1: ("title", "str", True)},
          "Player": {1: ("x", "float", False), 2: ("y", "float", False)}}
RATE = 20.0
SAMPLED = 8
WARMUP = 1.0


@dataclass
class Result:
    kind: str
    n: int
    tick: float
    server_cpu: float
    gen_cpu: float
    p50: float
    p99: float
    batches: float
    updates: float


def run(kind: str, n: int, tick_ms: float, seconds: float, warmup: float = WARMUP) -> Result:
    data_dir = tempfile.mkdtemp(prefix="rtecs-tick-")
    cmd = (h.floor_cmd(tick_ms) if kind == "floor"
           else h.server_cmd(tick_ms, data_dir, ["--rate-limit", "0"]))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw: RawClients | None = None
    try:
        proc, endpoint = h.start_server(cmd, name=kind)
        step = max(1, n // SAMPLED)
        sampled = list(range(0, n, step))[:SAMPLED]
        latencies: list[float] = []
        positions = 0

        def on_batch(i: int, msg: Batch, frame: bytes, t: float) -> None:
            nonlocal positions
            for e in msg.entries:
                if isinstance(e, UpdateEntry) and e.sender > 0:
                    for run_ in e.changes:
                        if len(run_) == 5 and run_[1] == 1:
                            positions += 1
                            latencies.append((t - run_[2]) * 1000)

        raw = RawClients(ctx, endpoint, n, rate=RATE, score_every=1 << 62, probes=sampled,
                         on_batch=on_batch)
        raw.join(hello("bench", "Game", SCHEMA), timeout=30, alive=lambda: h.check_alive(proc))
        raw.create("Player", 0, (1, 0.0, 2, 0.0))
        start = time.perf_counter() + 0.2
        raw.schedule(start)
        t_measure = start + warmup
        t_end = t_measure + seconds
        cpu0 = srv0 = wall0 = 0.0
        measuring = False
        stamp = lambda k, seq, now: now  # noqa: E731 — x is the send time
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_measure:
                measuring = True
                cpu0, srv0, wall0 = h.cpu_seconds("self"), h.cpu_seconds(proc.pid), now
            if now >= t_end:
                break
            raw.send_due(now, measuring, stamp)
            wait = min(raw.next_due(), t_end) - time.perf_counter()
            raw.drain(measuring, max(0, min(5, math.ceil(wait * 1000))))
        wall = time.perf_counter() - wall0
        cpu = h.cpu_seconds("self") - cpu0
        srv = h.cpu_seconds(proc.pid) - srv0
        return Result(kind, n, tick_ms, 100 * srv / wall, 100 * cpu / wall,
                      h.percentile(latencies, 0.5), h.percentile(latencies, 0.99),
                      sum(raw.rx_batches[i] for i in sampled) / len(sampled) / wall,
                      positions / len(sampled) / wall)
    finally:
        h.stop_all()
        if raw is not None:
            raw.close()
        ctx.term()
        shutil.rmtree(data_dir, ignore_errors=True)


def _ratio(r: Result, floor: Result) -> float:
    return r.server_cpu / floor.server_cpu if floor.server_cpu > 0 else math.nan


TABLE = h.Table(("N", 5, "d"), ("server", -6), ("tick ms", 7, "g"), ("cpu %", 7),
                ("x floor", 7, ".2f"), ("gen %", 6), ("p50 ms", 7, ".2f"), ("p99 ms", 7, ".2f"),
                ("batch/s", 8), ("upd/s", 7, ".0f"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="*", type=int, default=[20, 100, 300])
    parser.add_argument("--ticks", default="0,1,2,5,10,20")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--no-floor", action="store_true", help="skip the relay floor runs")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: N 20, tick 5, --seconds 0.8 --warmup 0.2")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.ticks, args.seconds, args.warmup = [20], "5", 0.8, 0.2
    h.need_cores(2)
    h.exit_on_sigterm()
    h.pin_self(h.GEN_CORE)
    print(TABLE.header() + f" (expected {RATE:g} x N)")
    ratios = []
    try:
        for n in args.n:
            for tick in (float(t) for t in args.ticks.split(",")):
                r = run("rtecs", n, tick, args.seconds, args.warmup)
                f = None if args.no_floor else run("floor", n, tick, args.seconds, args.warmup)
                for x in (r, f):
                    if x is not None:
                        ratio = _ratio(r, f) if f is not None and x is r else "—"
                        print(TABLE.row(x.n, x.kind, x.tick, x.server_cpu, ratio, x.gen_cpu,
                                        x.p50, x.p99, x.batches, x.updates), flush=True)
                if f is not None:
                    ratios.append((r, f))
    finally:
        h.stop_all()
    print()
    for r, f in ratios:
        print(h.ratio_line(f"server tick N={r.n} tick {r.tick:g} ms", _ratio(r, f),
                           detail=f"server CPU {r.server_cpu:.1f} % vs relay "
                                  f"{f.server_cpu:.1f} %"))


if __name__ == "__main__":
    main()
