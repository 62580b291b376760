"""Room fan-out: N clients in one room on a real ``rtecs-server``, beside a bare relay (the floor).

Run from the project root (about 2 minutes; loopback only; ``--quick``: about 4 s)::

    .venv/bin/python -m bench.room_fanout [--n 100,250,500,1000] [--seconds 5] [--warmup 2]

For each N three targets run one after the other, each a fresh process pinned to core 0
(:func:`bench._harness.start_server`, pinned before exec so its zmq I/O thread is too):

- ``floor``: :mod:`bench._relay_floor`, a bare pyzmq + msgpack relay batching every 50 ms,
  speaking the rtecs wire format so the same load generator runs against it unchanged;
- ``rtecs`` at the server's default ``--tick-ms`` (5), and ``rtecs --tick-ms 50`` (the
  floor's tick).

The load generator is this process, pinned to core 1. N clients join one room:

- 8 full ``rtecs`` clients (4 from N = 1000 up: see :func:`sampled_for`) with room model
  ``Game``, each owning a ``Player`` (unreliable float32 ``x``, ``y``, reliable int
  ``score``), measure latency. They tick every 5 ms (a 200 Hz game loop), write ``x`` = a
  fresh stamp (and ``y``) 20 times a second at random intervals of 25-75 ms and ``score``
  once a second, flush at once, and observe every other sampled player's ``x``: a latency is
  one write → its emission on another sampled client (one process: one clock). They join
  spread among the raw clients, so they sit at spread places of the server's fan-out order.
- the rest are :class:`bench._load.RawClients`: 20 Hz position updates, a ping a second,
  every socket drained every 10 ms pass; raw client 0 (the probe) decodes whole frames to
  count position changes exactly.

Reported over a ``--seconds`` window after a ``--warmup``: server and generator CPU from
``/proc/<pid>/stat`` (all threads; the server's zmq I/O thread also on its own), server CPU
÷ floor CPU at the same N (``x floor``, and a ``ratio to floor`` line per rtecs row),
latency p50 / p99, bytes per position change, position updates per second per sender
delivered to each raw client (min / median: must stay 20), batches per second per client. A
second table says whether the generator was the limit (its CPU split into raw sends,
draining and the sampled clients; how late raw updates left; the longest gap between two
drains; each core's busy and softirq time, and the load before the run: ``--quiet-wait``
waits for idle cores first). The wire layout of the batches is studied in
:mod:`bench.wire_layout`.

Measured on the 2-core development machine (the working tree of 2026-11-26 on c68b488; a
run in which no row was marked ``*`` for other load)::

        N server tick ms      srv % (io) x floor  gen %  p50 ms  p99 ms  B/pos  upd/s min/med
      100 floor  50            5.6 ( 3.2)       —   10.8    31.8    55.2   30.1   19.8 / 20.0
      100 rtecs  5 (default)  17.6 (12.0)    3.14   20.4     9.9    11.0   31.2   20.0 / 20.0
      100 rtecs  50            7.8 ( 3.6)    1.39   11.6    30.9    56.0   30.1   19.9 / 19.9
      500 floor  50           37.2 (22.2)       —   49.4    42.1    71.9   32.4   20.0 / 20.0
      500 rtecs  5 (default)  87.3 (57.8)    2.35   97.9    13.2    33.4   32.7   20.0 / 20.0
      500 rtecs  50           38.8 (21.0)    1.04   49.7    42.8    72.3   32.4   19.9 / 20.1
     1000 floor  50           80.5 (47.2)       —   81.9    56.3    95.3   33.4   19.8 / 20.0
     1000 rtecs  5 (default)  97.3 (56.2)    1.21   99.9    98.0   386.1   33.3   18.7 / 18.9
     1000 rtecs  50           76.9 (44.0)    0.95   76.3    54.0    89.4   33.3   20.0 / 20.0

At 50 ms the server costs about what the floor does (both mostly fan-out I/O); at the default
5 ms it flushes ~160 times a second, so members x flushes sends make it 2.3-3.1x the floor at
N = 100-500 and saturate its core at N = 1000.

Profiling: ``--verbose`` prints ``[measuring … pid PID …]`` on stderr when each window
starts, to attach ``py-spy record --pid PID --duration 5``; ``--server-cmd`` starts the
server through a wrapper (e.g. one that patches an experimental hot path).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import zmq

import rtecs
from bench import _harness as h
from bench._load import RawClients, hello
from rtecs.datastore import Datastore
from rtecs.protocol import DESTROY_WHEN_LAST_CLIENT_LEAVES, DESTROY_WHEN_OWNER_LEAVES, ModelId

RATE = 20.0               # position updates per client per second
PERIOD = 1.0 / RATE
PASS = 0.010              # one generator pass: sends due, drain every raw socket, tick samples
SCORE_EVERY = round(RATE)  # one update in 20 also carries the reliable score
#: Full rtecs clients per run (``--sampled``); None: :func:`sampled_for`.
SAMPLED: int | None = None
QUIET_WAIT = 15.0          # ``--quiet-wait``
OTHER_LOAD = 10.0          # a run with more than this % of a core busy with other work: ``*``
VERBOSE = False
ROOM = "fanout"
DEFAULT_NS = (100, 250, 500, 1000)

TARGET_N = 1000
TARGET_P99_MS = 100.0
TARGET_RATE = 20.0
TARGET_SERVER_CPU = 100.0
TARGET_BYTES = 16.0
REFERENCE = ("bare relay 55 % CPU, p99 68 ms, 12.6 B/pos; "
             "Colyseus 0.16 42-54 % CPU, p99 71 ms, 13.6 B/pos")


class Game(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="fanout")


#: Like ``Realtime.spawn``'s defaults: a player goes with its owner and with the room (so it
#: is not persistent: the server does not checkpoint positions).
PLAYER_FLAGS = DESTROY_WHEN_OWNER_LEAVES | DESTROY_WHEN_LAST_CLIENT_LEAVES


class Player(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, default=0.0, reliable=False, float32=True)
    y: float = rtecs.prop(2, default=0.0, reliable=False, float32=True)
    score: int = rtecs.prop(3, default=0)


def sampled_for(n: int) -> int:
    """How many full rtecs clients measure latency at N: 8, but 4 from N = 1000 up. Each one
    decodes and applies every entry of the room (N x 20 a second, ~2.3 µs each here), so 8 of
    them at N = 1000 would take about a third of the generator's core by themselves."""
    if SAMPLED is not None:
        return SAMPLED
    return 8 if n < 1000 else 4


