"""A client that cannot keep up (its send queue at the high-water mark) is never skipped
silently: it stops getting batches, and at its next ping it is sent the ones it missed from
the room's history — or, if they are gone, resynced with a fresh WELCOME."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import zmq
from zmq_helpers import RawClient, raw_clients, wait_until

from rtecs.protocol import Batch, Welcome
from rtecs_server import RateLimit, RoomServer

__all__ = ["raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., RawClient]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def host_log() -> Records:
    handler = Records()
    logger = logging.getLogger("rtecs_server.host")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("history", ["kept", "gone"])
def test_a_slow_consumer_catches_up_at_its_next_ping(raw_clients: MakeClient,
                                                     host_log: Records, history: str) -> None:
    options = {zmq.SNDBUF: 8192}
    # 60 KB writes as fast as they relay: more bytes a second than the update budget allows
    budget_off = RateLimit(update_bytes=0, update_changes=0)
    with RoomServer(sndhwm=2, socket_options=options, heartbeat_timeout=30,
                    rate_limit=budget_off, history_bytes=4 << 20 if history == "kept" else 0
                    ) as server:
        writer = raw_clients(server.endpoint)
        slow = raw_clients(server.endpoint, rcvhwm=1, rcvbuf=4096)
        writer.join()
        slow.join()
        stalled = False
        for i in range(200):   # 60 KB writes, one at a time; the slow client reads nothing
            writer.update([0, 1, f"{i:04d}" + "x" * 60_000])
            wait_until(lambda i=i: writer.mirror.models[0][3].get(1, "").startswith(
                f"{i:04d}"), clients=[writer], what=f"write {i} to be relayed")
            if any("cannot keep up" in m for m in host_log.messages):
                stalled = True
                break
        assert stalled, "the slow client never filled its queue"
        writer.update([0, 1, "final"], [0, 2, 42])
        wait_until(lambda: writer.mirror.models[0][3].get(1) == "final", clients=[writer])
        # the slow client now reads everything and pings: every batch it gets is contiguous
        # (RawClient's mirror asserts that), and it ends with the writer's state
        wait_until(lambda: slow.mirror.models[0][3].get(1) == "final", clients=[slow, writer],
                   ping_every=0.1, timeout=10, what="the slow client to catch up")
        assert slow.mirror.state() == writer.mirror.state()
        batches = [m.room_seq for m in slow.received if isinstance(m, Batch)]
        if history == "kept":     # the missed batches came from the history: no snapshot
            assert len(slow.welcomes) == 1
            assert batches == list(range(batches[0], batches[-1] + 1))
            assert batches[-1] == server.host.rooms["lobby"].room.room_seq
        else:                     # nothing kept: a fresh welcome, after a contiguous run
            assert len(slow.welcomes) == 2
            welcome = slow.welcomes[-1]
            before = [m.room_seq for m in slow.received[:slow.received.index(welcome)]
                      if isinstance(m, Batch)]
            assert before == list(range(before[0], before[0] + len(before)))
            assert welcome.room_seq > before[-1]
        # and it is a normal member again: new batches reach it
        writer.update([0, 2, 43])
        wait_until(lambda: slow.mirror.models[0][3].get(2) == 43, clients=[slow, writer])
        assert isinstance(slow.received[-1], Batch | Welcome)
