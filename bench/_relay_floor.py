"""The floor of ``bench.room_fanout``: a bare pyzmq + msgpack relay with no logic.

Run as ``python -m bench._relay_floor [--bind ENDPOINT] [--tick-ms 50]``; it prints
``relay listening on <endpoint>`` and serves until SIGTERM/SIGINT.

One ROUTER socket, one room. It speaks just enough of the rtecs wire format
(:mod:`rtecs.protocol`) for the same load generator — raw protocol clients and full
``rtecs`` clients — to run against it unchanged:

- ``HELLO`` → ``WELCOME [10, client_id, room_seq, time, [], members, 1, 0, {}, b"", b"",
  0]`` (epoch 1, nothing applied before, no limits, no session to resume; no snapshot: the
  generator joins its sampled clients first, so they see every later create in the stream);
- ``UPDATE [2, seq, changes, epoch]`` → the entry ``[0, sender, seq, changes, []]`` appended to the
  pending batch: no sequencing, no validation, no authority, no state;
- ``PING`` → ``PONG [12, client_time, time, room_seq]``; ``BYE`` → forget the member.

Every ``--tick-ms`` (default 50; 0: after every receive) the pending entries become one
``BATCH [11, room_seq, time, entries]``, encoded once with ``msgpack.packb`` and the same bytes
sent to every member the same way the rtecs server's transport sends (routing id with
``SNDMORE | NOBLOCK``, then the frame with ``NOBLOCK``). What it costs is the price of
receiving, decoding, encoding once and fanning out: the floor.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from types import FrameType

import msgpack
import zmq

_HELLO, _UPDATE, _PING, _BYE = 1, 2, 3, 4
_WELCOME, _BATCH, _PONG = 10, 11, 12


def serve(bind: str, tick: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(bind)
    print(f"relay listening on {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    members: dict[bytes, int] = {}   # routing id → client id
    pending: list[list[object]] = []
    room_seq = 0
    next_id = 1
    packb, unpackb = msgpack.packb, msgpack.unpackb
    recv, send = sock.recv_multipart, sock.send
    SNDMORE_NB, NB = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    next_tick = time.monotonic() + tick
    while not stopping:
        wait = next_tick - time.monotonic()
        try:
            ready = poller.poll(math.ceil(wait * 1000) if wait > 0 else 0)
        except zmq.ZMQError:  # EINTR from the signal
            continue
        if ready:
            if tick <= 0:  # --tick-ms 0: a batch after every receive
                next_tick = time.monotonic()
            for _ in range(4096):
                try:
                    peer, frame = recv(NB)
                except zmq.Again:
                    break
                msg = unpackb(frame, strict_map_key=False)  # the hello's schema
                kind = msg[0]
                if kind == _UPDATE:
                    cid = members.get(peer)
                    if cid is not None:
                        pending.append([0, cid, msg[1], msg[2], []])
                elif kind == _PING:
                    send(peer, SNDMORE_NB)
                    send(packb([_PONG, msg[1], time.time(), room_seq]), NB)
                elif kind == _HELLO:
                    members[peer] = next_id
                    next_id += 1
                    send(peer, SNDMORE_NB)
                    send(packb([_WELCOME, members[peer], room_seq, time.time(), [],
                                list(members.values()), 1, 0, {}, b"", b"", 0]), NB)
                elif kind == _BYE:
                    members.pop(peer, None)
        now = time.monotonic()
        if now >= next_tick:
            next_tick += tick
            if next_tick < now:  # fell behind: don't burst to catch up
                next_tick = now + tick if tick > 0 else now + 0.1
            if pending:
                room_seq += 1
                batch = packb([_BATCH, room_seq, time.time(), pending])
                pending = []
                for peer in members:
                    try:
                        send(peer, SNDMORE_NB)
                    except zmq.ZMQError:  # full (Again) or gone (EHOSTUNREACH): skip
                        continue
                    send(batch, NB)
    sock.close(0)
    ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--tick-ms", type=float, default=50.0)
    args = parser.parse_args()
    serve(args.bind, args.tick_ms / 1000)
    sys.exit(0)


if __name__ == "__main__":
    main()
