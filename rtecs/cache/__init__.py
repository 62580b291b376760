"""The in-flight cache (DESIGN §4): pure bookkeeping of this client's unanswered writes.

For every reliable property with writes the server has not answered yet, the cache keeps the
last value the server stream told (the *server value*) and the sequence number of the newest
update that carries a write of it. The visible value is the newest write (which is what the
model shows), or else the server value, so the cache never needs the written values
themselves: when the last pending write of a key is answered, the server value shows.

The datastore keeps the frame's unsent writes in its dirty set and hands them to the cache when
it sends them (:meth:`InFlightCache.record`). A dirty key is a newer local write too, so the
cache is told which keys are dirty whenever that matters. Keys are opaque and hashable.
No I/O, no clocks, no threads: every method is deterministic.

Costs: per sent key three dict operations; per answered key two; nothing per idle property.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterable, Iterator, Mapping, Sequence

__all__ = ["InFlightCache"]


class InFlightCache:
    """Server values and newest pending sequence of reliable properties, by opaque key."""

    __slots__ = ("_by_seq", "_latest", "_server")

    def __init__(self) -> None:
        self._server: dict[Hashable, object] = {}  # keys with pending or hidden remote writes
        self._latest: dict[Hashable, int] = {}     # key → newest unanswered update's seq
        self._by_seq: dict[int, Sequence[Hashable]] = {}  # seq → keys it carries, ascending

    def __len__(self) -> int:
        """Number of keys whose server value is held back (pending or dirty writes)."""
        return len(self._server)

    def __contains__(self, key: object) -> bool:
        return key in self._server

    def __iter__(self) -> Iterator[Hashable]:
        """The keys the cache holds (iterate over a copy if you change the cache meanwhile)."""
        return iter(self._server)

    def pending_seq(self, key: Hashable) -> int | None:
        """The seq of the newest unanswered update that writes ``key``, or None."""
        return self._latest.get(key)

    @property
    def pending_updates(self) -> int:
        """How many sent updates still carry unanswered reliable writes."""
        return len(self._by_seq)

    def server_value(self, key: Hashable, default: object = None) -> object:
        """The server value held back behind local writes (``default`` if none is held)."""
        return self._server.get(key, default)

    def hidden_remote(self, key: Hashable) -> tuple[bool, object]:
        """A server value that arrived while ``key`` had only an unsent write: ``(True,
        value)``, else ``(False, None)``. The datastore checks it when a frame changes a
        property back to its frame-start value: the write is still needed if it differs."""
        if key in self._server and key not in self._latest:
            return True, self._server[key]
        return False, None

    def drop_hidden(self, key: Hashable) -> None:
        """Forget a hidden server value that the visible value now equals."""
        if key not in self._latest:
            self._server.pop(key, None)

    def record(self, seq: int, keys: Sequence[Hashable], starts: Sequence[object]) -> None:
        """Update ``seq`` carries writes of ``keys``; ``starts`` are the values visible before
        this frame's writes (the server values, for keys with nothing in flight)."""
        if not keys:
            return
        server, latest = self._server, self._latest
        setdefault = server.setdefault  # every key in flight has a server value
        for key, start in zip(keys, starts, strict=True):
            setdefault(key, start)
            latest[key] = seq
        self._by_seq[seq] = keys

    def remote(self, key: Hashable, value: object, dirty: bool) -> bool:
        """Another client's write (from the server stream). Return True if it shows now.

        With writes in flight, or an unsent (``dirty``) local write, the local value is
        newer: the server value is updated and the visible value stays.
        """
        server = self._server
        if key in server or dirty:
            server[key] = value
            return False
        return True

    def confirm(self, seq: int, accepted: Iterable[tuple[Hashable, object]],
                dirty: Container[Hashable]) -> list[tuple[Hashable, object]]:
        """The server answered this client's update ``seq`` at its place in the stream.

        ``accepted`` lists ``(key, value)`` the server applied (values possibly transformed);
        the rest of the update was rejected. Every write with sequence ≤ ``seq`` is settled.
        Returns ``(key, value)`` for every key whose visible value is now ``value`` (it may
        equal the current one: compare before emitting). Dirty keys keep their local value.
        """
        server, latest = self._server, self._latest
        result: list[tuple[Hashable, object]] = []
        for key, value in accepted:
            if key in server or key in dirty:
                server[key] = value
            else:
                result.append((key, value))  # nothing local is newer (e.g. after a resync)
        by_seq = self._by_seq
        while by_seq:
            first = next(iter(by_seq))
            if first > seq:
                break
            for key in by_seq.pop(first):
                newest = latest.get(key)
                if newest is None or newest > seq:
                    continue
                del latest[key]
                if key in dirty:
                    continue
                result.append((key, server.pop(key)))
        if not server:
            self._server = {}  # let a once-huge table go (e.g. after creating many models)
        if not latest:
            self._latest = {}
        return result

    def renumber(self, mapping: Mapping[int, int]) -> None:
        """A new session epoch renumbered the unanswered updates: ``mapping`` takes every
        pending sequence number to its new one (keeping their order)."""
        self._by_seq = {mapping[seq]: keys for seq, keys in self._by_seq.items()}
        self._latest = {key: mapping[seq] for key, seq in self._latest.items()}

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop these keys (their model was destroyed)."""
        for key in keys:
            self._server.pop(key, None)
            self._latest.pop(key, None)

    def clear(self) -> dict[Hashable, object]:
        """Drop everything (a fresh snapshot replaces the state); return the keys that had
        unanswered writes, with the server value each held."""
        held = {key: self._server.get(key) for key in self._latest}
        self._server = {}
        self._latest = {}
        self._by_seq = {}
        return held
