"""Sessions per network address (issue 11, DESIGN §8): a server refuses a hello that would give
one address more than ``max_sessions_per_address`` live sessions, with a fatal
``ERROR too_many_sessions`` naming the limit; a session that ends frees its place.

Over real ZeroMQ (the address is libzmq's ``Peer-Address`` of the hello's frame: every client
here is 127.0.0.1) and over the memory transport, whose clients are given addresses. Nothing
sleeps to wait: every wait polls with a deadline."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import zmq
from zmq_helpers import (
    PATIENCE,
    SCHEMA,
    RawClient,
    ServerProcess,
    raw_clients,
    settle,
    wait_until,
)

import rtecs
from rtecs.clock import ManualClock
from rtecs.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    Welcome,
    decode_client_message,
    encode,
)
from rtecs.realtime import Realtime
from rtecs.transport.memory import MemoryNetwork
from rtecs_server import RoomHost, RoomServer
from rtecs_server.fanout import RESYNC_COOLDOWN
from rtecs_server.sessions import DEFAULT_MAX_SESSIONS_PER_ADDRESS, address_key
from rtecs_server.zmq_transport import _HELLO_KIND

__all__ = ["raw_clients"]  # fixtures used here

_WORLDS = itertools.count(1)


class Game(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    score: int = rtecs.prop(2, default=0)


def test_error_code_and_reason() -> None:
    assert ErrorCode.TOO_MANY_SESSIONS.value == "too_many_sessions"
    assert rtecs.DisconnectReason.TOO_MANY_SESSIONS.value == "too_many_sessions"
    assert DEFAULT_MAX_SESSIONS_PER_ADDRESS == 64


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("localhost:1000:1000:4242", "localhost:1000:1000"),
    ("something else", "something else"),
    ("", None),
    (None, None),
])
def test_addresses_are_counted_by_key(address: str | None, key: str | None) -> None:
    assert address_key(address) == key


# ----------------------------------------------------------------------------- real ZeroMQ

@pytest.mark.timeout(30)
def test_a_fourth_session_from_one_address_is_refused_until_one_leaves(
        raw_clients: Callable[..., RawClient]) -> None:
    clock = ManualClock()
    with RoomServer(max_sessions_per_address=3, heartbeat_timeout=30, clock=clock) as server:
        joined = [raw_clients(server.endpoint) for _ in range(3)]
        for client in joined:
            client.join()
        table = server.host.session_table
        assert dict(table.addresses) == {"127.0.0.1": 3}
        fourth = raw_clients(server.endpoint)
        fourth.hello()
        error = fourth.expect_error("too_many_sessions", PATIENCE)
        assert error.fatal
        assert "127.0.0.1" in error.message and "the limit is 3" in error.message
        assert not fourth.welcomes and len(table) == 3
        # the refused peer holds nothing: a ping is answered not_joined
        fourth.ping()
        fourth.expect_error("not_joined", PATIENCE)
        # a joined client says BYE: once it is handled, a new one joins
        joined[0].bye()
        joined[0].ping()
        joined[0].expect_error("not_joined", PATIENCE)
        assert dict(table.addresses) == {"127.0.0.1": 2}
        fifth = raw_clients(server.endpoint)
        fifth.join(timeout=PATIENCE)
        assert dict(table.addresses) == {"127.0.0.1": 3}
        # the members still play: a write reaches the others
        joined[1].update([0, 2, 9])
        wait_until(lambda: fifth.mirror.models[0][3].get(2) == 9, PATIENCE,
                   clients=[fifth])
        # a hello again on a joined connection (after the resync cooldown since its
        # welcome) frees its own place first: welcomed
        clock.advance(RESYNC_COOLDOWN)
        joined[2].hello()
        joined[2].expect(lambda m: isinstance(m, Welcome) and len(joined[2].welcomes) == 2,
                         PATIENCE, "a second welcome")
        assert dict(table.addresses) == {"127.0.0.1": 3}


@pytest.mark.timeout(30)
def test_an_rtecs_client_refused_for_its_address_gives_up_with_the_reason(
        raw_clients: Callable[..., RawClient]) -> None:
    with RoomServer(max_sessions_per_address=1) as server:
        holder = raw_clients(server.endpoint)
        holder.join()
        rt = rtecs.connect(server.endpoint, "lobby", Game(), frame_duration=0.0,
                           connect_timeout=3.0, reconnect_tries=3,
                           world=f"per-address-{next(_WORLDS)}")
        try:
            with pytest.raises(rtecs.NotConnectedError):
                rt.wait_connected(PATIENCE)
            assert rt.disconnect_reason is rtecs.DisconnectReason.TOO_MANY_SESSIONS
            assert rt.last_error is not None
            assert rt.last_error.startswith("too_many_sessions: ")
            assert "the limit is 1" in rt.last_error
            assert rt.stats.welcomes == 0
        finally:
            rt.close()


@pytest.mark.timeout(120)
def test_a_flood_of_hellos_from_fresh_sockets_stays_within_the_limit() -> None:
    """1,000 hellos from one address, each from a fresh socket (so per-connection rate
    limits never see more than one message): at most the limit's sessions are opened, every
    other hello is refused, and the honest clients that joined first keep playing and
    converge."""
    limit, honest_count, flood, wave = 10, 2, 1000, 100
    with RoomServer(max_sessions_per_address=limit, heartbeat_timeout=60) as server:
        honest = [rtecs.connect(server.endpoint, "lobby", Game(), frame_duration=0.0,
                                world=f"per-address-{next(_WORLDS)}")
                  for _ in range(honest_count)]
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ctx.set(zmq.MAX_SOCKETS, 4 * wave)
        try:
            for rt in honest:
                rt.wait_connected(PATIENCE)
            table = server.host.session_table
            welcomed = refused = 0
            for start in range(0, flood, wave):
                sockets = [RawClient(server.endpoint, context=ctx) for _ in range(wave)]
                for s in sockets:
                    s.hello()
                for s in sockets:
                    answer = s.expect(lambda m: isinstance(m, Welcome) or getattr(
                        m, "code", None) == "too_many_sessions", PATIENCE, "an answer")
                    if isinstance(answer, Welcome):
                        welcomed += 1
                    else:
                        refused += 1
                    s.close()
                assert len(table) <= limit
                score = start + 1
                honest[0].room_model.score = score  # type: ignore[attr-defined]
                settle(lambda s=score: all(rt.room_model.score == s  # type: ignore[attr-defined]
                                           for rt in honest), *honest, timeout=PATIENCE)
            print(f"\n{flood} hellos: {welcomed} welcomed, {refused} refused")
            assert (welcomed, refused) == (limit - honest_count, flood - limit + honest_count)
            assert len(table) == limit and dict(table.addresses) == {"127.0.0.1": limit}
            honest[1].room_model.title = "after the flood"  # type: ignore[attr-defined]
            settle(lambda: all(rt.room_model.title == "after the flood"  # type: ignore[attr-defined]
                               and rt.updates_in_flight == 0 for rt in honest), *honest,
                   timeout=PATIENCE)
            assert all(rt.connected for rt in honest)
        finally:
            for rt in honest:
                rt.close()
            ctx.destroy(0)


@pytest.mark.timeout(30)
def test_the_flag_reaches_the_server_and_zero_means_no_limit(
        raw_clients: Callable[..., RawClient]) -> None:
    server = ServerProcess("--max-sessions-per-address", "2")
    try:
        a, b, c = (raw_clients(server.endpoint) for _ in range(3))
        a.join(timeout=PATIENCE)
        b.join(timeout=PATIENCE)
        c.hello()
        assert "the limit is 2" in c.expect_error("too_many_sessions", PATIENCE).message
    finally:
        server.kill()
    unlimited = ServerProcess("--max-sessions-per-address", "0")
    try:
        for client in [raw_clients(unlimited.endpoint) for _ in range(3)]:
            client.join(timeout=PATIENCE)
    finally:
        unlimited.kill()


# ----------------------------------------------------------------------------- memory

@pytest.mark.timeout(30)
def test_over_the_memory_transport_each_address_has_its_own_count() -> None:
    """Two addresses with a limit of 2: the third client of 10.0.0.1 is refused (its
    ``rtecs`` client ends with ``TOO_MANY_SESSIONS``) while 10.0.0.2's two join; once one of
    10.0.0.1's clients closes, another from there joins. Clients without an address are not
    counted; two IPv6 addresses of one /64 share a count."""
    clock = ManualClock()
    net = MemoryNetwork()
    host = RoomHost(net.server, max_sessions_per_address=2, heartbeat_timeout=1e9,
                    session_grace=1e9)
    made: list[Realtime] = []

    def client(address: str | None) -> Realtime:
        rt = Realtime(net.connect(f"c{len(made)}", address=address), "lobby", Game(),
                      clock=clock, frame_duration=0.0, heartbeat_timeout=1e9,
                      connect_timeout=1e9, world=f"per-address-mem-{next(_WORLDS)}")
        made.append(rt)
        return rt

    def run(until: Callable[[], bool]) -> None:
        for _ in range(200):
            if until():
                return
            clock.advance(0.01)
            for rt in made:
                rt.tick()
            net.step()
            host.pump(clock.now)
            net.step()
        raise AssertionError("not reached within 200 steps")

    a1, a2 = client("10.0.0.1"), client("10.0.0.1")
    run(lambda: a1.connected and a2.connected)
    a3 = client("10.0.0.1")
    b1, b2 = client("10.0.0.2"), client("10.0.0.2")
    anonymous = [client(None) for _ in range(3)]
    run(lambda: a3.state.value == "disconnected" and b1.connected and b2.connected
        and all(rt.connected for rt in anonymous))
    assert a3.disconnect_reason is rtecs.DisconnectReason.TOO_MANY_SESSIONS
    assert "the limit is 2" in (a3.last_error or "")
    table = host.session_table
    assert dict(table.addresses) == {"10.0.0.1": 2, "10.0.0.2": 2}
    assert len(table) == 7
    a1.close()  # BYE
    run(lambda: table.sessions_from("10.0.0.1") == 1)
    a4 = client("10.0.0.1")
    run(lambda: a4.connected)
    assert dict(table.addresses) == {"10.0.0.1": 2, "10.0.0.2": 2}
    # IPv6: one /64 is one address
    v6 = [client("2001:db8::1"), client("2001:db8::2")]
    run(lambda: all(rt.connected for rt in v6))
    v6_third = client("2001:db8::ffff:3")
    v6_other = client("2001:db8:0:1::1")
    run(lambda: v6_third.state.value == "disconnected" and v6_other.connected)
    assert v6_third.disconnect_reason is rtecs.DisconnectReason.TOO_MANY_SESSIONS
    assert table.sessions_from("2001:db8::/64") == 2
    assert table.sessions_from("2001:db8:0:1::/64") == 1


def test_a_session_ended_any_way_frees_its_place() -> None:
    """A session that times out ends like one that says BYE: its address counts it no
    more. ``None`` and 0 mean no limit; a negative limit is refused."""
    clock = ManualClock()
    net = MemoryNetwork()
    host = RoomHost(net.server, max_sessions_per_address=1, heartbeat_timeout=5.0)
    rt = Realtime(net.connect("a", address="10.0.0.9"), "lobby", Game(), clock=clock,
                  frame_duration=0.0, heartbeat_timeout=1e9, connect_timeout=1e9,
                  world=f"per-address-mem-{next(_WORLDS)}")
    for _ in range(50):
        rt.tick()
        net.step()
        host.pump(clock.now)
        net.step()
        if rt.connected:
            break
    assert host.session_table.sessions_from("10.0.0.9") == 1
    host.expire(clock.now + 60)  # silent past the heartbeat timeout
    assert host.session_table.sessions_from("10.0.0.9") == 0
    assert not host.session_table.addresses
    rt.close()
    for limit in (None, 0):
        assert RoomHost(net.server, max_sessions_per_address=limit
                        ).max_sessions_per_address is None
    with pytest.raises(ValueError, match="max_sessions_per_address"):
        RoomHost(net.server, max_sessions_per_address=-1)
    with pytest.raises(ValueError, match="max_sessions_per_address"):
        RoomServer(max_sessions_per_address=-1)


@pytest.mark.timeout(30)
def test_a_hello_in_any_msgpack_spelling_is_counted(
        raw_clients: Callable[..., RawClient]) -> None:
    """The transport reads the address only of frames that may be hellos; a hello spelled
    with an array16 header, or its kind as a uint8, decodes the same and must not slip past
    the count."""
    hello = encode(Hello(PROTOCOL_VERSION, "lobby", "Game", SCHEMA, None))
    assert hello[0] == 0x96 and hello[1] == _HELLO_KIND
    spellings = [b"\xdc\x00\x06" + hello[1:], b"\x96\xcc\x01" + hello[2:],
                 b"\xdd\x00\x00\x00\x06" + hello[1:]]
    with RoomServer(max_sessions_per_address=1) as server:
        raw_clients(server.endpoint).join()
        for frame in spellings:
            assert decode_client_message(frame) == decode_client_message(hello)
            sneaky = raw_clients(server.endpoint)
            sneaky.send_raw(frame)
            sneaky.expect_error("too_many_sessions", PATIENCE)
        assert len(server.host.session_table) == 1
