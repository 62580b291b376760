"""Delta tracking: the frame's dirty set, the updates it becomes, and what they carried.

- Dirty set: ``(model, prop)`` → the value visible before the frame's first write, in the
  order of the last writes (a key written again moves to the end: the server checks each
  change where it falls, e.g. after an ownership request). Creates and destroys are dirty
  markers too. Per-frame cost grows with the changed properties, not the datastore's size.
- :meth:`DeltaTracker.collect` makes it the next :class:`~rtecs.protocol.Update` (under a
  byte budget if given); reliable writes go to the :class:`~rtecs.cache.InFlightCache`.
- Unanswered updates: their runs, reliable and unreliable writes, creates under collections
  and destroys, so an answer accepting one as sent is settled in bulk, and a resync can
  settle or renumber them. Unreliable properties with an own write unsent or in flight keep
  the latest seq sent and the stream's value (*server value*), shown again if the server
  rejects the write (DESIGN §4); no "changed back" suppression for them.
- Own destroys not answered yet: the model, whether it is deferred (a collection's element,
  still attached), and the ids the stream destroyed first (a race).

Keys are ``(model, prop)``. Pure: no I/O, no clocks.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Hashable, Iterable
from typing import Any

from rtecs.cache import InFlightCache
from rtecs.errors import NotConnectedError
from rtecs.model import (
    CREATE_MARK,
    DESTROY_MARK,
    ChangeSource,
    Prop,
    RealtimeModel,
    follows_kids,
    id_of,
    store_of,
    values_of,
)
from rtecs.protocol import CREATE, DESTROY, F32, ModelId, Update

__all__ = ["MISSING", "DeltaTracker", "Key", "Sent"]

Key = tuple[RealtimeModel, Prop]
#: What an unanswered update carried: its runs, its reliable and its unreliable writes.
Sent = tuple[list[list[Any]], list[tuple[Key, Any]], list[tuple[Key, Any]]]
MISSING: Any = object()


class _Closed(dict[Any, Any]):
    """The dirty set of a closed datastore: any write raises."""

    def pop(self, key: Any, default: Any = None) -> Any:
        raise NotConnectedError("this client was closed: connect again to write")


def _estimate(value: object) -> int:
    """A cheap upper estimate of a value's MessagePack size."""
    if isinstance(value, str):
        return 5 + (len(value) if value.isascii() else 4 * len(value))
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, tuple):
        return 40 + len(value[0])
    return 9


