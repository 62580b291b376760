"""InFlightCache (DESIGN §4): pure bookkeeping of unanswered reliable writes.

The cache keeps, per key with unanswered (or hidden-behind-dirty) writes, the server value and
the newest unanswered sequence; the visible value lives in the model. The "changed back within
a frame" decision is made by :meth:`Datastore.collect` (with ``hidden_remote``/``drop_hidden``),
so those rules are tested through a real datastore at the end of this file.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from rtecs.cache import InFlightCache
from rtecs.datastore import Datastore
from rtecs.model import Change, ChangeSource, RealtimeModel, prop
from rtecs.protocol import SnapshotRecord, Update, UpdateEntry, Welcome

K, J, L = "k", "j", "l"
NOTHING: tuple[bool, object] = (False, None)


# ============================================================================ the cache alone

# ----------------------------------------------------------------------------- record

def test_record_holds_the_server_value_and_the_newest_seq() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    assert K in c and len(c) == 1 and list(c) == [K]
    assert c.pending_seq(K) == 1
    assert c.server_value(K) == 0
    assert c.pending_updates == 1
    assert c.hidden_remote(K) == NOTHING  # in flight, not merely hidden


def test_record_without_keys_records_nothing() -> None:
    c = InFlightCache()
    c.record(1, [], [])
    assert len(c) == 0 and c.pending_updates == 0
    assert c.pending_seq(K) is None
    assert c.server_value(K, "none") == "none"
    assert c.confirm(1, [], ()) == []


def test_record_needs_a_start_value_per_key() -> None:
    c = InFlightCache()
    with pytest.raises(ValueError):
        c.record(1, [K, J], [0])


def test_a_newer_write_keeps_the_first_server_value() -> None:
    """Writing 0 while 5 is in flight: the server value stays the one before the first write;
    the newest unanswered seq moves on."""
    c = InFlightCache()
    c.record(1, [K], [0])   # 0 → 5
    c.record(2, [K], [5])   # 5 → 0 (frame start was the in-flight 5)
    assert c.pending_seq(K) == 2
    assert c.server_value(K) == 0
    assert c.pending_updates == 2 and len(c) == 1


def test_record_keeps_a_hidden_server_value() -> None:
    c = InFlightCache()
    assert c.remote(K, 7, dirty=True) is False
    assert c.hidden_remote(K) == (True, 7)
    c.record(1, [K], [0])  # the frame start 0 is older than the server value 7
    assert c.server_value(K) == 7
    assert c.pending_seq(K) == 1
    assert c.hidden_remote(K) == NOTHING
    assert c.confirm(1, [], ()) == [(K, 7)]  # rejected: the held server value shows


# ----------------------------------------------------------------------------- hidden remote

def test_hidden_remote_only_for_keys_without_writes_in_flight() -> None:
    c = InFlightCache()
    assert c.hidden_remote(K) == NOTHING
    c.remote(K, 3, dirty=True)
    assert c.hidden_remote(K) == (True, 3)
    c.remote(K, 4, dirty=True)
    assert c.hidden_remote(K) == (True, 4)  # the newest server value
    c.record(1, [J], [0])
    c.remote(J, 9, dirty=False)
    assert c.hidden_remote(J) == NOTHING     # held, but behind a write in flight


def test_drop_hidden_forgets_only_a_hidden_value() -> None:
    c = InFlightCache()
    c.remote(K, 3, dirty=True)
    c.record(1, [J], [0])
    c.remote(J, 9, dirty=True)
    c.drop_hidden(K)
    c.drop_hidden(J)         # in flight: kept
    c.drop_hidden("absent")  # nothing to drop: no error
    assert K not in c and c.server_value(K, "none") == "none"
    assert J in c and c.server_value(J) == 9 and c.pending_seq(J) == 1
    assert len(c) == 1 and list(c) == [J]


# ----------------------------------------------------------------------------- remote

def test_remote_shows_when_nothing_is_local() -> None:
    c = InFlightCache()
    assert c.remote(K, 3, dirty=False) is True
    assert K not in c and len(c) == 0


def test_remote_is_hidden_while_a_write_is_pending() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    assert c.remote(K, 3, dirty=False) is False
    assert c.server_value(K) == 3
    assert c.pending_seq(K) == 1
    assert c.remote(K, 4, dirty=True) is False
    assert c.server_value(K) == 4
    assert len(c) == 1


def test_remote_is_hidden_while_dirty() -> None:
    c = InFlightCache()
    assert c.remote(K, 3, dirty=True) is False
    assert c.server_value(K) == 3 and c.pending_seq(K) is None
    assert c.remote(K, 4, dirty=False) is False  # the held entry keeps hiding it
    assert c.server_value(K) == 4


def test_remote_to_another_key_is_not_hidden() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    assert c.remote(J, 1, dirty=False) is True
    assert J not in c and list(c) == [K]


# ----------------------------------------------------------------------------- confirm

def test_confirm_accepted_settles_and_returns_the_server_value() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    assert c.confirm(1, [(K, 5)], ()) == [(K, 5)]
    assert K not in c and len(c) == 0
    assert c.pending_seq(K) is None and c.pending_updates == 0


def test_confirm_transformed_returns_the_transformed_value() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])  # wrote 500
    assert c.confirm(1, [(K, 100)], ()) == [(K, 100)]
    assert K not in c


def test_confirm_rejected_returns_the_server_value_held() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    assert c.confirm(1, [], ()) == [(K, 0)]
    assert K not in c and c.pending_updates == 0


def test_confirm_rejected_after_a_remote_write_returns_that_remote_value() -> None:
    """Blue/Red: A's write was ordered first, ours was rejected: A's value shows."""
    c = InFlightCache()
    c.record(1, [K], ["None"])  # wrote "Red"
    assert c.remote(K, "Blue", dirty=False) is False
    assert c.confirm(1, [], ()) == [(K, "Blue")]
    assert len(c) == 0


def test_confirm_accepts_any_iterable_of_pairs() -> None:
    c = InFlightCache()
    c.record(1, [K, J], [0, 0])
    result = c.confirm(1, iter([(K, 1), (J, 2)]), frozenset())
    assert sorted(result) == [(J, 2), (K, 1)]


def test_answering_n_keeps_writes_in_n_plus_1_pending_and_their_visible_value() -> None:
    c = InFlightCache()
    c.record(1, [K, J], [0, ""])  # K 0 → 1, J "" → "a"
    c.record(2, [K], [1])         # K 1 → 2
    c.record(3, [K], [2])         # K 2 → 3
    assert c.pending_updates == 3
    # Update 2 answered (1 with it, unanswered before it): K's write in 3 is newer, so K's
    # visible value (3) is left alone; J's write was rejected and falls back to "".
    assert c.confirm(2, [(K, 2)], ()) == [(J, "")]
    assert c.pending_seq(K) == 3
    assert c.server_value(K) == 2  # the accepted value, held behind the write in 3
    assert J not in c and c.pending_updates == 1
    assert c.confirm(3, [(K, 30)], ()) == [(K, 30)]
    assert len(c) == 0 and c.pending_updates == 0


def test_rejecting_n_plus_1_after_accepting_n_returns_n_s_value() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])  # 0 → 5
    c.record(2, [K], [5])  # 5 → 0
    assert c.confirm(1, [(K, 5)], ()) == []
    assert c.server_value(K) == 5 and c.pending_seq(K) == 2
    assert c.confirm(2, [], ()) == [(K, 5)]
    assert len(c) == 0


def test_a_remote_between_two_answers_is_what_a_later_rejection_shows() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.record(2, [K], [5])
    assert c.confirm(1, [(K, 5)], ()) == []
    assert c.remote(K, 8, dirty=False) is False  # ordered after 1, before 2: still hidden
    assert c.confirm(2, [], ()) == [(K, 8)]


def test_confirm_of_a_later_seq_settles_earlier_unanswered_writes() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.record(2, [J], [0])
    result = c.confirm(2, [(J, 2)], ())
    assert sorted(result, key=repr) == [(J, 2), (K, 0)]
    assert len(c) == 0 and c.pending_updates == 0


def test_confirm_of_an_older_seq_leaves_newer_writes_alone() -> None:
    c = InFlightCache()
    c.record(2, [K], [0])
    assert c.confirm(1, [], ()) == []
    assert c.pending_seq(K) == 2 and c.pending_updates == 1
    assert c.server_value(K) == 0


def test_confirm_keeps_dirty_keys_local() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    # A newer local write to K is unsent: the visible value stays, the server value is held.
    assert c.confirm(1, [(K, 5)], {K}) == []
    assert K in c and c.pending_seq(K) is None and c.server_value(K) == 5
    assert c.hidden_remote(K) == (True, 5)
    assert c.pending_updates == 0
    # The next frame sends the dirty value; the held server value stays the server value.
    c.record(2, [K], [5])
    assert c.server_value(K) == 5
    assert c.confirm(2, [(K, 9)], ()) == [(K, 9)]
    assert K not in c


def test_confirm_accepted_key_without_entry() -> None:
    c = InFlightCache()
    # Not dirty: the server value shows (e.g. a value the server added to the answer).
    assert c.confirm(1, [(K, 4)], ()) == [(K, 4)]
    assert K not in c
    # Dirty: held hidden behind the unsent local write.
    assert c.confirm(2, [(J, 4)], {J}) == []
    assert J in c and c.server_value(J) == 4 and c.pending_seq(J) is None
    assert c.hidden_remote(J) == (True, 4)


def test_rejected_write_on_top_of_a_dirty_key_keeps_the_server_value_hidden() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.remote(K, 8, dirty=True)
    assert c.confirm(1, [], {K}) == []
    assert c.server_value(K) == 8 and c.pending_seq(K) is None
    assert c.hidden_remote(K) == (True, 8)


def test_a_dirty_key_with_a_newer_write_in_flight_is_left_alone() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.record(2, [K], [5])
    assert c.confirm(1, [(K, 5)], {K}) == []
    assert c.pending_seq(K) == 2 and c.server_value(K) == 5
    assert c.hidden_remote(K) == NOTHING


# ----------------------------------------------------------------------------- clear, forget

def test_clear_reports_keys_with_unanswered_writes_and_their_server_values() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.record(2, [K, J], [5, ""])
    c.remote(J, "y", dirty=False)
    c.remote(L, 1.5, dirty=True)  # hidden server value only: nothing to roll back
    assert c.clear() == {K: 0, J: "y"}
    assert len(c) == 0 and list(c) == [] and L not in c
    assert c.pending_seq(K) is None and c.pending_updates == 0
    assert c.hidden_remote(L) == NOTHING
    # Old sequence numbers are forgotten too.
    assert c.confirm(2, [], ()) == []
    assert c.clear() == {}


def test_forget_drops_keys() -> None:
    c = InFlightCache()
    c.record(1, [K, J], [0, 0])
    c.remote(L, 2, dirty=True)
    c.forget([K, L, "absent"])
    assert K not in c and L not in c and J in c
    assert list(c) == [J] and len(c) == 1
    assert c.pending_seq(K) is None
    assert c.confirm(1, [], ()) == [(J, 0)]  # the forgotten key is not settled
    assert len(c) == 0


def test_a_forgotten_key_accepted_later_is_shown_not_held() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.forget([K])
    # Its model is gone here; the datastore ignores the pair, the cache just passes it on.
    assert c.confirm(1, [(K, 5)], ()) == [(K, 5)]
    assert len(c) == 0


def test_iteration_covers_pending_and_hidden_keys() -> None:
    c = InFlightCache()
    c.record(1, [K], [0])
    c.remote(J, 1, dirty=True)
    assert set(c) == {K, J} and len(c) == 2
    for key in list(c):
        c.forget([key])
    assert len(c) == 0


def test_the_tables_are_released_when_empty() -> None:
    c = InFlightCache()
    keys = [("model", i) for i in range(5000)]
    c.record(1, keys, [0] * len(keys))
    empty = sys.getsizeof({})
    assert sys.getsizeof(c._server) > 10 * empty
    assert sys.getsizeof(c._latest) > 10 * empty
    result = c.confirm(1, [(k, 1) for k in keys], ())
    assert len(result) == len(keys) and len(c) == 0
    assert sys.getsizeof(c._server) <= empty
    assert sys.getsizeof(c._latest) <= empty
    c.record(2, keys, [1] * len(keys))
    c.clear()
    assert sys.getsizeof(c._server) <= empty and sys.getsizeof(c._latest) <= empty


def test_tables_shrink_only_once_every_key_is_settled() -> None:
    c = InFlightCache()
    keys = [("model", i) for i in range(5000)]
    c.record(1, keys, [0] * len(keys))
    c.record(2, [K], [0])
    assert len(c.confirm(1, [], ())) == len(keys)
    assert list(c) == [K] and c.pending_seq(K) == 2  # the survivor is intact
    assert c.confirm(2, [], ()) == [(K, 0)]
    assert sys.getsizeof(c._server) <= sys.getsizeof({})


# ============================================================================ through collect()

ME, OTHER = 1, 2


class CacheRoom(RealtimeModel):
    x: int = prop(1, default=0)
    f: float = prop(2, default=0.0)
    maybe: int | None = prop(3, default=None)
    pos: float = prop(4, default=0.0, reliable=False)


X = CacheRoom.x
F = CacheRoom.f


def store() -> tuple[Datastore, CacheRoom, list[Change]]:
    room = CacheRoom()
    ds = Datastore(room)
    ds.load_snapshot(Welcome(ME, 0, 0.0, [], [ME]))
    seen: list[Change] = []
    ds.changes.subscribe(seen.append)
    return ds, room, seen


def remote(ds: Datastore, pid: int, value: Any) -> None:
    ds.apply_entry(UpdateEntry(OTHER, 1, [[0, pid, value]], []))
    ds.flush_emissions()


def answer(ds: Datastore, seq: int, accepted: dict[int, Any], rejected: tuple[int, ...] = ()
           ) -> None:
    changes = [[0, *[v for item in accepted.items() for v in item]]] if accepted else []
    ds.apply_entry(UpdateEntry(ME, seq, changes, [(0, pid) for pid in rejected]))
    ds.flush_emissions()


def shown(seen: list[Change]) -> list[tuple[Any, ChangeSource]]:
    out = [(c.new, c.source) for c in seen]
    seen.clear()
    return out


def test_writing_zero_while_five_is_in_flight_still_sends_zero() -> None:
    ds, room, seen = store()
    room.x = 5
    assert ds.collect() == Update(1, [[0, 1, 5]])
    # Frame 2 starts with 5 visible; 0 equals the server value but not the frame start.
    room.x = 0
    assert ds.collect() == Update(2, [[0, 1, 0]])
    key = (room, X)
    assert ds.cache.pending_seq(key) == 2 and ds.cache.server_value(key) == 0
    assert shown(seen) == [(5, ChangeSource.LOCAL), (0, ChangeSource.LOCAL)]
    answer(ds, 1, {1: 5})
    assert room.x == 0 and shown(seen) == []  # 2 is newer: no flicker back to 5
    answer(ds, 2, {1: 0})
    assert room.x == 0 and shown(seen) == [] and len(ds.cache) == 0


def test_a_write_equal_to_the_server_value_with_nothing_in_flight_sends_nothing() -> None:
    ds, room, _ = store()
    room.x = 5
    room.x = 0
    assert ds.collect() is None
    assert len(ds.cache) == 0 and ds.next_seq == 1 and not ds.has_unsent_changes
    # Also after a remote value: 3 → 4 → 3 sends nothing.
    remote(ds, 1, 3)
    room.x = 4
    room.x = 3
    assert ds.collect() is None and len(ds.cache) == 0


def test_changed_and_changed_back_with_a_write_in_flight_sends_nothing() -> None:
    ds, room, seen = store()
    room.x = 5
    assert ds.collect() is not None
    room.x = 7
    room.x = 5
    assert ds.collect() is None
    key = (room, X)
    assert ds.cache.pending_seq(key) == 1 and ds.cache.server_value(key) == 0
    seen.clear()
    answer(ds, 1, {1: 5})
    assert room.x == 5 and shown(seen) == [] and len(ds.cache) == 0


def test_changed_back_after_a_remote_value_arrived_during_the_frame_still_sends() -> None:
    ds, room, seen = store()
    room.x = 5
    remote(ds, 1, 7)  # hidden behind the unsent 5
    assert room.x == 5
    room.x = 0        # back to the frame start, but the server now holds 7
    assert shown(seen) == [(5, ChangeSource.LOCAL), (0, ChangeSource.LOCAL)]
    assert ds.collect() == Update(1, [[0, 1, 0]])
    key = (room, X)
    assert ds.cache.pending_seq(key) == 1 and ds.cache.server_value(key) == 7
    answer(ds, 1, {1: 0})
    assert room.x == 0 and shown(seen) == [] and len(ds.cache) == 0


def test_changed_back_after_a_rejected_remote_value_shows_the_remote_value() -> None:
    ds, room, seen = store()
    room.x = 5
    remote(ds, 1, 7)
    room.x = 0
    assert ds.collect() == Update(1, [[0, 1, 0]])
    seen.clear()
    answer(ds, 1, {}, rejected=(1,))
    assert room.x == 7 and shown(seen) == [(7, ChangeSource.ROLLBACK)]


def test_changed_back_to_a_remote_value_equal_to_the_frame_start_sends_nothing() -> None:
    ds, room, _ = store()
    room.x = 5
    remote(ds, 1, 0)  # another client wrote what this frame started with
    room.x = 0
    assert ds.collect() is None
    assert len(ds.cache) == 0  # the hidden entry was dropped: visible equals the server
    remote(ds, 1, 2)
    assert room.x == 2  # nothing hides later remote values


def test_a_value_equal_to_a_hidden_server_value_but_not_the_frame_start_is_sent() -> None:
    """Only a change back to the frame start is dropped (DESIGN §4.1: never compared with the
    server value). The old cache also dropped this write; now it is sent, harmlessly."""
    ds, room, seen = store()
    room.x = 9
    remote(ds, 1, 7)
    room.x = 7
    assert ds.collect() == Update(1, [[0, 1, 7]])
    key = (room, X)
    assert ds.cache.server_value(key) == 7 and ds.cache.pending_seq(key) == 1
    seen.clear()
    answer(ds, 1, {1: 7})
    assert room.x == 7 and shown(seen) == [] and len(ds.cache) == 0


def test_a_value_differing_from_a_hidden_server_value_is_sent() -> None:
    ds, room, _ = store()
    room.x = 9
    remote(ds, 1, 7)
    room.x = 4
    assert ds.collect() == Update(1, [[0, 1, 4]])
    key = (room, X)
    assert ds.cache.server_value(key) == 7 and ds.cache.pending_seq(key) == 1


def test_an_answer_accepted_during_a_changed_back_frame_sends_nothing() -> None:
    ds, room, seen = store()
    room.x = 5
    ds.collect()
    room.x = 7
    answer(ds, 1, {1: 5})  # the key is dirty: held hidden, 7 stays visible
    assert room.x == 7 and ds.cache.hidden_remote((room, X)) == (True, 5)
    room.x = 5
    assert ds.collect() is None
    assert len(ds.cache) == 0
    seen.clear()
    remote(ds, 1, 1)
    assert room.x == 1 and shown(seen) == [(1, ChangeSource.REMOTE)]


def test_an_answer_rejected_during_a_changed_back_frame_resends() -> None:
    ds, room, seen = store()
    room.x = 5
    ds.collect()
    room.x = 7
    seen.clear()
    answer(ds, 1, {}, rejected=(1,))  # dirty: 7 stays, the server value 0 is held
    assert room.x == 7 and shown(seen) == []
    room.x = 5  # the frame start, but the server holds 0
    assert ds.collect() == Update(2, [[0, 1, 5]])
    key = (room, X)
    assert ds.cache.server_value(key) == 0 and ds.cache.pending_seq(key) == 2
    seen.clear()
    answer(ds, 2, {}, rejected=(1,))
    assert room.x == 0 and shown(seen) == [(0, ChangeSource.ROLLBACK)]


def test_changed_back_comparisons_include_the_type() -> None:
    ds, room, _ = store()
    # A remote int on a float property (values from the stream are shown as they come).
    remote(ds, 2, 1)
    assert type(room.f) is int
    room.f = 2.0
    room.f = 1  # coerced to 1.0: equal to the frame start 1, but not the same type
    assert type(room.f) is float
    assert ds.collect() == Update(1, [[0, 2, 1.0]])
    answer(ds, 1, {2: 1.0})
    # The hidden server value's type counts too: 0.0 → 5.0, remote int 0, back to 0.0.
    room.f = 0.0
    assert ds.collect() is not None
    answer(ds, 2, {2: 0.0})
    room.f = 5.0
    remote(ds, 2, 0)
    assert ds.cache.hidden_remote((room, F)) == (True, 0)
    room.f = 0.0
    assert ds.collect() == Update(3, [[0, 2, 0.0]])
    # None is None: an optional property changed back to None sends nothing.
    room.maybe = 0
    room.maybe = None
    assert ds.collect() is None


def test_unreliable_properties_never_enter_the_cache() -> None:
    ds, room, _ = store()
    room.pos = 1.0
    remote(ds, 4, 2.0)  # applied at once, even over the unsent local value
    assert room.pos == 2.0
    assert ds.collect() is None  # nothing left to send
    room.pos = 3.0
    room.pos = 2.0  # back to the frame-start value: sent all the same (DESIGN §4)
    assert ds.collect() == Update(1, [[0, 4, 2.0]])
    room.pos = 4.0
    assert ds.collect() == Update(2, [[0, 4, 4.0]])
    assert len(ds.cache) == 0 and ds.cache.pending_updates == 0


def test_a_resync_rolls_back_unanswered_writes_and_empties_the_cache() -> None:
    ds, room, seen = store()
    room.x = 5
    ds.collect()
    room.f = 1.0  # unsent
    remote(ds, 2, 3.0)
    seen.clear()
    ds.load_snapshot(Welcome(ME, 10, 0.0, [SnapshotRecord(0, "CacheRoom", -1, 0,
                                                          {1: 2, 2: 3.0})], [ME]))
    ds.flush_emissions()
    assert room.x == 2 and room.f == 3.0
    assert sorted(shown(seen), key=repr) == [(2, ChangeSource.ROLLBACK),
                                             (3.0, ChangeSource.ROLLBACK)]
    assert len(ds.cache) == 0 and ds.cache.pending_updates == 0
    assert ds.next_seq == 1
