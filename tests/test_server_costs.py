"""Per-sender cost accounting: one record per session, charged in ``RoomHost.handle`` —
messages, bytes, applied updates, changes accepted and rejected (the room's outcome), errors,
rate-limit drops and server time (on the host's injected timer)."""

from __future__ import annotations

import itertools

import pytest
from test_server_host import FakeTransport, errors, hello, update

from rtecs.protocol import CREATE, OWNER, Batch, Ping, UpdateEntry, dynamic_model_id, encode
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


def _accepted(entry: UpdateEntry) -> int:
    return sum((len(run) - 1) // 2 for run in entry.changes)


def _entries(t: FakeTransport, peer: bytes, sender: int) -> dict[int, UpdateEntry]:
    return {e.seq: e for m in t.to(peer) if isinstance(m, Batch) for e in m.entries
            if isinstance(e, UpdateEntry) and e.sender == sender}


def test_an_update_over_the_senders_budget_is_refused_inside_the_stream() -> None:
    """Issue 11 case 6: the rate limit counted frames, so one 120 KB frame of 60,000 changes
    cost as much of it as a ping. Budgets in bytes and changes are charged per session; an
    update over it is refused in the stream (every change rejected), never dropped."""
    t = FakeTransport()
    host = RoomHost(t, rate_limit=RateLimit(update_changes=4000, update_bytes=1e9))
    host.handle(b"a", hello(), 0.0)
    host.handle(b"w", hello(), 0.0)      # a watcher
    cid = host.sessions[b"a"].client_id
    big = [0, *itertools.chain.from_iterable((2, i) for i in range(1500))]
    host.handle(b"a", update(1, big), 0.0)          # 1,500 of the 2,000 (0.5 s) saved up
    host.handle(b"a", update(2, big[:2001]), 0.0)   # 1,000 more: refused
    host.handle(b"a", update(3, [0, 1, "x"]), 0.0)  # 1 more: fits what is left
    host.handle(b"a", update(4, big[:2001]), 0.1)   # 1,000 with 499 + 400 refilled: refused
    host.handle(b"a", update(5, big[:2001]), 0.12)  # 979: still refused
    host.handle(b"a", update(6, big[:2001]), 0.13)  # 1,019: paid
    host.flush(0.6)
    entries = _entries(t, b"w", cid)
    assert sorted(entries) == [1, 2, 3, 4, 5, 6]  # no gap in the sender's sequence
    assert _accepted(entries[1]) == 1500 and not entries[1].rejected
    for seq in (2, 4, 5):
        assert not entries[seq].changes and len(entries[seq].rejected) == 1000
    assert _accepted(entries[6]) == 1000 and not entries[6].rejected
    refusals = [e for e in errors(t, b"a") if e.code == "rate_limit"]
    assert len(refusals) == 2 and not any(e.fatal for e in refusals)  # one per run
    assert "4000 changes/s" in refusals[0].message
    assert b"a" in host.sessions  # an over-budget sender stays in the room


def test_the_default_budget_admits_a_thousand_spawns_in_one_frame() -> None:
    t = FakeTransport()
    host = RoomHost(t, rate_limit=RateLimit())
    host.handle(b"a", hello(), 0.0)
    cid = host.sessions[b"a"].client_id
    spawns = [[dynamic_model_id(cid, i), CREATE, ("Player", 0), OWNER, cid, 1, f"p{i}",
               2, float(i)] for i in range(1, 1001)]
    half = len(spawns) // 2  # as the client splits it: two updates of the same frame
    host.handle(b"a", update(1, *spawns[:half]), 0.0)
    host.handle(b"a", update(2, *spawns[half:]), 0.0)
    for frame in range(3, 23):  # ...then a second of 100 players moving at 20 Hz
        host.handle(b"a", update(frame, *([dynamic_model_id(cid, i), 2, frame * 0.1]
                                          for i in range(1, 101))), 1 + frame * 0.05)
    host.flush(2.0)
    entries = _entries(t, b"a", cid)
    assert sorted(entries) == list(range(1, 23))
    assert not any(e.rejected for e in entries.values())
    assert not errors(t, b"a")