class DeltaTracker:
    """Dirty set, unanswered updates and own destroys of one datastore (see module docs)."""

    def __init__(self) -> None:
        self.dirty: dict[Key, Any] = {}
        """The frame's writes with their frame-start values, in order (read it; change it
        through the tracker or, on the write path, ``dirty[key] = dirty.pop(key, old)``)."""
        self.cache = InFlightCache()
        self.epoch = 1
        """The session epoch the welcome named: every update carries it (DESIGN §5)."""
        self.next_seq = 1
        self._sent: dict[Key, int] = {}      # unreliable: latest seq sent
        self._server: dict[Key, Any] = {}    # unreliable: the stream's value meanwhile
        self._inflight: dict[int, Sent] = {}
        self._lifecycle_sent: dict[int, list[tuple[ModelId, int]]] = {}
        self._destroying: dict[ModelId, RealtimeModel] = {}
        self._deferred: set[ModelId] = set()
        self._raced: set[ModelId] = set()

    # ----------------------------------------------------------------- local side

    @property
    def closed(self) -> bool:
        return type(self.dirty) is _Closed

    def close(self) -> None:
        """From now on every write raises :class:`~rtecs.errors.NotConnectedError`."""
        self.dirty = _Closed()

    def mark(self, key: Key, old: Any) -> None:
        self.dirty[key] = self.dirty.pop(key, old)  # keep the frame-start value; move to the end

    def mark_start(self, key: Key, start: Any) -> None:
        """A new model's value (or its create marker) goes out with its create."""
        self.dirty[key] = start

    def is_dirty(self, key: Key) -> bool:
        return key in self.dirty

    def written_locally(self, model: RealtimeModel, p: Prop, differs: bool) -> bool:
        """Whether a queued change of ``model.p`` is stale: a local write of it is unsent
        (nothing queues a change for an unsent key, so a callback wrote it since), or — when
        the model no longer shows the queued value (``differs``) — unanswered."""
        key = (model, p)
        return key in self.dirty or (differs and (key in self.cache or key in self._sent))

    @property
    def updates_in_flight(self) -> int:
        return len(self._inflight)

    def start_destroy(self, model: RealtimeModel, deferred: bool) -> None:
        """This client destroys ``model`` (``deferred``: a collection's element, which
        stays until answered; else it is detached already): sent in the next update."""
        mid: ModelId = id_of(model)  # type: ignore[assignment]
        self.dirty[(model, DESTROY_MARK)] = None
        self._destroying[mid] = model
        if deferred:
            self._deferred.add(mid)

    def destroying(self, model_id: ModelId) -> bool:
        return model_id in self._destroying  # this client's destroy of it is unanswered

    def deferred(self, model_id: ModelId) -> bool:
        return model_id in self._deferred

    def note_race(self, model_id: ModelId) -> None:
        """The stream destroyed ``model_id`` while this client's destroy of it waits."""
        self._raced.add(model_id)

    def end_destroy(self, model_id: ModelId) -> tuple[RealtimeModel | None, bool, bool]:
        """This client's destroy of ``model_id`` was answered: ``(model, raced, deferred)``
        (model None if it was not waiting)."""
        model = self._destroying.pop(model_id, None)
        raced = model_id in self._raced
        self._raced.discard(model_id)
        deferred = model_id in self._deferred
        self._deferred.discard(model_id)
        return model, raced, deferred

    def drop_destroy(self, model_id: ModelId) -> None:
        self._destroying.pop(model_id, None)
        self._raced.discard(model_id)

    def forget(self, gone: Iterable[RealtimeModel]) -> set[RealtimeModel]:
        """These models were detached: drop everything about them. Returns those whose
        destroy by this client was never sent (no answer will come)."""
        gone, unsent = set(gone), set()
        dirty, destroying = self.dirty, self._destroying
        for m in gone:
            mid: ModelId = id_of(m)  # type: ignore[assignment]
            if mid in destroying and (m, DESTROY_MARK) in dirty:
                del destroying[mid]
                self._deferred.discard(mid)
                unsent.add(m)
        for key in [k for k in dirty if k[0] in gone]:
            del dirty[key]
        self.cache.forget([k for k in self.cache if k[0] in gone])  # type: ignore[index]
        for key in [k for k in self._sent if k[0] in gone]:
            del self._sent[key]
            self._server.pop(key, None)
        return unsent

    # ----------------------------------------------------------------- collect

    def collect(self, max_bytes: int | None = None,
                max_changes: int | None = None) -> Update | None:
        """The frame's delta as the next update, or None if nothing needs sending (see
        :meth:`Datastore.collect <rtecs.datastore.Datastore.collect>`)."""
        dirty = self.dirty
        if not dirty:
            return None
        seq = self.next_seq
        cache = self.cache
        sent, userver = self._sent, self._server
        keys: list[Key] = []
        starts: list[Any] = []
        values: list[Any] = []
        unreliable: list[tuple[Key, Any]] = []
        runs: list[list[Any]] = []
        run: list[Any] = []
        last: RealtimeModel | None = None
        budget = (max_bytes if max_bytes is not None
                  else -1 if max_changes is None else sys.maxsize)
        most = max_changes if max_changes is not None else sys.maxsize
        lifecycle: list[tuple[ModelId, int]] = []
        size = consumed = 0
        read: RealtimeModel | None = None  # whose values ``current`` is
        current: list[Any] = []
        for key, start in dirty.items():
            model, p = key
            pid = p.id
            if pid >= 0:
                if model is not read:  # one read of a model's values for a run of its keys
                    current, read = values_of(model), model
                value = current[p.slot]
            elif pid == CREATE:
                value = start  # the whole create, made by Datastore.create()
            else:
                value = None
            if budget >= 0:
                t = type(value)
                grow = ((9 if t is float or t is int or t is bool else _estimate(value))
                        + (2 if model is last else 14))
                if (size + grow > budget or consumed >= most) and runs:
                    break  # the rest goes in the next update
                size += grow
                consumed += 1
            if pid >= 0:
                if p.reliable:
                    if value == start and type(value) is type(start):
                        # Changed back: nothing to send, unless a remote value arrived
                        # meanwhile (there is no such suppression for unreliable ones).
                        hidden, server = cache.hidden_remote(key)
                        if not hidden or (value == server and type(value) is type(server)):
                            cache.drop_hidden(key)
                            continue
                    keys.append(key)
                    starts.append(start)
                    values.append(value)
                else:
                    if key not in userver:  # nothing of ours in flight or answered unsent
                        userver[key] = start  # the stream's value, until it says otherwise
                    sent[key] = seq
                    unreliable.append((key, value))
            elif pid == CREATE:
                parent = model.parent
                if parent is not None and follows_kids(type(parent)):
                    lifecycle.append((id_of(model), pid))  # type: ignore[arg-type]
            else:
                lifecycle.append((id_of(model), pid))  # type: ignore[arg-type]
            if p.f32 and value is not None:
                value = F32(value)  # sent as a 4-byte float (it was rounded when written)
            if model is last:
                run.append(pid)
                run.append(value)
            else:
                run = [model.model_id, pid, value]
                runs.append(run)
                last = model
        if budget < 0 or consumed == len(dirty):
            dirty.clear()
        else:
            for key in list(itertools.islice(dirty, consumed)):
                del dirty[key]
        if not runs:
            return None
        cache.record(seq, keys, starts)
        self._inflight[seq] = (runs, list(zip(keys, values, strict=True)), unreliable)
        if lifecycle:
            self._lifecycle_sent[seq] = lifecycle
        self.next_seq = seq + 1
        return Update(seq, runs, self.epoch)

    def reuse_seq(self, seq: int) -> None:
        """The last collected update, ``seq``, was discarded unsent."""
        self.next_seq = seq

    # ----------------------------------------------------------------- the stream

    def remote(self, key: Key, reliable: bool, value: Any) -> bool:
        """Another client's write of ``key``: True if it shows now (DESIGN §4)."""
        if reliable:
            return self.cache.remote(key, value, key in self.dirty)
        self.dirty.pop(key, None)  # latest wins: the stream's value replaces an unsent one
        if key in self._sent:
            self._server[key] = value
        else:
            self._server.pop(key, None)  # nothing of ours left to roll back
        return True

    def take_sent(self, seq: int) -> tuple[Sent | None, list[tuple[ModelId, int]] | None]:
        """Update ``seq`` is answered: what it carried, and its lifecycle operations."""
        return self._inflight.pop(seq, None), self._lifecycle_sent.pop(seq, None)

    def answered_unreliable(self, key: Key, seq: int, value: Any) -> bool:
        """The answer to ``seq`` accepted an unreliable write of ``key`` as ``value``:
        True if that shows now (no newer write of ours is unsent or in flight)."""
        latest = self._sent.get(key)
        if latest is not None and latest > seq:
            self._server[key] = value
            return False  # a stale echo: a newer write of ours is on its way
        if latest == seq:
            del self._sent[key]
            self._answered(key, value)
        return key not in self.dirty

    def _answered(self, key: Key, value: Any) -> None:
        """The last in-flight write of ``key`` is answered and the stream now holds
        ``value``: while a newer write is unsent that is its server value (a refusal of
        that write rolls back to it); otherwise nothing is held any more."""
        if key in self.dirty:
            self._server[key] = value
        else:
            self._server.pop(key, None)

    def rejected_unreliable(self, key: Key, seq: int) -> Any:
        """The answer to ``seq`` rejected an unreliable write of ``key``: the server value
        to show again, or :data:`MISSING` (a newer write of ours decides)."""
        if self._sent.get(key) != seq:
            return MISSING
        del self._sent[key]
        if key in self.dirty:  # the stream's value stays the newer write's server value
            return MISSING
        return self._server.pop(key, MISSING)

    def confirm(self, seq: int, accepted: Iterable[tuple[Hashable, object]],
                ) -> list[tuple[Hashable, object]]:
        """Settle the reliable writes up to ``seq`` (see :meth:`InFlightCache.confirm`)."""
        return self.cache.confirm(seq, accepted, self.dirty)

    def settle_as_sent(self, seq: int, sent_with: Sent, owner: object,
                       ) -> list[tuple[Key, Any, ChangeSource]]:
        """The server accepted update ``seq`` exactly as sent (the common case). Returns
        what shows now: ``(key, value, source)``, for models still in ``owner``."""
        show: list[tuple[Key, Any, ChangeSource]] = []
        sent, dirty, userver = self._sent, self.dirty, self._server
        for key, value in sent_with[2]:
            latest = sent.get(key)
            if latest is not None and latest != seq:
                userver[key] = value  # a stale echo still tells the stream's value
            elif latest == seq:
                del sent[key]
                self._answered(key, value)
                if key not in dirty:  # our value is the latest: show it again if a remote
                    model, p = key    # value ordered before ours replaced it here meanwhile
                    old = values_of(model)[p.slot]
                    if store_of(model) is owner and (old != value or type(old) is not type(value)):
                        show.append((key, value, ChangeSource.REMOTE))
        for settled, value in self.cache.confirm(seq, sent_with[1], dirty):
            target: RealtimeModel = settled[0]  # type: ignore[index]
            prop: Prop = settled[1]  # type: ignore[index]
            old = values_of(target)[prop.slot]
            if store_of(target) is owner and (old != value or type(old) is not type(value)):
                show.append(((target, prop), value, ChangeSource.TRANSFORMED))
        return show

    # ----------------------------------------------------------------- snapshots

    def restart(self, epoch: int, rollback: bool) -> dict[Hashable, object]:
        """A new session: numbering restarts, everything unanswered is dropped. Returns
        the keys with unsent or unanswered writes if ``rollback`` (else nothing)."""
        self.next_seq = 1
        self.epoch = epoch
        rolled: dict[Hashable, object] = {}
        if rollback:
            rolled = self.cache.clear()
            rolled.update(dict.fromkeys(self.dirty))
            rolled.update(dict.fromkeys(self._sent))
        self.dirty.clear()
        self._sent.clear()
        self._server.clear()
        self._inflight.clear()
        self._lifecycle_sent.clear()
        self._destroying.clear()  # unanswered destroys: the snapshot says what exists
        self._deferred.clear()
        self._raced.clear()
        return rolled

    def take_applied(self, last: int) -> list[tuple[ModelId, int]]:
        """A resync's snapshot holds every update up to ``last``: they are no longer in
        flight. Returns their lifecycle operations in order, for the caller to settle."""
        ops: list[tuple[ModelId, int]] = []
        for seq in sorted(self._inflight):
            if seq > last:
                break
            del self._inflight[seq]
            ops.extend(self._lifecycle_sent.pop(seq, ()))
        return ops

    def renumber(self, last: int, epoch: int) -> None:
        """Settle what the snapshot holds (writes up to ``last``) and renumber the
        unapplied updates 1, 2, … into ``epoch``."""
        self.epoch = epoch
        self.cache.confirm(last, (), self.dirty)  # the snapshot shows what became of them
        sent = self._sent
        for key in [k for k, seq in sent.items() if seq <= last]:
            del sent[key]
            self._server.pop(key, None)
        unapplied = sorted(self._inflight)
        renumber = {old: new for new, old in enumerate(unapplied, 1)}
        self.cache.renumber(renumber)
        self._inflight = {renumber[seq]: with_ for seq, with_ in self._inflight.items()}
        self._lifecycle_sent = {renumber[seq]: ops for seq, ops in self._lifecycle_sent.items()}
        for key, seq in sent.items():
            sent[key] = renumber[seq]
        self.next_seq = len(unapplied) + 1

    def unanswered_creates(self) -> set[ModelId]:
        """The models this client created that the server has not answered yet."""
        keep: set[ModelId] = {run[0] for runs, _, _ in self._inflight.values() for run in runs
                              if CREATE in run[1::2]}
        keep.update(id_of(m) for m, p in self.dirty if p is CREATE_MARK)  # type: ignore[misc]
        return keep

    def rebased_value(self, key: Key, reliable: bool, value: Any) -> bool:
        """A resync's snapshot says ``value`` for ``key``: True if a newer local write
        keeps showing (``value`` is then its server value)."""
        if reliable:
            if key in self.cache or key in self.dirty:
                self.cache.remote(key, value, True)
                return True
            return False
        if key in self.dirty or key in self._sent:
            self._server[key] = value  # what a refusal of the newer write rolls back to
            return True
        return False

    def resend(self, models: dict[ModelId, RealtimeModel]) -> list[Update]:
        """The unapplied updates, renumbered, to be sent again in order (writes to models
        the server no longer has would only be refused as unknown)."""
        resend: list[Update] = []
        for seq, (runs, _, _) in self._inflight.items():
            runs[:] = [run for run in runs if run[0] in models or DESTROY in run[1::2]]
            resend.append(Update(seq, runs, self.epoch))
        return resend
