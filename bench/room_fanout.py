"""Room fan-out: N clients in one room on a real ``rtecs-server``, beside a bare relay (the floor).

Run from the project root (about 2 minutes; loopback only)::

    .venv/bin/python -m bench.room_fanout [--n 100,250,500,1000] [--seconds 5] [--warmup 2]

For each N three targets run one after the other, each a fresh process pinned to core 0 —
the whole process, before it starts: ``preexec_fn`` calls ``os.sched_setaffinity`` so its
zmq I/O thread inherits the mask (checked in ``/proc/<pid>/task/*/status``):

- ``floor``: :mod:`bench._relay_floor`, a bare pyzmq + msgpack relay (receive, batch per
  50 ms tick, encode once, send the same bytes to every member), speaking the rtecs wire
  format so the same load generator runs against it unchanged;
- ``rtecs`` at the server's default ``--tick-ms`` (5), and ``rtecs --tick-ms 50`` (the
  floor's tick).

The load generator is this process, pinned to core 1 (every thread, its zmq I/O thread
included). N clients join one room:

- 8 full ``rtecs`` clients (4 from N = 1000 up: see :func:`sampled_for`) —
  ``rtecs.connect`` with room model ``Game``, each owning a ``Player`` with unreliable float
  ``x``, ``y`` and a reliable int ``score`` — measure latency. They tick every 5 ms, twice
  per 10 ms generator pass (a 200 Hz game loop). Each writes ``x`` = a fresh stamp (and
  ``y``) 20 times a second (intervals of 25-75 ms, so the write's phase against the server's
  tick varies) and ``score`` once a second, and sends at once (``Realtime.flush()``); each
  observes (``observe("x")``) every other sampled player, so a latency is one write → its
  emission on another sampled client (``time.perf_counter``, one process: one clock). They
  join spread among the raw clients, so they sit at spread places of the server's fan-out
  order (members served first and last by a flush are both in the sample).
- the rest are raw DEALER sockets speaking the protocol: hello, the create of their own
  ``Player`` (update 1), then ``[2, seq, [[id, 1, x, 2, y]]]`` at 20 Hz (phases spread evenly
  over the 50 ms period, ``score`` added once a second) and a ping once a second. Every pass
  drains every raw socket (a ``zmq.Poller`` over all of them, then each readable socket until
  empty) with ``recv_into`` a 32-byte buffer: enough for the batch header (room seq, entry
  count) and the frame's size, without copying the frame. Raw client 0 (the *probe*)
  receives whole frames and decodes them, to count position changes exactly.

Reported over a ``--seconds`` window after a ``--warmup`` (columns explained in the output):
server and generator CPU from ``/proc/<pid>/stat`` utime + stime (all threads; the server's
zmq I/O thread also on its own), server CPU ÷ floor CPU at the same N, latency p50 / p99,
bytes per position change (relayed batch bytes ÷ position changes in them), position
updates per second per sender delivered to each raw client (min / median: must stay 20),
and batches per second per client.

**Is the generator the limit?** A second table says, per run: the generator's CPU and how
much of it is its zmq I/O thread; its main thread's CPU split into raw sends, draining and
the sampled clients; ``lag p99`` (how late raw updates leave against their schedule: ≈ the
10 ms pass when it keeps up, growing when it doesn't); ``gap max`` (longest time between two
drains of every raw socket); the sampled clients' tick rate; each core's busy time from
``/proc/stat`` (softirq — loopback TCP — included) and the load on each core before the run
(this machine may be shared: ``--quiet-wait`` waits for idle cores first). Runs where the
generator's core is ≥ 90 % busy or its passes fall behind are listed after the table: their
latency includes the generator's own queueing. The floor runs with the same generator, so an
rtecs row that loses where the floor holds loses on the server.

After the tables: the N = 1000 targets, and a wire-format breakdown — one captured N = 1000
batch re-encoded in smaller layouts (the same entries, cumulative what-ifs).

Measured on the 2-core development machine (the working tree of 2026-11-26 on c68b488; a
run in which no row was marked ``*`` for other load)::

        N server tick ms      srv % (io) x floor  gen %  p50 ms  p99 ms  B/pos  upd/s min/med
      100 floor  50            5.6 ( 3.2)       —   10.8    31.8    55.2   30.1   19.8 / 20.0
      100 rtecs  5 (default)  17.6 (12.0)    3.14   20.4     9.9    11.0   31.2   20.0 / 20.0
      100 rtecs  50            7.8 ( 3.6)    1.39   11.6    30.9    56.0   30.1   19.9 / 19.9
      250 floor  50           17.0 (10.0)       —   26.8    35.6    56.9   30.7   20.0 / 20.0
      250 rtecs  5 (default)  47.4 (31.4)    2.79   54.6     9.8    13.6   31.2   20.0 / 20.0
      250 rtecs  50           18.0 ( 9.0)    1.06   24.6    35.5    62.6   30.7   19.9 / 19.9
      500 floor  50           37.2 (22.2)       —   49.4    42.1    71.9   32.4   20.0 / 20.0
      500 rtecs  5 (default)  87.3 (57.8)    2.35   97.9    13.2    33.4   32.7   20.0 / 20.0
      500 rtecs  50           38.8 (21.0)    1.04   49.7    42.8    72.3   32.4   19.9 / 20.1
     1000 floor  50           80.5 (47.2)       —   81.9    56.3    95.3   33.4   19.8 / 20.0
     1000 rtecs  5 (default)  97.3 (56.2)    1.21   99.9    98.0   386.1   33.3   18.7 / 18.9
     1000 rtecs  50           76.9 (44.0)    0.95   76.3    54.0    89.4   33.3   20.0 / 20.0

Run to run, the N = 1000 rows vary by about ±10 points of CPU. At 50 ms the server costs
about what the floor does (both are mostly fan-out I/O: the zmq I/O thread alone is about
half); at the default 5 ms it flushes ~160 times a second, so members x flushes sends make
it 2.3-3.1x the floor at N = 100-500 and saturate its core at N = 1000 (where the
generator's core saturates too, receiving ~90 batches/s per client). The wire costs ~33 B
per position change (float64 x, y and a 5-byte model id dominate; see the breakdown).

Profiling: ``--verbose`` prints ``[measuring … pid PID …]`` on stderr when each window
starts, to attach ``py-spy record --pid PID --duration 5``; ``--server-cmd`` starts the
server through a wrapper (e.g. one that patches an experimental hot path).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack
import msgspec
import zmq

import rtecs
from rtecs.datastore import Datastore
from rtecs.protocol import (
    CREATE,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Hello,
    ModelId,
    UpdateEntry,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE, GEN_CORE = 0, 1
RATE = 20.0               # position updates per client per second
PERIOD = 1.0 / RATE
PASS = 0.010              # one generator pass: sends due, drain every raw socket, tick samples
#: Full rtecs clients per run (``--sampled``); None: :func:`sampled_for`.
SAMPLED: int | None = None
#: How the rtecs server is started (``--server-cmd``: e.g. a profiling wrapper in /tmp).
SERVER_CMD = [sys.executable, "-m", "rtecs_server"]
#: ``--quiet-wait``: before each run wait up to this many seconds for both cores to be
#: under QUIET_BUSY % busy (other work on a shared machine skews every figure).
QUIET_WAIT = 15.0
QUIET_BUSY = 10.0
#: A run with more than this % of either core busy with other work is marked ``*``.
OTHER_LOAD = 10.0
#: ``--verbose``: say on stderr when each window starts, with the server's pid (to attach a
#: profiler such as ``py-spy record --pid PID --duration SECONDS`` to exactly that window).
VERBOSE = False
PING_EVERY = 1.0
SCORE_EVERY = round(RATE)  # one update in 20 also carries the reliable score
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


# ----------------------------------------------------------------------------- processes

_CLK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def _zmq_io_cpu(pid: int | str) -> float:
    """CPU seconds of the zmq background threads (``ZMQbg/…``: I/O thread, reaper) of
    ``pid``; the rest of the process is the Python threads."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("ZMQbg"):
                    continue
            total += _cpu_seconds(f"{pid}/task/{tid}")
    return total


