"""Resuming a session on the server (DESIGN §8, issue 12), without sockets, on a manual clock.

A ``RESUME`` with the session's current secret moves the session to the fresh peer and
rotates the secret; the answer is ``RESUMED`` (same client id, epoch and last applied update)
followed by exactly the batches the client missed, from the room's history — or, when they
are gone or the room's incarnation changed, a resync welcome into a new epoch. A session
stays a member through its grace, however silent, and ends when the grace runs out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_server_host import FakeTransport, errors, hello, update

from rtecs.clock import ManualClock
from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    Batch,
    LeaveEntry,
    Ping,
    Pong,
    Resume,
    Resumed,
    Resync,
    UpdateEntry,
    Welcome,
    dynamic_model_id,
    encode,
)
from rtecs_server import RoomHost
from rtecs_server.fanout import RESYNC_COOLDOWN
from rtecs_server.persistence import Persistence
from rtecs_server.storage import SQLiteStorage

pytestmark = pytest.mark.timeout(10)


def make(**kw: Any) -> tuple[RoomHost, FakeTransport]:
    t = FakeTransport()
    return RoomHost(t, heartbeat_timeout=5.0, session_grace=20.0, **kw), t


def resume_of(welcome: Welcome, room_seq: int, secret: bytes | None = None,
              epoch: int | None = None, incarnation: int | None = None) -> bytes:
    return encode(Resume("lobby", welcome.session_id,
                         welcome.session_secret if secret is None else secret,
                         welcome.epoch if epoch is None else epoch, room_seq,
                         welcome.incarnation if incarnation is None else incarnation))


def joined(host: RoomHost, t: FakeTransport, peer: bytes, now: float = 0.0) -> Welcome:
    host.handle(peer, hello(), now)
    host.flush(now)
    welcome = [m for m in t.to(peer) if isinstance(m, Welcome)][-1]
    return welcome


def room_value(host: RoomHost) -> object:
    record = host.rooms["lobby"].room.record(0)
    assert record is not None
    return record[4].get(1)


def test_a_resume_takes_the_session_up_and_replays_exactly_what_was_missed() -> None:
    host, t = make()
    a = joined(host, t, b"a")
    joined(host, t, b"b")
    host.handle(b"a", update(1, [0, 1, "one"]), 1.0)
    host.flush(1.0)
    seen = [m.room_seq for m in t.to(b"a") if isinstance(m, Batch)][-1]
    # a's link dies here; the room goes on: its update 2 arrived, b writes too
    host.handle(b"a", update(2, [0, 1, "two"]), 2.0)
    host.flush(2.0)
    host.handle(b"b", update(1, [0, 2, 5]), 3.0)
    host.flush(3.0)
    history = [f for _, f in host.rooms["lobby"].history if _ > seen]
    sent_before = len(t.sent)
    host.handle(b"a2", resume_of(a, seen), 4.0)
    out = t.frames_to(b"a2")
    answer = t.to(b"a2")[0]
    assert isinstance(answer, Resumed)
    assert (answer.client_id, answer.epoch, answer.last_applied) == (a.client_id, 1, 2)
    assert answer.room_seq == host.rooms["lobby"].room.room_seq
    assert answer.incarnation == a.incarnation and answer.limits == a.limits
    assert out[1:] == history                          # the very frames, in order, once
    assert [p for p, _ in t.sent[sent_before:]] == [b"a2"] * len(out)  # nobody else
    session = host.sessions[b"a2"]
    assert b"a" not in host.sessions and session.client_id == a.client_id
    assert session.cost.resumes == 1 and session.cost.replayed_bytes == sum(map(len, history))
    # the secret was rotated: the old one is spent, the new one works
    assert host.session_table.verify(a.session_id, a.session_secret) is None
    assert host.session_table.verify(a.session_id, answer.session_secret) is session
    # the sequence goes on: a resent update 2 is not applied twice, 3 is applied
    host.handle(b"a2", update(2, [0, 1, "two again"]), 4.1)
    host.handle(b"a2", update(3, [0, 1, "three"]), 4.1)
    host.flush(4.1)
    assert room_value(host) == "three" and session.last_applied == 3
    entries = [e for m in t.to(b"b") if isinstance(m, Batch) for e in m.entries
               if isinstance(e, UpdateEntry) and e.sender == a.client_id]
    assert [e.seq for e in entries] == [1, 2, 3]       # each once, in order
    # the old peer is nobody now: its frames are a stranger's
    host.handle(b"a", update(4, [0, 1, "ghost"]), 4.2)
    assert errors(t, b"a")[-1].code == "not_joined" and room_value(host) == "three"


def test_a_spent_secret_cannot_resume_again_and_a_stranger_gains_nothing() -> None:
    host, t = make()
    a = joined(host, t, b"a")
    host.handle(b"a2", resume_of(a, a.room_seq), 1.0)
    assert isinstance(t.to(b"a2")[0], Resumed)
    host.handle(b"x", resume_of(a, a.room_seq), 1.5)      # replayed by whoever saw it
    assert [(e.code, e.fatal) for e in errors(t, b"x")] == [("session_unknown", False)]
    assert list(host.sessions) == [b"a2"]


def test_a_resume_whose_batches_are_gone_gets_a_resync_welcome_with_a_new_secret() -> None:
    host, t = make(history_bytes=0)                       # the history keeps nothing
    a = joined(host, t, b"a")
    joined(host, t, b"b")
    host.handle(b"a", update(1, [0, 1, "one"]), 0.5)      # applied; its answer never arrives
    host.handle(b"b", update(1, [0, 2, 5]), 2.0)
    host.flush(2.0)
    host.handle(b"a2", resume_of(a, a.room_seq), 3.0)
    welcome = t.to(b"a2")[0]
    assert isinstance(welcome, Welcome)
    assert (welcome.client_id, welcome.session_id, welcome.epoch, welcome.last_applied) == (
        a.client_id, a.session_id, 2, 1)                   # re-based: 1 was applied
    assert welcome.snapshot[0][4] == {1: "one", 2: 5}
    assert welcome.session_secret not in (b"", a.session_secret)
    session = host.sessions[b"a2"]
    assert host.session_table.verify(a.session_id, welcome.session_secret) is session
    assert session.unread_resyncs == 1
    host.handle(b"a2", encode(Ping(3.1, 2)), 3.1)         # read: the count starts again
    assert session.unread_resyncs == 0


def test_a_resume_into_another_incarnation_gets_a_snapshot() -> None:
    host, t = make()
    a = joined(host, t, b"a")
    host.handle(b"a2", resume_of(a, a.room_seq, incarnation=a.incarnation + 1), 2.0)
    welcome = t.to(b"a2")[0]
    assert isinstance(welcome, Welcome) and welcome.epoch == 2
    assert welcome.incarnation == a.incarnation


def test_a_resume_snapshot_waits_for_the_resync_cooldown() -> None:
    host, t = make(history_bytes=0)
    a = joined(host, t, b"a")
    host.handle(b"a", encode(Resync()), 0.5)             # a snapshot at 0.5 s
    second = [m for m in t.to(b"a") if isinstance(m, Welcome)][-1]
    assert second.epoch == 2
    host.handle(b"a2", resume_of(second._replace(session_secret=a.session_secret), 0),
                0.6)
    assert t.to(b"a2") == []                               # attached, the snapshot waits
    assert host.sessions[b"a2"].needs_resync
    host.tick(0.5 + RESYNC_COOLDOWN - 0.01)
    assert t.to(b"a2") == []
    host.tick(0.5 + RESYNC_COOLDOWN)
    [welcome] = t.to(b"a2")
    assert isinstance(welcome, Welcome) and welcome.epoch == 3 and welcome.session_secret


def test_a_resume_after_a_lost_resync_welcome_names_the_last_update_of_its_epoch() -> None:
    """The server moved the session to epoch 2 (its welcome never arrived); the client's
    unanswered updates are numbered in epoch 1, so the resume's welcome must say how many
    of those were applied — not 0, epoch 2's — or the client would send them twice."""
    host, t = make()
    a = joined(host, t, b"a")
    host.handle(b"a", update(1, [0, 1, "one"]), 0.2)
    host.handle(b"a", update(2, [0, 1, "two"]), 0.3)
    t.full.add(b"a")
    host.handle(b"a", encode(Resync()), 1.5)             # its welcome (epoch 2) is lost
    host.handle(b"a2", resume_of(a, a.room_seq), 3.0)    # the client is still in epoch 1
    welcome = t.to(b"a2")[0]
    assert isinstance(welcome, Welcome)
    assert (welcome.epoch, welcome.last_applied) == (3, 2)


