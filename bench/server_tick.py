"""How the server's tick interval trades relay latency for CPU (chooses ``--tick-ms``).

Run from the project root::

    .venv/bin/python -m bench.server_tick [N ...] [--ticks 0,1,2,5,10,20] [--seconds 4]

For each N (clients in one room) and tick interval it starts a real ``rtecs-server``
(``--rate-limit 0``) pinned to core 0 and, pinned to core 1, a load generator of N raw DEALER
sockets speaking the protocol: each sends an unreliable position update at 20 Hz (phases
spread evenly over the 50 ms period) and reads everything the server relays. Every update
carries its send time, so 8 sampled clients measure relay latency (send → receipt by another
client; both ends in this process, one clock). Reported per run: the server's CPU (% of one
core, from /proc/<pid>/stat), the load generator's CPU (if it nears 100 % the generator, not
the server, is the limit), latency p50/p99, batches and position updates received per
client per second (updates should be 20 x N: every client's own included).

Measured on the 2-core development machine (4 s per row)::

        N tick ms  server %  gen %  p50 ms  p99 ms  batch/s   upd/s
       20       0      10.0   11.9    0.29    0.47    400.0     400
       20       1      10.0   12.4    0.29    0.50    399.8     400
       20       2       9.2   11.5    0.29    2.40    399.9     400
       20       5       5.2    7.3    3.43    6.10    178.1     400
       20      10       4.0    5.5    5.60   11.29     92.3     400
       20      20       3.8    4.6   10.73   20.95     48.5     400
      100       0      48.2   56.2    2.48   10.53    834.9    1998
      100       1      53.3   56.2    2.05    4.55    640.0    2000
      100       2      34.8   39.1    2.54    4.51    387.5    2000
      100       5      22.5   24.2    4.23    6.95    180.7    2001
      100      10      16.0   19.3    6.06   11.80     94.5    1998
      100      20      12.5   16.2   11.33   21.74     48.8    1995
      300       0      81.7   97.7    9.87   22.78    497.6    6002
      300       1      90.0   97.9    8.39   17.66    432.9    5987
      300       2      92.5   97.6    8.49   17.04    376.9    6005
      300       5      59.8   60.7    5.40    9.39    183.0    6000
      300      10      40.2   49.3    7.75   14.19     96.0    5999
      300      20      31.8   40.5   13.30   25.62     49.0    6005
     1000       5      54.6   73.2  456.66  842.11     16.4   19134
     1000      10      86.1   99.1  397.51  796.57     49.0   20099
     1000      20      83.2   90.2   72.44  450.81     38.5   21062
     1000      50      75.5   95.8   66.15  107.82     19.8   19937

At N = 300 with ticks of 0-2 ms the generator nears 100 % too, so those latencies include its
own queueing; at N = 1000 this single-process generator is the limit (90-99 %) and the rows
only say that neither side keeps up at 5 ms here: that is for the fan-out benchmark to
measure with a lighter generator and a profile.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time

import zmq

from rtecs.protocol import (
    CREATE,
    PROTOCOL_VERSION,
    Batch,
    Hello,
    Update,
    UpdateEntry,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)

SCHEMA = {"Game": {1: ("title", "str", True)},
          "Player": {1: ("x", "float", False), 2: ("y", "float", False)}}
RATE = 20.0
SAMPLED = 8
WARMUP = 1.0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(tick_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtecs_server", "--bind", "tcp://127.0.0.1:0",
         "--tick-ms", str(tick_ms), "--rate-limit", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # every thread inherits it
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, match.group(1)


def run(n: int, tick_ms: float, seconds: float) -> dict[str, float]:
    proc, endpoint = start_server(tick_ms)
    ctx = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []
    try:
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.connect(endpoint)
            socks.append(s)
        hello = encode(Hello(PROTOCOL_VERSION, "bench", "Game", SCHEMA, None))
        ids = [0] * n
        for s in socks:
            s.send(hello)
        deadline = time.monotonic() + 30
        while not all(ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the clients did not all join")
            for i, s in enumerate(socks):
                while s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    msg = decode_server_message(s.recv())
                    if isinstance(msg, Welcome):
                        ids[i] = msg.client_id
            time.sleep(0.001)
        # each client creates its Player model (counter 1) in its first update
        mids = [dynamic_model_id(cid, 1) for cid in ids]
        for i, s in enumerate(socks):
            s.send(encode(Update(1, [[mids[i], CREATE, ("Player", 0), 1, 0.0, 2, 0.0]])))
        seqs = [1] * n
        step = max(1, n // SAMPLED)
        sampled = list(range(0, n, step))[:SAMPLED]
        others = [socks[i] for i in range(n) if i not in set(sampled)]
        poller = zmq.Poller()
        for i in sampled:
            poller.register(socks[i], zmq.POLLIN)
        period = 1.0 / RATE
        start = time.perf_counter() + 0.2
        due = [start + period * i / n for i in range(n)]  # in order: a cyclic schedule
        latencies: list[float] = []
        batches = positions = 0
        k = 0
        t_measure = start + WARMUP
        t_end = t_measure + seconds
        next_drain = start
        cpu0 = srv0 = wall0 = 0.0
        measuring = False
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_measure:
                measuring = True
                cpu0, srv0, wall0 = time.process_time(), _cpu_seconds(proc.pid), now
            if now >= t_end:
                break
            while due[k] <= now:
                seqs[k] += 1
                socks[k].send(encode(Update(seqs[k], [[mids[k], 1, now, 2, now]])),
                              zmq.NOBLOCK)
                due[k] += period
                k = (k + 1) % n
            if now >= next_drain:  # the unsampled clients only read and drop
                for s in others:
                    while s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        s.recv(copy=False)
                next_drain = now + 0.005
            wait = min(due[k], next_drain) - time.perf_counter()
            for s, _ in poller.poll(max(1, math.ceil(wait * 1000))):
                while s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    frame = s.recv()
                    if not measuring:
                        continue
                    t = time.perf_counter()
                    msg = decode_server_message(frame)
                    if isinstance(msg, Batch):
                        batches += 1
                        for e in msg.entries:
                            if isinstance(e, UpdateEntry) and e.sender > 0:
                                for run_ in e.changes:
                                    if len(run_) == 5 and run_[1] == 1:
                                        positions += 1
                                        latencies.append((t - run_[2]) * 1000)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        srv = _cpu_seconds(proc.pid) - srv0
        latencies.sort()
        return {
            "n": n, "tick": tick_ms,
            "server_cpu": 100 * srv / wall, "gen_cpu": 100 * cpu / wall,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
            "batches": batches / len(sampled) / wall,
            "updates": positions / len(sampled) / wall,
        }
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        proc.terminate()
        proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="*", type=int, default=[20, 100, 300])
    parser.add_argument("--ticks", default="0,1,2,5,10,20")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    print(f"{'N':>5} {'tick ms':>7} {'server %':>9} {'gen %':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'batch/s':>8} {'upd/s':>7} (expected {RATE:g} x N)")
    for n in args.n:
        for tick in (float(t) for t in args.ticks.split(",")):
            r = run(n, tick, args.seconds)
            print(f"{r['n']:5.0f} {r['tick']:7g} {r['server_cpu']:9.1f} {r['gen_cpu']:6.1f} "
                  f"{r['p50']:7.2f} {r['p99']:7.2f} {r['batches']:8.1f} {r['updates']:7.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
