"""InFlightCache (DESIGN §4): pure bookkeeping of unanswered reliable writes."""

from __future__ import annotations

from rtecs.cache import InFlightCache

K, J, L = "k", "j", "l"


# ----------------------------------------------------------------------------- write

def test_first_write_records_the_server_value_and_the_write() -> None:
    c = InFlightCache()
    assert c.write(K, 5, 1, 0) is True
    assert K in c and len(c) == 1
    assert c.pending(K) == [(1, 5)]
    assert c.server_value(K) == 0


def test_write_equal_to_frame_start_with_nothing_in_flight_sends_nothing() -> None:
    c = InFlightCache()
    assert c.write(K, 0, 1, 0) is False
    assert K not in c and len(c) == 0
    assert c.pending(K) == []
    assert c.server_value(K, "none") == "none"


def test_equality_includes_the_type() -> None:
    c = InFlightCache()
    assert c.write(K, 1.0, 1, 1) is True
    assert c.write(J, True, 1, 1) is True
    assert c.write(L, 0, 1, False) is True
    assert c.write("m", None, 1, None) is False


def test_writing_zero_while_five_is_in_flight_still_sends_zero() -> None:
    c = InFlightCache()
    assert c.write(K, 5, 1, 0) is True
    # Frame 2 starts with 5 visible; the write of 0 equals the server value but not the
    # newest in-flight write, so it must be sent.
    assert c.write(K, 0, 2, 5) is True
    assert c.pending(K) == [(1, 5), (2, 0)]
    assert c.server_value(K) == 0


def test_changed_and_changed_back_with_a_write_in_flight_sends_nothing() -> None:
    c = InFlightCache()
    assert c.write(K, 5, 1, 0) is True
    assert c.write(K, 5, 2, 5) is False  # e.g. 5 → 7 → 5 within frame 2
    assert c.pending(K) == [(1, 5)]


def test_write_equal_to_a_hidden_server_value_sends_nothing_and_drops_the_entry() -> None:
    c = InFlightCache()
    # A remote value arrived while a local write was unsent (dirty): it is held, hidden.
    assert c.remote(K, 7, dirty=True) is False
    assert K in c and c.pending(K) == [] and c.server_value(K) == 7
    # The frame's value turns out equal to the server value: nothing to send.
    assert c.write(K, 7, 1, 0) is False
    assert K not in c and len(c) == 0


def test_write_differing_from_a_hidden_server_value_is_sent() -> None:
    c = InFlightCache()
    c.remote(K, 7, dirty=True)
    assert c.write(K, 0, 1, 0) is True  # equal to frame start, but not to the server value
    assert c.pending(K) == [(1, 0)]
    assert c.server_value(K) == 7


def test_pending_returns_a_copy() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    c.pending(K).append((9, 9))
    assert c.pending(K) == [(1, 5)]


# ----------------------------------------------------------------------------- remote

def test_remote_shows_when_nothing_is_local() -> None:
    c = InFlightCache()
    assert c.remote(K, 3, dirty=False) is True
    assert K not in c


def test_remote_is_hidden_while_a_write_is_pending() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    assert c.remote(K, 3, dirty=False) is False
    assert c.server_value(K) == 3
    assert c.pending(K) == [(1, 5)]
    assert c.remote(K, 4, dirty=True) is False
    assert c.server_value(K) == 4


def test_remote_is_hidden_while_dirty() -> None:
    c = InFlightCache()
    assert c.remote(K, 3, dirty=True) is False
    assert c.server_value(K) == 3
    assert c.remote(K, 4, dirty=False) is False  # the held entry keeps hiding it
    assert c.server_value(K) == 4


# ----------------------------------------------------------------------------- confirm

def test_confirm_accepted_settles_and_shows_the_server_value() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    assert c.confirm(1, {K: 5}, ()) == [(K, 5)]
    assert K not in c and len(c) == 0


