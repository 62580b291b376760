"""Raw ZeroMQ clients and server fixtures for the server tests.

:class:`RawClient` is a DEALER socket speaking the protocol by hand (``rtecs.protocol``
encode/decode, no rtecs client library), so a test decides every frame. It keeps a
:class:`Mirror` of the room built only from what the server sent (welcome snapshot, then each
batch in order), which is the server's state once the stream is applied. ``run_server()``
starts a real ``rtecs-server`` process on a random port; ``wait_until()`` polls a predicate
with a deadline while stepping the clients it is given (no sleeps as synchronisation).

Virtual time: a :class:`~rtecs_server.RoomServer` made with ``clock=ManualClock()`` (the
``clocked_server`` fixture) runs every timer — heartbeats, empty rooms, leases,
checkpoints — on that clock, so a test steps it with :func:`advance` instead of waiting real
seconds, and :meth:`RawClient.barrier` says when the server has acted on a step.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq

from rtecs.clock import ManualClock
from rtecs.protocol import (
    CREATE,
    DESTROY,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Error,
    Hello,
    JoinEntry,
    LeaveEntry,
    ModelId,
    Ping,
    Pong,
    ServerMessage,
    Update,
    Welcome,
    decode_server_message,
    encode,
)
from rtecs.realtime import Realtime
from rtecs_server import RoomServer

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = Path(sys.executable).parent / "rtecs-server"
#: Real seconds a test waits for something the server must do (generous: the machine may be
#: loaded; a wait ends as soon as the event arrives).
PATIENCE = 20.0
_PINGS = itertools.count(1)

SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Game": {1: ("title", "str", True), 2: ("score", "int", True),
             3: ("x", "float", False)},
    "Player": {1: ("name", "str", True), 2: ("x", "float", False)},
}


# ----------------------------------------------------------------------------- mirror

class Mirror:
    """The room as a client sees it: ``models[id] = [type, owner, flags, {pid: value}]``."""

    def __init__(self) -> None:
        self.models: dict[ModelId, list[Any]] = {}
        self.clients: set[int] = set()
        self.room_seq = 0

    def load(self, welcome: Welcome) -> None:
        self.models = {rec[0]: [rec[1], rec[2], rec[3], dict(rec[4])]  # [5]: parent (unused)
                       for rec in welcome.snapshot}
        self.clients = set(welcome.clients)
        self.room_seq = welcome.room_seq

    def apply(self, batch: Batch) -> None:
        assert batch.room_seq == self.room_seq + 1, (
            f"batch {batch.room_seq} after {self.room_seq}: a batch was skipped")
        self.room_seq = batch.room_seq
        for entry in batch.entries:
            if isinstance(entry, JoinEntry):
                self.clients.add(entry.client_id)
            elif isinstance(entry, LeaveEntry):
                self.clients.discard(entry.client_id)
            else:
                self.apply_changes(entry.changes)

    def apply_changes(self, changes: Iterable[Sequence[Any]]) -> None:
        for run in changes:
            mid = run[0]
            for i in range(1, len(run), 2):
                key, value = run[i], run[i + 1]
                if key == CREATE:
                    self.models[mid] = [value[0], -1, value[1], {}]
                elif key == DESTROY:
                    self.models.pop(mid, None)
                elif key == OWNER:
                    self.models[mid][1] = value
                else:
                    self.models[mid][3][key] = value

    def state(self) -> dict[ModelId, tuple[Any, ...]]:
        return {mid: (t, o, f, tuple(sorted(p.items())))
                for mid, (t, o, f, p) in self.models.items()}


# ----------------------------------------------------------------------------- raw client

class RawClient:
    """A DEALER socket speaking the rtecs protocol by hand."""

    def __init__(self, endpoint: str, *, context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 rcvhwm: int | None = None, rcvbuf: int | None = None,
                 routing_id: bytes | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:  # chosen by the client (an impostor, in tests)
            self.socket.setsockopt(zmq.ROUTING_ID, routing_id)
        if rcvhwm is not None:
            self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self.socket.setsockopt(zmq.RCVBUF, rcvbuf)
        self.socket.connect(endpoint)
        self.client_id = -1
        self.seq = 0
        self.mirror = Mirror()
        self.received: list[ServerMessage] = []   # everything, in order
        self.raw: list[bytes] = []                # the frames, in order
        self.errors: list[Error] = []
        self.welcomes: list[Welcome] = []

    # ------------------------------------------------------------- sending

    def send_raw(self, *parts: bytes) -> None:
        self.socket.send_multipart(list(parts))

    def send(self, message: tuple[Any, ...]) -> None:
        self.socket.send(encode(message))

    def hello(self, room: str = "lobby", *, schema: dict[str, Any] | None = None,
              root: str = "Game", version: int = PROTOCOL_VERSION) -> None:
        self.send(Hello(version, room, root, SCHEMA if schema is None else schema, None))

    def join(self, room: str = "lobby", timeout: float = 5.0, **kw: Any) -> Welcome:
        """Hello, then wait for the welcome."""
        self.hello(room, **kw)
        self.expect(lambda m: isinstance(m, Welcome), timeout, "a welcome")
        return self.welcomes[-1]

    def update(self, *runs: Sequence[Any]) -> int:
        """Send the next update with these change runs; returns its seq."""
        self.seq += 1
        self.send(Update(self.seq, [list(r) for r in runs]))
        return self.seq

    @property
    def epoch(self) -> int:
        """The epoch of the last welcome received (0: none): what an honest ping names."""
        return self.welcomes[-1].epoch if self.welcomes else 0

    def ping(self) -> None:
        self.send(Ping(time.monotonic(), self.epoch))

    def sync(self, timeout: float = PATIENCE) -> Pong:
        """Ping and wait for *that* ping's pong: the server has handled every frame this
        client sent before (in order, on one connection); the pong's ``server_time`` says
        at which server time. Messages received meanwhile are kept and applied."""
        token = -float(next(_PINGS))  # never a real monotonic reading
        self.send(Ping(token, self.epoch))
        msg = self.expect(lambda m: isinstance(m, Pong) and m.client_time == token, timeout,
                          "the pong of our ping")
        assert isinstance(msg, Pong)
        return msg

    def barrier(self, at: float = -math.inf, timeout: float = PATIENCE) -> Pong:
        """Wait until the server has *finished* a loop pass that read its clock at ≥ ``at``
        (a server time) after handling this client's earlier frames — that pass's
        housekeeping (heartbeat timeouts, leases, checkpoints) included; its batches may
        follow a few real ms later (flush pacing): sync until a pong is stamped ≥ ``at``,
        then once more. The loop handles frames as it reads them (fair turns), so the last
        ping may still be answered by the same pass, before its housekeeping: a test that
        needs a housekeeping effect (a checkpoint) waits for the effect itself. Returns the
        last pong."""
        while self.sync(timeout).server_time < at:
            pass
        return self.sync(timeout)

    def bye(self) -> None:
        self.send(Bye())

    # ------------------------------------------------------------- receiving

    def step(self) -> int:
        """Receive and apply everything waiting, without blocking; returns how many."""
        n = 0
        while self.socket.poll(0, zmq.POLLIN):
            self._take(self.socket.recv())
            n += 1
        return n

    def _take(self, frame: bytes) -> ServerMessage:
        msg = decode_server_message(frame)
        self.raw.append(frame)
        self.received.append(msg)
        if isinstance(msg, Welcome):
            self.client_id = msg.client_id
            self.seq = 0
            self.mirror.load(msg)
            self.welcomes.append(msg)
        elif isinstance(msg, Batch):
            if msg.room_seq > self.mirror.room_seq:
                self.mirror.apply(msg)
        elif isinstance(msg, Error):
            self.errors.append(msg)
        return msg

    def recv(self, timeout: float = 5.0) -> ServerMessage:
        """The next message (applied to the mirror); TimeoutError if none comes in time."""
        if not self.socket.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"nothing received within {timeout} s")
        return self._take(self.socket.recv())

    def expect(self, predicate: Callable[[ServerMessage], bool], timeout: float = 5.0,
               what: str = "a matching message") -> ServerMessage:
        """Receive until a message matches; return it (earlier ones are kept too)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout} s; got "
                                   f"{[type(m).__name__ for m in self.received[-10:]]}")
            try:
                msg = self.recv(left)
            except TimeoutError:
                continue
            if predicate(msg):
                return msg

    def expect_error(self, code: str, timeout: float = 5.0) -> Error:
        msg = self.expect(lambda m: isinstance(m, Error) and m.code == code, timeout,
                          f"ERROR {code}")
        assert isinstance(msg, Error)
        return msg

    def batches(self) -> list[Batch]:
        return [m for m in self.received if isinstance(m, Batch)]

    def close(self) -> None:
        self.socket.close(0)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
               clients: Iterable[RawClient] = (), what: str = "the condition",
               ping_every: float | None = None) -> None:
    """Step ``clients`` (receive what arrived; ping them every ``ping_every`` s if given)
    until ``predicate()`` holds; AssertionError after ``timeout`` s."""
    clients = list(clients)
    deadline = time.monotonic() + timeout
    next_ping = time.monotonic()
    poller = zmq.Poller()
    for c in clients:
        poller.register(c.socket, zmq.POLLIN)
    while True:
        for c in clients:
            c.step()
        if predicate():
            return
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if ping_every is not None and now >= next_ping:
            for c in clients:
                c.ping()
            next_ping = now + ping_every
        if clients:
            poller.poll(10)  # wake on arrival; 10 ms at most between predicate checks
        else:
            time.sleep(0.005)  # nothing to step: a bounded poll interval, not a sync wait