# ----------------------------------------------------------------------------- one run

@dataclass
class Result:
    label: str
    n: int
    tick: str
    server_cpu: float = math.nan
    gen_cpu: float = math.nan
    gen_io_cpu: float = math.nan
    server_io_cpu: float = math.nan
    server_core: float = math.nan   # the whole core busy (softirq and others included)
    gen_core: float = math.nan
    background: tuple[float, ...] = (math.nan, math.nan)
    sampled: int = 0
    softirq: tuple[float, float] = (math.nan, math.nan)
    phases: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # send, drain, samples
    p50: float = math.nan
    p99: float = math.nan
    bytes_per_pos: float = math.nan
    rate_min: float = math.nan
    rate_med: float = math.nan
    batches: float = math.nan
    lag_p99: float = math.nan
    gap_max: float = math.nan
    tick_rate: float = math.nan
    anomalies: int = 0


def _connect_samples(raw: RawClients, endpoint: str, sampled: int, run_id: int,
                     proc: subprocess.Popen[str]) -> tuple[list[rtecs.Realtime], list[Player]]:
    """Join the raw clients with the sampled full clients spread among them — sampled client
    j after about (j + 0.5) / sampled of the raw ones — then every raw create; each sampled
    client creates its Player and they wait until they all see each other's."""
    samples: list[rtecs.Realtime] = []

    def on_mark(j: int) -> None:
        rt = rtecs.connect(endpoint, ROOM, Game(), types=[Player],
                           world=f"fanout-{run_id}-{j}")
        samples.append(rt)
        rt.wait_connected(10)

    def tick() -> None:
        for rt in samples:
            rt.tick()

    schema = Datastore(Game(), [Player, rtecs.Entity]).schema()  # what a sampled one sends
    marks = [round((j + 0.5) * raw.n / sampled) for j in range(sampled)]
    try:
        raw.join(hello(ROOM, "Game", schema), timeout=60, marks=marks, on_mark=on_mark,
                 idle=tick, alive=lambda: h.check_alive(proc))
        # every create once everybody is in, so every sampled client sees every Player
        # created in the stream, against the floor (which keeps no snapshot) as against rtecs
        raw.create("Player", PLAYER_FLAGS, (1, 0.0, 2, 0.0, 3, 0))
        players = []
        for rt in samples:
            p = Player()
            rt.create(p, flags=PLAYER_FLAGS, owned=True)
            rt.flush()
            players.append(p)
        mids: list[ModelId] = [p.model_id for p in players if p.model_id is not None]
        deadline = time.monotonic() + 20
        next_ping = time.monotonic() + raw.ping_every
        while not all(rt.datastore.get(m) is not None for rt in samples for m in mids):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError("the sampled clients do not see each other's players")
            if now >= next_ping:
                h.check_alive(proc)
                raw.ping(now)
                next_ping = now + raw.ping_every
            tick()
            time.sleep(0.002)
    except BaseException:
        _close_samples(samples)
        raise
    return samples, players


