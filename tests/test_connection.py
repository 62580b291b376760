"""The session state machine, stepped by hand: a fake transport, a manual clock, no models
(issue 10 item 2: the connection is testable step by step, apart from the facade)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rtecs.clock import ManualClock
from rtecs.connection import Connection
from rtecs.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Error,
    Hello,
    Ping,
    Pong,
    Redirect,
    Resync,
    SnapshotRecord,
    Welcome,
    decode_client_message,
    encode,
)
from rtecs.session import ConnectionState, DisconnectReason

pytestmark = pytest.mark.timeout(30)


class Link:
    """A fake transport: what the client sent, and an inbox the test fills."""

    def __init__(self, endpoint: str = "tcp://a:1") -> None:
        self.endpoint = endpoint
        self.sent: list[Any] = []
        self.inbox: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes, reliable: bool = True) -> None:
        self.sent.append(decode_client_message(frame))

    def receive(self) -> list[bytes]:
        frames, self.inbox = self.inbox, []
        return frames

    def close(self) -> None:
        self.closed = True


def hello() -> Hello:
    return Hello(PROTOCOL_VERSION, "arena", "Arena", {"Arena": {}}, None)


def welcome(room_seq: int = 0, epoch: int = 1) -> bytes:
    return encode(Welcome(4, room_seq, 50.0, [SnapshotRecord(0, "Arena", -1, 0, {})], [4], epoch, 0,
                          {"update_bytes": 4096}))


def batch(room_seq: int) -> bytes:
    return encode(Batch(room_seq, 51.0, []))


def joined(**kw: Any) -> tuple[Connection, list[Link], ManualClock]:
    clock = ManualClock()
    links = [Link()]

    def reconnect() -> Link:
        links.append(Link())
        return links[-1]

    conn = Connection(links[0], "arena", hello, clock=clock, reconnect=reconnect,
                      rng=random.Random(1), **kw)
    links[0].inbox.append(welcome())
    for message in conn.receive():
        assert isinstance(message, Welcome) and conn.new_session
        conn.welcomed(message)
    return conn, links, clock


def drain(conn: Connection) -> list[Any]:
    return list(conn.receive())


def test_a_hello_goes_out_at_once_and_the_welcome_lets_it_in() -> None:
    conn, links, _ = joined()
    assert [type(m) for m in links[0].sent] == [Hello]
    assert conn.state is ConnectionState.CONNECTED
    assert conn.limits.max_update_bytes == 4096  # announced by the welcome
    assert conn.room_time == pytest.approx(50.0)


def test_batches_are_handed_on_only_in_order() -> None:
    conn, links, _ = joined()
    links[0].inbox += [batch(1), batch(1), batch(2)]
    assert [m.room_seq for m in drain(conn)] == [1, 2]  # the duplicate is dropped
    links[0].inbox += [batch(4), batch(5)]               # batch 3 was lost
    assert drain(conn) == []
    assert isinstance(links[0].sent[-1], Resync)
    links[0].inbox += [welcome(room_seq=5, epoch=2), batch(6)]
    handed: list[int] = []
    for message in conn.receive():  # the facade applies each, then says so for a welcome
        if isinstance(message, Welcome):
            assert not conn.new_session  # a new epoch of this session
            conn.welcomed(message)
        handed.append(message.room_seq)
    assert handed == [5, 6]


def test_a_pong_naming_a_later_batch_asks_for_a_resync() -> None:
    conn, links, clock = joined(ping_interval=1.0)
    conn.step(clock())
    assert isinstance(links[0].sent[-1], Ping)
    clock.advance(0.02)
    links[0].inbox.append(encode(Pong(clock() - 0.02, 60.0, 3)))
    drain(conn)
    assert conn.ping == pytest.approx(20.0)
    assert isinstance(links[0].sent[-1], Resync)


def test_silence_past_the_heartbeat_reconnects_with_backoff_then_gives_up() -> None:
    conn, links, clock = joined(heartbeat_timeout=5.0, reconnect_tries=3,
                                connect_timeout=1.0)
    clock.advance(5.5)
    conn.check(clock())
    assert conn.state is ConnectionState.RECONNECTING
    assert len(links) == 2 and links[0].closed             # the first retry is at once
    assert [type(m) for m in links[1].sent] == [Hello]
    clock.advance(1.5)                                      # no welcome: the attempt fails
    conn.check(clock())
    for _ in range(100):                                    # the backoff delay passes
        clock.advance(0.1)
        conn.step(clock())
        conn.check(clock())
    assert conn.state is ConnectionState.DISCONNECTED
    assert conn.disconnect_reason is DisconnectReason.SERVER_GONE
    assert len(links) == 3


def test_not_joined_rejoins_and_a_fatal_error_ends_the_session() -> None:
    conn, links, _ = joined()
    links[0].inbox.append(encode(Error("not_joined", "no session", False)))
    drain(conn)
    assert conn.state is ConnectionState.RECONNECTING and len(links) == 2
    links[1].inbox.append(welcome())
    for message in conn.receive():
        assert conn.new_session  # a new session, not an epoch: the facade rolls back
        conn.welcomed(message)
    links[1].inbox.append(encode(Error("schema", "contradiction", True)))
    drain(conn)
    assert conn.disconnect_reason is DisconnectReason.SCHEMA_CONFLICT


def test_a_redirect_moves_to_the_hosting_instance() -> None:
    clock = ManualClock()
    opened = [Link()]

    def redirect(endpoint: str) -> Link:
        opened.append(Link(endpoint))
        return opened[-1]

    conn = Connection(opened[0], "arena", hello, clock=clock, redirect=redirect)
    opened[0].inbox.append(encode(Redirect("tcp://b:2", "arena")))
    drain(conn)
    assert opened[0].closed and opened[-1].endpoint == "tcp://b:2"
    assert [type(m) for m in opened[-1].sent] == [Hello]
    assert conn.state is ConnectionState.CONNECTING
