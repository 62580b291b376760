"""Real clients (rtecs.connect) against a real embedded RoomServer over ZeroMQ on loopback."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from zmq_helpers import settle

import rtecs
from rtecs.model import Change, ChangeSource
from rtecs_server import RoomServer
from rtecs_server.plugins import Change as ServerChange
from rtecs_server.plugins import Reject
from rtecs_server.room import Room

pytestmark = pytest.mark.timeout(30)


class Pos(rtecs.RealtimeModel):
    x: float = rtecs.prop(1, reliable=False)
    y: float = rtecs.prop(2, reliable=False)


class Game(rtecs.RealtimeModel):
    team_name: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2)
    ball: Pos = rtecs.prop(3)


wait_until = settle  # tick the clients until the condition holds


def answered(rt: rtecs.Realtime) -> bool:
    return rt.updates_in_flight == 0 and not rt.has_unsent_changes


@pytest.fixture
def server() -> Iterator[RoomServer]:
    with RoomServer(bind="tcp://127.0.0.1:0") as srv:
        yield srv


_WORLDS = itertools.count(1)


def join(endpoint: str, model: rtecs.RealtimeModel | None = None, room: str = "lobby",
         **kwargs: Any) -> rtecs.Realtime:
    """A client in an esper world of its own (several clients share this thread)."""
    rt = rtecs.connect(endpoint, room, model or Game(), frame_duration=0.0,
                       world=f"zmq-client-{next(_WORLDS)}", **kwargs)
    rt.wait_connected(timeout=10)
    return rt


def test_three_clients_sync_and_a_late_joiner_gets_the_snapshot(server: RoomServer) -> None:
    a, b, c = (join(server.endpoint) for _ in range(3))
    try:
        assert len({a.client_id, b.client_id, c.client_id}) == 3
        ga: Any = a.room_model
        ga.team_name = "Blue Team"
        ga.ball.x = 1.5
        b.room_model.score = 7  # type: ignore[attr-defined]
        clients = (a, b, c)
        wait_until(lambda: all(rt.room_model.team_name == "Blue Team"  # type: ignore[attr-defined]
                               and rt.room_model.ball.x == 1.5  # type: ignore[attr-defined]
                               and rt.room_model.score == 7  # type: ignore[attr-defined]
                               for rt in clients), *clients)
        late_model = Game()
        initial: list[Any] = []
        late_model.observe("team_name").subscribe(initial.append)
        d = join(server.endpoint, late_model)
        assert initial == ["", "Blue Team"]
        assert (late_model.score, late_model.ball.x) == (7, 1.5)
        assert d.clients == {a.client_id, b.client_id, c.client_id, d.client_id}
        d.close()
    finally:
        for rt in (a, b, c):
            rt.close()


def test_blue_red_over_real_sockets(server: RoomServer) -> None:
    a, b = join(server.endpoint), join(server.endpoint)
    try:
        b_seen: list[Any] = []
        b.room_model.observe("team_name").subscribe(b_seen.append)
        a.room_model.team_name = "Blue Team"  # type: ignore[attr-defined]
        b.room_model.team_name = "Red Team"  # type: ignore[attr-defined]
        a.flush()
        wait_until(lambda: answered(a), a)      # the server has ordered A's update first
        b.flush()                               # B has not heard of it yet
        wait_until(lambda: answered(b), b)
        wait_until(lambda: a.room_model.team_name == "Red Team", a)  # type: ignore[attr-defined]
        assert b.room_model.team_name == "Red Team"  # type: ignore[attr-defined]
        assert "Blue Team" not in b_seen
    finally:
        a.close()
        b.close()


def test_rejected_red_rewinds_to_blue_over_real_sockets() -> None:
    def refuse_red(room: Room, sender: int, change: ServerChange) -> Any:
        if change.value == "Red Team":
            raise Reject("taken")
        return change.value

    with RoomServer(bind="tcp://127.0.0.1:0", plugins=[refuse_red]) as srv:
        a, b = join(srv.endpoint), join(srv.endpoint)
        try:
            changes: list[Change] = []
            b.room_model.changes.subscribe(changes.append)
            a.room_model.team_name = "Blue Team"  # type: ignore[attr-defined]
            b.room_model.team_name = "Red Team"  # type: ignore[attr-defined]
            a.flush()
            wait_until(lambda: answered(a), a)
            b.flush()
            wait_until(lambda: answered(b), b)
            assert b.room_model.team_name == "Blue Team"  # type: ignore[attr-defined]
            assert [(c.new, c.source) for c in changes] == [
                ("Red Team", ChangeSource.LOCAL), ("Blue Team", ChangeSource.ROLLBACK)]
        finally:
            a.close()
            b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_server_restart_clients_reconnect_and_resync() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = RoomServer(bind=endpoint)
    first.start()
    a = join(endpoint, heartbeat_timeout=1.0, connect_timeout=1.0)
    b = join(endpoint, heartbeat_timeout=1.0, connect_timeout=1.0)
    states: list[rtecs.ConnectionState] = []
    a.connection_state.subscribe(states.append)
    lost: list[rtecs.SessionLost] = []
    a.session_lost.subscribe(lost.append)
    try:
        a.room_model.team_name = "before"  # type: ignore[attr-defined]
        wait_until(lambda: b.room_model.team_name == "before", a, b)  # type: ignore[attr-defined]
        first.stop()
        wait_until(lambda: a.state is rtecs.ConnectionState.RECONNECTING, a, b)
        with RoomServer(bind=endpoint):
            wait_until(lambda: a.connected and b.connected, a, b, timeout=20)
            # The new server has an empty room: both resynced from its snapshot.
            assert a.room_model.team_name == ""  # type: ignore[attr-defined]
            a.room_model.team_name = "after"  # type: ignore[attr-defined]
            wait_until(lambda: b.room_model.team_name == "after", a, b)  # type: ignore[attr-defined]
        assert states[-3:] == [rtecs.ConnectionState.RECONNECTING,
                               rtecs.ConnectionState.RESYNCED,
                               rtecs.ConnectionState.CONNECTED]
        # The new server knows nothing of the old session: a new one, and the app is told
        # (why: the server's goodbye, or — when the link broke before it was read, as
        # libzmq then drops it — the broken link).
        assert [x.new_client_id for x in lost] == [a.client_id]
        assert lost[0].reason in ("shutdown: the server is shutting down",
                                  "the connection broke")
        assert a.stats.sessions_lost == 1 and a.stats.reconnect_attempts >= 1
    finally:
        a.close(timeout=0.1)
        b.close(timeout=0.1)
        first.stop()


def test_gives_up_with_a_reason_when_no_server_answers() -> None:
    rt = rtecs.connect(f"tcp://127.0.0.1:{free_port()}", "lobby", Game(),
                       connect_timeout=0.2, reconnect_tries=3)
    with pytest.raises(rtecs.NotConnectedError, match="timeout"):
        rt.wait_connected(timeout=10)
    assert rt.disconnect_reason is rtecs.DisconnectReason.TIMEOUT


def test_schema_conflict_is_refused_with_a_clear_reason(server: RoomServer) -> None:
    a = join(server.endpoint)

    class Game(rtecs.RealtimeModel):  # same type name, property 2 with another type
        team_name: str = rtecs.prop(1, default="")
        score: str = rtecs.prop(2, default="")

    rt = rtecs.connect(server.endpoint, "lobby", Game())
    with pytest.raises(rtecs.NotConnectedError):
        rt.wait_connected(timeout=10)
    assert rt.disconnect_reason is rtecs.DisconnectReason.SCHEMA_CONFLICT
    assert rt.last_error is not None and "score" in rt.last_error
    a.close()


def test_close_waits_for_the_answer(server: RoomServer) -> None:
    a, b = join(server.endpoint), join(server.endpoint)
    outcomes: list[rtecs.UpdateOutcome] = []
    a.outcomes.subscribe(outcomes.append)
    a.room_model.score = 42  # type: ignore[attr-defined]
    a.close()
    assert [o.status for o in outcomes] == [rtecs.UpdateStatus.SENT,
                                            rtecs.UpdateStatus.CONFIRMED]
    wait_until(lambda: b.room_model.score == 42, b)  # type: ignore[attr-defined]
    wait_until(lambda: b.clients == {b.client_id}, b)
    b.close()


def test_ping_and_room_time(server: RoomServer) -> None:
    rt = join(server.endpoint, ping_interval=0.05)
    try:
        wait_until(lambda: rt.ping is not None, rt)
        assert rt.ping is not None and 0 <= rt.ping < 1000
        assert abs(rt.room_time - time.time()) < 1.0  # the server clock: epoch-based
    finally:
        rt.close()


def test_an_event_loop_can_wait_on_the_descriptor_and_the_next_deadline(
        server: RoomServer) -> None:
    """A driver without a fixed frame rate (asyncio) waits for ``fileno()`` to be readable
    or for ``next_deadline()``, then ticks: a remote write wakes it."""
    import select

    a = rtecs.connect(server.endpoint, "lobby", Game(), world=f"zmq-client-{next(_WORLDS)}")
    a.wait_connected(timeout=10)
    b = join(server.endpoint)
    try:
        fd = a.fileno()
        assert isinstance(fd, int) and fd >= 0
        a.tick()
        assert not a.has_unsent_changes
        idle = a.next_deadline() - time.monotonic()
        assert 0 < idle <= a.ping_interval + 0.05       # nothing to send: the next ping
        a.room_model.score = 1  # type: ignore[attr-defined]
        assert a.next_deadline() <= a._sync.next_frame   # a write waits for its frame
        woke = 0
        b.room_model.team_name = "wake"  # type: ignore[attr-defined]
        b.flush()
        deadline = time.monotonic() + 10
        while a.room_model.team_name != "wake":  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the descriptor never woke the loop"
            timeout = max(0.0, min(a.next_deadline() - time.monotonic(), 1.0))
            readable, _, _ = select.select([fd], [], [], timeout)
            woke += bool(readable)
            a.tick()
            b.tick()
        assert woke >= 1
    finally:
        a.close(timeout=0.1)
        b.close(timeout=0.1)


@pytest.mark.parametrize("room", ["", "r" * 129, "lob\x00by", "two\nlines"])
def test_a_room_name_no_server_accepts_is_refused_at_connect(room: str) -> None:
    with pytest.raises(ValueError, match="invalid room name"):
        rtecs.connect("tcp://127.0.0.1:9", room, Game())