def test_a_resume_of_a_detached_session_works_and_the_other_session_of_the_peer_ends() -> None:
    host, t = make()
    host.handle(b"a", hello(), 0.0, connection="tcp-1")
    [a] = t.to(b"a")
    assert isinstance(a, Welcome)
    host.handle(b"a", update(1, [0, 1, "one"]), 0.1, connection="tcp-1")
    host.handle(b"a", encode(Ping(0.2, 1)), 0.2, connection="tcp-2")  # a squatter's frame
    assert host.session_table.find(a.session_id).detached  # type: ignore[union-attr]
    other = joined(host, t, b"c", 0.3)
    host.handle(b"c", resume_of(a, 0), 1.0, connection="tcp-3")
    out = t.to(b"c")
    at = next(i for i, m in enumerate(out) if isinstance(m, Resumed))
    replayed = [m.room_seq for m in out[at + 1:] if isinstance(m, Batch)]
    assert replayed == list(range(1, host.rooms["lobby"].room.room_seq + 1))  # from 0 on
    session = host.sessions[b"c"]
    assert session.session_id == a.session_id and not session.detached
    assert host.session_table.find(other.session_id) is None   # c's own session ended
    host.handle(b"c", update(2, [0, 1, "two"]), 1.1, connection="tcp-3")
    host.flush(1.1)
    assert room_value(host) == "two"


