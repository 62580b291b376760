"""The host hands each room's encoded batch to one publisher (``publish(room, peers, frame)``)
instead of looping over members; the peers it returns are stalled and resynced at their next
ping — slow consumers are never skipped silently."""

from __future__ import annotations

import itertools
from collections.abc import Collection

import pytest
from test_server_host import FakeTransport, hello, update

from rtecs.protocol import (
    Batch,
    Error,
    Ping,
    Pong,
    Resync,
    Welcome,
    decode_server_message,
    encode,
)
from rtecs_server import RoomHost
from rtecs_server.fanout import MAX_UNREAD_RESYNCS, RESYNC_COOLDOWN, RouterPublisher

pytestmark = pytest.mark.timeout(10)


class RecordingPublisher:
    """Records every publish; peers in ``refuse`` cannot take the frame."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes], bytes]] = []
        self.refuse: set[bytes] = set()

    def publish(self, room: str, peers: Collection[bytes], frame: bytes) -> list[bytes]:
        self.calls.append((room, sorted(peers), frame))
        return [p for p in peers if p in self.refuse]


def test_batches_go_to_the_publisher_once_per_room_and_flush() -> None:
    t = FakeTransport()
    pub = RecordingPublisher()
    host = RoomHost(t, publisher=pub)
    for peer, room in ((b"a", "lobby"), (b"b", "lobby"), (b"c", "other")):
        host.handle(peer, hello(room), 0.0)
    host.flush(0.0)
    pub.calls.clear()
    host.handle(b"a", update(1, [0, 1, "x"]), 0.1)
    host.handle(b"b", update(1, [0, 2, 5]), 0.1)
    host.handle(b"c", update(1, [0, 1, "y"]), 0.1)
    host.flush(0.1)
    assert [(room, peers) for room, peers, _ in pub.calls] == [
        ("lobby", [b"a", b"b"]), ("other", [b"c"])]
    lobby = decode_server_message(pub.calls[0][2])
    assert isinstance(lobby, Batch) and lobby.room_seq == host.rooms["lobby"].room.room_seq
    assert pub.calls[0][2] is host.rooms["lobby"].history_since(lobby.room_seq - 1)[0]  # type: ignore[index]
    # no batch went around the publisher
    assert not any(isinstance(decode_server_message(f), Batch) for _, f in t.sent)


def test_a_peer_the_publisher_refuses_is_stalled_then_caught_up_at_its_ping() -> None:
    t = FakeTransport()
    pub = RecordingPublisher()
    host = RoomHost(t, publisher=pub)
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    host.flush(0.0)
    pub.refuse.add(b"b")
    host.handle(b"a", update(1, [0, 1, "one"]), 1.0)
    host.flush(1.0)
    session = host.sessions[b"b"]
    assert session.stalled and not session.needs_resync   # its batches are in the history
    pub.refuse.clear()
    host.handle(b"a", update(2, [0, 1, "two"]), 1.1)
    host.flush(1.1)
    assert pub.calls[-1][1] == [b"a"]          # a stalled member is not published to
    host.handle(b"b", encode(Ping(0.0, 1)), 1.2)
    after = [decode_server_message(f) for p, f in t.sent if p == b"b"][-3:]
    assert [type(m) for m in after] == [Batch, Batch, Pong]   # the two it missed, in order
    history, last = dict(host.rooms["lobby"].history), host.rooms["lobby"].room.room_seq
    assert [f for p, f in t.sent if p == b"b"][-3:-1] == [history[last - 1], history[last]]
    assert not session.stalled and session.epoch == 1
    host.handle(b"a", update(3, [0, 1, "three"]), 1.3)
    host.flush(1.3)
    assert pub.calls[-1][1] == [b"a", b"b"]     # a member again


def test_the_router_publisher_broadcasts_over_the_transport() -> None:
    t = FakeTransport()
    t.full.add(b"y")
    assert RouterPublisher(t).publish("r", [b"x", b"y"], b"frame") == [b"y"]
    assert t.sent == [(b"x", b"frame")]


def _welcomes(t: FakeTransport, peer: bytes) -> list[Welcome]:
    return [m for m in t.to(peer) if isinstance(m, Welcome)]


def test_a_client_that_never_reads_its_snapshots_gets_fewer_then_none() -> None:
    """Issue 11 case 7: three never-reading clients asking for a resync every second grew a
    server holding a 4.8 MB room from 38 to 180 MB in 10 s (a snapshot queued per ask)."""
    t = FakeTransport()
    host = RoomHost(t)
    host.handle(b"a", hello(), 0.0)
    host.handle(b"h", hello(), 0.0)       # honest: pings with the epoch it applied
    now = 0.0
    for _ in range(1200):                 # two minutes of asking ten times a second
        now += 0.1
        host.handle(b"a", encode(Resync()), now)
        host.handle(b"a", encode(Ping(now)), now)  # pings, but never names a new epoch
        if b"a" not in host.sessions:
            break
    sent = _welcomes(t, b"a")[1:]          # the resyncs (the first is its join)
    assert len(sent) == MAX_UNREAD_RESYNCS
    gaps = [b.server_time - a.server_time for a, b in itertools.pairwise(sent)]
    assert gaps == sorted(gaps) and gaps[-1] >= 16.0  # the cooldown doubles...
    assert b"a" not in host.sessions      # ...and then the session is ended
    fatal = [m for m in t.to(b"a") if isinstance(m, Error) and m.fatal]
    assert len(fatal) == 1 and "6 snapshots sent and none read" in fatal[0].message
    # the honest client, resynced as often, shows it read each welcome and is never slowed
    now = 100.0
    for _ in range(10):
        now += RESYNC_COOLDOWN
        host.handle(b"h", encode(Resync()), now)
        epoch = _welcomes(t, b"h")[-1].epoch
        host.handle(b"h", encode(Ping(now, epoch)), now)
    assert len(_welcomes(t, b"h")) == 11 and b"h" in host.sessions
    assert host.sessions[b"h"].cost.snapshot_bytes > 0