def test_confirm_transformed_shows_the_transformed_value() -> None:
    c = InFlightCache()
    c.write(K, 500, 1, 0)
    assert c.confirm(1, {K: 100}, ()) == [(K, 100)]
    assert K not in c


def test_confirm_rejected_shows_the_server_value_held() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    assert c.confirm(1, {}, ()) == [(K, 0)]
    assert K not in c


def test_confirm_rejected_after_a_remote_write_shows_that_remote_value() -> None:
    """Blue/Red: A's write was ordered first, ours was rejected: A's value shows."""
    c = InFlightCache()
    c.write(K, "Red", 1, "None")
    assert c.remote(K, "Blue", dirty=False) is False
    assert c.confirm(1, {}, ()) == [(K, "Blue")]


def test_confirm_drops_writes_up_to_seq_and_keeps_newer_ones_visible() -> None:
    c = InFlightCache()
    c.write(K, 1, 1, 0)
    c.write(J, "a", 1, "")
    c.write(K, 2, 2, 1)
    c.write(K, 3, 3, 2)
    result = c.confirm(2, {K: 2}, ())
    assert dict(result) == {K: 3, J: ""}  # J's write was rejected: back to its server value
    assert c.pending(K) == [(3, 3)]
    assert c.server_value(K) == 2
    assert J not in c
    assert c.confirm(3, {K: 30}, ()) == [(K, 30)]
    assert len(c) == 0


def test_confirm_of_a_later_seq_settles_earlier_unanswered_writes() -> None:
    c = InFlightCache()
    c.write(K, 1, 1, 0)
    c.write(J, 2, 2, 0)
    result = c.confirm(2, {J: 2}, ())
    assert sorted(result, key=repr) == [(J, 2), (K, 0)]
    assert len(c) == 0


def test_confirm_keeps_dirty_keys_local() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    # A newer local write to K is unsent: the visible value stays, the server value is held.
    assert c.confirm(1, {K: 5}, {K}) == []
    assert K in c and c.pending(K) == [] and c.server_value(K) == 5
    # The next frame sends the dirty value (differs from the held server value).
    assert c.write(K, 9, 2, 5) is True
    assert c.confirm(2, {K: 9}, ()) == [(K, 9)]
    assert K not in c


def test_confirm_accepted_key_without_entry() -> None:
    c = InFlightCache()
    # Not dirty: the server value shows.
    assert c.confirm(1, {K: 4}, ()) == [(K, 4)]
    assert K not in c
    # Dirty: held hidden behind the unsent local write.
    assert c.confirm(2, {J: 4}, {J}) == []
    assert J in c and c.server_value(J) == 4 and c.pending(J) == []


def test_confirm_of_an_older_seq_leaves_newer_writes_alone() -> None:
    c = InFlightCache()
    c.write(K, 5, 2, 0)
    assert c.confirm(1, {}, ()) == []
    assert c.pending(K) == [(2, 5)]


def test_rejected_write_on_top_of_a_dirty_key_keeps_the_server_value_hidden() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    c.remote(K, 8, dirty=True)
    assert c.confirm(1, {}, {K}) == []
    assert c.server_value(K) == 8 and c.pending(K) == []


# ----------------------------------------------------------------------------- clear, forget

def test_clear_reports_keys_with_unanswered_writes_and_their_server_values() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    c.write(K, 6, 2, 5)
    c.write(J, "x", 2, "")
    c.remote(J, "y", dirty=False)
    c.remote(L, 1.5, dirty=True)  # hidden server value only: nothing to roll back
    assert c.clear() == {K: 0, J: "y"}
    assert len(c) == 0 and list(c) == []
    assert c.pending(K) == []
    # Old sequence numbers are forgotten too.
    assert c.confirm(2, {}, ()) == []


def test_forget_drops_keys() -> None:
    c = InFlightCache()
    c.write(K, 5, 1, 0)
    c.write(J, 5, 1, 0)
    c.forget([K, "absent"])
    assert K not in c and J in c
    assert list(c) == [J]
    assert c.confirm(1, {}, ()) == [(J, 0)]