def _core_busy() -> dict[int, tuple[int, int, int]]:
    """(busy, softirq + irq, total) jiffies per core from /proc/stat: everything that ran on
    it, kernel softirq work (loopback TCP) and other processes included."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                nums = [int(v) for v in vals[:8]]
                idle = nums[3] + nums[4]
                out[int(name[3:])] = (sum(nums) - idle, nums[5] + nums[6], sum(nums))
    return out


def _busy_pct(before: dict[int, tuple[int, int, int]], after: dict[int, tuple[int, int, int]],
              core: int, column: int = 0) -> float:
    total = after[core][2] - before[core][2]
    return 100 * (after[core][column] - before[core][column]) / total if total else math.nan


def _wait_quiet(limit: float) -> tuple[float, float]:
    """Wait (at most ``limit`` s) until both cores are nearly idle — this machine may be
    shared — and return how busy each was over the last 0.5 s (load that is not ours)."""
    deadline = time.monotonic() + limit
    while True:
        before = _core_busy()
        time.sleep(0.5)
        after = _core_busy()
        busy = (_busy_pct(before, after, SERVER_CORE), _busy_pct(before, after, GEN_CORE))
        if max(busy) < QUIET_BUSY or time.monotonic() >= deadline:
            return busy


def _pin_self(core: int) -> None:
    """Pin every thread of this process (sched_setaffinity(0) pins only the caller)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {core})


