"""Per-sender cost accounting: one record per session, charged in ``RoomHost.handle`` —
messages, bytes, applied updates, changes accepted and rejected (the room's outcome), errors,
rate-limit drops and server time (on the host's injected timer)."""

from __future__ import annotations

import itertools

import pytest
from test_server_host import FakeTransport, hello, update

from rtecs.protocol import Ping, encode
from rtecs_server import RateLimit, RoomHost
from rtecs_server.hosted import Cost

pytestmark = pytest.mark.timeout(10)


def test_each_session_is_charged_what_it_sent_and_what_the_room_made_of_it() -> None:
    ticks = itertools.count()
    host = RoomHost(FakeTransport(), timer=lambda: next(ticks) * 0.25)  # 0.25 s per frame
    frames = [hello(), update(1, [0, 1, "x"], [0, 2, 3]),
              update(2, [0, 1, 5], [999_999, 1, "y"], [0, 2, 4]),  # 2 rejected, 1 accepted
              update(2, [0, 1, "dup"]),                             # a duplicate: no update
              encode(Ping(0.0))]
    for f in frames:
        host.handle(b"a", f, 0.0)
    host.handle(b"b", hello(), 0.0)
    a, b = host.sessions[b"a"].cost, host.sessions[b"b"].cost
    assert a == Cost(messages=5, bytes=sum(map(len, frames)), updates=2, changes_accepted=3,
                     changes_rejected=2, errors=2, rate_limited=0, seconds=5 * 0.25)
    assert (b.messages, b.bytes, b.updates) == (1, len(hello()), 0)
    costs = host.session_table.costs()
    assert costs == {host.sessions[b"a"].session_id: a, host.sessions[b"b"].session_id: b}
    assert costs[host.sessions[b"a"].session_id] is a   # live records, for metrics


def test_frames_before_a_hello_are_charged_to_no_session() -> None:
    host = RoomHost(FakeTransport())
    host.handle(b"a", encode(Ping(0.0)), 0.0)
    host.handle(b"a", update(1, [0, 1, "x"]), 0.0)
    host.handle(b"a", hello(), 0.0)
    assert host.sessions[b"a"].cost.messages == 1    # the hello that opened it
    assert host.sessions[b"a"].cost.errors == 0


def test_rate_limit_drops_are_charged_beside_the_bucket() -> None:
    host = RoomHost(FakeTransport(), rate_limit=RateLimit(rate=10, burst=5))
    host.handle(b"a", hello(), 0.0)
    session = host.sessions[b"a"]
    for _ in range(8):
        host.handle(b"a", encode(Ping(0.0)), 0.0)
    cost = session.cost
    assert (cost.messages, cost.rate_limited, cost.errors) == (5, 4, 1)
    assert host.peers.rate_limit == host.rate_limit == RateLimit(rate=10, burst=5)