def _close_samples(samples: list[rtecs.Realtime]) -> None:
    quiet = logging.getLogger("rtecs")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "closing with 1 update unanswered": expected here
    try:
        for rt in samples:
            with contextlib.suppress(Exception):
                rt.close(0.0)
    finally:
        quiet.setLevel(level)


def run(kind: str, n: int, tick_ms: float | None, warmup: float, seconds: float,
        run_id: int) -> Result:
    label = "floor" if kind == "floor" else "rtecs"
    tick = f"{tick_ms:g}" if tick_ms is not None else "5 (default)"
    res = Result(label, n, tick)
    res.background = h.wait_quiet(QUIET_WAIT)
    data_dir = tempfile.mkdtemp(prefix="rtecs-fanout-")
    cmd = h.floor_cmd(tick_ms or 50) if kind == "floor" else h.server_cmd(tick_ms, data_dir)
    try:
        proc, endpoint = h.start_server(cmd, name=kind)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sampled = res.sampled = sampled_for(n)
    n_raw = n - sampled
    raw = RawClients(ctx, endpoint, n_raw, rate=RATE, score_every=SCORE_EVERY)
    samples: list[rtecs.Realtime] = []
    try:
        samples, players = _connect_samples(raw, endpoint, sampled, run_id, proc)
        mids = [p.model_id for p in players]

        # --- latency: every sampled client observes the other sampled players' x
        sent_at: dict[float, float] = {}
        latencies: list[float] = []
        measuring = False

        def observer(value: float) -> None:
            if measuring:
                t0 = sent_at.get(value)
                if t0 is not None:
                    latencies.append((time.perf_counter() - t0) * 1000.0)

        subs = []
        for j, rt in enumerate(samples):
            for i, m in enumerate(mids):
                if i != j and m is not None:
                    model = rt.datastore.get(m)
                    assert model is not None
                    subs.append(model.observe("x").subscribe(on_next=observer))

        # --- the generator loop
        gap_max = 0.0
        ticks = 0
        phase_send = phase_drain = phase_samples = c_drained = 0.0
        thread_time = time.thread_time
        start = time.perf_counter() + 0.05
        raw.schedule(start)
        s_due = [start + PERIOD * (j + 0.5) / sampled for j in range(sampled)]
        s_writes = [0] * sampled
        rng = random.Random(n)
        stamp = 0.0
        t_measure = start + warmup
        t_end = t_measure + seconds
        cpu0 = srv0 = wall0 = io0 = srv_io0 = 0.0
        cores0: h.CoreTimes = {}
        last_drain = start
        next_pass = start
        while True:
            now = time.perf_counter()
            c_start = thread_time()
            if not measuring and now >= t_measure:
                measuring = True
                cpu0, srv0, wall0 = h.cpu_seconds("self"), h.cpu_seconds(proc.pid), now
                io0, srv_io0 = h.zmq_io_cpu("self"), h.zmq_io_cpu(proc.pid)
                cores0 = h.core_busy()
                if VERBOSE:
                    print(f"[measuring {label} tick {tick} N={n}: pid {proc.pid}, "
                          f"{seconds:g} s; sampled client ids "
                          f"{[rt.client_id for rt in samples]}]", file=sys.stderr, flush=True)
                last_drain = now
            if now >= t_end:
                break
            raw.send_due(now, measuring)
            c_sent = thread_time()
            raw.drain(measuring)
            t = time.perf_counter()
            if measuring:
                gap_max = max(gap_max, t - last_drain)
                c_drained = thread_time()
                phase_send += c_sent - c_start
                phase_drain += c_drained - c_sent
            last_drain = t
            # sampled clients: write when due (sent at once), then tick like a game loop
            for j, rt in enumerate(samples):
                if s_due[j] <= t:
                    stamp += 1.0
                    p = players[j]
                    p.x = stamp
                    p.y = -stamp
                    s_writes[j] += 1
                    if s_writes[j] % SCORE_EVERY == 0:
                        p.score += 1
                    sent_at[stamp] = time.perf_counter()
                    rt.flush()
                    # 20 Hz on average with a random phase: a fixed phase against the server's
                    # tick would sample only a few points of the tick wait
                    s_due[j] += PERIOD * rng.uniform(0.5, 1.5)
                rt.tick()
            if measuring:
                phase_samples += thread_time() - c_drained
            # and once more half-way through the pass: the sampled clients tick every PASS/2
            # (a 200 Hz game loop) while the raw sockets are drained every PASS
            half = next_pass + PASS / 2 - time.perf_counter()
            if half > 0:
                time.sleep(half)
            c_half = thread_time()
            for rt in samples:
                rt.tick()
            if measuring:
                ticks += 2
                phase_samples += thread_time() - c_half
            next_pass += PASS
            pause = next_pass - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:
                next_pass = time.perf_counter()
        wall = time.perf_counter() - wall0
        res.gen_cpu = 100 * (h.cpu_seconds("self") - cpu0) / wall
        res.gen_io_cpu = 100 * (h.zmq_io_cpu("self") - io0) / wall
        res.server_io_cpu = 100 * (h.zmq_io_cpu(proc.pid) - srv_io0) / wall
        cores1 = h.core_busy()
        res.server_core = h.busy_pct(cores0, cores1, h.SERVER_CORE)
        res.gen_core = h.busy_pct(cores0, cores1, h.GEN_CORE)
        res.softirq = (h.busy_pct(cores0, cores1, h.SERVER_CORE, 1),
                       h.busy_pct(cores0, cores1, h.GEN_CORE, 1))
        res.server_cpu = 100 * (h.cpu_seconds(proc.pid) - srv0) / wall
        for sub in subs:
            sub.dispose()
        if VERBOSE:
            qs = ", ".join(f"p{round(q * 100)} {h.percentile(latencies, q):.1f}"
                           for q in (0.1, 0.5, 0.9, 0.95, 0.99, 0.999))
            print(f"[latency ms over {len(latencies)} samples: {qs}, max "
                  f"{max(latencies, default=math.nan):.1f}]", file=sys.stderr, flush=True)
        res.p50 = h.percentile(latencies, 0.50)
        res.p99 = h.percentile(latencies, 0.99)
        res.bytes_per_pos = raw.probe_bytes / raw.probe_pos if raw.probe_pos else math.nan
        rates = [e / wall / n for e in raw.rx_entries]
        res.rate_min = min(rates)
        res.rate_med = statistics.median(rates)
        res.batches = statistics.median(raw.rx_batches[1:] or raw.rx_batches) / wall
        res.lag_p99 = h.percentile(raw.lags, 0.99) * 1000
        res.gap_max = gap_max * 1000
        res.tick_rate = ticks / wall
        res.phases = (100 * phase_send / wall, 100 * phase_drain / wall,
                      100 * phase_samples / wall)
        res.anomalies = raw.anomalies + sum(1 for rt in samples if not rt.connected)
        if raw.probe_entries and raw.probe_pos != raw.probe_entries:
            print(f"  note: the probe saw {raw.probe_entries} entries but {raw.probe_pos} "
                  f"position changes", file=sys.stderr)
        return res
    finally:
        # the server first: it would log every closed peer as a client that cannot keep up
        h.stop(proc)
        _close_samples(samples)
        raw.close()
        ctx.term()
        shutil.rmtree(data_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- report

TABLE = h.Table(("N", 5, "d"), ("server", -6), ("tick ms", -11), ("srv % (io)", 11),
                ("x floor", 7), ("gen %", 6), ("p50 ms", 7), ("p99 ms", 7), ("B/pos", 6),
                ("upd/s min/med", 14), ("batch/s", 8))
CHECK = h.Table(("N", 5, "d"), ("server", -6), ("tick ms", -11), ("smp", 3, "d"),
                ("gen %", 6), ("io thr %", 8), ("send/drain/samples %", 21), ("lag p99", 8),
                ("gap max", 8), ("tick/s", 7, ".0f"), ("core0/1 %", 10),
                ("softirq0/1", 11), ("other0/1 %", 11), ("bg0/1 %", 9))


def _ratio(r: Result, floor: Result | None) -> float:
    if floor is None or r is floor or not floor.server_cpu > 0:
        return math.nan  # a window shorter than a few clock ticks can read 0 CPU
    return r.server_cpu / floor.server_cpu


def _row(r: Result, floor: Result | None) -> str:
    ratio = _ratio(r, floor)
    flag = f"  ({r.anomalies} anomalies)" if r.anomalies else ""
    other = _other_load(r)
    if other > OTHER_LOAD:
        flag += f"  * other load {other:.0f} %"
    return TABLE.row(r.n, r.label, r.tick, f"{r.server_cpu:5.1f} ({r.server_io_cpu:4.1f})",
                     "—" if math.isnan(ratio) else f"{ratio:.2f}", r.gen_cpu, r.p50, r.p99,
                     r.bytes_per_pos, f"{r.rate_min:6.1f} /{r.rate_med:5.1f}", r.batches,
                     note=flag)


def _other_load(r: Result) -> float:
    """The most busy time on either core that was neither our process nor softirq: work
    by other processes on a shared machine, which skews that run."""
    return max(r.server_core - r.server_cpu - r.softirq[0], r.gen_core - r.gen_cpu - r.softirq[1])


def _check_row(r: Result) -> str:
    send, drain, samples = r.phases
    # what else ran on each core: softirq outside our processes, other processes
    other0 = max(0.0, r.server_core - r.server_cpu)
    other1 = max(0.0, r.gen_core - r.gen_cpu)
    return CHECK.row(r.n, r.label, r.tick, r.sampled, r.gen_cpu, r.gen_io_cpu,
                     f"{send:7.1f}/{drain:5.1f}/{samples:5.1f}", r.lag_p99, r.gap_max,
                     r.tick_rate, f"{r.server_core:5.0f} /{r.gen_core:3.0f}",
                     f"{r.softirq[0]:6.0f} /{r.softirq[1]:3.0f}", f"{other0:6.0f} /{other1:3.0f}",
                     f"{r.background[0]:5.0f} /{r.background[1]:3.0f}")


def _generator_limited(r: Result) -> bool:
    """The generator's core nearly full, or its passes falling behind."""
    return r.gen_core >= 90 or r.lag_p99 > 3 * PASS * 1000 or r.tick_rate < 100


def _targets(results: list[Result]) -> None:
    h.say(f"\ntargets at N = {TARGET_N} (20 Hz, one room): p99 < {TARGET_P99_MS:g} ms, every "
          f"client at {TARGET_RATE:g} updates/s, server < {TARGET_SERVER_CPU:g} % of its core, "
          f"≤ {TARGET_BYTES:g} B per position change")
    h.say(f"reference: {REFERENCE}")
    for r in results:
        if r.n != TARGET_N or r.label != "rtecs":
            continue
        checks = [
            ("p99", r.p99 < TARGET_P99_MS, f"{r.p99:.1f} ms"),
            ("20 upd/s", r.rate_min >= 0.95 * TARGET_RATE, f"min {r.rate_min:.1f}"),
            ("cpu", r.server_cpu < TARGET_SERVER_CPU, f"{r.server_cpu:.0f} %"),
            ("bytes", r.bytes_per_pos <= TARGET_BYTES, f"{r.bytes_per_pos:.1f} B/pos"),
        ]
        text = ", ".join(f"{name} {'ok' if ok else 'MISSED'} ({v})" for name, ok, v in checks)
        h.say(f"  rtecs tick {r.tick}: {text}")


def _report(results: list[Result], floors: dict[int, Result]) -> None:
    if any(_other_load(r) > OTHER_LOAD for r in results):
        h.say(f"* other processes kept a core more than {OTHER_LOAD:g} % busy during that "
              "window (this machine is shared): its figures are skewed; run again")
    h.say("\ncolumns: srv % / gen % = CPU of the server (or relay) process and of the load "
          "generator, % of one core (/proc/<pid>/stat, all threads; (io) = the part in the "
          "server's zmq I/O thread); x floor = server CPU ÷ floor CPU at the same N; "
          "p50/p99 = a sampled client's write → its observation on another sampled client; "
          "B/pos = relayed batch bytes ÷ position changes in them (probe client); upd/s = "
          "position updates per sender per second delivered to each raw client (min / median "
          "over raw clients); batch/s = batches per client per s")
    print("\ngenerator check (is the load generator the limit?)")
    print(CHECK.header())
    for r in results:
        print(_check_row(r))
    h.say("smp = sampled rtecs clients; io thr % = its zmq I/O thread; send/drain/samples % = "
          "main-thread CPU time in raw sends, draining every raw socket, and the sampled "
          "clients (writes + ticks); lag p99 = raw updates sent behind schedule (ms); gap max "
          "= longest time between two drains of every raw socket (ms, vs the pass length); "
          "tick/s = slowest sampled client; core0/1 % = whole core busy (/proc/stat); "
          "softirq0/1 = kernel softirq + irq time on each core (loopback TCP; partly inside "
          "our processes' time); other = core busy minus our process on it: softirq outside "
          "it and any other load; bg0/1 % = each core busy during 0.5 s before the run (load "
          "that is not ours)")
    limited = [f"N={r.n} {r.label} {r.tick}" for r in results if _generator_limited(r)]
    h.say("generator at its limit (core1 ≥ 90 % busy, lag p99 > 3 passes or < 100 ticks/s): "
          + ("; ".join(limited) if limited else "none")
          + (" — latency there includes the generator's own queueing" if limited else ""))
    _targets(results)
    print()
    for r in results:
        ratio = _ratio(r, floors.get(r.n))
        if r.label == "rtecs" and not math.isnan(ratio):
            print(h.ratio_line(f"room fan-out N={r.n} rtecs tick {r.tick}", ratio,
                               detail=f"server CPU {r.server_cpu:.1f} % vs floor "
                                      f"{floors[r.n].server_cpu:.1f} %"))


def main(argv: list[str] | None = None) -> None:
    global PASS, QUIET_WAIT, SAMPLED, VERBOSE
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default=",".join(map(str, DEFAULT_NS)),
                        help="clients per room, comma-separated (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before it")
    parser.add_argument("--servers", default="floor,rtecs,rtecs50",
                        help="which targets to run (default: %(default)s)")
    parser.add_argument("--server-cmd", default=None,
                        help="command that starts the rtecs server, before its flags (default: "
                             "this python -m rtecs_server); e.g. a wrapper that profiles it")
    parser.add_argument("--pass-ms", type=float, default=PASS * 1000,
                        help="generator pass (ms): the sampled clients' tick period and the "
                             "interval between drains of every raw socket (default: %(default)g)")
    parser.add_argument("--sampled", type=int, default=None,
                        help="full rtecs clients that measure latency (default: 8, and 4 from "
                             "N = 1000 up)")
    parser.add_argument("--quiet-wait", type=float, default=QUIET_WAIT,
                        help="before each run, wait up to this many seconds for both cores to "
                             "be idle (default: %(default)g; the bg0/1 column shows the load "
                             "left)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of about 4 s: --n 40 --sampled 2 --servers "
                             "floor,rtecs --seconds 0.8 --warmup 0.2 --quiet-wait 0")
    parser.add_argument("--verbose", action="store_true",
                        help="print '[measuring … pid PID …]' to stderr when a window starts")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.servers, args.sampled = "40", "floor,rtecs", 2
        args.seconds, args.warmup, args.quiet_wait = 0.8, 0.2, 0.0
    SAMPLED = args.sampled
    QUIET_WAIT = args.quiet_wait
    VERBOSE = args.verbose
    PASS = args.pass_ms / 1000
    if args.server_cmd:
        h.SERVER_CMD[:] = shlex.split(args.server_cmd)
    ns = [int(v) for v in args.n.split(",")]
    targets = args.servers.split(",")
    h.need_cores(2)
    h.exit_on_sigterm()
    h.pin_self(h.GEN_CORE)
    h.say(f"room fan-out: server/relay pinned to core {h.SERVER_CORE}, load generator to core "
          f"{h.GEN_CORE}; {SAMPLED or '8 (4 at N ≥ 1000)'} sampled rtecs clients ticking every "
          f"{PASS * 500:g} ms, the rest raw (every socket drained every {PASS * 1000:g} ms); "
          f"{RATE:g} Hz positions, score 1/s; warm-up {args.warmup:g} s, window "
          f"{args.seconds:g} s")
    print(TABLE.header(), flush=True)
    t_start = time.monotonic()
    results: list[Result] = []
    floors: dict[int, Result] = {}
    run_id = 0
    try:
        for n in ns:
            for target in targets:
                run_id += 1
                kind = "floor" if target == "floor" else "rtecs"
                tick_ms = 50.0 if target in ("floor", "rtecs50") else None
                r = run(kind, n, tick_ms, args.warmup, args.seconds, run_id)
                if kind == "floor":
                    floors[n] = r
                results.append(r)
                print(_row(r, floors.get(n)), flush=True)
        _report(results, floors)
        print(f"\ntotal {time.monotonic() - t_start:.0f} s")
    finally:
        h.stop_all()


if __name__ == "__main__":
    main()
