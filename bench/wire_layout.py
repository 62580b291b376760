"""Wire layout study: one real batch of N position updates re-encoded in smaller layouts.

Run from the project root (about 15 s at the default N = 1000; ``--quick``: about 2 s)::

    .venv/bin/python -m bench.wire_layout [--n 1000] [--tick-ms 50] [--floor]

It starts ``rtecs-server --tick-ms 50`` pinned to core 0 (``--floor``: the bare relay,
:mod:`bench._relay_floor`), joins N raw clients (:class:`bench._load.RawClients`, pinned to
core 1) that send 20 Hz position updates, and captures one batch carrying about N entries
(0.9-1.1 N). That batch is re-encoded in cumulative what-if layouts — the same entries, each
step dropping something more — and each is reported as bytes per position change. The floor
is the last, minimal layout: a flat ``[sender, x, y, …]`` of float32s, the shape a bare relay
of positions would send; the ratio is the batch as relayed over it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

import msgpack
import zmq

from bench import _harness as h
from bench._load import RawClients, hello
from rtecs.protocol import Batch, dynamic_model_id

SCHEMA = {"Game": {1: ("title", "str", True)},
          "Player": {1: ("x", "f32", False), 2: ("y", "f32", False),
                     3: ("score", "int", True)}}


def capture(n: int, tick_ms: float, floor: bool, timeout: float = 30.0) -> bytes:
    """One batch of about ``n`` entries, as the server (or the floor) relayed it."""
    data_dir = tempfile.mkdtemp(prefix="rtecs-wire-")
    cmd = h.floor_cmd(tick_ms) if floor else h.server_cmd(tick_ms, data_dir)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw: RawClients | None = None
    try:
        proc, endpoint = h.start_server(cmd, name="relay" if floor else "server")
        got: list[bytes] = []

        def on_batch(i: int, msg: Batch, frame: bytes, t: float) -> None:
            if not got and 0.9 * n < len(msg.entries) < 1.1 * n:
                got.append(frame)

        raw = RawClients(ctx, endpoint, n, on_batch=on_batch)
        raw.join(hello("wire", "Game", SCHEMA), alive=lambda: h.check_alive(proc))
        raw.create("Player", 0, (1, 0.0, 2, 0.0, 3, 0))
        start = time.perf_counter()
        raw.schedule(start)
        measuring_from = start + 0.5  # past the creates
        deadline = start + timeout
        while not got:
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"no batch of about {n} entries in {timeout:g} s")
            raw.send_due(now, False)
            raw.drain(now >= measuring_from, timeout_ms=5)
        return got[0]
    finally:
        h.stop_all()
        if raw is not None:
            raw.close()
        ctx.term()
        shutil.rmtree(data_dir, ignore_errors=True)


def layouts(frame: bytes) -> tuple[int, int, list[tuple[str, float]]]:
    """(entries, position changes, [(layout, bytes per position change)]) of one batch."""
    msg = msgpack.unpackb(frame, strict_map_key=False)
    entries = [e for e in msg[3] if e[0] == 0 and e[3]]
    pos = sum(1 for e in entries for r in e[3] if 1 in r[1::2])

    def size(entries_out: list[Any], single: bool = True) -> float:
        body = msgpack.packb([11, msg[1], msg[2], entries_out], use_single_float=single)
        return len(body) / pos

    def own_id(e: list[Any], run: list[Any]) -> Any:
        # a model id relative to its sender: counter k of the sender's own models as -k
        return -1 if run[0] == dynamic_model_id(e[1], 1) else run[0]

    no_rej = [e[:4] if not e[4] else e for e in entries]
    no_seq = [[e[1], e[3]] for e in entries]
    own = [[e[1], [[own_id(e, r), *r[1:]] for r in e[3]]] for e in entries]
    flat = [[e[1], *(x for r in e[3] for x in [own_id(e, r), *r[1:]])] for e in entries]
    implicit = [[e[1], *(x for r in e[3] for x in (r[1:] if own_id(e, r) == -1 else r))]
                for e in entries]
    minimal: list[Any] = []
    for e in entries:
        r = e[3][0]
        minimal += [e[1], r[2], r[4]]
    rows = [
        ("every float as float64 (before float32 properties)", size(msg[3], single=False)),
        ("as relayed: [0, sender, seq, [[model_id, 1, x, 2, y]], []], float32",
         len(frame) / pos),
        ("+ no empty 'rejected' list (entry of 4)", size(no_rej)),
        ("+ no kind, no seq ([sender, changes]; seq implied by order)", size(no_seq)),
        ("+ sender-relative model id (own model #1 → -1)", size(own)),
        ("+ one flat run per entry ([sender, id, 1, x, 2, y])", size(flat)),
        ("+ the sender's own model #1 implied ([sender, 1, x, 2, y])", size(implicit)),
        ("minimal: flat [sender, x, y, ...] float32 (the floor; 12.6 B reference)",
         size(minimal)),
    ]
    return len(entries), pos, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="clients in the room")
    parser.add_argument("--tick-ms", type=float, default=50.0, help="the server's tick")
    parser.add_argument("--floor", action="store_true",
                        help="capture from the bare relay instead of rtecs-server")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --n 50")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 50
    h.need_cores(2)
    h.exit_on_sigterm()
    h.pin_self(h.GEN_CORE)
    t0 = time.monotonic()
    frame = capture(args.n, args.tick_ms, args.floor)
    entries, pos, rows = layouts(frame)
    h.say(f"wire: one captured batch of {entries} entries ({'relay' if args.floor else 'rtecs'} "
          f"tick {args.tick_ms:g} ms), {len(frame)} bytes, {pos} position changes; "
          f"re-encoded, cumulatively from 'as relayed':")
    for text, v in rows:
        print(f"  {v:5.1f} B/pos  {text}")
    relayed, floor = rows[1][1], rows[-1][1]
    print()
    print(h.ratio_line("wire layout: batch as relayed ÷ minimal layout", relayed / floor,
                       detail=f"{relayed:.1f} vs {floor:.1f} B per position change"))
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
