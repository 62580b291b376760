"""The link conditioner (``rtecs.conditioner``, issue 12 item 4): a TCP proxy that delays,
jitters, throttles, stalls, cuts and drops the links between raw clients and a real server.
Times are asserted as lower bounds only (a busy machine makes links slower, never faster)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from zmq_helpers import RawClient, wait_until

from rtecs.conditioner import LinkConditioner
from rtecs.protocol import Error, Ping, Pong
from rtecs_server import RoomServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[RoomServer]:
    with RoomServer(heartbeat_timeout=30) as s:
        yield s


def round_trip(client: RawClient, timeout: float = 10.0) -> float:
    token = time.monotonic()
    client.send(Ping(token, client.epoch))
    client.expect(lambda m: isinstance(m, Pong) and m.client_time == token, timeout, "a pong")
    return time.monotonic() - token


def test_delay_each_way_and_jitter_that_never_reorders(server: RoomServer) -> None:
    with LinkConditioner(server.endpoint, delay=0.05, jitter=0.03, seed=7) as link:
        a = RawClient(link.endpoint)
        try:
            a.join(timeout=10)
            assert round_trip(a) >= 0.1          # 50 ms each way at least
            tokens = [float(i + 1) for i in range(40)]
            for t in tokens:
                a.send(Ping(t, a.epoch))
            wait_until(lambda: sum(isinstance(m, Pong) and m.client_time in tokens
                                   for m in a.received) == 40, 10, [a], "40 pongs")
            got = [m.client_time for m in a.received
                   if isinstance(m, Pong) and m.client_time in tokens]
            assert got == tokens                 # jitter delays, never reorders (TCP)
        finally:
            a.close()


def test_a_cut_holds_one_link_until_restored_and_loses_nothing(server: RoomServer) -> None:
    """Two clients through the conditioner: cut the first's link, its writes wait (the
    other sees none), restore it, every write arrives once and in order; the other link was
    never held."""
    with LinkConditioner(server.endpoint) as link:
        a, b = RawClient(link.endpoint), RawClient(link.endpoint)
        try:
            a.join(timeout=10)
            b.join(timeout=10)
            assert link.connections == [0, 1]
            link.cut(0)
            for i in range(5):
                a.update([0, 2, i])               # the room model's score
            assert round_trip(b) < 5              # b's link still works
            time.sleep(0.3)   # a window in which nothing may arrive, not a wait for an event
            b.step()
            assert 2 not in b.mirror.models[0][3]
            link.restore(0)
            wait_until(lambda: b.mirror.models[0][3].get(2) == 4, 10, [a, b], "a's writes")
            seen = [v for m in b.batches() for e in m.entries
                    if getattr(e, "sender", None) == a.client_id
                    for run in e.changes for v in run[2::2]]
            assert seen == [0, 1, 2, 3, 4]        # once each, in order
        finally:
            a.close()
            b.close()


def test_a_stall_delays_everything_then_lets_it_through(server: RoomServer) -> None:
    with LinkConditioner(server.endpoint) as link:
        a = RawClient(link.endpoint)
        try:
            a.join(timeout=10)
            link.stall(0.3)
            assert round_trip(a) >= 0.25
            assert round_trip(a) < 5              # and then it is over
        finally:
            a.close()


def test_bandwidth_limits_each_direction(server: RoomServer) -> None:
    """At 100 kB/s, a 60 kB write takes a writer's link 0.6 s to carry."""
    with LinkConditioner(server.endpoint, bandwidth=100_000) as link:
        a = RawClient(link.endpoint)
        try:
            a.join(timeout=10)
            start = time.monotonic()
            a.update([0, 1, "x" * 60_000])
            wait_until(lambda: len(a.mirror.models[0][3].get(1, "")) == 60_000, 20, [a],
                       "the echo")
            assert time.monotonic() - start >= 0.55 * 2   # up, and the batch back down
            up, down = link.moved(0)
            assert up > 60_000 and down > 60_000
        finally:
            a.close()


def test_drop_closes_the_connection_and_the_server_forgets_its_session(
        server: RoomServer) -> None:
    """A dropped link is a new connection when libzmq reconnects: the session stays with the
    connection that joined (DESIGN §8), so the reconnected socket is a stranger."""
    with LinkConditioner(server.endpoint) as link:
        a = RawClient(link.endpoint)
        try:
            a.join(timeout=10)
            assert link.drop() == 1
            wait_until(lambda: link.connections == [1], 10, [a], "libzmq's reconnect")
            a.send(Ping(1.0, a.epoch))
            err = a.expect(lambda m: isinstance(m, Error), 10, "an error")
            assert isinstance(err, Error) and err.code == "not_joined"
        finally:
            a.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        LinkConditioner("ipc:///tmp/x")
    link = LinkConditioner("tcp://127.0.0.1:9")
    try:
        with pytest.raises(ValueError, match="delay"):
            link.set(delay=-1)
        with pytest.raises(ValueError, match="bandwidth"):
            link.set(bandwidth=0)
    finally:
        link.close()
