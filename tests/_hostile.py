"""Shared pieces of the hostile suite (``tests/test_hostile_*.py``, issue 11).

An *attacker* is a raw DEALER socket (:class:`Raw`, a :class:`~zmq_helpers.RawClient` that
follows its session's epoch) speaking the wire format through :mod:`rtecs.protocol`'s
encoders, so it can send anything structurally valid — and anything not. *Honest* clients are
real ``rtecs.connect`` clients (:meth:`Net.honest`) whose datastores must, after every
hostile phase, equal the server's (:func:`converge`): what a fresh joiner's snapshot says.

Servers: the embedded :class:`~rtecs_server.RoomServer` for most tests, and
:class:`ServerProc` — ``python -m rtecs_server`` in a child process — where the server may die
(libzmq aborts the whole process), where its memory is measured (RSS) or its CPU must not
be shared with the test, or where its log volume is counted (stderr bytes, counted and
never kept whole). A fresh process also has libzmq's auto routing ids at their well-known
start (:data:`FIRST_AUTO_ID`), which is what makes them guessable.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq_helpers import RawClient

import rtecs
from rtecs.protocol import (
    PROTOCOL_VERSION,
    Bye,
    Hello,
    Pong,
    ServerMessage,
    Update,
    encode,
)

__all__ = ["ATTACKER", "FIRST_AUTO_ID", "SCHEMA", "HGame", "HNode", "HPlayer", "Net",
           "PlainContext", "Probe", "Raw", "ServerProc", "answered", "auto_id", "chain_schema",
           "client_state", "converge", "from_address", "net", "plain", "server_proc", "settle",
           "snapshot_state", "truth", "visible"]

ROOT = Path(__file__).resolve().parent.parent

#: The first routing id a fresh process's ROUTER gives an anonymous peer: libzmq seeds its
#: counter from ``rand()`` without ``srand`` (LIBRARY-FACTS, pyzmq), so it is the same in every
#: process; the n-th anonymous peer gets :func:`auto_id` (n).
FIRST_AUTO_ID = 0x6B8B4567


def auto_id(n: int) -> bytes:
    """The routing id libzmq gives the ``n``-th (from 0) anonymous peer of a fresh process."""
    return b"\x00" + ((FIRST_AUTO_ID + n) & 0xFFFFFFFF).to_bytes(4, "big")


# ----------------------------------------------------------------------------- models

class HGame(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2)
    x: float = rtecs.prop(3, reliable=False)
    ratio: float = rtecs.prop(4)


class HPlayer(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")
    x: float = rtecs.prop(2, reliable=False)
    hp: int = rtecs.prop(3)


class HNode(rtecs.RealtimeModel):
    label: str = rtecs.prop(1, default="")
    n: int = rtecs.prop(2)


CLASSES: dict[str, type[rtecs.RealtimeModel]] = {
    c.__name__: c for c in (HGame, HPlayer, HNode)}
#: The schema every honest client sends (room type ``HGame``): raw clients send the same.
SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    name: cls.schema() for name, cls in CLASSES.items()}


def chain_schema(depth: int, *, fan: int = 1, prefix: str = "C", under: int = 9
                 ) -> dict[str, dict[int, tuple[str, str, bool]]]:
    """:data:`SCHEMA` plus ``depth`` types ``C0 … C{depth-1}``, each declaring ``fan``
    children of the next (the last one a leaf), hung under the room type's property
    ``under``: one room model then makes ``(fan**(depth+1) - 1) / (fan - 1)`` models
    (``depth + 1`` for a chain) spanning ``depth + 1`` levels."""
    schema = {name: dict(props) for name, props in SCHEMA.items()}
    schema["HGame"][under] = ("c", f"model:{prefix}0", True)
    for i in range(depth):
        props: dict[int, tuple[str, str, bool]] = {1: ("v", "int", True)}
        if i + 1 < depth:
            for k in range(fan):
                props[2 + k] = (f"k{k}", f"model:{prefix}{i + 1}", True)
        schema[f"{prefix}{i}"] = props
    return schema


# ----------------------------------------------------------------------------- raw clients

#: Where attackers connect from: a loopback address other than the honest clients'
#: (127.0.0.1), so what the server charges to an address falls on the attacker, as it would
#: across the internet, and not on the honest clients it attacks.
ATTACKER = "127.0.0.2"


def from_address(endpoint: str, host: str = ATTACKER) -> str:
    """``endpoint`` (``tcp://127.0.0.1:PORT``) to connect to from the local address ``host``
    (libzmq's ``tcp://SOURCE:0;DESTINATION`` form)."""
    assert endpoint.startswith("tcp://") and ";" not in endpoint, endpoint
    return f"tcp://{host}:0;{endpoint.removeprefix('tcp://')}"


def _from(endpoint: str, source: str | None) -> str:
    if source is None or not endpoint.startswith("tcp://") or ";" in endpoint:
        return endpoint
    return from_address(endpoint, source)


class Raw(RawClient):
    """A :class:`RawClient` that numbers its updates in the epoch of its last welcome (a
    resync opens a new one) and records the round trip of every :meth:`ping` answered."""

    def __init__(self, endpoint: str, **options: Any) -> None:
        super().__init__(endpoint, **options)
        self.rtts: list[float] = []

    def _take(self, frame: bytes) -> ServerMessage:
        msg = super()._take(frame)
        if isinstance(msg, Pong) and msg.client_time > 0:
            self.rtts.append(time.monotonic() - msg.client_time)
        return msg

    def hello(self, room: str = "lobby", *, schema: dict[str, Any] | None = None,
              root: str = "HGame", version: int = PROTOCOL_VERSION,
              token: str | None = None) -> None:
        """A HELLO with :data:`SCHEMA` (room type ``HGame``) unless told otherwise."""
        self.send(Hello(version, room, root, SCHEMA if schema is None else schema, token))

    def update(self, *runs: Any) -> int:
        self.seq += 1
        self.send(Update(self.seq, [list(r) for r in runs], max(1, self.epoch)))
        return self.seq

    def answered(self, timeout: float = 5.0) -> bool:
        """True if the server answers a ping within ``timeout`` (any answer)."""
        self.ping()
        try:
            self.recv(timeout)
        except TimeoutError:
            return False
        return True

    def quiet_for(self, seconds: float) -> list[ServerMessage]:
        """Everything received within ``seconds`` (for "nothing must arrive" checks)."""
        before = len(self.received)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                self.recv(left)
        return self.received[before:]


class PlainContext:
    """What :class:`Raw` makes its socket with (``context=``): the shared context, the
    socket given PLAIN credentials for ``token`` first (a server with an auth secret admits
    only those to the handshake; see :mod:`rtecs.auth`), or none for ``None``."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(kind)
        plain(sock, self.token)
        return sock


def plain(sock: zmq.Socket[bytes], token: str | None) -> None:
    """Give ``sock`` the PLAIN credentials an rtecs client sends for ``token`` (none for
    ``None``, or for a string that is no join token)."""
    from rtecs.auth import GATE_USERNAME, gate_password

    password = gate_password(token) if token is not None else None
    if password is not None:
        sock.setsockopt(zmq.PLAIN_USERNAME, GATE_USERNAME.encode())
        sock.setsockopt(zmq.PLAIN_PASSWORD, password.encode())


# ----------------------------------------------------------------------------- honest clients

_WORLDS = itertools.count(1)


class Net:
    """Makes attackers and honest clients; closes them all at the end of the test."""

    def __init__(self) -> None:
        self.raws: list[Raw] = []
        self.honests: list[rtecs.Realtime] = []
        self.sockets: list[zmq.Socket[bytes]] = []
        self.closers: list[Callable[[], object]] = []

    def raw(self, endpoint: str, *, source: str | None = ATTACKER, **options: Any) -> Raw:
        """A raw client, connected from ``source`` (a tcp endpoint's local address:
        :data:`ATTACKER` unless told otherwise; None: the system's choice, 127.0.0.1)."""
        client = Raw(_from(endpoint, source), **options)
        self.raws.append(client)
        return client

    def dealer(self, endpoint: str, routing_id: bytes | None = None,
               token: str | None = None, *, source: str | None = ATTACKER
               ) -> zmq.Socket[bytes]:
        """A bare DEALER (no mirror, no decoding; PLAIN credentials for ``token``;
        ``source`` as for :meth:`raw`), closed at the end."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        plain(sock, token)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.connect(_from(endpoint, source))
        self.sockets.append(sock)
        return sock

    def honest(self, endpoint: str, room: str = "lobby", *, wait: bool = True,
               **options: Any) -> rtecs.Realtime:
        """An ``rtecs.connect`` client of ``room`` (room model :class:`HGame`), in an esper
        world of its own, sending at every tick."""
        options.setdefault("frame_duration", 0.0)
        rt = rtecs.connect(endpoint, room, HGame(), types=(HPlayer, HNode),
                           world=f"hostile-{next(_WORLDS)}", **options)
        self.honests.append(rt)
        if wait:
            rt.wait_connected(timeout=10)
        return rt

    def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()
        for rt in self.honests:
            with contextlib.suppress(Exception):
                rt.close(timeout=0.05)
        for client in self.raws:
            client.close()
        for sock in self.sockets:
            sock.close(0)


@pytest.fixture
def net() -> Iterator[Net]:
    made = Net()
    yield made
    made.close()


def settle(predicate: Callable[[], bool], clients: Iterable[rtecs.Realtime],
           timeout: float = 10.0, what: str = "the condition",
           raws: Iterable[Raw] = ()) -> None:
    """Tick ``clients`` (and step ``raws``) until ``predicate`` holds; AssertionError after
    ``timeout`` s."""
    clients, raws = list(clients), list(raws)
    deadline = time.monotonic() + timeout
    while True:
        for rt in clients:
            rt.tick()
        for r in raws:
            r.step()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if clients:
            clients[0].connection.wait(0.002)
        else:
            time.sleep(0.002)  # a bounded poll interval, not a synchronisation


def answered(rt: rtecs.Realtime) -> bool:
    """Nothing of ``rt``'s is unsent or unanswered."""
    return rt.updates_in_flight == 0 and not rt.has_unsent_changes


# ----------------------------------------------------------------------------- convergence

def _norm(value: Any) -> Any:
    """A value as the comparison sees it: typed (1, 1.0 and True differ), NaN equal to NaN."""
    if type(value) is float and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


_DEFAULTS: dict[str, dict[int, Any]] = {}


def _defaults(type_name: str) -> dict[int, Any] | None:
    cls = CLASSES.get(type_name)
    if cls is None:
        return None
    if type_name not in _DEFAULTS:
        fresh = cls()
        _DEFAULTS[type_name] = {pid: getattr(fresh, name)
                                for pid, (name, tag, _) in cls.schema().items()
                                if not tag.startswith("model:")}
    return _DEFAULTS[type_name]


State = dict[Any, tuple[str, int, tuple[tuple[int, Any], ...]]]


def snapshot_state(records: Iterable[Any]) -> State:
    """The room as snapshot records say, in :func:`client_state`'s shape (a property never
    written holds its class default for the types honest clients know)."""
    out: State = {}
    for rec in records:
        mid, type_name, owner, _flags, props = rec[:5]
        values = dict(_defaults(type_name) or {})
        values.update(props)
        out[mid] = (type_name, owner, tuple(sorted((k, _norm(v)) for k, v in values.items())))
    return out


def client_state(rt: rtecs.Realtime) -> State:
    """Every model of ``rt``'s datastore: type name, owner and scalar property values."""
    out: State = {}
    for mid, model in rt.datastore.models.items():
        opaque = getattr(model, "opaque", False)
        if opaque:
            type_name = model.opaque_type  # type: ignore[attr-defined]
            values = dict(model.values)  # type: ignore[attr-defined]
        else:
            type_name = model.type_name
            values = {pid: getattr(model, name)
                      for pid, (name, tag, _) in type(model).schema().items()
                      if not tag.startswith("model:")}
        out[mid] = (type_name, model.owner_id,
                    tuple(sorted((k, _norm(v)) for k, v in values.items())))
    return out


def truth(endpoint: str, room: str = "lobby", schema: dict[str, Any] | None = None,
          token: str | None = None) -> State:
    """The server's room as a fresh joiner's welcome shows it (the joiner leaves at once)."""
    probe = Raw(endpoint, context=PlainContext(token))
    try:
        welcome = probe.join(room, timeout=10, schema=schema, token=token)
        probe.send(Bye())
        return snapshot_state(welcome.snapshot)
    finally:
        probe.close()


def _diff(a: State, b: State) -> str:
    only_a = sorted(map(repr, a.keys() - b.keys()))[:5]
    only_b = sorted(map(repr, b.keys() - a.keys()))[:5]
    differ = [(k, a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]][:3]
    return f"only client: {only_a}; only server: {only_b}; differ: {differ}"


def visible(state: State) -> State:
    """``state`` without the declared children an honest client skips: those under a
    property its class of the parent lacks (forward compatibility, DESIGN §5), and
    everything under them."""
    out: State = {}
    for mid in sorted(state, key=lambda m: 0 if type(m) is int else len(m)):
        if type(mid) is tuple:
            parent = mid[0] if len(mid) == 2 else mid[:-1]
            if parent not in out:
                continue
            cls = CLASSES.get(out[parent][0])
            if cls is not None and mid[-1] not in cls.schema():
                continue
        out[mid] = state[mid]
    return out


def converge(clients: Iterable[rtecs.Realtime], endpoint: str, room: str = "lobby",
             timeout: float = 15.0, schema: dict[str, Any] | None = None,
             token: str | None = None) -> State:
    """Once every client's writes are answered, every client's datastore equals the server's
    room (a fresh joiner's snapshot, less what the client's classes skip: :func:`visible`);
    returns the server's room. ``token``: the joiner's, for a server with an auth secret."""
    clients = list(clients)
    settle(lambda: all(map(answered, clients)), clients, timeout, "the writes to be answered")
    full = truth(endpoint, room, schema, token)
    want = visible(full)
    try:
        settle(lambda: all(client_state(rt) == want for rt in clients), clients, timeout,
               "the clients to converge")
    except AssertionError:
        bad = next(rt for rt in clients if client_state(rt) != want)
        raise AssertionError(f"client {bad.client_id} did not converge: "
                             f"{_diff(client_state(bad), want)}") from None
    return full


# ----------------------------------------------------------------------------- server process

class ServerProc:
    """``python -m rtecs_server --bind tcp://127.0.0.1:0 --storage none ARGS`` (this
    checkout's code); stderr is counted (:attr:`log_bytes`) and only its tail kept."""

    TAIL = 16_384

    def __init__(self, *args: str, timeout: float = 10.0, count: Iterable[str] = ()) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), str(ROOT / "server"), str(ROOT / "tests"),
             os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rtecs_server", "--bind", "tcp://127.0.0.1:0",
             "--storage", "none", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.log_bytes = 0
        #: Log lines seen containing each key (add keys before they are logged).
        self.counted: dict[str, int] = dict.fromkeys(count, 0)
        self._tail = bytearray()
        self._lock = threading.Condition()
        self._line = bytearray()
        self._loop_reports: list[float] = []   # busiest-pass CPU seconds, one per SIGUSR1
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        line: list[bytes] = []
        out = threading.Thread(target=lambda: line.append(
            self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        out.start()
        out.join(timeout)
        text = line[0].decode() if line else ""
        if "listening on " not in text:
            self.kill()
            raise RuntimeError(f"the server did not start: {text!r} {self.tail}")
        self.endpoint = text.split("listening on ", 1)[1].strip()
        #: RSS once the server listened (bytes).
        self.base_rss = self.rss()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read1(65536):  # type: ignore[attr-defined]
            with self._lock:
                self.log_bytes += len(chunk)
                self._tail += chunk
                del self._tail[:-self.TAIL]
                *lines, rest = (self._line + chunk).split(b"\n")
                self._line = bytearray(rest[-4096:])
                for line in lines:
                    for word in self.counted:
                        if word.encode() in line:
                            self.counted[word] += 1
                    if b"loop: " in line and b"the busiest pass took " in line:
                        took = line.split(b"the busiest pass took ", 1)[1].split(b" ms", 1)[0]
                        self._loop_reports.append(float(took) / 1e3)
                        self._lock.notify_all()

    def busiest_pass(self, timeout: float = 10.0) -> float:
        """SIGUSR1: the CPU seconds of the server loop's busiest pass since the last call (or
        the start), from the line it logs (``docs/server.md``, Signals). The loop's own work
        in CPU time, so a busy machine does not inflate it, as it does a ping's round
        trip."""
        with self._lock:
            seen = len(self._loop_reports)
        self.process.send_signal(signal.SIGUSR1)
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._loop_reports) > seen, timeout):
                raise AssertionError(f"the server logged no loop report: {self.tail}")
            return self._loop_reports[seen]

    @property
    def tail(self) -> str:
        with self._lock:
            return self._tail.decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self, field: str = "VmRSS") -> int:
        """Resident memory of the server process, in bytes (``VmHWM``: its peak so far)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field}")

    def report_peak(self) -> None:
        """With ``RTECS_RSS_REPORT=FILE``, append a JSON line: the test, the server's RSS once
        it listened and its peak RSS (issue 11's acceptance: the hostile suite's servers
        stay within their baseline plus the memory limits)."""
        path = os.environ.get("RTECS_RSS_REPORT")
        if path and self.alive():
            import json

            line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0],
                    "base": self.base_rss, "peak": self.rss("VmHWM")}
            with open(path, "a") as out:
                out.write(json.dumps(line) + "\n")

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        """SIGTERM, then wait (kill after 5 s); the exit status; stderr fully counted."""
        self.report_peak()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(5)


_PROBE = r"""
import json, select, sys, time
import msgpack, zmq
endpoint, hello, every = sys.argv[1], bytes.fromhex(sys.argv[2]), float(sys.argv[3])
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
sock.send(hello)
while msgpack.unpackb(sock.recv())[0] != 10:   # the welcome
    pass
print("ready", flush=True)
phase, sent, rtts = "start", {}, {}
next_ping, stopping, deadline = time.monotonic(), False, None
while True:
    now = time.monotonic()
    if not stopping and now >= next_ping:
        sock.send(msgpack.packb([3, now, 1]))   # PING naming the epoch of its welcome
        sent[now] = phase
        next_ping = now + every
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline().split()
        if not line or line[0] == "stop":
            stopping, deadline = True, now + 30
        else:
            phase = line[1]
    if stopping and (len(sent) == sum(map(len, rtts.values())) or now > deadline):
        break
    if sock.poll(1, zmq.POLLIN):
        msg = msgpack.unpackb(sock.recv())
        if msg[0] == 12 and msg[1] in sent:
            rtts.setdefault(sent[msg[1]], []).append(time.monotonic() - msg[1])
print(json.dumps({"rtts": rtts, "lost": len(sent) - sum(map(len, rtts.values()))}), flush=True)
"""


class Probe:
    """A client alone in a room of its own, in a process of its own, pinging every
    ``every`` s: its round trips are the server loop's delay and nothing else (it decodes no
    batches, and the test process's load does not delay its reads). :meth:`phase` names the
    pings sent from then on; :meth:`stop` returns the round trips of each phase."""

    def __init__(self, endpoint: str, room: str = "probe", every: float = 0.01) -> None:
        hello = encode(Hello(PROTOCOL_VERSION, room, "HGame", {"HGame": {}}, None))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PROBE, endpoint, hello.hex(), repr(every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        assert ready.strip() == "ready", f"the probe did not start: {ready!r}"

    def phase(self, name: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"phase {name}\n")
        self.process.stdin.flush()

    def stop(self) -> dict[str, list[float]]:
        import json

        out, _ = self.process.communicate("stop\n", timeout=40)
        result = json.loads(out.strip().splitlines()[-1])
        assert result["lost"] == 0, f"{result['lost']} pongs never came"
        return result["rtts"]  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def server_proc(*args: str, count: Iterable[str] = ()) -> Iterator[ServerProc]:
    server = ServerProc(*args, count=count)
    try:
        yield server
    finally:
        server.stop()
