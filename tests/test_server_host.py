"""RoomHost without sockets: bad input, resyncs, stalls, rate limits, expiry (manual clock)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from zmq_helpers import SCHEMA

from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Error,
    Hello,
    LeaveEntry,
    Limits,
    Ping,
    Pong,
    ServerMessage,
    Update,
    UpdateEntry,
    Welcome,
    decode_server_message,
    dynamic_model_id,
    encode,
)
from rtecs_server import RateLimit, RoomHost
from rtecs_server.host import RESYNC_COOLDOWN, _peek_kind

pytestmark = pytest.mark.timeout(10)


class FakeTransport:
    """Records what the host sends; peers in ``full`` refuse frames (queue at its HWM)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.full: set[bytes] = set()

    def send(self, peer: bytes, frame: bytes, reliable: bool = True) -> bool:
        if peer in self.full:
            return False
        self.sent.append((peer, frame))
        return True

    def broadcast(self, peers: Iterable[bytes], frame: bytes) -> list[bytes]:
        return [peer for peer in peers if not self.send(peer, frame)]

    def receive(self) -> list[tuple[bytes, bytes]]:
        return []

    def close(self) -> None:
        pass

    def to(self, peer: bytes) -> list[ServerMessage]:
        return [decode_server_message(f) for p, f in self.sent if p == peer]

    def frames_to(self, peer: bytes) -> list[bytes]:
        return [f for p, f in self.sent if p == peer]


def hello(room: str = "lobby", version: int = PROTOCOL_VERSION, **kw: Any) -> bytes:
    return encode(Hello(version, room, "Game", kw.get("schema", SCHEMA), None))


def update(seq: int, *runs: list[Any], epoch: int = 1) -> bytes:
    return encode(Update(seq, list(runs), epoch))


def errors(t: FakeTransport, peer: bytes) -> list[Error]:
    return [m for m in t.to(peer) if isinstance(m, Error)]


@pytest.fixture
def net() -> tuple[RoomHost, FakeTransport]:
    t = FakeTransport()
    return RoomHost(t, heartbeat_timeout=5.0, empty_room_timeout=30.0), t


def test_peek_kind() -> None:
    assert _peek_kind(update(1, [0, 1, "x"])) == 2
    assert _peek_kind(encode(Ping(1.0))) == 3
    assert _peek_kind(b"") is None
    assert _peek_kind(b"\xdc\x00\x03\x02") == 2
    assert _peek_kind(b"garbage") is None


