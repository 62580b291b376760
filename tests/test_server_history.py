"""One batch history per room, bounded in bytes (DESIGN §5): every frame the room fans out is
kept as (room_seq, frame), oldest dropped first beyond the budget; ``history_since`` gives the
frames after a batch, or None once they are gone. Its memory is accounted, and the accounting
is an upper bound of what the frames it holds really cost."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from test_server_host import FakeTransport, hello, update

from rtecs.protocol import Batch, Bye, decode_server_message, encode
from rtecs_server import RoomHost
from rtecs_server.hosted import DEFAULT_HISTORY_BYTES, ENTRY_OVERHEAD, BatchHistory

pytestmark = pytest.mark.timeout(10)


def frame(i: int, size: int = 100) -> bytes:
    return (f"{i:08d}".encode() * (size // 8 + 1))[:size]


def test_the_oldest_frames_go_first_beyond_the_budget() -> None:
    history = BatchHistory(max_bytes=5 * (100 + ENTRY_OVERHEAD))
    for seq in range(1, 9):
        history.append(seq, frame(seq))
        assert history.bytes <= history.max_bytes
    assert [seq for seq, _ in history] == [4, 5, 6, 7, 8]
    assert history.bytes == 5 * (100 + ENTRY_OVERHEAD)
    assert (history.first_seq, history.last_seq) == (4, 8)
    assert history.since(3) == [frame(i) for i in range(4, 9)]
    assert history.since(6) == [frame(7), frame(8)]
    assert history.since(8) == []                      # up to date: nothing missed
    assert history.since(2) is None                    # batch 3 is gone
    assert history.since(9) is None and history.since(-1) is None  # not of this stream
    with pytest.raises(ValueError, match="does not follow"):
        history.append(10, frame(10))                  # a hole would hand out a gap


def test_a_frame_over_the_whole_budget_is_not_kept_and_zero_keeps_nothing() -> None:
    history = BatchHistory(max_bytes=1000)
    history.append(1, frame(1))
    history.append(2, frame(2, 2000))
    assert (len(history), history.bytes, history.last_seq) == (0, 0, 2)
    assert history.since(2) == [] and history.since(1) is None
    history.append(3, frame(3))
    assert history.since(2) == [frame(3)]
    nothing = BatchHistory(max_bytes=0)
    nothing.append(1, b"x")
    assert nothing.since(0) is None and nothing.since(1) == [] and nothing.bytes == 0
    with pytest.raises(ValueError):
        BatchHistory(max_bytes=-1)


def test_the_accounted_bytes_bound_the_memory_the_history_holds() -> None:
    """Measured with tracemalloc (allocations, not RSS): 2,000 frames of 300 bytes through a
    64 KiB history. The accounting equals the formula, stays within the budget, and is at
    least what the kept frames and their bookkeeping really take."""
    budget = 64 * 1024
    history = BatchHistory(max_bytes=budget)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, 2001):
            history.append(seq, frame(seq, 300))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    kept = len(history)
    assert history.bytes == kept * (300 + ENTRY_OVERHEAD) <= budget
    assert kept == budget // (300 + ENTRY_OVERHEAD)
    assert kept * 300 < held <= history.bytes + 1024   # + one deque block at most
    assert [seq for seq, _ in history][-1] == 2000


def test_every_fanned_out_frame_is_kept_and_handed_back_after_a_batch() -> None:
    t = FakeTransport()
    host = RoomHost(t, history_bytes=4 * (200 + ENTRY_OVERHEAD))
    host.handle(b"a", hello(), 0.0)
    host.handle(b"b", hello(), 0.0)
    host.flush(0.0)
    for seq in range(1, 7):
        host.handle(b"a", update(seq, [0, 1, f"v{seq}"]), seq / 10)
        host.flush(seq / 10)
    hosted = host.rooms["lobby"]
    sent = [f for f in t.frames_to(b"a") if isinstance(decode_server_message(f), Batch)]
    kept = [f for _, f in hosted.history]
    assert all(any(k is s for s in sent) for k in kept)  # the very bytes sent, not copies
    last = hosted.room.room_seq
    assert [seq for seq, _ in hosted.history][-1] == last
    assert hosted.history.bytes <= 4 * (200 + ENTRY_OVERHEAD)
    missed = hosted.history_since(last - 2)
    assert missed is not None
    assert [decode_server_message(f).room_seq for f in missed] == [  # type: ignore[union-attr]
        last - 1, last]
    assert hosted.history_since(hosted.history.first_seq - 2) is None
    # a room every session left keeps no history: nobody can resume into it
    host.handle(b"a", encode(Bye()), 1.0)
    host.handle(b"b", encode(Bye()), 1.0)
    host.flush(1.0)
    assert hosted.history.bytes < 200 + ENTRY_OVERHEAD and len(hosted.history) <= 1


def test_the_default_budget_and_the_host_parameter() -> None:
    assert DEFAULT_HISTORY_BYTES == 1 << 20
    host = RoomHost(FakeTransport())
    host.handle(b"a", hello(), 0.0)
    assert host.rooms["lobby"].history.max_bytes == DEFAULT_HISTORY_BYTES
    with pytest.raises(ValueError, match="history_bytes"):
        RoomHost(FakeTransport(), history_bytes=-1)
    small = RoomHost(FakeTransport(), history_bytes=12345)
    small.handle(b"a", hello("x"), 0.0)
    assert small.rooms["x"].history.max_bytes == 12345