def _affinity(pid: int) -> set[str]:
    """The CPU lists of every thread of ``pid``."""
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    out.add(line.split(":", 1)[1].strip())
    return out


_LIVE: list[subprocess.Popen[str]] = []


_SERVER_FLAGS: dict[str, bool] = {}


def _server_has_flag(flag: str) -> bool:
    """Whether this rtecs-server knows ``flag`` (from its ``--help``)."""
    if flag not in _SERVER_FLAGS:
        out = subprocess.run([*SERVER_CMD, "--help"], capture_output=True, text=True, cwd=ROOT,
                             timeout=30).stdout
        _SERVER_FLAGS[flag] = flag in out
    return _SERVER_FLAGS[flag]


def start_target(kind: str, tick_ms: float | None, data_dir: str
                 ) -> tuple[subprocess.Popen[str], str]:
    """Start the rtecs server (``tick_ms`` None: its default; a fresh ``--data-dir`` so no
    room survives from an earlier run) or the floor relay, pinned to SERVER_CORE from before
    exec; returns the process and its endpoint."""
    if kind == "floor":
        cmd = [sys.executable, "-m", "bench._relay_floor", "--tick-ms", str(tick_ms or 50)]
    else:
        cmd = [*SERVER_CMD, "--bind", "tcp://127.0.0.1:0", "--log-level", "warning"]
        if tick_ms is not None:
            cmd += ["--tick-ms", str(tick_ms)]
        if _server_has_flag("--data-dir"):
            cmd += ["--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CORE}))
    _LIVE.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"listening on (\S+)", line)
    if not match:
        stop_target(proc)
        raise RuntimeError(f"{kind} did not start: {line!r}")
    cpus = _affinity(proc.pid)
    if cpus != {str(SERVER_CORE)}:
        stop_target(proc)
        raise RuntimeError(f"{kind} threads are not all pinned to core {SERVER_CORE}: {cpus}")
    return proc, match.group(1)


def sampled_for(n: int) -> int:
    """How many full rtecs clients measure latency at N: 8, but 4 from N = 1000 up. Each one
    decodes and applies every entry of the room (N x 20 a second, ~2.3 µs each here), so 8 of
    them at N = 1000 would take about a third of the generator's core by themselves."""
    if SAMPLED is not None:
        return SAMPLED
    return 8 if n < 1000 else 4


def _alive(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"the server/relay exited with code {proc.returncode}")