# ----------------------------------------------------------------------------- servers

class ServerProcess:
    """A real ``rtecs-server`` process; ``endpoint`` is parsed from its startup line.
    Without ``--storage`` or ``--data-dir`` among ``args`` it runs with ``--storage none``
    (rooms in memory only, no files written)."""

    def __init__(self, *args: str, timeout: float = 10.0) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
        command = [str(SERVER_SCRIPT)] if SERVER_SCRIPT.exists() else [
            sys.executable, "-m", "rtecs_server"]
        if "--storage" not in args and "--data-dir" not in args:
            args = ("--storage", "none", *args)
        self.args = args
        self.process = subprocess.Popen(
            [*command, "--bind", "tcp://127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr_lines: list[str] = []
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.endpoint = self._read_endpoint(timeout)

    def _read_endpoint(self, timeout: float) -> str:
        assert self.process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(
            self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        line = result[0] if result else ""
        match = re.search(r"listening on (tcp://\S+)", line)
        if not match:
            self.kill()
            raise RuntimeError(f"rtecs-server did not start: {line!r}\n{self.stderr}")
        return match.group(1)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._stderr_thread.join(2)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


_CLOCKED_SERVER = """
import json, sys
from rtecs.clock import ManualClock
from rtecs_server import RoomServer
clock = ManualClock()
server = RoomServer(clock=clock, **json.loads(sys.argv[1])).start()
print("listening on", server.endpoint, flush=True)
for line in sys.stdin:
    clock.advance(float(line))
    print(server.now(), flush=True)
"""


class ClockedServerProcess(ServerProcess):
    """An embedded :class:`RoomServer` on a :class:`ManualClock`, alone in a child process
    (for tests that kill -9 a server but want virtual time): ``options`` are RoomServer
    keyword arguments (JSON values); :meth:`advance` steps its clock."""

    def __init__(self, timeout: float = PATIENCE, **options: Any) -> None:
        import json

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT / "tests"), str(ROOT), str(ROOT / "server"),
             os.environ.get("PYTHONPATH", "")]))
        self.args = ()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLOCKED_SERVER, json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        self.stderr_lines = []
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.endpoint = self._read_endpoint(timeout)

    def advance(self, seconds: float) -> float:
        """Step the server's clock by ``seconds``; returns its new server time (the clock
        has moved; barrier a client at that time to wait for the server to act on it)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{seconds!r}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())


@contextlib.contextmanager
def run_server(*args: str) -> Iterator[ServerProcess]:
    """A real ``rtecs-server --bind tcp://127.0.0.1:0 ARGS`` for the duration of the block."""
    server = ServerProcess(*args)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.signal(signal.SIGTERM)
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def raw_clients() -> Iterator[Callable[..., RawClient]]:
    """A factory of :class:`RawClient` (``make(endpoint, **options)``), closed afterwards."""
    made: list[RawClient] = []

    def make(endpoint: str, **options: Any) -> RawClient:
        client = RawClient(endpoint, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def embedded_server() -> Iterator[RoomServer]:
    """A :class:`RoomServer` in this process (default options), stopped afterwards."""
    with RoomServer() as server:
        yield server


@pytest.fixture(scope="module")
def server_process() -> Iterator[ServerProcess]:
    """One real ``rtecs-server`` process (default options) shared by a test module."""
    with run_server() as server:
        yield server


@pytest.fixture
def clocked_server() -> Iterator[Callable[..., tuple[RoomServer, ManualClock]]]:
    """A factory of embedded :class:`RoomServer` s on a fresh :class:`ManualClock` each
    (``make(**RoomServer options)`` → ``(server, clock)``), stopped afterwards."""
    made: list[RoomServer] = []

    def make(**options: Any) -> tuple[RoomServer, ManualClock]:
        clock = ManualClock()
        server = RoomServer(clock=clock, **options).start()
        made.append(server)
        return server, clock

    yield make
    for server in made:
        server.stop()


def advance(server: RoomServer, seconds: float, *, keep_alive: Iterable[RawClient] = (),
            step: float = 0.125) -> None:
    """Move ``server``'s :class:`ManualClock` forward by ``seconds`` in steps of at most
    ``step``, and after each step wait until the server has acted on it: every
    ``keep_alive`` client waits for a :meth:`RawClient.barrier` at the new time — which also
    keeps it from timing out while ``step`` is under the heartbeat timeout. A step longer
    than the server's housekeeping interval (0.1 s) means every step gets its housekeeping;
    binary fractions (the default 0.125) keep the clock's readings exact. With no client to
    keep alive the steps are not waited for (barrier a client afterwards)."""
    clock = server.clock
    assert isinstance(clock, ManualClock), "advance() needs a server on a ManualClock"
    clients = list(keep_alive)
    left = seconds
    while left > 0:
        dt = min(step, left)
        clock.advance(dt)
        left -= dt
        at = server.now()
        for client in clients:
            client.barrier(at)


def settle(predicate: Callable[[], bool], *clients: Realtime, timeout: float = 10.0) -> None:
    """Tick these rtecs clients until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        for rt in clients:
            rt.tick()
        for rt in clients:
            rt.connection.wait(0.002)