def test_a_silent_session_stays_a_member_through_its_grace_then_its_flags_apply() -> None:
    host, t = make()
    joined(host, t, b"a")
    joined(host, t, b"b")
    mid = dynamic_model_id(1, 1)
    host.handle(b"a", update(1, [mid, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES), OWNER,
                                 1, 1, "ann"]), 0.0)
    host.flush(0.0)
    for now in (4.0, 8.0, 12.0, 16.0, 19.5):            # b pings, a is silent
        host.handle(b"b", encode(Ping(now, 1)), now)
        host.tick(now)
    assert set(host.sessions) == {b"a", b"b"}            # 19.5 s: within the grace
    assert host.rooms["lobby"].room.record(mid) is not None
    host.tick(20.1)
    assert list(host.sessions) == [b"b"]
    entries = [e for m in t.to(b"b") if isinstance(m, Batch) for e in m.entries]
    assert LeaveEntry(1) in entries
    assert UpdateEntry(0, 0, ((mid, DESTROY, None),), ()) in entries


def test_a_resumed_session_counts_its_silence_from_the_resume() -> None:
    host, t = make()
    a = joined(host, t, b"a")
    host.tick(15.0)
    host.handle(b"a2", resume_of(a, a.room_seq), 15.0)
    host.tick(30.0)                                        # 15 s after the resume
    assert list(host.sessions) == [b"a2"]
    host.handle(b"a2", encode(Ping(30.0, 1)), 30.0)
    assert isinstance(t.to(b"a2")[-1], Pong)


def test_a_room_loaded_again_takes_its_sessions_back_by_resume(tmp_path: Path) -> None:
    """A live checkpoint, then the host is gone (a crash: nothing closed) and another loads
    the room for the first RESUME that names it: the session is found by its id and saved
    secret hash, gets a snapshot of the new incarnation that names its last applied update,
    keeps its client id and its owned avatar; a session nobody resumes ends at its grace."""
    clock = ManualClock()
    with SQLiteStorage(tmp_path / "rooms.sqlite3", clock=clock) as storage:
        t1 = FakeTransport()
        host1 = RoomHost(t1, persistence=Persistence(storage, advertise="tcp://h:1",
                                                     clock=clock, checkpoint_interval=1.0))
        t0 = clock.now
        a = joined(host1, t1, b"a", t0)
        b = joined(host1, t1, b"b", t0)
        avatar = dynamic_model_id(a.client_id, 1)
        host1.handle(b"a", update(1, [avatar, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES),
                                      OWNER, a.client_id, 1, "ann"]), t0 + 0.1)
        host1.handle(b"a", update(2, [0, 1, "two"]), t0 + 0.2)
        host1.tick(t0 + 0.2)
        seen = host1.rooms["lobby"].room.room_seq
        clock.advance(1.5)
        host1.tick(clock.now)                     # the checkpoint: live, with both sessions
        host1.handle(b"a", update(3, [0, 1, "lost"]), clock.now)  # after it: lost
        incarnation = host1.rooms["lobby"].incarnation
        saved = storage.load("lobby")
        assert saved is not None and len(saved.sessions) == 2

        t2 = FakeTransport()
        host2 = RoomHost(t2, persistence=Persistence(storage, advertise="tcp://h:2",
                                                     clock=clock), session_grace=20.0)
        start = clock.now
        host2.handle(b"a2", resume_of(a, seen), start)
        [welcome] = t2.to(b"a2")
        assert isinstance(welcome, Welcome)
        hosted = host2.rooms["lobby"]
        assert hosted.incarnation != incarnation
        assert (welcome.client_id, welcome.session_id) == (a.client_id, a.session_id)
        assert (welcome.epoch, welcome.last_applied) == (2, 2)   # 1 and 2 were checkpointed
        assert welcome.session_secret not in (b"", a.session_secret)
        records = {r[0]: r for r in welcome.snapshot}
        assert records[avatar][2] == a.client_id                # still its owner
        assert records[0][4].get(1) == "two"
        assert set(welcome.clients) == {a.client_id, b.client_id}  # b waits for its client
        other = host2.session_table.find(b.session_id)
        assert other is not None and other.detached
        host2.tick(start + 10.0)
        host2.handle(b"a2", encode(Ping(start + 10.0, 2)), start + 10.0)
        host2.tick(start + 20.5)                   # b's grace ran out; a spoke at +10 s
        assert host2.session_table.find(b.session_id) is None
        assert hosted.room.members == (a.client_id,)
        assert hosted.room.record(avatar) is not None


def test_a_resume_for_a_room_nobody_stored_loads_and_creates_nothing(tmp_path: Path) -> None:
    clock = ManualClock()
    with SQLiteStorage(tmp_path / "rooms.sqlite3", clock=clock) as storage:
        t = FakeTransport()
        host = RoomHost(t, persistence=Persistence(storage, advertise="tcp://h:1",
                                                   clock=clock))
        host.handle(b"x", encode(Resume("nowhere", b"\x01" * 16, b"\x02" * 32, 1, 0, 7)),
                    clock.now)
        assert [(e.code, e.fatal) for e in errors(t, b"x")] == [("session_unknown", False)]
        assert host.rooms == {} and storage.load("nowhere") is None
