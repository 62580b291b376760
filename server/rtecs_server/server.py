"""RoomServer: the socket loop. Only I/O and timing here; :class:`RoomHost` does the rest.

The loop, in a background thread (:meth:`RoomServer.start`; :meth:`RoomServer.serve_forever`
starts it and waits)::

    poll the ROUTER and the wake-up socket (timeout: until the next flush or housekeeping,
        rounded *up* to whole ms: zmq.Poller truncates fractions to 0 and would spin;
        at most MANUAL_CLOCK_POLL with a clock other than the system's, see Time)
    with persistence, a lease ran out      → host.check_leases(now)  (O(1) otherwise)
    receive every waiting frame            → host.handle(peer, frame, now)
    every HOUSEKEEPING_INTERVAL            → host.expire(now)   (heartbeats, empty rooms)
                                           → host.maintain(now) (leases, checkpoints)
    if a room has entries and the last flush was ≥ tick_interval ago
                                           → host.flush(now)    (one encode per room)

**Persistence** (``storage``; see :mod:`rtecs_server.persistence` and ``docs/server.md``).
``storage=None`` (the default here) keeps rooms in memory only, for tests and embedding;
``rtecs-server`` defaults to SQLite under ``--data-dir``. Saves and lease calls run on the
loop thread, between messages, because the room core is single-threaded: a checkpoint of a
room of 100,000 models blocks the loop for about 60 ms on this class of machine (2 cores,
SQLite on local disk), so checkpoints are held to a budget of
:data:`~rtecs_server.persistence.CHECKPOINT_BUDGET` (10 %) of the loop's time.

**Tick interval** (``tick_interval``, default :data:`DEFAULT_TICK_INTERVAL` = 5 ms). A room's
batch goes out *at once* when the server was idle (nothing flushed in the last
``tick_interval``) and otherwise at ``last flush + tick_interval``. A lone update is relayed
with no added delay, and under load the server flushes at most ``1/tick_interval`` times a
second, which bounds the fan-out sends (members x flushes) however fast updates arrive.
Measured with ``python -m bench.server_tick`` (one room, N raw clients each sending a position
at 20 Hz, server pinned to core 0 and load generator to core 1, 2-core machine; server CPU in
% of one core, relay latency p50/p99 in ms)::

    tick      N=20                N=100               N=300
    0 ms      10 %  0.3 / 0.5     48 %  2.5 / 10.5    82 %  9.9 / 22.8
    2 ms       9 %  0.3 / 2.4     35 %  2.5 / 4.5     93 %  8.5 / 17.0
    5 ms       5 %  3.4 / 6.1     23 %  4.2 / 7.0     60 %  5.4 / 9.4
    10 ms      4 %  5.6 / 11.3    16 %  6.1 / 11.8    40 %  7.8 / 14.2
    20 ms      4 %  10.7 / 21.0   13 %  11.3 / 21.7   32 %  13.3 / 25.6

**Pacing by room size.** Each flush sends one frame to every member, so the interval also
grows with the largest room: 50 µs per member (:data:`TICK_PER_MEMBER`), between
``tick_interval`` and 50 ms (:data:`MAX_PACED_TICK`) — 5 ms up to 100 members, 25 ms at 500,
50 ms at 1,000. Measured with ``python -m bench.room_fanout`` at 1,000 clients: a fixed 5 ms
saturated the core (p99 386 ms, clients at 18.7 updates/s); 50 ms kept every client at 20
updates/s with p99 89 ms at 77 % of a core, about the bare relay floor's CPU.

Flushing after every receive (0) or every 1-2 ms is cheapest in latency for small rooms but
its CPU grows fast with N (every update becomes a batch to N members): at N=300 it nears a
full core and queues, so latency ends up *worse* than at 5 ms (the load generator nears a
core there too, so part of that latency is its own). 5 ms is the lowest setting
that stays efficient at a few hundred clients, costs a small room about 3 ms (p50) and less
than a tenth of a 20 Hz client frame, and 10-20 ms buy a third to a half less CPU only by
adding 2.5-8 ms. Fan-out costs about 7 µs of server CPU per member per flush here, so for
rooms approaching 1,000 clients raise ``--tick-ms`` (20-50).

**Time** comes from one :class:`~rtecs.clock.Clock` (``clock=``, default
:data:`~rtecs.clock.SYSTEM_CLOCK`), shared with the persistence layer and the storage the
server opens. The ``now`` passed to the host (and sent to clients as ``server_time``) is
seconds since the Unix epoch, read from ``clock.wall()`` once when the server is created and
advanced by ``clock.monotonic()`` (:meth:`RoomServer.now`): it never jumps while the server
runs (heartbeats stay correct if the wall clock is stepped) and roughly agrees across
restarts and instances, so a room time stored in a model stays meaningful. Everything that
decides behaviour runs on it: heartbeat timeouts, empty-room timeouts, rate limits,
housekeeping (every :data:`HOUSEKEEPING_INTERVAL` of it), leases, checkpoints and the
checkpoint budget. So a test can run a real server, real sockets and all, on a
:class:`~rtecs.clock.ManualClock` and step it through a heartbeat timeout, a lease's end or a
checkpoint (see ``tests/test_server_heartbeat.py``).

Two things stay on real time, because they are about the CPU and the latency of this loop
rather than about what happens in a room: the flush pacing (``tick_interval`` and pacing by
room size: a frozen manual clock must not hold batches back) and the poll timeouts. Those
wait on the clock's deadlines as real seconds, which is exact for the system clock; any other
clock may move without the loop's knowing (a test steps it from another thread), so with one
the loop polls at most :data:`MANUAL_CLOCK_POLL` (10 ms) at a time — it notices a step
within 10 ms, and costs about a hundred idle wake-ups a second while the clock stands
still. (The client-facing timeouts of :meth:`RoomServer.stop` are real time too.)

**Fair turns.** A pass reads and handles frames one at a time
(:meth:`~rtecs_server.zmq_transport.ZmqServerTransport.messages`) and stops after
:data:`PASS_SLICE` (5 ms) of real time, or :data:`~rtecs_server.zmq_transport.MAX_RECEIVE_BATCH`
frames; what is left stays queued in libzmq, which hands a ROUTER's input out one message per
peer in turn. So a ping waits behind at most one frame of each busy peer, not behind
everything a flood put in the socket since the last poll. Measured with
``tests/test_hostile_cost.py`` (one session sending 32 updates of 4,096 changes at once), the
busiest pass went from 93 ms of CPU (every frame waiting read in one pass) to 12 ms, the
slice plus one update. Each frame is still charged to its sender by the rate limits; the
slice only decides when the loop looks up.

:meth:`RoomServer.stop` wakes the loop through a local socket pair (safe from any thread and
from a signal handler), so it does not wait for a poll timeout; the loop then sends
``ERROR shutdown`` (fatal) to every client, waits at most :data:`SHUTDOWN_LINGER` for those
frames to leave, and closes its sockets.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import zmq

from rtecs.clock import SYSTEM_CLOCK, Clock, SystemClock
from rtecs.protocol import DEFAULT_LIMITS, Limits
from rtecs_server.auth import JoinAuth
from rtecs_server.directory import DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS, DEFAULT_MAX_ROOMS
from rtecs_server.host import RoomHost
from rtecs_server.hosted import DEFAULT_HISTORY_BYTES, DEFAULT_SESSION_GRACE
from rtecs_server.persistence import (
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_LEASE_TTL,
    Persistence,
    default_advertise,
)
from rtecs_server.plugins import Plugin
from rtecs_server.ratelimit import RateLimit
from rtecs_server.sessions import DEFAULT_MAX_SESSIONS_PER_ADDRESS
from rtecs_server.storage import Storage, open_storage
from rtecs_server.zmq_transport import ZmqServerTransport, check_curve_key

__all__ = ["DEFAULT_RATE_LIMIT", "DEFAULT_TICK_INTERVAL", "HOUSEKEEPING_INTERVAL",
           "MANUAL_CLOCK_POLL", "PASS_SLICE", "SHUTDOWN_LINGER", "LoopStats", "RoomServer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopStats:
    """How busy the loop was between two calls of :meth:`RoomServer.take_loop_stats`.

    A *pass* is one turn of the loop after its poll returns: the frames it received, the
    housekeeping and the flush it did. ``busiest_cpu`` is the CPU time (of the loop's thread,
    ``time.thread_time``) of the busiest pass: how long the loop worked without reading its
    socket, which is what keeps a client's ping waiting. It does not grow when other
    processes take the CPU (``busiest_wall`` does), so it is the figure to bound in tests on
    a busy machine."""

    passes: int
    cpu: float            # seconds of the loop thread's CPU in all passes
    busiest_cpu: float    # seconds of CPU of the busiest pass
    busiest_wall: float   # seconds of real time of the pass with the most CPU


#: Minimum time between two flushes of the rooms' batches (see the module docs).
DEFAULT_TICK_INTERVAL: Final = 0.005
#: Flush pacing by room size: seconds per member of the largest room, and its ceiling.
TICK_PER_MEMBER: Final = 50e-6
MAX_PACED_TICK: Final = 0.05
#: 200 messages/s per client, bursts of 400, disconnected after 2 s over it.
DEFAULT_RATE_LIMIT: Final = RateLimit()
#: How often (seconds of the server's clock) silent clients and empty rooms are looked for.
HOUSEKEEPING_INTERVAL: Final = 0.1
#: Longest poll (real seconds) when the clock is not the system's (see the module docs).
MANUAL_CLOCK_POLL: Final = 0.01
#: Real seconds a pass of the loop goes on reading frames before it flushes and polls
#: again (see the module docs, Fair turns).
PASS_SLICE: Final = 0.005
#: Longest wait, at shutdown, for the goodbye frames to leave.
SHUTDOWN_LINGER: Final = 0.2


class RoomServer:
    """The rtecs room server on a ZeroMQ ROUTER socket, embeddable or run by the CLI.

    It binds ``bind`` when created (``.endpoint`` is then the endpoint actually bound, e.g.
    ``tcp://127.0.0.1:54321`` for ``tcp://127.0.0.1:0``); :meth:`start` runs the loop in a
    background thread, :meth:`serve_forever` in the calling thread; :meth:`stop` ends it and
    closes the sockets. As a context manager it starts on entry and stops on exit.

    ``plugins``: server plugins (:mod:`rtecs_server.plugins`). ``limits``: size limits (125 KB
    per update, 10 MB per datastore by default). ``heartbeat_timeout``: seconds of silence
    after which a client shows ``away``; ``session_grace``: seconds of silence (or without a
    connection) after which its session ends and its lifetime flags apply — until then the
    client may resume it over a fresh connection (DESIGN §8). ``empty_room_timeout``:
    seconds a room stays open after its last client left. ``max_clients_per_room``: None for
    no cap. ``tick_interval``: minimum seconds between two flushes (see the module docs; 0
    flushes after every receive). ``rate_limit``: per-client message rate (None: no limit).
    ``sndhwm``: frames queued per client before it counts as not keeping up.
    ``history_bytes``: the byte budget of each room's batch history
    (:class:`~rtecs_server.hosted.BatchHistory`; default 1 MiB).
    ``socket_options``: extra ``{zmq option: value}`` for the ROUTER (tests, tuning).
    ``max_sessions_per_address``: live sessions one network address (an IPv4 address, an
    IPv6 /64) may hold; a hello past it gets a fatal ``ERROR too_many_sessions`` (default
    :data:`~rtecs_server.sessions.DEFAULT_MAX_SESSIONS_PER_ADDRESS`, 64; None or 0: no
    limit). Loopback is not exempt: tests and benchmarks that open many sessions from one
    machine raise it. ``max_rooms``: rooms this instance hosts at most (default
    :data:`~rtecs_server.directory.DEFAULT_MAX_ROOMS`, 10,000); ``max_empty_rooms_per_address``:
    empty rooms one address opened that stay open until their timeout (default 8; more close
    early, the oldest first: :mod:`rtecs_server.directory`); None or 0: no bound.

    Persistence: ``storage`` is None (rooms live in memory only: the default here, for tests
    and embedding that want no files), a :class:`~rtecs_server.storage.Storage` (the caller
    keeps and closes it) or a ``--storage`` URL for :func:`~rtecs_server.storage.open_storage`
    (``"sqlite:"`` is ``rooms.sqlite3`` under ``data_dir``; ``"redis://host:port/db"``),
    opened and closed by the server. ``advertise``: the endpoint other instances redirect
    clients to (default: the bound endpoint, a wildcard host replaced by this machine's
    name). ``checkpoint_interval``: seconds between checkpoints of a changing room (the most
    a crash loses). ``lease_ttl``: seconds a room's lease lasts unless renewed (how long a
    crashed instance's rooms stay unavailable to the others). ``instance_id``: this
    process's name in the room directory (default: a new UUID).

    ``clock``: where the server reads time (see the module docs) — the system clock by
    default; tests pass a :class:`~rtecs.clock.ManualClock` and step it. A storage URL is
    opened on this clock; a :class:`~rtecs_server.storage.Storage` passed in must have been
    made with the same clock object (``ValueError`` otherwise). Join tokens expire on its
    ``wall()``, read by the loop and by the ZAP thread (so it must be safe to read from
    another thread, as both clocks of :mod:`rtecs.clock` are).

    Security (``docs/server.md``, :mod:`rtecs_server.zmq_transport`): ``auth_secret``
    (bytes, at least 16) makes every ``HELLO`` need a join token signed with it
    (:func:`rtecs.make_token`) and, without CURVE, gates the ZeroMQ handshake itself (PLAIN
    checked by a ZAP thread), so a peer without a valid token never reaches the ROUTER.
    ``curve_secret_key`` (the Z85 secret key of a pair ``rtecs-server keygen`` made) makes
    the ROUTER a CURVE server: traffic is encrypted, clients need the public key
    (:attr:`curve_public_key`), and a plaintext client cannot connect.
    """

    def __init__(self, bind: str = "tcp://127.0.0.1:0", *, plugins: Iterable[Plugin] = (),
                 limits: Limits = DEFAULT_LIMITS, heartbeat_timeout: float = 5.0,
                 session_grace: float = DEFAULT_SESSION_GRACE,
                 empty_room_timeout: float = 30.0, max_clients_per_room: int | None = None,
                 tick_interval: float = DEFAULT_TICK_INTERVAL,
                 rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT, sndhwm: int = 1000,
                 socket_options: Mapping[int, int] | None = None,
                 storage: Storage | str | None = None, data_dir: str = "./rtecs-data",
                 advertise: str | None = None,
                 checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
                 lease_ttl: float = DEFAULT_LEASE_TTL, instance_id: str | None = None,
                 history_bytes: int = DEFAULT_HISTORY_BYTES,
                 clock: Clock = SYSTEM_CLOCK, auth_secret: bytes | None = None,
                 curve_secret_key: bytes | str | None = None,
                 max_sessions_per_address: int | None = DEFAULT_MAX_SESSIONS_PER_ADDRESS,
                 max_rooms: int | None = DEFAULT_MAX_ROOMS,
                 max_empty_rooms_per_address: int | None = DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS
                 ) -> None:
        if tick_interval < 0:
            raise ValueError(f"tick_interval must be ≥ 0 s, got {tick_interval}")
        if not heartbeat_timeout > 0:
            raise ValueError(f"heartbeat_timeout must be > 0 s, got {heartbeat_timeout}")
        if not session_grace > 0:
            raise ValueError(f"session_grace must be > 0 s, got {session_grace}")
        if empty_room_timeout < 0:
            raise ValueError(f"empty_room_timeout must be ≥ 0 s, got {empty_room_timeout}")
        if max_clients_per_room is not None and max_clients_per_room < 1:
            raise ValueError(f"max_clients_per_room must be ≥ 1, got {max_clients_per_room}")
        if not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be > 0 s, got {checkpoint_interval}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 s, got {lease_ttl}")
        if history_bytes < 0:
            raise ValueError(f"history_bytes must be ≥ 0, got {history_bytes}")
        if max_sessions_per_address is not None and max_sessions_per_address < 0:
            raise ValueError(f"max_sessions_per_address must be ≥ 0 (0: no limit), got "
                             f"{max_sessions_per_address}")
        gate = JoinAuth(auth_secret, wall=clock.wall)  # ValueError for a short secret
        curve_key = None if curve_secret_key is None else check_curve_key(
            curve_secret_key.encode() if isinstance(curve_secret_key, str)
            else curve_secret_key, "curve_secret_key")
        #: The server's CURVE public key (Z85 text) for clients' ``server_key=``; None
        #: without encryption.
        self.curve_public_key: str | None = (None if curve_key is None
                                             else zmq.curve_public(curve_key).decode("ascii"))
        #: Least seconds between two relayed batches of a room (``--tick-ms`` / 1000).
        self.tick_interval = tick_interval
        #: Where the server reads time (see the module docs).
        self.clock = clock
        self._epoch = clock.wall() - clock.monotonic()
        # another clock may be stepped behind the loop's back: poll it (module docs)
        self._max_poll = math.inf if isinstance(clock, SystemClock) else MANUAL_CLOCK_POLL
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            #: The ROUTER socket every client message arrives on and every frame leaves by.
            self.transport = ZmqServerTransport(
                self._context, bind, limits=limits, sndhwm=sndhwm,
                socket_options=socket_options, curve_secret_key=curve_key,
                gate=gate.check_gate if gate.requires_token else None)
        except zmq.ZMQError as exc:
            self._context.term()
            raise OSError(f"cannot bind {bind}: {exc}") from exc
        owned = isinstance(storage, str)
        try:
            store = open_storage(storage, data_dir, clock=clock) if isinstance(
                storage, str) else storage
            if store is not None and store.clock is not clock:
                raise ValueError(f"the storage {store.location} was made with another clock "
                                 f"than this server's: pass it the same clock object")
        except BaseException:
            self.transport.close()
            self._context.term()
            raise
        #: The room storage, or None (see the class docs).
        self.persistence = None if store is None else Persistence(
            store, advertise=advertise or default_advertise(self.transport.endpoint),
            instance_id=instance_id, checkpoint_interval=checkpoint_interval,
            lease_ttl=lease_ttl, owns_storage=owned, clock=clock)
        #: What the loop drives: sessions, rooms, fan-out, checkpoints (the loop's thread
        #: only: read it from elsewhere while the server is stopped).
        self.host = RoomHost(self.transport, plugins=plugins, limits=limits,
                             heartbeat_timeout=heartbeat_timeout,
                             session_grace=session_grace,
                             empty_room_timeout=empty_room_timeout,
                             max_clients_per_room=max_clients_per_room, rate_limit=rate_limit,
                             persistence=self.persistence, history_bytes=history_bytes,
                             auth_secret=auth_secret, wall=clock.wall,
                             max_sessions_per_address=max_sessions_per_address,
                             max_rooms=max_rooms,
                             max_empty_rooms_per_address=max_empty_rooms_per_address)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._passes, self._pass_cpu, self._busiest = 0, 0.0, (0.0, 0.0)
        self._stats_lock = threading.Lock()   # the loop adds, take_loop_stats takes

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound, e.g. ``tcp://127.0.0.1:54321``."""
        return self.transport.endpoint

    @property
    def advertise(self) -> str | None:
        """The endpoint other instances redirect this one's clients to (None without
        storage)."""
        return None if self.persistence is None else self.persistence.advertise

    def now(self) -> float:
        """The server's time: ``clock.monotonic()`` anchored to the wall clock when the
        server was made (see the module docs)."""
        return self.clock.monotonic() + self._epoch

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> RoomServer:
        """Run the loop in a background (daemon) thread; returns self."""
        if self._stopping or self._closed:
            raise RuntimeError("this RoomServer was stopped; create a new one")
        if self._thread is not None:
            raise RuntimeError("this RoomServer is already running")
        self._thread = threading.Thread(target=self._run, name="rtecs-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run until :meth:`stop` (e.g. called from a signal handler), blocking the calling
        thread. The loop itself runs in the background thread, so signal handlers of the main
        thread run promptly; if the wait is interrupted (KeyboardInterrupt), the server stops
        before the exception propagates."""
        self.start()
        try:
            # Waits of at most 0.2 s: the kernel may deliver a signal to any thread, and a
            # Python handler runs only in the main thread, once it runs Python code again — a
            # wait without a timeout would hold SIGTERM or SIGUSR1 back until the loop ends
            # (a loaded test run lost a SIGUSR1 report that way).
            while not self._done.wait(0.2):
                pass
        finally:
            self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop — saving every room first, with persistence — and close the sockets;
        returns once that is done (at most ``timeout`` s: a save still running then goes on
        in the background thread). Safe from any thread, from a signal handler, and more
        than once."""
        self._stopping = True
        with contextlib.suppress(OSError):  # closed, or the buffer is full: it wakes anyway
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is None:
            self._close()
        elif thread is not threading.current_thread() and not self._done.wait(timeout):
            log.error("the server loop did not stop within %.1f s", timeout)

    def take_loop_stats(self) -> LoopStats:
        """The loop's :class:`LoopStats` since the last call (or the start), and start
        counting again. Safe from any thread (a pass running meanwhile counts in the
        next)."""
        with self._stats_lock:
            passes, cpu, (busiest_cpu, busiest_wall) = (self._passes, self._pass_cpu,
                                                         self._busiest)
            self._passes, self._pass_cpu, self._busiest = 0, 0.0, (0.0, 0.0)
        return LoopStats(passes, cpu, busiest_cpu, busiest_wall)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the loop has finished."""
        return self._thread is not None and not self._done.is_set()

    def __enter__(self) -> RoomServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.persistence is not None:
            self.persistence.close()
        self.transport.close()
        self._context.term()
        self._wake_r.close()
        self._wake_w.close()

    # ----------------------------------------------------------------- the loop

    def _run(self) -> None:
        log.info("serving on %s", self.endpoint)
        try:
            self._loop()
        except Exception:
            log.exception("the server loop failed")
        finally:
            try:
                told = self.host.close(self.now())
            except Exception:
                log.exception("error while saying goodbye to the clients")
                told = 0
            self.transport.close(SHUTDOWN_LINGER if told else 0.0)
            self._close()
            self._done.set()
            log.info("stopped")

    def _loop(self) -> None:
        host = self.host
        router = self.transport.socket
        wake = self._wake_r
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        interval = self.tick_interval
        max_poll = self._max_poll
        thread_time, stats_lock = time.thread_time, self._stats_lock
        next_flush = -math.inf            # real time (flush pacing: see the module docs)
        now = self.now()                  # the clock (everything else)
        real = time.monotonic()
        next_housekeeping = now + HOUSEKEEPING_INTERVAL
        while not self._stopping:
            wait = min(next_housekeeping - now, max_poll)
            if host.has_pending:
                wait = min(wait, next_flush - real)
            # zmq.Poller truncates fractional milliseconds: round up, or we would spin
            events = dict(poller.poll(math.ceil(wait * 1000) if wait > 0 else 0))
            cpu_start = thread_time()
            if wake in events:
                self._drain_wake()
                if self._stopping:
                    break
            now = self.now()
            real = time.monotonic()
            self._guard(host.check_leases, now)
            if router in events:
                self._receive(now)
            if now >= next_housekeeping:
                self._guard(host.expire, now)
                self._guard(host.maintain, now)
                next_housekeeping = now + HOUSEKEEPING_INTERVAL
            if host.has_pending and real >= next_flush:
                self._guard(host.flush, now)
                next_flush = real + max(interval, min(
                    MAX_PACED_TICK, host.largest_room * TICK_PER_MEMBER))
            spent = thread_time() - cpu_start
            with stats_lock:
                self._passes += 1
                self._pass_cpu += spent
                if spent > self._busiest[0]:
                    self._busiest = (spent, time.monotonic() - real)

    def _receive(self, now: float) -> None:
        host = self.host
        transport = self.transport
        deadline = time.monotonic() + PASS_SLICE
        for peer, frame, connection in transport.messages():
            try:
                host.handle(peer, frame, now, connection)
            except Exception:
                log.exception("internal error handling a frame from peer %s; frame dropped",
                              peer.hex())
            if time.monotonic() >= deadline:
                break   # the rest stay queued in libzmq, for the next pass (module docs)
        for peer, reason in transport.take_malformed():
            try:
                host.handle_malformed(peer, reason, now)
            except Exception:
                log.exception("internal error handling a bad message from peer %s",
                              peer.hex())

    @staticmethod
    def _guard(step: Callable[[float], None], now: float) -> None:
        try:
            step(now)
        except Exception:
            log.exception("internal error in the server loop (%s); continuing",
                          getattr(step, "__name__", step))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
