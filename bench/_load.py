"""The load generator: N lightweight raw protocol clients in this process, one DEALER each.

Each speaks just enough of :mod:`rtecs.protocol`: a ``HELLO``, the create of its own
``Player`` (update 1), then ``[2, seq, [[id, 1, x, 2, y]], epoch]`` at ``rate`` Hz on a
cyclic schedule (phases spread evenly over the period, a reliable ``score`` added every
``score_every``-th update) and a ``PING`` every ``ping_every`` s. :meth:`RawClients.drain`
reads every readable socket until it is empty, with ``recv_into`` a 32-byte buffer: enough
for the batch header (room seq, entry count) and the frame's size, without copying the frame.
The *probes* (indexes given at construction) receive whole frames and decode them: to count
position changes exactly, or to hand every batch to a callback (e.g. to read send stamps).

Used by :mod:`bench.room_fanout`, :mod:`bench.server_tick` and :mod:`bench.wire_layout`
against a real ``rtecs-server`` or the floor relay alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgspec
import zmq

from rtecs.protocol import (
    CREATE,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Hello,
    UpdateEntry,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)

ENC = msgspec.msgpack.Encoder()
EPOCH = 1  # a session's first epoch (raw clients never resync)


def batch_head(buf: bytearray) -> int:
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


def positions(msg: Batch) -> int:
    """Position changes (runs that write property 1) in a decoded batch."""
    pos = 0
    for e in msg.entries:
        if isinstance(e, UpdateEntry):
            pos += sum(1 for run in e.changes if 1 in run[1::2])
    return pos


def hello(room: str, root_type: str, schema: dict[str, Any]) -> bytes:
    return encode(Hello(PROTOCOL_VERSION, room, root_type, schema, None))


class RawClients:
    """``n`` raw clients of ``endpoint`` (see the module docstring). Counters, over the
    windows where ``measuring`` was true: ``rx_bytes`` / ``rx_entries`` / ``rx_batches`` per
    client, ``probe_bytes`` / ``probe_entries`` / ``probe_pos`` over the probes, ``lags``
    (seconds each update left behind its schedule) and ``anomalies`` (unexpected frames,
    sends refused)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, n: int, *,
                 rate: float = 20.0, ping_every: float = 1.0, score_every: int = 20,
                 probes: Sequence[int] = (0,),
                 on_batch: Callable[[int, Batch, bytes, float], None] | None = None) -> None:
        self.n = n
        self.period = 1.0 / rate
        self.ping_every = ping_every
        self.score_every = score_every
        self.socks: list[zmq.Socket[bytes]] = []
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)  # like the rtecs client transport
            s.connect(endpoint)
            self.socks.append(s)
        self.ids = [0] * n
        self.mids: list[int] = []
        self.seqs = [1] * n
        self.probes = set(probes)
        self.on_batch = on_batch
        self.poller = zmq.Poller()
        for s in self.socks:
            self.poller.register(s, zmq.POLLIN)
        self.index = {s: i for i, s in enumerate(self.socks)}
        self.rx_bytes = [0] * n
        self.rx_entries = [0] * n
        self.rx_batches = [0] * n
        self.probe_bytes = self.probe_entries = self.probe_pos = 0
        self.anomalies = 0
        self.lags: list[float] = []
        self._buf = bytearray(32)
        self._k = self._kp = 0
        self.due: list[float] = []
        self.ping_due: list[float] = []

    def close(self) -> None:
        for s in self.socks:
            s.close(0)

    # --- joining

    def join(self, hello_frame: bytes, timeout: float = 60.0,
             marks: Sequence[int] = (), on_mark: Callable[[int], None] | None = None,
             idle: Callable[[], None] | None = None,
             alive: Callable[[], None] | None = None) -> list[int]:
        """Send every hello (at most 100 in flight) and wait for every welcome, pinging the
        joined ones once a second. ``on_mark(j)`` runs once ``marks[j]`` of them joined (to
        join full clients at spread places of the server's fan-out order, which follows join
        order); ``idle()`` runs every pass (to tick those), ``alive()`` every second (to check
        the server still runs). Returns the client ids."""
        n = self.n
        ids = self.ids
        sent = joined = done = 0
        deadline = time.monotonic() + timeout
        next_ping = time.monotonic() + self.ping_every
        while joined < n or done < len(marks):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"only {joined} of {n} raw clients joined in {timeout} s")
            limit = marks[done] if done < len(marks) else n
            if done < len(marks) and joined >= limit:
                if on_mark is not None:
                    on_mark(done)
                done += 1
                continue
            while sent < limit and sent - joined < 100:
                self.socks[sent].send(hello_frame)
                sent += 1
            for s, _ in self.poller.poll(5):
                i = self.index[s]
                while s.get(zmq.EVENTS) & zmq.POLLIN:
                    frame = s.recv()
                    if frame[1] == 10 and not ids[i]:  # WELCOME
                        w = decode_server_message(frame)
                        assert isinstance(w, Welcome)
                        ids[i] = w.client_id
                        joined += 1
            if idle is not None:
                idle()
            if now >= next_ping:
                if alive is not None:
                    alive()
                self.ping(now)
                next_ping = now + self.ping_every
        self.mids = [dynamic_model_id(c, 1) for c in ids]
        return ids

    def create(self, type_name: str, flags: int, props: Sequence[Any]) -> None:
        """Each client's update 1: the create of its own model (counter 1), owned."""
        for s, cid, mid in zip(self.socks, self.ids, self.mids, strict=True):
            s.send(ENC.encode((2, 1, ((mid, CREATE, (type_name, flags), OWNER, cid,
                                       *props),), EPOCH)))

    def ping(self, now: float) -> None:
        frame = ENC.encode((3, now, EPOCH))
        for i, s in enumerate(self.socks):
            if self.ids[i]:
                s.send(frame)

    # --- the steady state

    def schedule(self, start: float) -> None:
        """Updates and pings from ``start`` on, phases spread evenly over their periods."""
        n = self.n
        self.due = [start + self.period * i / n for i in range(n)]
        self.ping_due = [start + self.ping_every * i / n for i in range(n)]
        self._k = self._kp = 0

    def next_due(self) -> float:
        """When the next update is due."""
        return self.due[self._k]

    def send_due(self, now: float, measuring: bool,
                 value: Callable[[int, int, float], float] | None = None) -> None:
        """Every update and ping due by ``now`` (a cyclic schedule). ``x`` is ``value(k, seq,
        now)``, by default ``k + seq / 100``; ``y`` is ``-x``."""
        due, socks, seqs, mids = self.due, self.socks, self.seqs, self.mids
        n, k, period, score_every = self.n, self._k, self.period, self.score_every
        encode_, NOBLOCK = ENC.encode, zmq.NOBLOCK
        while due[k] <= now:
            if measuring:
                self.lags.append(now - due[k])
            seq = seqs[k] = seqs[k] + 1
            x = value(k, seq, now) if value is not None else k + seq * 0.01
            run_ = ((mids[k], 1, x, 2, -x, 3, seq) if seq % score_every == 0
                    else (mids[k], 1, x, 2, -x))
            try:
                socks[k].send(encode_((2, seq, (run_,), EPOCH)), NOBLOCK)
            except zmq.Again:
                self.anomalies += 1
            due[k] += period
            k = k + 1 if k + 1 < n else 0
        self._k = k
        ping_due, kp = self.ping_due, self._kp
        while ping_due[kp] <= now:
            with contextlib.suppress(zmq.Again):
                socks[kp].send(encode_((3, now, EPOCH)), NOBLOCK)
            ping_due[kp] += self.ping_every
            kp = kp + 1 if kp + 1 < n else 0
        self._kp = kp

    def drain(self, measuring: bool, timeout_ms: int = 0) -> None:
        """Read every readable socket until it is empty (probes: whole frames, decoded)."""
        buf = self._buf
        recv_into = zmq.Socket.recv_into
        EVENTS, POLLIN, NOBLOCK = zmq.EVENTS, zmq.POLLIN, zmq.NOBLOCK
        probes, index, on_batch = self.probes, self.index, self.on_batch
        rx_bytes, rx_entries, rx_batches = self.rx_bytes, self.rx_entries, self.rx_batches
        for s, _ in self.poller.poll(timeout_ms):
            i = index[s]
            if i in probes:
                while cast(int, s.get(EVENTS)) & POLLIN:
                    frame: bytes = s.recv()
                    if frame[1] == 12:  # PONG
                        continue
                    msg = decode_server_message(frame)
                    if not isinstance(msg, Batch):
                        self.anomalies += 1
                    elif measuring:
                        self.probe_bytes += len(frame)
                        self.probe_entries += len(msg.entries)
                        self.probe_pos += positions(msg)
                        rx_entries[i] += len(msg.entries)
                        rx_bytes[i] += len(frame)
                        rx_batches[i] += 1
                        if on_batch is not None:
                            on_batch(i, msg, frame, time.perf_counter())
                continue
            while True:  # the poll said readable: receive, then until nothing is left
                size = recv_into(s, buf, flags=NOBLOCK)
                if buf[1] != 12:  # not a PONG
                    entries = batch_head(buf)
                    if entries < 0:
                        self.anomalies += 1
                    elif measuring:
                        rx_bytes[i] += size
                        rx_entries[i] += entries
                        rx_batches[i] += 1
                if not s.get(EVENTS) & POLLIN:
                    break
