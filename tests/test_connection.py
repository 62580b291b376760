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
    Resume,
    Resumed,
    Resync,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    decode_client_message,
    encode,
)
from rtecs.session import ConnectionState, DisconnectReason, SessionLost

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


def welcome(room_seq: int = 0, epoch: int = 1, client_id: int = 4, last_applied: int = 0,
            secret: bytes = b"k" * 32) -> bytes:
    return encode(Welcome(client_id, room_seq, 50.0, [SnapshotRecord(0, "Arena", -1, 0, {})],
                          [client_id], epoch, last_applied, {"update_bytes": 4096},
                          b"s" * 16, secret, 77))


def batch(room_seq: int, *answers: int, sender: int = 4) -> bytes:
    """A batch whose entries answer ``sender``'s updates ``answers``."""
    return encode(Batch(room_seq, 51.0, [UpdateEntry(sender, seq, [], []) for seq in answers]))


def update(seq: int, epoch: int = 1) -> bytes:
    return encode(Update(seq, [[0, 1, seq]], epoch))


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
    assert links[1].sent == [Resume("arena", b"s" * 16, b"k" * 32, 1, 0, 77)]
    clock.advance(1.5)                                      # no answer: the attempt fails
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
    assert [type(m) for m in links[1].sent] == [Resume]   # it tries to take it up again
    links[1].inbox.append(encode(Error("session_unknown", "no such session", False)))
    drain(conn)
    assert [type(m) for m in links[1].sent] == [Resume, Hello]  # then joins anew
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


def welcome_all(conn: Connection) -> list[Any]:
    """Drain like the facade: every welcome is applied and acknowledged."""
    out = []
    for message in conn.receive():
        if isinstance(message, Welcome):
            conn.welcomed(message)
        out.append(message)
    return out


def test_the_welcome_opens_a_session_that_keeps_unanswered_update_frames() -> None:
    conn, links, _ = joined()
    session = conn.session
    assert session is not None and session.resumable
    assert (session.session_id, session.secret, session.client_id, session.epoch,
            session.incarnation) == (b"s" * 16, b"k" * 32, 4, 1, 77)
    for seq in (1, 2, 3):
        conn.send_update(seq, update(seq))
    assert list(session.unanswered) == [1, 2, 3]
    assert session.unanswered[2] == update(2)          # the frame exactly as sent
    links[0].inbox += [batch(1, 2, sender=5), batch(2, 2)]  # another sender's 2, then ours
    drain(conn)
    assert list(session.unanswered) == [3]             # an answer covers everything before it
    assert conn.stats.updates_sent == 3 and conn.stats.batches_applied == 2


def test_a_resync_welcome_is_a_new_epoch_and_passes_through_resynced() -> None:
    conn, links, _ = joined()
    states: list[ConnectionState] = []
    conn.states.subscribe(states.append)
    lost: list[SessionLost] = []
    conn.session_lost.subscribe(lost.append)
    conn.send_update(1, update(1))
    links[0].inbox.append(batch(2))                     # batch 1 was lost
    drain(conn)
    assert conn.resync_pending and conn.stats.resyncs_asked == 1
    links[0].inbox.append(welcome(room_seq=2, epoch=2, last_applied=1, secret=b"n" * 32))
    welcome_all(conn)
    assert states == [ConnectionState.CONNECTED, ConnectionState.RESYNCED,
                      ConnectionState.CONNECTED]
    assert lost == []                                   # the same session
    session = conn.session
    assert session is not None
    assert (session.epoch, session.secret, dict(session.unanswered)) == (2, b"n" * 32, {})
    conn.send_update(1, update(1, epoch=2), resent=True)
    assert conn.stats.updates_resent == 1 and list(session.unanswered) == [1]


def test_a_new_session_after_a_lost_link_fires_session_lost() -> None:
    conn, links, clock = joined(heartbeat_timeout=1.0)
    states: list[ConnectionState] = []
    conn.states.subscribe(states.append)
    lost: list[SessionLost] = []
    conn.session_lost.subscribe(lost.append)
    conn.send_update(1, update(1))
    clock.advance(1.5)
    conn.check(clock())                                 # silence: the link is gone
    assert conn.state is ConnectionState.RECONNECTING and len(links) == 2
    assert isinstance(links[1].sent[0], Resume)
    links[1].inbox.append(encode(Error("session_unknown", "its grace ran out", False)))
    drain(conn)
    assert isinstance(links[1].sent[1], Hello)          # the session is gone: join anew
    assert conn.session is not None and not conn.session.resumable  # its secret is spent
    links[1].inbox.append(welcome(client_id=9))
    welcome_all(conn)
    assert states == [ConnectionState.CONNECTED, ConnectionState.RECONNECTING,
                      ConnectionState.RESYNCED, ConnectionState.CONNECTED]
    assert lost == [SessionLost(4, 9, "timeout")]
    assert conn.session is not None and conn.session.client_id == 9
    assert conn.session.unanswered == {}               # rolled back with the old session
    assert (conn.stats.sessions_lost, conn.stats.reconnect_attempts) == (1, 1)