def test_undecodable_update_resyncs_its_sender_and_changes_nothing(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", update(1, [0, 1, "kept"]), 0.0)
    host.flush(0.0)
    big = update(2, [0, 1, "x" * (130 * 1024)])
    host.handle(b"a", big, 2.0)
    err = errors(t, b"a")[-1]
    assert (err.code, err.fatal) == ("over_limit", False)
    assert "over the limit" in err.message
    welcome = t.to(b"a")[-1]
    assert isinstance(welcome, Welcome) and welcome.client_id == 1
    assert dict(welcome.snapshot[0][4]) == {1: "kept"}
    assert (welcome.epoch, welcome.last_applied) == (2, 1)
    # the client numbers from 1 in the new epoch; an old epoch's update is dropped
    host.handle(b"a", update(3, [0, 1, "stale"]), 2.1)
    host.handle(b"a", update(1, [0, 1, "fresh"], epoch=2), 2.1)
    host.flush(2.1)
    assert host.rooms["lobby"].room.record(0)[4] == {1: "fresh"}  # type: ignore[index]


def test_bad_updates_are_rejected_and_reported(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", update(1, [0, 1, 5], [999_999, 1, "x"], [0, 2, 7]), 0.0)
    host.flush(0.0)
    codes = [e.code for e in errors(t, b"a")]
    assert codes == ["bad_update", "bad_update"]
    batch = t.to(b"a")[-1]
    assert isinstance(batch, Batch)
    entry = batch.entries[-1]
    assert isinstance(entry, UpdateEntry)
    assert list(entry.rejected) == [(0, 1), (999_999, 1)]
    assert host.rooms["lobby"].room.record(0)[4] == {2: 7}  # type: ignore[index]


def test_a_gap_is_reported_and_resynced_at_most_once_per_cooldown(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", update(5, [0, 2, 1]), 10.0)
    assert [m.code for m in t.to(b"a") if isinstance(m, Error)] == ["sequence"]
    assert sum(isinstance(m, Welcome) for m in t.to(b"a")) == 2
    host.handle(b"a", update(7, [0, 2, 1]), 10.1)         # old epoch: dropped quietly
    host.handle(b"a", update(1, [0, 2, 1], epoch=2), 10.2)
    host.handle(b"a", update(3, [0, 2, 1], epoch=2), 10.3)  # another gap, in the cooldown
    assert sum(isinstance(m, Welcome) for m in t.to(b"a")) == 2
    host.handle(b"a", encode(Ping(0.0)), 10.3 + RESYNC_COOLDOWN)  # the ping resyncs
    assert sum(isinstance(m, Welcome) for m in t.to(b"a")) == 3


def test_a_stalled_client_gets_no_batches_until_its_ping_catches_it_up(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    host.flush(0.0)
    t.full.add(b"b")
    host.handle(b"a", update(1, [0, 1, "one"]), 1.0)
    host.flush(1.0)                            # b's send fails: stalled
    t.full.discard(b"b")
    host.handle(b"a", update(2, [0, 1, "two"]), 1.1)
    host.flush(1.1)                            # not sent to b: it catches up at its ping
    seen = t.to(b"b")
    host.handle(b"b", encode(Ping(3.0)), 1.2)
    after = t.to(b"b")[len(seen):]
    room_seq = host.rooms["lobby"].room.room_seq
    # the missed batches from the history, in order, before the pong: no snapshot
    assert [type(m) for m in after] == [Batch, Batch, Pong]
    assert [m.room_seq for m in after[:2]] == [room_seq - 1, room_seq]  # type: ignore[union-attr]
    assert host.sessions[b"b"].epoch == 1 and host.sessions[b"b"].cost.replayed_bytes > 0
    host.handle(b"a", update(3, [0, 1, "three"]), 1.3)
    host.flush(1.3)
    last = t.to(b"b")[-1]
    assert isinstance(last, Batch) and last.room_seq == room_seq + 1


def test_a_stalled_client_whose_batches_left_the_history_is_resynced() -> None:
    t = FakeTransport()
    host = RoomHost(t, history_bytes=0)       # keeps nothing
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    host.flush(0.0)
    t.full.add(b"b")
    host.handle(b"a", update(1, [0, 1, "one"]), 1.0)
    host.flush(1.0)
    t.full.discard(b"b")
    seen = t.to(b"b")
    host.handle(b"b", encode(Ping(3.0)), 1.2)
    after = t.to(b"b")[len(seen):]
    assert isinstance(after[0], Welcome) and isinstance(after[1], Pong)
    assert after[0].snapshot[0][4] == {1: "one"} and after[0].epoch == 2


def test_a_refused_join_does_not_leave_an_empty_room_behind(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello("r", version=99), 0.0)
    err = errors(t, b"a")[-1]
    assert (err.code, err.fatal) == ("version", True)
    assert "r" not in host.rooms


def test_silent_clients_expire_and_their_owned_models_go(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    mid = dynamic_model_id(1, 1)
    host.handle(b"a", update(1, [mid, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES), OWNER, 1,
                                 1, "ann"]), 0.0)
    host.flush(0.0)
    host.handle(b"b", encode(Ping(0.0)), 19.0)
    host.tick(5.5)      # past the heartbeat timeout: still in its grace
    assert list(host.sessions) == [b"a", b"b"]
    host.tick(20.5)     # a silent 20.5 s > the 20 s grace: gone; b heard from 1.5 s ago
    assert list(host.sessions) == [b"b"]
    batch = t.to(b"b")[-1]
    assert isinstance(batch, Batch)
    assert LeaveEntry(1) in batch.entries
    assert UpdateEntry(0, 0, ((mid, DESTROY, None),), ()) in batch.entries


def test_rooms_close_after_the_empty_room_timeout(net: Any) -> None:
    host, _ = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", encode(Bye()), 1.0)
    host.tick(30.9)
    assert "lobby" in host.rooms
    host.tick(31.0)
    assert "lobby" not in host.rooms


def test_rate_limit_warns_then_ends_the_session() -> None:
    t = FakeTransport()
    host = RoomHost(t, rate_limit=RateLimit(rate=10, burst=5))
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    for _ in range(20):
        host.handle(b"a", encode(Ping(0.0)), 0.0)
    codes = [(e.code, e.fatal) for e in errors(t, b"a")]
    assert codes == [("rate_limit", False), ("rate_limit", True)]
    assert list(host.sessions) == [b"b"]
    host.flush(0.0)
    assert LeaveEntry(1) in t.to(b"b")[-1].entries  # type: ignore[union-attr]
    pongs = sum(isinstance(m, Pong) for m in t.to(b"a"))
    assert pongs == 4   # the burst of 5 took the hello and 4 pings


def test_malformed_messages_and_unjoined_updates_get_errors(net: Any) -> None:
    host, t = net
    host.handle_malformed(b"x", "a message must be exactly one frame part", 0.0)
    host.handle(b"x", b"\xc1", 0.0)
    host.handle(b"x", update(1, [0, 1, "x"]), 0.0)
    host.handle(b"x", encode((2, 1)), 0.0)
    assert [e.code for e in errors(t, b"x")] == ["protocol", "protocol", "not_joined",
                                                 "protocol"]
    assert not host.rooms


def test_datastore_limit(net: Any) -> None:
    t = FakeTransport()
    host = RoomHost(t, limits=Limits(max_datastore_bytes=10_000))
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", update(1, [0, 1, "x" * 5_000]), 0.0)
    host.handle(b"a", update(2, [0, 1, "y" * 20_000]), 0.0)
    assert [e.code for e in errors(t, b"a")] == ["over_limit"]
    assert host.rooms["lobby"].room.record(0)[4] == {1: "x" * 5_000}  # type: ignore[index]


def test_close_tells_every_client(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello("other"), 0.0)
    assert host.close(1.0) == 2
    for peer in (b"a", b"b"):
        err = errors(t, peer)[-1]
        assert (err.code, err.fatal) == ("shutdown", True)
    assert not host.sessions


def test_the_same_bytes_go_to_every_member(net: Any) -> None:
    host, t = net
    for peer in (b"a", b"b", b"c"):
        host.handle(peer, hello(), 0.0)
    host.flush(0.0)
    host.handle(b"a", update(1, [0, 1, "t"]), 0.1)
    host.handle(b"b", update(1, [0, 2, 3]), 0.1)
    host.flush(0.1)
    frames = [t.frames_to(p)[-1] for p in (b"a", b"b", b"c")]
    assert frames[0] is frames[1] is frames[2]   # encoded once: one bytes object
    batch = decode_server_message(frames[0])
    assert isinstance(batch, Batch)
    assert [(e.sender, e.seq) for e in batch.entries if isinstance(e, UpdateEntry)] == [
        (1, 1), (2, 1)]
