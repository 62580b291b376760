"""The in-flight cache (DESIGN §4): pure bookkeeping of this client's unanswered writes.

For every reliable property with writes the server has not answered yet, the cache keeps the
last value the server stream told (the *server value*) and the ordered list of this client's
writes, each tagged with the sequence number of the update that carries it. The visible value
is the newest write, or else the server value. Keys are opaque and hashable; values are
compared with ``==`` and type.

The datastore keeps the frame's unsent writes in its dirty set and only hands them to the
cache when it sends them (:meth:`InFlightCache.write`), so the cache is told which keys are
dirty whenever that matters: a dirty key is a newer local write, hidden behind nothing.
No I/O, no clocks, no threads: every method is deterministic.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterable, Iterator, Mapping

__all__ = ["InFlightCache"]


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


class _Entry:
    __slots__ = ("server", "writes")

    def __init__(self, server: object) -> None:
        self.server = server
        self.writes: list[tuple[int, object]] = []  # (seq, value), seq ascending


class InFlightCache:
    """Pending writes and server values of reliable properties, keyed by an opaque key."""

    __slots__ = ("_by_seq", "_entries")

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._by_seq: dict[int, list[Hashable]] = {}  # keys written per update, seq ascending

    def __len__(self) -> int:
        """Number of keys with unanswered writes (or a hidden server value)."""
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def pending(self, key: Hashable) -> list[tuple[int, object]]:
        """This key's unanswered writes as ``(seq, value)``, oldest first (a copy)."""
        entry = self._entries.get(key)
        return list(entry.writes) if entry is not None else []

    def server_value(self, key: Hashable, default: object = None) -> object:
        """The last server value the cache holds for ``key`` (``default`` if it holds none)."""
        entry = self._entries.get(key)
        return entry.server if entry is not None else default

    def write(self, key: Hashable, value: object, seq: int, frame_start: object) -> bool:
        """Record that update ``seq`` carries ``value`` for ``key``; return False if it need
        not be sent.

        ``frame_start`` is the value that was visible before this frame's writes. A write
        equal to what would be visible without it (the newest older write, else the server
        value) is dropped: changed and changed back within a frame sends nothing, while
        writing 0 over an in-flight 5 still sends 0.
        """
        entry = self._entries.get(key)
        if entry is None:
            if _same(value, frame_start):
                return False
            entry = self._entries[key] = _Entry(frame_start)
        else:
            under = entry.writes[-1][1] if entry.writes else entry.server
            if _same(value, under):
                if not entry.writes:
                    del self._entries[key]  # only held a hidden server value, now visible
                return False
        entry.writes.append((seq, value))
        keys = self._by_seq.get(seq)
        if keys is None:
            self._by_seq[seq] = [key]
        else:
            keys.append(key)
        return True

    def remote(self, key: Hashable, value: object, dirty: bool) -> bool:
        """Another client's write (from the server stream). Return True if it shows now.

        With writes in flight, or an unsent (``dirty``) local write, the local value is
        newer: the server value is updated and the visible value stays.
        """
        entry = self._entries.get(key)
        if entry is not None:
            entry.server = value
            return False
        if dirty:
            self._entries[key] = _Entry(value)
            return False
        return True

    def confirm(self, seq: int, accepted: Mapping[Hashable, object],
                dirty: Container[Hashable]) -> list[tuple[Hashable, object]]:
        """The server answered this client's update ``seq`` at its place in the stream.

        ``accepted`` maps keys to the values the server applied (possibly transformed); the
        rest of the update was rejected. Every write with sequence ≤ ``seq`` is settled. Returns
        ``(key, value)`` for every key whose visible value is now ``value`` (it may be
        unchanged; compare before emitting). Keys that are ``dirty`` keep their local value.
        """
        touched: list[Hashable] = []
        by_seq = self._by_seq
        while by_seq:
            first = next(iter(by_seq))
            if first > seq:
                break
            touched.extend(by_seq.pop(first))
        result: list[tuple[Hashable, object]] = []
        entries = self._entries
        for key, value in accepted.items():
            entry = entries.get(key)
            if entry is not None:
                entry.server = value
            elif key in dirty:
                entries[key] = _Entry(value)
            else:
                result.append((key, value))  # nothing local is newer: the server value shows
        for key in touched:
            entry = entries.get(key)
            if entry is None:
                continue
            writes = entry.writes
            while writes and writes[0][0] <= seq:
                del writes[0]
            if writes:
                result.append((key, writes[-1][1]))
            elif key not in dirty:
                del entries[key]
                result.append((key, entry.server))
        return result

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop these keys (their model was destroyed)."""
        for key in keys:
            self._entries.pop(key, None)

    def clear(self) -> dict[Hashable, object]:
        """Drop everything (a fresh snapshot replaces the state); return the keys that had
        unanswered writes, with the server value each held."""
        held = {key: entry.server for key, entry in self._entries.items() if entry.writes}
        self._entries.clear()
        self._by_seq.clear()
        return held

    def __iter__(self) -> Iterator[Hashable]:
        """The keys the cache holds (iterate over a copy if you change the cache meanwhile)."""
        return iter(self._entries)
