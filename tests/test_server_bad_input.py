"""Bad input over real sockets: every kind gets a clear error (fatal where needed), the room and
the other clients carry on, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import zmq
from zmq_helpers import (
    SCHEMA,
    RawClient,
    embedded_server,
    raw_clients,
    run_server,
    wait_until,
)

from rtecs.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Hello,
    LeaveEntry,
    Limits,
    Pong,
    Update,
    UpdateEntry,
    Welcome,
    encode,
)
from rtecs_server import RateLimit, RoomServer
from rtecs_server.zmq_transport import DEFAULT_RCVHWM, max_message_size

__all__ = ["embedded_server", "raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., RawClient]


def keep_syncing(a: RawClient, b: RawClient, round_: int) -> None:
    """One write by each honest client; wait until both see both."""
    a.update([0, 1, f"a{round_}"])
    b.update([0, 2, round_])
    wait_until(lambda: all(c.mirror.models[0][3].get(1) == f"a{round_}"
                           and c.mirror.models[0][3].get(2) == round_ for c in (a, b)),
               clients=[a, b], what=f"round {round_} to sync")


def test_an_attacker_gets_errors_while_two_clients_keep_syncing(
        raw_clients: MakeClient) -> None:
    with run_server("--rate-limit", "200:400") as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join("arena")
        b.join("arena")
        keep_syncing(a, b, 0)

        x = raw_clients(server.endpoint)   # never joins
        x.send_raw(b"\x00garbage\xff")
        assert x.expect_error("protocol").message.startswith("malformed MessagePack")
        keep_syncing(a, b, 1)
        truncated = encode(Hello(PROTOCOL_VERSION, "arena", "Game", SCHEMA, None))[:-7]
        x.send_raw(truncated)
        assert not x.expect_error("protocol").fatal
        x.send_raw(b"two", b"parts")
        assert "one frame part" in x.expect_error("protocol").message
        x.send_raw(encode(Update(1, [[0, 1, "x" * 200_000]])))
        assert "over the limit" in x.expect_error("over_limit").message
        x.send(Update(1, [[0, 1, "sneaky"]]))
        x.expect_error("not_joined")
        x.hello("arena", version=PROTOCOL_VERSION + 1)
        err = x.expect_error("version")
        assert err.fatal and "protocol version" in err.message
        x.hello("arena", schema={"Game": {1: ("title", "int", True)}})
        err = x.expect_error("schema")
        assert err.fatal and "title" in err.message
        keep_syncing(a, b, 2)

        # a frame over MAXMSGSIZE: libzmq drops that connection without a word
        huge = raw_clients(server.endpoint)
        huge.send_raw(b"\x00" * (max_message_size(Limits()) + 1))
        with pytest.raises(TimeoutError):
            huge.recv(0.3)
        keep_syncing(a, b, 3)

        y = raw_clients(server.endpoint)   # joins, then misbehaves
        y.join("arena")
        y.update([999_999, 1, "x"])                        # a model never created
        assert "never created" in y.expect_error("bad_update").message
        y.update([0, 1, 12345])                            # wrong value type
        assert "expected str" in y.expect_error("bad_update").message
        y.update([0, 1, "y" * 200_000])                    # over 125 KB: refused, resynced
        y.expect_error("over_limit")
        y.expect(lambda m: isinstance(m, Welcome) and len(y.welcomes) == 2, what="a resync")
        keep_syncing(a, b, 4)
        for _ in range(2000):                              # a flood
            y.ping()
        y.expect_error("rate_limit")
        assert y.expect_error("rate_limit").fatal
        wait_until(lambda: y.client_id not in a.mirror.clients, clients=[a, b])
        keep_syncing(a, b, 5)

        assert a.mirror.state() == b.mirror.state()
        assert a.mirror.models[0][3] == {1: "a5", 2: 5}   # nothing of the attackers' got in
        rejected = [e for c in (a,) for m in c.batches() for e in m.entries
                    if isinstance(e, UpdateEntry) and e.sender == y.client_id]
        assert rejected and all(e.rejected and not e.changes for e in rejected)
        newcomer = raw_clients(server.endpoint)
        welcome = newcomer.join("arena")
        assert welcome.snapshot[0][4] == {1: "a5", 2: 5}
        keep_syncing(a, newcomer, 6)
        assert "WARNING" in server.stderr and "malformed MessagePack" in server.stderr
        assert "over the rate limit" in server.stderr


def test_rate_limited_session_ends_and_the_others_see_it_leave(
        raw_clients: MakeClient) -> None:
    with RoomServer(rate_limit=RateLimit(rate=50, burst=20)) as server:
        a, flood = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join()
        flood.join()
        for _ in range(200):
            flood.ping()
        warn = flood.expect_error("rate_limit")
        assert not warn.fatal and "50 messages/s" in warn.message
        fatal = flood.expect_error("rate_limit")
        assert fatal.fatal and "session ended" in fatal.message
        pongs = sum(isinstance(m, Pong) for m in flood.received)
        assert pongs <= 20
        wait_until(lambda: any(LeaveEntry(flood.client_id) in m.entries for m in a.batches()),
                   clients=[a], what="the flooder's leave")


def test_updates_up_to_the_limit_pass_and_one_byte_more_does_not(
        embedded_server: RoomServer, raw_clients: MakeClient) -> None:
    a = raw_clients(embedded_server.endpoint)
    a.join()
    limit = Limits().max_update_bytes

    def frame_of(size: int, seq: int) -> bytes:
        base = encode(Update(seq, [[0, 1, ""]]))
        text = "z" * (size - len(base) - 4)      # fixstr → str32 header: 4 bytes more
        frame = encode(Update(seq, [[0, 1, text]]))
        assert len(frame) == size, len(frame)
        return frame

    a.send_raw(frame_of(limit, 1))
    wait_until(lambda: len(a.mirror.models[0][3].get(1, "")) > 100_000, clients=[a])
    a.send_raw(frame_of(limit + 1, 2))
    err = a.expect_error("over_limit")
    assert f"{limit + 1} bytes" in err.message and not err.fatal


def test_a_datastore_over_its_limit_refuses_growth_not_the_room(
        raw_clients: MakeClient) -> None:
    with RoomServer(limits=Limits(max_datastore_bytes=60_000)) as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join()
        b.join()
        a.update([0, 1, "x" * 50_000])
        a.update([0, 1, "y" * 70_000])
        err = a.expect_error("over_limit")
        assert "60000 bytes" in err.message
        b.update([0, 2, 1])
        wait_until(lambda: b.mirror.models[0][3].get(2) == 1 and a.mirror.models[0][3].get(2)
                   == 1, clients=[a, b])
        assert a.mirror.models[0][3][1] == "x" * 50_000
        assert a.mirror.state() == b.mirror.state()


def test_a_server_process_survives_random_bytes_from_many_sockets(
        raw_clients: MakeClient) -> None:
    import random
    rng = random.Random(3)
    with run_server() as server:
        honest = raw_clients(server.endpoint)
        honest.join()
        junk: list[Any] = []
        for _ in range(5):
            s = raw_clients(server.endpoint)
            for _ in range(50):
                s.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
            junk.append(s)
        for s in junk:
            s.expect_error("protocol")
        honest.update([0, 1, "still here"])
        wait_until(lambda: honest.mirror.models[0][3].get(1) == "still here", clients=[honest])
        assert isinstance(honest.batches()[-1], Batch)
        assert server.process.poll() is None


def test_socket_options_reach_the_router(embedded_server: RoomServer) -> None:
    sock = embedded_server.transport.socket
    assert sock.getsockopt(zmq.MAXMSGSIZE) == max_message_size(Limits())
    assert sock.getsockopt(zmq.LINGER) == 0
    assert sock.getsockopt(zmq.SNDHWM) == 1000
    assert sock.getsockopt(zmq.RCVHWM) == DEFAULT_RCVHWM == 100   # bounds unread input



def test_room_names_are_bounded_and_printable_so_logs_stay_small(
        raw_clients: MakeClient) -> None:
    """Issue 11 case 9: 900 KB room names were accepted and logged in full (539 MB of logs
    from 200 hellos); a NUL in a name made a room nobody can name on the command line. (The
    schema budget is lifted: it would drop most of these hellos unread, and the names are
    what is tested.)"""
    with run_server("--schema-budget", "0") as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join("arena")
        b.join("arena")
        attackers = [raw_clients(server.endpoint) for _ in range(10)]
        for i in range(5):
            for x in attackers:
                x.hello(f"{i}" + "n" * 900_000)
            keep_syncing(a, b, i)
        for x in attackers:
            err = x.expect_error("protocol")
            assert "a room name has 1 to 128 characters" in err.message
            assert len(err.message) < 300
        nul = raw_clients(server.endpoint)
        nul.hello("lob\x00by")
        assert "must be printable" in nul.expect_error("protocol").message
        longest = raw_clients(server.endpoint)
        assert longest.join("r" * 128).client_id >= 1
        keep_syncing(a, b, 9)
        assert len(server.stderr) < 100_000, f"{len(server.stderr)} bytes of logs"
