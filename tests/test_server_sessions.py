"""Sessions apart from room members (DESIGN §8): a session belongs to a secret, not a socket.

Ids and secrets are random and distinct per session; the table keeps the secret's hash, never
the secret; every welcome names the session and the room's incarnation; a RESUME without
the session's current secret is refused (``session_unknown``) and never moves a session to
another peer; and over real sockets a copied routing id takes nothing over. Resumes that
succeed: ``test_server_resume.py``."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
import zmq
from test_server_host import FakeTransport, errors, hello, update
from zmq.utils.monitor import recv_monitor_message
from zmq_helpers import RawClient, raw_clients, wait_until

from rtecs.protocol import NO_SESSION, Bye, Resume, Resync, Update, Welcome, encode
from rtecs_server import RoomHost, RoomServer
from rtecs_server.hosted import Session
from rtecs_server.plugins import Context, Hooks
from rtecs_server.sessions import SECRET_BYTES, SESSION_ID_BYTES, SessionTable, hash_secret

__all__ = ["raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def net() -> tuple[RoomHost, FakeTransport]:
    t = FakeTransport()
    return RoomHost(t, heartbeat_timeout=5.0, empty_room_timeout=30.0), t


def welcomes(t: FakeTransport, peer: bytes) -> list[Welcome]:
    return [m for m in t.to(peer) if isinstance(m, Welcome)]


def resume(welcome: Welcome, secret: bytes | None = None, room: str = "lobby") -> bytes:
    return encode(Resume(room, welcome.session_id,
                         welcome.session_secret if secret is None else secret,
                         welcome.epoch, welcome.room_seq, welcome.incarnation))


def test_ids_and_secrets_are_random_and_distinct_per_session(net: Any) -> None:
    host, t = net
    peers = [bytes([i]) for i in range(1, 9)]
    for peer in peers:
        host.handle(peer, hello(), 0.0)
    first = [welcomes(t, p)[0] for p in peers]
    ids = [w.session_id for w in first]
    secrets = [w.session_secret for w in first]
    assert all(len(i) == SESSION_ID_BYTES for i in ids)
    assert all(len(s) == SECRET_BYTES for s in secrets)
    assert len(set(ids)) == len(set(secrets)) == len(peers)
    assert not set(ids) & set(secrets)
    # a second hello on the same connection opens a new session: new id, new secret
    host.handle(peers[0], hello(), 1.0)
    again = welcomes(t, peers[0])[-1]
    assert again.session_id not in ids and again.session_secret not in secrets
    table = host.session_table
    assert table.find(ids[0]) is None                 # the old session is gone ...
    assert table.get(peers[0]) is table.find(again.session_id)  # ... the new one holds it
    assert len(table) == len(peers)


def test_the_table_keeps_the_hash_of_the_secret_never_the_secret(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    welcome = welcomes(t, b"a")[0]
    session = host.session_table.find(welcome.session_id)
    assert session is not None
    assert session.secret_hash == hashlib.sha256(welcome.session_secret).digest()
    assert session.secret_hash == hash_secret(welcome.session_secret)
    stored = [getattr(session, f.name) for f in dataclasses.fields(Session)]
    assert welcome.session_secret not in [v for v in stored if isinstance(v, bytes)]
    assert all(welcome.session_secret not in repr(v).encode() for v in stored)


def test_every_welcome_names_the_session_and_the_rooms_incarnation(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello("other"), 0.0)
    a, b = welcomes(t, b"a")[0], welcomes(t, b"b")[0]
    lobby = host.rooms["lobby"]
    assert a.incarnation == lobby.incarnation > 0
    assert b.incarnation == host.rooms["other"].incarnation != a.incarnation
    assert host.sessions[b"a"].session_id == a.session_id
    # a resync welcome: the same session and incarnation, a new epoch, and no new secret
    session = host.sessions[b"a"]
    host.handle(b"a", encode(Resync()), 2.0)
    resync = welcomes(t, b"a")[-1]
    assert (resync.session_id, resync.incarnation, resync.epoch) == (
        a.session_id, a.incarnation, 2)
    assert resync.session_secret == NO_SESSION
    assert host.session_table.verify(a.session_id, a.session_secret) is session  # kept
    # a room opened again (closed when empty, then joined) is another incarnation
    host.handle(b"a", encode(Bye()), 3.0)
    host.tick(40.0)
    assert "lobby" not in host.rooms
    host.handle(b"c", hello(), 41.0)
    assert welcomes(t, b"c")[0].incarnation == host.rooms["lobby"].incarnation
    assert host.rooms["lobby"].incarnation != a.incarnation


def test_the_session_mirrors_the_epoch_and_last_applied_update(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    session = host.sessions[b"a"]
    assert (session.epoch, session.last_applied) == (1, 0)
    host.handle(b"a", update(1, [0, 1, "one"]), 0.1)
    host.handle(b"a", update(2, [0, 1, "two"]), 0.2)
    host.handle(b"a", update(2, [0, 1, "dup"]), 0.3)   # a duplicate: nothing applied
    assert (session.epoch, session.last_applied) == (1, 2)
    host.handle(b"a", encode(Resync()), 2.0)
    welcome = welcomes(t, b"a")[-1]
    assert (welcome.epoch, welcome.last_applied) == (2, 2)
    assert (session.epoch, session.last_applied) == (2, 0)
    host.handle(b"a", update(1, [0, 1, "three"], epoch=2), 2.1)
    assert (session.epoch, session.last_applied) == (2, 1)
    assert session.user_id is None and dict(session.claims) == {}


@pytest.mark.parametrize("how", ["wrong secret", "another room", "unknown id"])
def test_a_resume_without_the_secret_is_refused_and_never_moves_a_session(
        net: Any, how: str) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"o", hello("other"), 0.0)
    welcome = welcomes(t, b"a")[0]
    session = host.sessions[b"a"]
    secret = bytes(SECRET_BYTES) if how == "wrong secret" else None
    room = "other" if how == "another room" else "lobby"
    shown = welcome._replace(session_id=bytes(SESSION_ID_BYTES)) if how == "unknown id" \
        else welcome
    for peer in (b"b", b"a"):       # from a fresh connection, and from the session's own
        host.handle(peer, resume(shown, secret, room), 1.0)
        assert [(e.code, e.fatal) for e in errors(t, peer)][-1] == ("session_unknown", False)
    assert host.session_table.get(b"a") is session and session.peer == b"a"
    assert host.session_table.get(b"b") is None
    assert host.session_table.find(welcome.session_id) is session
    assert host.rooms["lobby"].members == {welcome.client_id: session}
    host.handle(b"b", update(1, [0, 1, "hijack"]), 1.0)
    assert errors(t, b"b")[-1].code == "not_joined"
    host.handle(b"a", update(1, [0, 1, "mine"]), 1.0)  # the holder carries on
    host.flush(1.0)
    assert host.rooms["lobby"].room.record(0)[4] == {1: "mine"}  # type: ignore[index]


def test_the_table_verifies_rotates_and_moves_sessions_by_secret_only(net: Any) -> None:
    host, t = net
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    wa = welcomes(t, b"a")[0]
    table: SessionTable = host.session_table
    session = table.get(b"a")
    assert table.verify(wa.session_id, wa.session_secret) is session
    wrong = wa.session_secret[:-1] + bytes([wa.session_secret[-1] ^ 1])  # never the secret
    assert table.verify(wa.session_id, wrong) is None
    assert table.verify(bytes(SESSION_ID_BYTES), wa.session_secret) is None
    assert table.verify(welcomes(t, b"b")[0].session_id, wa.session_secret) is None
    assert session is not None
    fresh = table.rotate(session)
    assert fresh != wa.session_secret and len(fresh) == SECRET_BYTES
    assert table.verify(wa.session_id, wa.session_secret) is None   # spent
    assert table.verify(wa.session_id, fresh) is session
    # attach: the shape a resume will use (after verify): the index follows the session
    assert table.attach(session, b"c") is None
    assert (table.get(b"c"), table.get(b"a"), session.peer) == (session, None, b"c")
    displaced = table.attach(session, b"b")
    assert displaced is not None and displaced.peer == b"b" and displaced is not session
    assert table.get(b"b") is session
    assert table.close(displaced) and table.get(b"b") is session
    assert table.close(session) and not table.close(session)
    assert len(table) == 0 and not host.sessions


def test_a_copied_routing_id_takes_no_session_over(raw_clients: Any) -> None:
    """Over ZeroMQ: an impostor that sets a member's routing id on its own socket neither
    cuts the member off, nor receives its stream, nor writes as it (``ROUTER_HANDOVER`` is
    off; with it on, the impostor's pipe replaces the member's)."""
    with RoomServer(heartbeat_timeout=30) as server:
        victim: RawClient = raw_clients(server.endpoint)
        victim.join()
        victim.update([0, 1, "mine"])
        victim.sync()
        [peer] = list(server.host.sessions)
        impostor = zmq.Context.instance().socket(zmq.DEALER)
        try:
            impostor.setsockopt(zmq.LINGER, 0)
            impostor.setsockopt(zmq.ROUTING_ID, peer)
            events = impostor.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            impostor.connect(server.endpoint)
            assert events.poll(5000), "the impostor never connected"
            recv_monitor_message(events)
            impostor.send(encode(Update(2, [[0, 1, "hijacked"]], 1)))
            victim.update([0, 2, 7])      # seq 2: a duplicate, had the impostor's counted
            victim.sync()                 # the victim's link is intact ...
            victim.update([0, 2, 8])
            wait_until(lambda: victim.mirror.models[0][3].get(2) == 8, clients=[victim])
            record = server.host.rooms["lobby"].room.record(0)
            assert record is not None and record[4] == {1: "mine", 2: 8}  # ... and its own
            assert not impostor.poll(100, zmq.POLLIN)       # nothing reached the impostor
            assert list(server.host.sessions) == [peer]
        finally:
            impostor.disable_monitor()
            impostor.close(0)


def test_the_sessions_user_id_and_claims_reach_the_plugins() -> None:
    """The session is what carries identity: its ``user_id`` and ``claims`` (set by
    authentication, a later issue; by hand here) are in every hook's context."""
    seen: list[tuple[int, str | None, dict[str, object]]] = []

    class Watch(Hooks):
        def on_write(self, ctx: Context, change: Any) -> Any:
            seen.append((ctx.sender, ctx.user_id, dict(ctx.claims)))
            return change.value

    t = FakeTransport()
    host = RoomHost(t, plugins=[Watch()])
    host.handle(b"a", hello(), 0.0)
    host.handle(b"a", update(1, [0, 1, "anon"]), 0.1)
    session = host.sessions[b"a"]
    session.user_id, session.claims = "ann", {"team": "blue"}
    host.handle(b"a", update(2, [0, 1, "ann"]), 0.2)
    assert seen == [(session.client_id, None, {}),
                    (session.client_id, "ann", {"team": "blue"})]