def stop_target(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    with contextlib.suppress(ValueError):
        _LIVE.remove(proc)


# ----------------------------------------------------------------------------- wire helpers

_ENC = msgspec.msgpack.Encoder()


def _batch_head(buf: bytearray) -> int:
    """Entry count of a BATCH frame from its first 32 bytes (``[11, room_seq, time,
    entries…]``, see :mod:`rtecs.protocol`); -1 if the frame is not a batch."""
    if buf[0] != 0x94 or buf[1] != 11:
        return -1
    b = buf[2]
    i = 3 if b < 0x80 else 4 if b == 0xCC else 5 if b == 0xCD else 7 if b == 0xCE else 11
    if buf[i] != 0xCB:  # the server time, a float64
        return -1
    b = buf[i + 9]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC:
        return buf[i + 10] << 8 | buf[i + 11]
    if b == 0xDD:
        return int.from_bytes(buf[i + 10:i + 14], "big")
    return -1


def _positions(frame: bytes) -> tuple[int, int]:
    """(entries, position changes) in a BATCH frame, fully decoded; (-1, 0) if not a batch."""
    msg = decode_server_message(frame)
    if not isinstance(msg, Batch):
        return -1, 0
    pos = 0
    for e in msg.entries:
        if isinstance(e, UpdateEntry):
            pos += sum(1 for run in e.changes if 1 in run[1::2])
    return len(msg.entries), pos


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


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
    background: tuple[float, float] = (math.nan, math.nan)
    sampled: int = 0
    softirq: tuple[float, float] = (math.nan, math.nan)
    phases: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # send, drain, samples
    p50: float = math.nan
    p99: float = math.nan
    samples: int = 0
    bytes_per_pos: float = math.nan
    rate_min: float = math.nan
    rate_med: float = math.nan
    batches: float = math.nan
    lag_p99: float = math.nan
    gap_max: float = math.nan
    tick_rate: float = math.nan
    anomalies: int = 0
    sample_frame: bytes | None = field(default=None, repr=False)


def _join(socks: list[zmq.Socket[bytes]], hello: bytes, endpoint: str, sampled: int,
          samples: list[rtecs.Realtime], run_id: int, proc: subprocess.Popen[str],
          timeout: float) -> list[int]:
    """Join every client: the raw ones in order with the sampled full clients spread among
    them — sampled
    client j joins after about (j + 0.5) / sampled of the raw ones — so they sit at evenly
    spread places in the server's fan-out order (which follows join order): the members served
    first and last by each flush are both in the latency sample. Keeps everyone alive (pings,
    ticks) while the room fills, then sends each raw client's create of its Player (update
    1). Appends the sampled clients to ``samples`` as they connect (the caller closes them);
    returns the raw clients' ids."""
    n = len(socks)
    marks = [round((j + 0.5) * n / sampled) for j in range(sampled)]
    ids = [0] * n
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    index = {s: i for i, s in enumerate(socks)}
    sent = joined = 0
    deadline = time.monotonic() + timeout
    next_ping = time.monotonic() + PING_EVERY
    while joined < n or len(samples) < sampled:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"only {joined} of {n} raw clients joined in {timeout} s")
        limit = marks[len(samples)] if len(samples) < sampled else n
        if len(samples) < sampled and joined == limit:
            rt = rtecs.connect(endpoint, ROOM, Game(), types=[Player],
                               world=f"fanout-{run_id}-{len(samples)}")
            samples.append(rt)
            rt.wait_connected(10)
            continue
        while sent < limit and sent - joined < 100:  # at most 100 hellos in flight
            socks[sent].send(hello)
            sent += 1
        for s, _ in poller.poll(5):
            i = index[s]
            while s.get(zmq.EVENTS) & zmq.POLLIN:
                frame = s.recv()
                if frame[1] == 10 and not ids[i]:  # WELCOME
                    w = decode_server_message(frame)
                    assert isinstance(w, Welcome)
                    ids[i] = w.client_id
                    joined += 1
        for rt in samples:
            rt.tick()
        if now >= next_ping:
            _alive(proc)
            _ping(socks, ids, now)
            next_ping = now + PING_EVERY
    # every create once everybody is in, so every sampled client sees every Player created
    # in the stream, against the floor (which keeps no snapshot) as against rtecs
    for s, cid in zip(socks, ids, strict=True):
        s.send(_ENC.encode((2, 1, ((dynamic_model_id(cid, 1), CREATE,
                                    ("Player", PLAYER_FLAGS), OWNER, cid,
                                    1, 0.0, 2, 0.0, 3, 0),), 1)))
    return ids


def _ping(socks: list[zmq.Socket[bytes]], ids: list[int], now: float) -> None:
    ping = _ENC.encode((3, now))
    for i, s in enumerate(socks):
        if ids[i]:
            s.send(ping)


