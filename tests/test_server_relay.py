"""Relaying over real sockets: joins, ordered batches, the same bytes to everyone, rooms,
plugins loaded by the CLI, and the embedded RoomServer's life cycle."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from zmq_helpers import (
    RawClient,
    ServerProcess,
    embedded_server,
    raw_clients,
    run_server,
    server_process,
    wait_until,
)

from rtecs.protocol import (
    Batch,
    Error,
    JoinEntry,
    Limits,
    UpdateEntry,
    Welcome,
)
from rtecs_server import RoomServer

__all__ = ["embedded_server", "raw_clients", "server_process"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., RawClient]


def entry_of(batch: Batch, sender: int, seq: int) -> UpdateEntry | None:
    for e in batch.entries:
        if isinstance(e, UpdateEntry) and (e.sender, e.seq) == (sender, seq):
            return e
    return None


def test_two_clients_get_ordered_updates_as_one_batch_of_identical_bytes(
        raw_clients: MakeClient) -> None:
    with run_server("--tick-ms", "300") as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join("duo")
        b.join("duo")
        wait_until(lambda: a.mirror.clients == b.mirror.clients == {1, 2}, clients=[a, b])
        idle_from = time.monotonic() + 0.3
        wait_until(lambda: time.monotonic() > idle_from, clients=[a, b], what="a quiet tick")
        # the server is idle: a lone update is relayed at once, not after the 300 ms tick
        sent = time.monotonic()
        a.update([0, 1, "a1"])
        wait_until(lambda: all(any(entry_of(m, 1, 1) for m in c.batches()) for c in (a, b)),
                   clients=[a, b], what="a's first update")
        assert time.monotonic() - sent < 0.2
        # within the tick that follows, everything both send becomes one batch
        a.update([0, 2, 10])
        a.update([0, 1, "a3"])
        b.update([0, 2, 20])
        b.update([0, 3, 1.5])
        wait_until(lambda: all(any(entry_of(m, 2, 2) for m in c.batches()) and
                               any(entry_of(m, 1, 3) for m in c.batches()) for c in (a, b)),
                   clients=[a, b], what="the second batch")
        batch = a.batches()[-1]
        order = [(e.sender, e.seq) for e in batch.entries if isinstance(e, UpdateEntry)]
        assert sorted(order) == [(1, 2), (1, 3), (2, 1), (2, 2)]       # all in one batch
        assert order.index((1, 2)) < order.index((1, 3))                # each client's order
        assert order.index((2, 1)) < order.index((2, 2))
        assert a.raw[-1] == b.raw[-1]                                   # the same bytes
        last_score = 10 if order.index((1, 2)) > order.index((2, 1)) else 20
        assert a.mirror.models[0][3] == {1: "a3", 2: last_score, 3: 1.5}
        assert a.mirror.state() == b.mirror.state()


def test_a_late_joiner_gets_the_snapshot_and_then_the_stream(
        server_process: ServerProcess, raw_clients: MakeClient) -> None:
    a = raw_clients(server_process.endpoint)
    a.join("late")
    a.update([0, 1, "before"], [0, 2, 7])
    wait_until(lambda: a.mirror.models[0][3].get(1) == "before", clients=[a])
    b = raw_clients(server_process.endpoint)
    welcome = b.join("late")
    assert welcome.snapshot[0][4] == {1: "before", 2: 7}
    assert welcome.room_seq == a.mirror.room_seq or welcome.room_seq == a.mirror.room_seq - 1
    b.update([0, 1, "after"])
    wait_until(lambda: a.mirror.models[0][3][1] == b.mirror.models[0][3][1] == "after",
               clients=[a, b])
    assert a.mirror.state() == b.mirror.state()


def test_rooms_are_isolated(server_process: ServerProcess, raw_clients: MakeClient) -> None:
    a, b = raw_clients(server_process.endpoint), raw_clients(server_process.endpoint)
    a.join("room-a")
    b.join("room-b")
    a.update([0, 1, "only in a"])
    wait_until(lambda: a.mirror.models[0][3].get(1) == "only in a", clients=[a, b])
    b.ping()
    b.expect(lambda m: type(m).__name__ == "Pong")
    assert b.mirror.models[0][3] == {}
    assert not any(isinstance(e, UpdateEntry) for m in b.batches() for e in m.entries)


def test_plugins_given_on_the_command_line_transform_and_reject(
        raw_clients: MakeClient) -> None:
    with run_server("--plugin", "server_plugins:shout", "--plugin",
                    "server_plugins:Doubler") as server:
        a = raw_clients(server.endpoint)
        a.join()
        a.update([0, 1, "hello"], [0, 2, 21])
        a.update([0, 1, "forbidden"])
        wait_until(lambda: a.mirror.room_seq >= 1 and any(
            entry_of(m, 1, 2) for m in a.batches()), clients=[a])
        assert a.mirror.models[0][3] == {1: "HELLO", 2: 42}
        rejected = next(e for m in a.batches() if (e := entry_of(m, 1, 2)))
        assert list(rejected.rejected) == [(0, 1)]


def test_max_clients_per_room(raw_clients: MakeClient) -> None:
    with RoomServer(max_clients_per_room=1) as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join()
        b.hello()
        err = b.expect_error("room_full")
        assert err.fatal
        c = raw_clients(server.endpoint)
        c.join("another room")


def test_an_empty_room_closes_after_its_timeout(raw_clients: MakeClient) -> None:
    with RoomServer(empty_room_timeout=0.2) as server:
        a = raw_clients(server.endpoint)
        a.join("brief")
        a.update([0, 2, 99])
        wait_until(lambda: a.mirror.models[0][3].get(2) == 99, clients=[a])
        a.bye()
        b = raw_clients(server.endpoint)
        wait_until(lambda: "brief" not in server.host.rooms, timeout=3, clients=[b])
        welcome = b.join("brief")
        assert welcome.client_id == 1 and welcome.snapshot[0][4] == {}


def test_embedded_server_lifecycle() -> None:
    server = RoomServer("tcp://127.0.0.1:0", heartbeat_timeout=60)
    assert server.endpoint.startswith("tcp://127.0.0.1:")
    assert not server.endpoint.endswith(":0")
    assert server.host.limits == Limits()
    assert (server.host.limits.max_update_bytes, server.host.limits.max_datastore_bytes) == (
        125 * 1024, 10 * 1024 * 1024)
    server.start()
    assert server.running
    with pytest.raises(RuntimeError):
        server.start()
    client = RawClient(server.endpoint)
    try:
        client.join()
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0    # no waiting for a poll timeout
        assert not server.running
        err = client.expect_error("shutdown")
        assert err.fatal
        server.stop()                              # twice is fine
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        client.close()


def test_a_server_that_never_started_can_be_stopped_and_frees_its_port() -> None:
    server = RoomServer()
    endpoint = server.endpoint
    server.stop()
    again = RoomServer(endpoint)     # the port is free again
    again.stop()


def test_binding_a_busy_port_is_a_clear_error(embedded_server: RoomServer) -> None:
    with pytest.raises(OSError, match="cannot bind"):
        RoomServer(embedded_server.endpoint)


def test_the_welcome_lists_present_clients_and_joins_stream_in(
        embedded_server: RoomServer, raw_clients: MakeClient) -> None:
    a = raw_clients(embedded_server.endpoint)
    a.join()
    b = raw_clients(embedded_server.endpoint)
    welcome = b.join()
    assert set(welcome.clients) == {1, 2}
    wait_until(lambda: any(JoinEntry(2) in m.entries for m in a.batches()), clients=[a])
    assert isinstance(b.received[0], Welcome)
    assert not any(isinstance(m, Error) for m in a.received + b.received)
