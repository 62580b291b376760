"""A link conditioner: a TCP proxy that makes the network between clients and a server bad
on purpose, for tests and benchmarks (and for trying a game on a bad link by hand).

Clients connect to :attr:`LinkConditioner.endpoint` instead of the server's; every TCP
connection they open is forwarded to the server over one of its own, and the bytes of
each direction are held back as told:

- ``delay`` seconds each way, plus up to ``jitter`` more drawn per read (bytes never
  overtake each other: TCP keeps order, so a late read delays the ones behind it);
- ``bandwidth`` bytes per second each way and connection (None: no limit);
- :meth:`stall` holds everything for a while, then lets it all through: what a lost
  segment costs over TCP (a retransmission timeout of 200-1,000 ms), since TCP itself
  never loses data;
- :meth:`cut` holds everything until :meth:`restore` (a link that went dark: the peers'
  sockets stay open, as when a route or a Wi-Fi link fails), and :meth:`drop` closes every
  connection at once (a NAT or a proxy that forgot them: each side sees the connection
  end). Each takes an optional connection number, to hurt one client's link and not the
  others' (connections are numbered 0, 1, … in the order they were accepted).

One thread moves the bytes (``selectors``); the methods may be called from any thread.
Time is the real monotonic clock: this is a stand-in for the network, between real sockets.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

__all__ = ["LinkConditioner"]

log = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass
class _Direction:
    """Bytes read from one socket, waiting to be written to the other."""

    # in read order, written in that order: a read due later holds back the ones behind it
    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    next_free: float = 0.0       # the bandwidth limit: when the next byte may leave
    moved: int = 0               # bytes delivered


@dataclass
class _Pair:
    number: int
    client: socket.socket
    server: socket.socket
    up: _Direction = field(default_factory=_Direction)      # client → server
    down: _Direction = field(default_factory=_Direction)    # server → client
    cut: bool = False
    doomed: bool = False   # to be closed by the thread (drop)


class LinkConditioner:
    """A TCP proxy to ``target`` (``tcp://HOST:PORT``) with a bad link (module docs); listen
    on ``tcp://127.0.0.1:<free port>`` (:attr:`endpoint`). ``seed`` makes the jitter
    repeatable. Start it with :meth:`start` or ``with``."""

    def __init__(self, target: str, *, delay: float = 0.0, jitter: float = 0.0,
                 bandwidth: float | None = None, seed: int | None = None) -> None:
        host, sep, port = target.removeprefix("tcp://").rpartition(":")
        if not target.startswith("tcp://") or not sep or not port.isdigit():
            raise ValueError(f"the target must be tcp://HOST:PORT, got {target!r}")
        self._target = (host.strip("[]"), int(port))
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.set(delay=delay, jitter=jitter, bandwidth=bandwidth)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        #: Where clients connect instead of the target.
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._pairs: dict[int, _Pair] = {}
        self._accepted = 0
        self._held_until = 0.0
        self._cut_all = False
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="link-conditioner",
                                        daemon=True)

    # ----------------------------------------------------------------- control

    def set(self, *, delay: float | None = None, jitter: float | None = None,
            bandwidth: float | None = -1.0) -> None:
        """Change the delay, jitter or bandwidth (None bandwidth: no limit) from now on."""
        with self._lock:
            if delay is not None:
                if delay < 0:
                    raise ValueError(f"delay must be ≥ 0 s, got {delay}")
                self.delay = delay
            if jitter is not None:
                if jitter < 0:
                    raise ValueError(f"jitter must be ≥ 0 s, got {jitter}")
                self.jitter = jitter
            if bandwidth is None or bandwidth >= 0:
                if bandwidth is not None and bandwidth <= 0:
                    raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth}")
                self.bandwidth = bandwidth
        self._wake()

    def stall(self, seconds: float) -> None:
        """Hold every byte in both directions for ``seconds``, then let them through."""
        with self._lock:
            self._held_until = max(self._held_until, time.monotonic() + seconds)
        self._wake()

    def cut(self, connection: int | None = None) -> None:
        """Hold every byte of ``connection`` (None: of all, new ones too) until
        :meth:`restore`; the sockets stay open."""
        with self._lock:
            if connection is None:
                self._cut_all = True
            for pair in self._pairs.values():
                if connection is None or pair.number == connection:
                    pair.cut = True

    def restore(self, connection: int | None = None) -> None:
        """Let the bytes :meth:`cut` held through, and carry on."""
        with self._lock:
            if connection is None:
                self._cut_all = False
            for pair in self._pairs.values():
                if connection is None or pair.number == connection:
                    pair.cut = False
        self._wake()

    def drop(self, connection: int | None = None) -> int:
        """Close ``connection`` (None: every one) at both ends, what it held lost; how many
        were closed."""
        with self._lock:
            doomed = [p for p in self._pairs.values()
                      if connection is None or p.number == connection]
            for pair in doomed:
                pair.doomed = True
        self._wake()
        return len(doomed)

    @property
    def connections(self) -> list[int]:
        """The numbers of the open connections."""
        with self._lock:
            return sorted(p.number for p in self._pairs.values())

    def moved(self, connection: int) -> tuple[int, int]:
        """Bytes ``connection`` delivered so far: (client → server, server → client)."""
        with self._lock:
            pair = next(p for p in self._pairs.values() if p.number == connection)
            return pair.up.moved, pair.down.moved

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LinkConditioner:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop, closing every connection."""
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        for pair in list(self._pairs.values()):
            self._close_pair(pair)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._selector.close()

    def __enter__(self) -> LinkConditioner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- the thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):   # closed, or full: the thread wakes anyway
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        while not self._stopping:
            timeout = self._pump(time.monotonic())
            for key, _ in self._selector.select(timeout):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                else:
                    pair, up = key.data
                    self._read(pair, up)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self._target, timeout=5)
        except OSError as exc:
            log.warning("link conditioner: cannot reach %s:%d: %s", *self._target, exc)
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            pair = _Pair(self._accepted, client, server, cut=self._cut_all)
            self._accepted += 1
            self._pairs[pair.number] = pair
        self._selector.register(client, selectors.EVENT_READ, (pair, True))
        self._selector.register(server, selectors.EVENT_READ, (pair, False))

    def _read(self, pair: _Pair, up: bool) -> None:
        sock = pair.client if up else pair.server
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:   # one side closed: so does the other (TCP's end, passed on)
            self._close_pair(pair)
            return
        now = time.monotonic()
        with self._lock:
            direction = pair.up if up else pair.down
            due = now + self.delay + self._rng.random() * self.jitter
            direction.queue.append((due, data))

    def _pump(self, now: float) -> float:
        """Write what is due; seconds until something more may be (the select timeout)."""
        wait = 0.05
        with self._lock:
            held = now < self._held_until
            if held:
                wait = min(wait, self._held_until - now)
            pairs = list(self._pairs.values())
            bandwidth = self.bandwidth
        for pair in pairs:
            if pair.doomed:
                self._close_pair(pair)
                continue
            if held or pair.cut:
                continue
            for direction, sock in ((pair.up, pair.server), (pair.down, pair.client)):
                wait = min(wait, self._write(pair, direction, sock, now, bandwidth))
        return max(wait, 0.0)

    def _write(self, pair: _Pair, direction: _Direction, sock: socket.socket, now: float,
               bandwidth: float | None) -> float:
        queue = direction.queue
        while queue:
            due, data = queue[0]
            if due > now:
                return due - now
            if bandwidth is not None and direction.next_free > now:
                return direction.next_free - now
            rest = b""
            if bandwidth is not None:   # at most 10 ms worth at a time
                most = max(1, int(bandwidth * 0.01))
                data, rest = data[:most], data[most:]
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close_pair(pair)
                return 0.05
            rest = data[sent:] + rest
            if rest:
                queue[0] = (due, rest)
            else:
                queue.popleft()
            direction.moved += sent
            if bandwidth is not None:
                direction.next_free = max(direction.next_free, now) + sent / bandwidth
            if sent < len(data):
                return 0.001   # the socket's buffer is full: try again soon
        return 0.05

    def _close_pair(self, pair: _Pair) -> None:
        with self._lock:
            if self._pairs.pop(pair.number, None) is None:
                return
        for s in (pair.client, pair.server):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):   # linger 0: the peer sees a reset, as when
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