def test_next_deadline_names_the_next_timer() -> None:
    conn, links, clock = joined(ping_interval=1.0, heartbeat_timeout=5.0)
    start = clock()
    assert conn.fileno() is None                        # the fake link has no descriptor
    assert conn.next_deadline() == start                # the first ping is due at once
    conn.step(clock())
    assert conn.next_deadline() == pytest.approx(clock() + 1.0)
    clock.advance(0.9)
    conn.step(clock())
    links[0].inbox.append(batch(1))
    drain(conn)                                         # heard from: the heartbeat moves on
    assert conn.next_deadline() == pytest.approx(start + 1.0)  # the next ping
    clock.advance(5.5)
    conn.check(clock())
    assert conn.state is ConnectionState.RECONNECTING
    assert conn.next_deadline() == pytest.approx(clock() + conn.connect_timeout)
    conn.close()
    assert conn.next_deadline() == float("inf")


def resumed(last_applied: int, room_seq: int, secret: bytes = b"r" * 32) -> bytes:
    return encode(Resumed(4, 1, last_applied, room_seq, 60.0, 77, secret,
                          {"update_bytes": 8192}))


def lose_link(conn: Connection, links: list[Link], clock: ManualClock) -> None:
    """Silence past the heartbeat: the connection resumes over a fresh link."""
    clock.advance(conn.heartbeat_timeout + 0.5)
    conn.check(clock())
    assert conn.state is ConnectionState.RECONNECTING


def test_a_resumed_session_resends_what_was_not_applied_and_replays_what_it_missed() -> None:
    conn, links, clock = joined(heartbeat_timeout=1.0)
    states: list[ConnectionState] = []
    conn.states.subscribe(states.append)
    lost: list[SessionLost] = []
    conn.session_lost.subscribe(lost.append)
    links[0].inbox.append(batch(1))
    drain(conn)
    for seq in (1, 2, 3, 4):
        conn.send_update(seq, update(seq))
    links[0].inbox.append(batch(2, 1))                  # update 1 answered, then silence
    drain(conn)
    lose_link(conn, links, clock)
    assert links[1].sent == [Resume("arena", b"s" * 16, b"k" * 32, 1, 2, 77)]
    # The server applied 1-3; 3's answer is in batch 4, which this client never got.
    links[1].inbox += [resumed(last_applied=3, room_seq=4), batch(3, 2), batch(4, 3)]
    handed = [m.room_seq for m in welcome_all(conn)]
    assert handed == [3, 4]                             # the missed batches, in order
    assert links[1].sent[1:] == [decode_client_message(update(4))]  # only 4: once, as sent
    assert states == [ConnectionState.CONNECTED, ConnectionState.RECONNECTING,
                      ConnectionState.RESUMED, ConnectionState.CONNECTED]
    session = conn.session
    assert session is not None
    assert lost == [] and session.client_id == 4 and session.secret == b"r" * 32
    assert list(session.unanswered) == [4]              # still waiting for its answer
    assert conn.limits.max_update_bytes == 8192         # announced by RESUMED
    assert (conn.stats.resumes, conn.stats.updates_resent, conn.stats.sessions_lost) == \
        (1, 1, 0)
    lose_link(conn, links, clock)                       # the next resume shows the new secret
    assert links[2].sent == [Resume("arena", b"s" * 16, b"r" * 32, 1, 4, 77)]


def test_a_resume_answered_by_a_welcome_of_the_same_session_is_a_new_epoch() -> None:
    conn, links, clock = joined(heartbeat_timeout=1.0)
    states: list[ConnectionState] = []
    conn.states.subscribe(states.append)
    lost: list[SessionLost] = []
    conn.session_lost.subscribe(lost.append)
    conn.send_update(1, update(1))
    lose_link(conn, links, clock)
    links[1].inbox.append(welcome(room_seq=9, epoch=2, last_applied=1, secret=b"n" * 32))
    for message in conn.receive():
        assert isinstance(message, Welcome)
        assert not conn.new_session                     # re-based, not rolled back
        conn.welcomed(message)
    assert states[-2:] == [ConnectionState.RESYNCED, ConnectionState.CONNECTED]
    assert lost == [] and conn.session is not None
    assert (conn.session.epoch, conn.session.secret, conn.room_seq) == (2, b"n" * 32, 9)


def test_a_welcome_of_another_session_while_resuming_is_a_new_session() -> None:
    conn, links, clock = joined(heartbeat_timeout=1.0)
    lose_link(conn, links, clock)
    links[1].inbox.append(encode(Welcome(4, 0, 50.0, [], [4], 1, 0, {}, b"t" * 16,
                                         b"k" * 32, 78)))
    messages = list(conn.receive())
    assert len(messages) == 1 and conn.new_session


def test_a_link_that_reports_it_broke_is_resumed_at_once() -> None:
    conn, links, clock = joined(heartbeat_timeout=60.0)
    links[0].broken = True   # type: ignore[attr-defined]  # as the ZeroMQ transport says
    conn.check(clock())
    assert conn.state is ConnectionState.RECONNECTING
    assert len(links) == 2 and [type(m) for m in links[1].sent] == [Resume]
    conn.check(clock())                                  # the new link is fine: no more
    assert len(links) == 2