def run(kind: str, n: int, tick_ms: float | None, warmup: float, seconds: float,
        run_id: int, capture: bool) -> Result:
    label = "floor" if kind == "floor" else "rtecs"
    tick = f"{tick_ms:g}" if tick_ms is not None else "5 (default)"
    res = Result(label, n, tick)
    res.background = _wait_quiet(QUIET_WAIT)
    data_dir = tempfile.mkdtemp(prefix="rtecs-fanout-")
    try:
        proc, endpoint = start_target(kind, tick_ms, data_dir)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    samples: list[rtecs.Realtime] = []
    socks: list[zmq.Socket[bytes]] = []
    try:
        # --- everyone joins (sampled clients spread among the raw ones), then each sampled
        # client creates its Player and they wait until they all see each other's
        sampled = sampled_for(n)
        res.sampled = sampled
        n_raw = n - sampled
        for _ in range(n_raw):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)  # like the rtecs client transport
            s.connect(endpoint)
            socks.append(s)
        schema = Datastore(Game(), [Player, rtecs.Entity]).schema()  # what a sampled one sends
        hello = encode(Hello(PROTOCOL_VERSION, ROOM, "Game", schema, None))
        ids = _join(socks, hello, endpoint, sampled, samples, run_id, proc, timeout=60)
        players = []
        for rt in samples:
            p = Player()
            rt.create(p, flags=PLAYER_FLAGS, owned=True)
            rt.flush()
            players.append(p)
        mids: list[ModelId] = []
        for p in players:
            assert p.model_id is not None
            mids.append(p.model_id)
        deadline = time.monotonic() + 20
        next_ping = time.monotonic() + PING_EVERY
        while not all(rt.datastore.get(m) is not None for rt in samples for m in mids):
            now_ = time.monotonic()
            if now_ > deadline:
                raise RuntimeError("the sampled clients do not see each other's players")
            if now_ >= next_ping:
                _alive(proc)
                _ping(socks, ids, now_)
                next_ping = now_ + PING_EVERY
            for rt in samples:
                rt.tick()
            time.sleep(0.002)
        raw_mids = [dynamic_model_id(c, 1) for c in ids]
        seqs = [1] * n_raw

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
                if i != j:
                    model = rt.datastore.get(m)
                    assert model is not None
                    subs.append(model.observe("x").subscribe(on_next=observer))

        # --- the generator loop
        probe = socks[0]
        bulk = socks[1:]
        poller = zmq.Poller()
        for s in bulk:
            poller.register(s, zmq.POLLIN)
        poller.register(probe, zmq.POLLIN)
        index = {s: i for i, s in enumerate(socks)}
        rx_bytes = [0] * n_raw
        rx_entries = [0] * n_raw
        rx_batches = [0] * n_raw
        probe_bytes = probe_pos = probe_entries = 0
        anomalies = 0
        buf = bytearray(32)
        recv_into = zmq.Socket.recv_into
        EVENTS, POLLIN, NOBLOCK = zmq.EVENTS, zmq.POLLIN, zmq.NOBLOCK
        lags: list[float] = []
        gap_max = 0.0
        ticks = 0
        phase_send = phase_drain = phase_samples = c_drained = 0.0
        thread_time = time.thread_time
        start = time.perf_counter() + 0.05
        due = [start + PERIOD * i / n_raw for i in range(n_raw)]
        ping_due = [start + PING_EVERY * i / n_raw for i in range(n_raw)]
        s_due = [start + PERIOD * (j + 0.5) / sampled for j in range(sampled)]
        s_writes = [0] * sampled
        rng = random.Random(n)
        k = kp = 0
        stamp = 0.0
        t_measure = start + warmup
        t_end = t_measure + seconds
        cpu0 = srv0 = wall0 = io0 = srv_io0 = 0.0
        cores0: dict[int, tuple[int, int, int]] = {}
        last_drain = start
        next_pass = start
        while True:
            now = time.perf_counter()
            c_start = thread_time()
            if not measuring and now >= t_measure:
                measuring = True
                cpu0, srv0, wall0 = _cpu_seconds("self"), _cpu_seconds(proc.pid), now
                io0, srv_io0 = _zmq_io_cpu("self"), _zmq_io_cpu(proc.pid)
                cores0 = _core_busy()
                if VERBOSE:
                    print(f"[measuring {label} tick {tick} N={n}: pid {proc.pid}, "
                          f"{seconds:g} s; sampled client ids "
                          f"{[rt.client_id for rt in samples]}]", file=sys.stderr, flush=True)
                last_drain = now
            if now >= t_end:
                break
            # raw updates due (a cyclic schedule, phases spread over the period)
            while due[k] <= now:
                if measuring:
                    lags.append(now - due[k])
                seq = seqs[k] = seqs[k] + 1
                x = k + seq * 0.01
                run_ = ((raw_mids[k], 1, x, 2, -x, 3, seq) if seq % SCORE_EVERY == 0
                        else (raw_mids[k], 1, x, 2, -x))
                try:
                    socks[k].send(_ENC.encode((2, seq, (run_,), 1)), NOBLOCK)
                except zmq.Again:
                    anomalies += 1
                due[k] += PERIOD
                k = k + 1 if k + 1 < n_raw else 0
            while ping_due[kp] <= now:
                with contextlib.suppress(zmq.Again):
                    socks[kp].send(_ENC.encode((3, now)), NOBLOCK)
                ping_due[kp] += PING_EVERY
                kp = kp + 1 if kp + 1 < n_raw else 0
            c_sent = thread_time()
            # drain every raw socket
            for s, _ in poller.poll(0):
                if s is probe:
                    while cast(int, s.get(EVENTS)) & POLLIN:
                        frame: bytes = s.recv()
                        if frame[1] == 12:  # PONG
                            continue
                        entries, pos = _positions(frame)
                        if entries < 0:
                            anomalies += 1
                        elif measuring:
                            probe_bytes += len(frame)
                            probe_entries += entries
                            probe_pos += pos
                            if capture and res.sample_frame is None and 0.9 * n < entries < 1.1 * n:
                                res.sample_frame = frame
                    continue
                i = index[s]
                while True:  # the poll said readable: receive, then until nothing is left
                    size = recv_into(s, buf, flags=NOBLOCK)
                    if buf[1] != 12:  # not a PONG
                        entries = _batch_head(buf)
                        if entries < 0:
                            anomalies += 1
                        elif measuring:
                            rx_bytes[i] += size
                            rx_entries[i] += entries
                            rx_batches[i] += 1
                    if not s.get(EVENTS) & POLLIN:
                        break
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
        res.gen_cpu = 100 * (_cpu_seconds("self") - cpu0) / wall
        res.gen_io_cpu = 100 * (_zmq_io_cpu("self") - io0) / wall
        res.server_io_cpu = 100 * (_zmq_io_cpu(proc.pid) - srv_io0) / wall
        cores1 = _core_busy()
        res.server_core = _busy_pct(cores0, cores1, SERVER_CORE)
        res.gen_core = _busy_pct(cores0, cores1, GEN_CORE)
        res.softirq = (_busy_pct(cores0, cores1, SERVER_CORE, 1),
                       _busy_pct(cores0, cores1, GEN_CORE, 1))
        res.server_cpu = 100 * (_cpu_seconds(proc.pid) - srv0) / wall
        for sub in subs:
            sub.dispose()
        res.samples = len(latencies)
        if VERBOSE:
            qs = ", ".join(f"p{round(q * 100)} {_pct(latencies, q):.1f}"
                           for q in (0.1, 0.5, 0.9, 0.95, 0.99, 0.999))
            print(f"[latency ms over {len(latencies)} samples: {qs}, max "
                  f"{max(latencies, default=math.nan):.1f}]", file=sys.stderr, flush=True)
        res.p50 = _pct(latencies, 0.50)
        res.p99 = _pct(latencies, 0.99)
        res.bytes_per_pos = probe_bytes / probe_pos if probe_pos else math.nan
        rates = [rx_entries[i] / wall / n for i in range(1, n_raw)]
        rates.append(probe_entries / wall / n)
        res.rate_min = min(rates)
        res.rate_med = statistics.median(rates)
        res.batches = statistics.median(rx_batches[1:]) / wall
        res.lag_p99 = _pct(lags, 0.99) * 1000
        res.gap_max = gap_max * 1000
        res.tick_rate = ticks / wall
        res.phases = (100 * phase_send / wall, 100 * phase_drain / wall,
                      100 * phase_samples / wall)
        res.anomalies = anomalies + sum(1 for rt in samples if not rt.connected)
        if probe_entries and probe_pos != probe_entries:
            print(f"  note: the probe saw {probe_entries} entries but {probe_pos} position "
                  f"changes", file=sys.stderr)
        return res
    finally:
        # the server first: it would log every closed peer as a client that cannot keep up
        stop_target(proc)
        quiet = logging.getLogger("rtecs")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # "closing with 1 update unanswered": expected here
        try:
            for rt in samples:
                with contextlib.suppress(Exception):
                    rt.close(0.0)
        finally:
            quiet.setLevel(level)
        for s in socks:
            s.close(0)
        ctx.term()
        shutil.rmtree(data_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- report

HEADER = (f"{'N':>5} {'server':<6} {'tick ms':<11} {'srv % (io)':>11} {'x floor':>7} {'gen %':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'B/pos':>6} {'upd/s min/med':>14} {'batch/s':>8}")
CHECK_HEADER = (f"{'N':>5} {'server':<6} {'tick ms':<11} {'smp':>3} {'gen %':>6} {'io thr %':>8} "
                f"{'send/drain/samples %':>21} {'lag p99':>8} {'gap max':>8} {'tick/s':>7} "
                f"{'core0/1 %':>10} {'softirq0/1':>11} {'other0/1 %':>11} {'bg0/1 %':>9}")


def _row(r: Result, floor: Result | None) -> str:
    ratio = (f"{r.server_cpu / floor.server_cpu:7.2f}" if floor is not None and r is not floor
             else f"{'—':>7}")
    flag = f"  ({r.anomalies} anomalies)" if r.anomalies else ""
    other = _other_load(r)
    if other > OTHER_LOAD:
        flag += f"  * other load {other:.0f} %"
    return (f"{r.n:5d} {r.label:<6} {r.tick:<11} {r.server_cpu:5.1f} ({r.server_io_cpu:4.1f}) "
            f"{ratio} {r.gen_cpu:6.1f} "
            f"{r.p50:7.1f} {r.p99:7.1f} {r.bytes_per_pos:6.1f} "
            f"{r.rate_min:6.1f} /{r.rate_med:5.1f}  {r.batches:8.1f}{flag}")


def _other_load(r: Result) -> float:
    """The most busy time on either core that was neither our process nor softirq: work
    by other processes on a shared machine, which skews that run."""
    return max(r.server_core - r.server_cpu - r.softirq[0], r.gen_core - r.gen_cpu - r.softirq[1])


def _check_row(r: Result) -> str:
    send, drain, samples = r.phases
    # what else ran on each core: softirq outside our processes, other processes
    other0 = max(0.0, r.server_core - r.server_cpu)
    other1 = max(0.0, r.gen_core - r.gen_cpu)
    return (f"{r.n:5d} {r.label:<6} {r.tick:<11} {r.sampled:3d} {r.gen_cpu:6.1f} "
            f"{r.gen_io_cpu:8.1f} "
            f"{send:7.1f}/{drain:5.1f}/{samples:5.1f}  {r.lag_p99:8.1f} {r.gap_max:8.1f} "
            f"{r.tick_rate:7.0f} {r.server_core:5.0f} /{r.gen_core:3.0f} "
            f"{r.softirq[0]:6.0f} /{r.softirq[1]:3.0f} {other0:6.0f} /{other1:3.0f} "
            f"{r.background[0]:5.0f} /{r.background[1]:3.0f}")


def _say(text: str) -> None:
    print(textwrap.fill(text, 100, replace_whitespace=False))


def _generator_limited(r: Result) -> bool:
    """The generator's core nearly full, or its passes falling behind."""
    return r.gen_core >= 90 or r.lag_p99 > 3 * PASS * 1000 or r.tick_rate < 100


def _targets(results: list[Result]) -> None:
    _say(f"\ntargets at N = {TARGET_N} (20 Hz, one room): p99 < {TARGET_P99_MS:g} ms, every "
         f"client at {TARGET_RATE:g} updates/s, server < {TARGET_SERVER_CPU:g} % of its core, "
         f"≤ {TARGET_BYTES:g} B per position change")
    _say(f"reference: {REFERENCE}")
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
        _say(f"  rtecs tick {r.tick}: {text}")


def wire_breakdown(frame: bytes) -> None:
    """Re-encode one captured batch in smaller layouts: bytes per position change each."""
    msg = msgpack.unpackb(frame, strict_map_key=False)
    entries = [e for e in msg[3] if e[0] == 0 and e[3]]
    pos = sum(1 for e in entries for r in e[3] if 1 in r[1::2])

    def size(entries_out: list[Any], single: bool = False) -> float:
        body = msgpack.packb([11, msg[1], msg[2], entries_out], use_single_float=single)
        return len(body) / pos

    def own_id(e: list[Any], run: list[Any]) -> Any:
        # a model id relative to its sender: counter k of the sender's own models as -k
        return -1 if run[0] == dynamic_model_id(e[1], 1) else run[0]

    v_as_is = size(msg[3])
    v_f32 = size(msg[3], single=True)
    no_rej = [e[:4] if not e[4] else e for e in entries]
    v_norej = size(no_rej, single=True)
    no_seq = [[e[1], e[3]] for e in entries]
    v_noseq = size(no_seq, single=True)
    own = [[e[1], [[own_id(e, r), *r[1:]] for r in e[3]]] for e in entries]
    v_own = size(own, single=True)
    flat = [[e[1], *(x for r in e[3] for x in [own_id(e, r), *r[1:]])] for e in entries]
    v_flat = size(flat, single=True)
    implicit = [[e[1], *(x for r in e[3] for x in (r[1:] if own_id(e, r) == -1 else r))]
                for e in entries]
    v_implicit = size(implicit, single=True)
    minimal: list[Any] = []
    for e in entries:
        r = e[3][0]
        minimal += [e[1], r[2], r[4]]
    v_min = size(minimal, single=True)
    _say(f"\nwire: one captured N = {len(entries)} batch, {len(frame)} bytes, {pos} position "
          f"changes ({len(frame) / pos:.1f} B each as relayed); re-encoded, cumulatively:")
    rows = [
        ("as relayed: [0, sender, seq, [[model_id, 1, x, 2, y]], []], float64", v_as_is),
        ("+ x, y as float32 (a per-property 'f32' tag)", v_f32),
        ("+ no empty 'rejected' list (entry of 4)", v_norej),
        ("+ no kind, no seq ([sender, changes]; seq implied by order)", v_noseq),
        ("+ sender-relative model id (own model #1 → -1)", v_own),
        ("+ one flat run per entry ([sender, id, 1, x, 2, y])", v_flat),
        ("+ the sender's own model #1 implied ([sender, 1, x, 2, y])", v_implicit),
        ("minimal: flat [sender, x, y, ...] float32 (the 12.6 B reference)", v_min),
    ]
    for text, v in rows:
        print(f"  {v:5.1f} B/pos  {text}")


def main() -> None:
    global PASS, QUIET_WAIT, SAMPLED, SERVER_CMD, VERBOSE
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
    parser.add_argument("--verbose", action="store_true",
                        help="print '[measuring … pid PID …]' to stderr when a window starts")
    args = parser.parse_args()
    SAMPLED = args.sampled
    QUIET_WAIT = args.quiet_wait
    VERBOSE = args.verbose
    PASS = args.pass_ms / 1000
    if args.server_cmd:
        SERVER_CMD = shlex.split(args.server_cmd)
    ns = [int(v) for v in args.n.split(",")]
    targets = args.servers.split(",")
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        sys.exit("needs 2 cores")
    # SIGTERM (and SIGINT) unwind through every ``finally``: no server or relay is left behind
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _pin_self(GEN_CORE)
    _say(f"room fan-out: server/relay pinned to core {SERVER_CORE}, load generator to core "
         f"{GEN_CORE}; {SAMPLED or '8 (4 at N ≥ 1000)'} sampled rtecs clients ticking every "
         f"{PASS * 500:g} ms, the rest raw (every socket drained every {PASS * 1000:g} ms); "
         f"{RATE:g} Hz positions, score 1/s; warm-up {args.warmup:g} s, window "
         f"{args.seconds:g} s")
    print(HEADER, flush=True)
    t_start = time.monotonic()
    results: list[Result] = []
    sample_frame = None
    run_id = 0
    try:
        for n in ns:
            floor: Result | None = None
            for target in targets:
                run_id += 1
                kind = "floor" if target == "floor" else "rtecs"
                tick_ms = 50.0 if target in ("floor", "rtecs50") else None
                r = run(kind, n, tick_ms, args.warmup, args.seconds, run_id,
                        capture=(target == "rtecs50" and n == max(ns)))
                if kind == "floor":
                    floor = r
                if r.sample_frame is not None:
                    sample_frame = r.sample_frame
                results.append(r)
                print(_row(r, floor), flush=True)
        if any(_other_load(r) > OTHER_LOAD for r in results):
            _say(f"* other processes kept a core more than {OTHER_LOAD:g} % busy during that "
                 "window (this machine is shared): its figures are skewed; run again")
        _say("\ncolumns: srv % / gen % = CPU of the server (or relay) process and of the load "
              "generator, % of one core (/proc/<pid>/stat, all threads; (io) = the part in the "
              "server's zmq I/O thread); x floor = server CPU ÷ "
              "floor CPU at the same N; p50/p99 = a sampled client's write → its observation on "
              "another sampled client; B/pos = relayed batch bytes ÷ position changes in them "
              "(probe client); upd/s = position updates per sender per second delivered to each "
              "raw client (min / median over raw clients); batch/s = batches per client per s")
        print("\ngenerator check (is the load generator the limit?)")
        print(CHECK_HEADER)
        for r in results:
            print(_check_row(r))
        _say("smp = sampled rtecs clients; io thr % = its zmq I/O thread; "
             "send/drain/samples % = main-thread CPU time in "
              "raw sends, draining every raw socket, and the sampled clients (writes + ticks); "
              "lag p99 = raw updates sent behind schedule (ms); gap max = longest time between "
              "two drains of every raw socket (ms, vs the pass length); tick/s = slowest sampled "
              "client; core0/1 % = whole core busy (/proc/stat); softirq0/1 = kernel softirq + irq "
              "time on each core (loopback TCP; partly inside our processes' time); other = core "
              "busy minus our process on it: softirq outside it and any other load; "
              "bg0/1 % = each core busy during 0.5 s before the run (load that is not ours)")
        limited = [f"N={r.n} {r.label} {r.tick}" for r in results if _generator_limited(r)]
        _say("generator at its limit (core1 ≥ 90 % busy, lag p99 > 3 passes or < 100 ticks/s): "
              + ("; ".join(limited) if limited else "none")
              + (" — latency there includes the generator's own queueing" if limited else ""))
        _targets(results)
        if sample_frame is not None:
            wire_breakdown(sample_frame)
        print(f"\ntotal {time.monotonic() - t_start:.0f} s")
    finally:
        for proc in list(_LIVE):
            stop_target(proc)


if __name__ == "__main__":
    main()
