"""Several ``rtecs-server`` instances on one real ``redis-server`` (issue 5): redirects to a
room's host, takeover after the host dies, one host per room under races, and a host that
stalled past its lease (SIGSTOP) that can never overwrite its successor. Also the client's
side of REDIRECT (following it, and giving up on a loop)."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from redis_fixture import RedisServer, redis_server
from zmq_helpers import PATIENCE, RawClient, ServerProcess, raw_clients, settle, wait_until

import rtecs
from rtecs.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Error,
    Hello,
    Redirect,
    SnapshotRecord,
    UpdateEntry,
    Welcome,
    decode_client_message,
    encode,
)
from rtecs.realtime import MAX_REDIRECTS, ConnectionState, DisconnectReason, Realtime
from rtecs_server.storage import RedisStorage

__all__ = ["raw_clients", "redis_server"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

_WORLDS = itertools.count(1)
TTL = "1.0"
GAME = {"Arena": {1: ("title", "str", True), 2: ("score", "int", True)}}  # as Arena's


class Arena(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2)


# ----------------------------------------------------------------------------- helpers

@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.fresh_url()


@pytest.fixture
def storage(redis_url: str) -> Iterator[RedisStorage]:
    with RedisStorage(redis_url) as s:
        yield s


@pytest.fixture
def instances(redis_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``rtecs-server --storage REDIS --lease-ttl 1 ARGS``; all killed at the end."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess("--storage", redis_url, "--lease-ttl", TTL, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()


def connect(endpoint: str, room: str = "arena", **kwargs: Any) -> rtecs.Realtime:
    rt = rtecs.connect(endpoint, room, Arena(), frame_duration=0.0,
                       world=f"scaleout-{next(_WORLDS)}", **kwargs)
    rt.wait_connected(timeout=15)
    return rt




def write(client: RawClient, *runs: list[Any]) -> None:
    """Send an update and wait until the server has ordered it."""
    seq = client.update(*runs)
    client.expect(lambda m: isinstance(m, Batch) and any(
        isinstance(e, UpdateEntry) and e.sender == client.client_id and e.seq == seq
        for e in m.entries), what=f"the answer to update {seq}")


def stored_props(storage: RedisStorage, room: str) -> dict[int, Any] | None:
    saved = storage.load(room)
    return None if saved is None else dict(saved.models[0][4])


def title(rt: rtecs.Realtime) -> str:
    return cast(Arena, rt.room_model).title


# ----------------------------------------------------------------------------- tests

def test_clients_on_two_instances_end_up_in_one_room(
        instances: Callable[..., ServerProcess],
        raw_clients: Callable[..., RawClient]) -> None:
    one, two = instances(), instances()
    a = connect(one.endpoint)
    probe = raw_clients(two.endpoint)
    probe.hello("arena", schema=GAME, root="Arena")
    redirect = probe.expect(lambda m: isinstance(m, Redirect), what="a redirect")
    assert redirect == Redirect(one.endpoint, "arena")
    b = connect(two.endpoint)  # redirected to `one` without noticing
    try:
        settle(lambda: a.clients == b.clients == {a.client_id, b.client_id}, a, b)
        cast(Arena, b.room_model).title = "from b"
        cast(Arena, a.room_model).score = 3
        settle(lambda: title(a) == "from b" and cast(Arena, b.room_model).score == 3, a, b)
        for server, text in ((two, "redirected to " + one.endpoint),
                             (one, "room 'arena' created")):  # logs read by our threads
            wait_until(lambda s=server, t=text: t in s.stderr,  # type: ignore[misc]
                       timeout=PATIENCE, what=f"log {text!r}")
        assert "created" not in two.stderr
    finally:
        a.close()
        b.close()


def test_another_instance_takes_over_after_the_host_dies(
        instances: Callable[..., ServerProcess], storage: RedisStorage) -> None:
    one, two = instances("--checkpoint-interval", "0.1"), instances()
    a = connect(one.endpoint)
    cast(Arena, a.room_model).title = "before the crash"
    settle(lambda: stored_props(storage, "arena") == {1: "before the crash"}, a)
    one.process.kill()
    one.wait(5)
    a.close(timeout=0)
    started = time.monotonic()
    # redirected to the dead host until its lease expires, then hosted by `two`
    b = connect(two.endpoint, connect_timeout=0.5)
    try:
        assert time.monotonic() - started < float(TTL) + 5
        assert title(b) == "before the crash"
        # the log line is read by a thread of ours: wait for it (an event), don't race it
        wait_until(lambda: "room 'arena' opened from its checkpoint" in two.stderr,
                   timeout=PATIENCE, what="the log of the room's opening")
        owner = storage.owner("arena")
        assert owner is not None and owner.endpoint == two.endpoint
    finally:
        b.close()


def test_racing_instances_never_host_one_room_twice(
        instances: Callable[..., ServerProcess],
        raw_clients: Callable[..., RawClient], storage: RedisStorage) -> None:
    servers = [instances(), instances()]
    endpoints = [s.endpoint for s in servers]
    rooms = [f"race-{i}" for i in range(25)]
    for room in rooms:
        first = [raw_clients(e) for e in endpoints]
        for c in first:
            c.hello(room, schema=GAME, root="Arena")  # both at once, one to each instance
        hosts = []
        ids = []
        for c, mine in zip(first, endpoints, strict=True):
            answer = c.expect(lambda m: isinstance(m, Welcome | Redirect | Error),
                              what="a welcome or a redirect")
            if isinstance(answer, Redirect):
                assert answer.endpoint != mine and answer.room == room
                welcome = raw_clients(answer.endpoint).join(room, schema=GAME, root="Arena")
                hosts.append(answer.endpoint)
            else:
                assert isinstance(answer, Welcome), answer
                welcome = answer
                hosts.append(mine)
            ids.append(welcome.client_id)
        assert hosts[0] == hosts[1], f"{room} hosted by {hosts}"
        assert sorted(ids) == [1, 2], f"{room}: two rooms of the same name"
        owner = storage.owner(room)
        assert owner is not None and owner.endpoint == hosts[0]
    for room in rooms:
        wait_until(lambda room=room: sum(f"room {room!r} created" in s.stderr  # type: ignore[misc]
                                         for s in servers) == 1,
                   what=f"exactly one host creating {room}")
        assert sum(f"room {room!r} created" in s.stderr for s in servers) == 1


def test_a_stalled_host_cannot_overwrite_its_successor(
        instances: Callable[..., ServerProcess], raw_clients: Callable[..., RawClient],
        storage: RedisStorage) -> None:
    stalled = instances("--checkpoint-interval", "1.0", "--heartbeat-timeout", "60")
    successor = instances("--checkpoint-interval", "0.1")
    old = raw_clients(stalled.endpoint)
    old.join("stall", schema=GAME, root="Arena")
    follower = connect(stalled.endpoint, "stall")  # a client-library client on it too
    write(old, [0, 1, "saved by the first host"])
    wait_until(lambda: stored_props(storage, "stall") == {1: "saved by the first host"},
               timeout=5, what="the first host's checkpoint")
    version = cast(Any, storage.load("stall")).version
    write(old, [0, 2, 666])  # in memory only: the next checkpoint is about 1 s away
    stalled.signal(signal.SIGSTOP)
    wait_until(lambda: storage.owner("stall") is None, timeout=float(TTL) + 2,
               what="the stalled host's lease to expire")

    new = raw_clients(successor.endpoint)
    welcome = new.join("stall", schema=GAME, root="Arena")  # the successor claims it
    assert welcome.snapshot[0][4] == {1: "saved by the first host"}
    write(new, [0, 1, "written by the successor"])
    wait_until(lambda: stored_props(storage, "stall") == {1: "written by the successor"},
               timeout=5, what="the successor's checkpoint")
    old.update([0, 1, "stale write to the stalled host"])

    stalled.signal(signal.SIGCONT)
    error = old.expect_error("unavailable", timeout=10)
    assert error.fatal
    wait_until(lambda: "stopped hosting room 'stall'" in stalled.stderr, timeout=10,
               what="the stalled host to give the room up")
    assert "refused" in stalled.stderr  # its last save was fenced out (logged before)
    saved = storage.load("stall")
    assert saved is not None and saved.models[0][4] == {1: "written by the successor"}
    assert saved.version > version
    # the successor carries on; the stalled host now redirects to it
    write(new, [0, 2, 5])
    wait_until(lambda: stored_props(storage, "stall") == {1: "written by the successor", 2: 5},
               timeout=5, what="the successor's next checkpoint")
    probe = raw_clients(stalled.endpoint)
    probe.hello("stall", schema=GAME, root="Arena")
    assert probe.expect(lambda m: isinstance(m, Redirect)) == Redirect(successor.endpoint,
                                                                       "stall")
    # the client library reconnects and is redirected to the successor
    try:
        settle(lambda: follower.connected and title(follower) == "written by the successor"
               and new.client_id in follower.clients, follower, timeout=15)
        assert cast(Arena, follower.room_model).score == 5
    finally:
        follower.close()


# ----------------------------------------------------------------------------- client side

class FakeTransport:
    """A client transport that records what it sends and returns what the test queues."""

    def __init__(self, endpoint: str, opened: list[FakeTransport]) -> None:
        self.endpoint = endpoint
        self.sent: list[bytes] = []
        self.inbox: list[bytes] = []
        self.closed = False
        opened.append(self)

    def send(self, frame: bytes, reliable: bool = True) -> None:
        self.sent.append(frame)

    def receive(self) -> list[bytes]:
        frames, self.inbox = self.inbox, []
        return frames

    def close(self) -> None:
        self.closed = True


def fake_client() -> tuple[Realtime, list[FakeTransport]]:
    opened: list[FakeTransport] = []
    rt = Realtime(FakeTransport("tcp://entry:1", opened), "arena", Arena(),
                  reconnect=lambda: FakeTransport("tcp://entry:1", opened),
                  redirect=lambda endpoint: FakeTransport(endpoint, opened),
                  world=f"scaleout-{next(_WORLDS)}", clock=lambda: 0.0)
    return rt, opened


def hellos(transport: FakeTransport) -> list[Hello]:
    return [m for m in map(decode_client_message, transport.sent) if isinstance(m, Hello)]


def test_the_client_follows_redirects_without_counting_them_as_failures() -> None:
    rt, opened = fake_client()
    opened[-1].inbox.append(encode(Redirect("tcp://host-b:7", "other-room")))
    rt.tick()
    assert len(opened) == 1  # a redirect for another room is ignored
    for hop in range(MAX_REDIRECTS):
        opened[-1].inbox.append(encode(Redirect(f"tcp://host-{hop}:7", "arena")))
        rt.tick()
        assert opened[-2].closed and opened[-1].endpoint == f"tcp://host-{hop}:7"
        assert [h.room for h in hellos(opened[-1])] == ["arena"]
    assert rt.state is ConnectionState.CONNECTING and rt.connection.tries == 1
    opened[-1].inbox.append(encode(Welcome(4, 0, 0.0, [SnapshotRecord(0, "Arena", -1, 0, {})],
                                           [4])))
    rt.tick()
    assert rt.connected
    # after a welcome the count starts again; a loop of redirects ends the session
    rt.connection._lost(DisconnectReason.SERVER_GONE, 0.0)
    for hop in range(MAX_REDIRECTS + 1):
        opened[-1].inbox.append(encode(Redirect(f"tcp://loop-{hop % 2}:7", "arena")))
        rt.tick()
    assert rt.state is ConnectionState.DISCONNECTED
    assert rt.disconnect_reason is DisconnectReason.REDIRECT_LOOP
    assert rt.last_error is not None and "redirected 6 times in a row" in rt.last_error


def test_unavailable_makes_the_client_reconnect() -> None:
    rt, opened = fake_client()
    opened[-1].inbox.append(encode(Error("unavailable", "room moved", True)))
    rt.tick()
    assert rt.state is not ConnectionState.DISCONNECTED
    assert opened[-1].endpoint == "tcp://entry:1" and len(opened) == 2
    assert hellos(opened[-1]) and hellos(opened[-1])[0].version == PROTOCOL_VERSION
