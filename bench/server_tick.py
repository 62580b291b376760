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
"""

from __future__ import annotations

import argparse
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
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    os.sched_setaffinity(proc.pid, {0})
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
        ids: list[int] = []
        mids: list[int] = []
        for s in socks:
            s.send(hello)
            while True:
                msg = decode_server_message(s.recv())
                if isinstance(msg, Welcome):
                    ids.append(msg.client_id)
                    break
        seqs = [0] * n
        # each client creates its Player model (counter 1) in its first update
        for i, s in enumerate(socks):
            mids.append(dynamic_model_id(ids[i], 1))
            seqs[i] = 1
            s.send(encode(Update(1, [[mids[i], CREATE, ("Player", 0), 1, 0.0, 2, 0.0]])))
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        sampled = set(range(0, n, max(1, n // SAMPLED)))
        index = {s: i for i, s in enumerate(socks)}
        period = 1.0 / RATE
        start = time.perf_counter() + 0.2
        due = [start + period * i / n for i in range(n)]
        latencies: list[float] = []
        batches = 0
        positions = 0
        order = list(range(n))
        k = 0
        t_measure = start + WARMUP
        t_end = t_measure + seconds
        cpu0 = srv0 = 0.0
        measuring = False
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_measure:
                measuring = True
                cpu0 = time.process_time()
                srv0 = _cpu_seconds(proc.pid)
                wall0 = now
            if now >= t_end:
                break
            while due[order[k]] <= now:
                i = order[k]
                seqs[i] += 1
                socks[i].send(encode(Update(seqs[i], [[mids[i], 1, now, 2, now]])),
                              zmq.NOBLOCK)
                due[i] += period
                k = (k + 1) % n
            wait = max(0.0, due[order[k]] - time.perf_counter())
            for s, _ in poller.poll(max(1, int(wait * 1000)) if wait > 0.0005 else 0):
                i = index[s]
                while s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    frame = s.recv()
                    if not measuring:
                        continue
                    if i in sampled:
                        msg = decode_server_message(frame)
                        if isinstance(msg, Batch):
                            batches += 1
                            t = time.perf_counter()
                            for e in msg.entries:
                                if isinstance(e, UpdateEntry) and e.sender > 0:
                                    for run_ in e.changes:
                                        if len(run_) == 5 and run_[1] == 1:
                                            positions += 1
                                            latencies.append((t - run_[2]) * 1000)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        srv = _cpu_seconds(proc.pid) - srv0
        receivers = len(sampled)
        latencies.sort()
        return {
            "n": n, "tick": tick_ms,
            "server_cpu": 100 * srv / wall, "gen_cpu": 100 * cpu / wall,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
            "batches": batches / receivers / wall,
            "updates": positions / receivers / wall,
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
