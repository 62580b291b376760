"""StreamOrder: batches handed on strictly by room_seq, from one channel or two (DESIGN §4b,
§5): duplicates dropped, early batches held in a bounded buffer, an unbridgeable hole
reported."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from rtecs.stream import StreamOrder


class B(NamedTuple):
    room_seq: int


def seqs(batches: list[B] | None) -> list[int] | None:
    return None if batches is None else [b.room_seq for b in batches]


def test_one_ordered_channel_takes_each_next_batch_and_reports_any_hole() -> None:
    order: StreamOrder[B] = StreamOrder()
    order.reset(10)
    assert seqs(order.offer(B(11))) == [11]
    assert seqs(order.offer(B(11))) == []      # a duplicate
    assert seqs(order.offer(B(9))) == []       # covered by the snapshot
    assert order.offer(B(13)) is None          # 12 is missing, nothing can wait
    assert order.last == 11 and order.waiting == 0


def test_two_channels_are_stitched_in_order_within_the_window() -> None:
    order: StreamOrder[B] = StreamOrder(window=3)
    assert seqs(order.offer(B(2))) == []       # early: waits for 1
    assert seqs(order.offer(B(4))) == []
    assert seqs(order.offer(B(2))) == []       # the same batch over the other channel
    assert order.waiting == 2
    assert seqs(order.offer(B(1))) == [1, 2]   # 3 still missing: 4 keeps waiting
    assert seqs(order.offer(B(3))) == [3, 4]
    assert order.last == 4 and order.waiting == 0


def test_a_hole_wider_than_the_window_is_reported_and_a_snapshot_resets() -> None:
    order: StreamOrder[B] = StreamOrder(window=2)
    assert seqs(order.offer(B(3))) == []
    assert seqs(order.offer(B(4))) == []
    assert order.offer(B(6)) is None           # the buffer is full: resync
    order.reset(2)                             # the snapshot covers up to 2
    assert seqs(order.take_ready()) == [3, 4]  # what waited follows the snapshot
    order.reset(4)
    assert seqs(order.offer(B(6))) == []       # waits for 5
    order.reset(5)                             # a snapshot that covers 5
    assert seqs(order.offer(B(6))) == [6]      # the same 6 again: once
    assert order.waiting == 0 and order.last == 6


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        StreamOrder(window=-1)
