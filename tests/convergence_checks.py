"""Checks shared by the convergence state machines (tests/test_convergence*.py).

They read the public API (change streams, ``observe()``, ``rt.errors``, ``rt.room_seq``) and
the wire of a tapped :class:`~harness.LocalRoom` (``wire=True``), never the client's or the
server's internals, so a redesign of either cannot make them pass or fail by accident:

- :class:`Authority` — an independent model of the room server's rules (DESIGN §3, §4b, §5:
  ownership of a model and its ancestors, ``prevent_ownership_takeover``, creates under
  collections, destroys, the plugin's verdicts). Every entry of the stream is replayed against
  the update the client actually sent: a server that accepts a change it must refuse, refuses
  one it must accept, transforms a value differently, applies an update twice, out of order
  or from an older session epoch fails the machine at once, not just at convergence.
- :class:`InFlight` — per client and property, which own writes are unsent or unanswered,
  from the client's own change streams and the frames it sends and applies. A remote value
  shown over one of them is stale (§4.2); a write the frame changed is sent with the frame's
  last value (§4.1, no "changed back" suppression for unreliable properties).
- :class:`Streams` — the last value every ``observe()`` stream emitted equals the model's
  value after every step (§4b).
- :class:`Errors` — a subscriber that raises is reported on ``rt.errors``, once per raise,
  and never reaches the tick or the write that made it raise (§4b).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from harness import LocalRoom
from rtecs.model import Change, ChangeSource, RealtimeModel
from rtecs.protocol import (
    CREATE,
    DESTROY,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    Batch,
    ModelId,
    Update,
    UpdateEntry,
    Welcome,
    split_dynamic_model_id,
)
from rtecs.realtime import Realtime

__all__ = ["REJECT", "Authority", "Boom", "Errors", "InFlight", "Streams", "alive", "same",
           "scalar_names", "schema_of"]

REJECT: Any = type("Reject", (), {"__repr__": lambda self: "REJECT"})()
"""What a verdict returns for a write the room's plugin refuses."""

Verdict = Callable[[str, str, Any], Any]  # (type name, property name, value) → value | REJECT


class Boom(Exception):
    """What the machines' raising subscribers raise."""


def same(a: object, b: object) -> bool:
    """Equal and of the same type (1, 1.0 and True are three different values)."""
    return type(a) is type(b) and a == b


def _norm(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return (type(value).__name__, value)


def flatten(changes: Iterable[Any]) -> list[tuple[Any, int, Any]]:
    """Change runs as ``(model id, property id, value)`` triples, in order."""
    out = []
    for run in changes:
        mid = _norm(run[0])
        for i in range(1, len(run), 2):
            out.append((mid, run[i], _norm(run[i + 1])))
    return out


def child_id(parent: ModelId, prop_id: int) -> ModelId:
    return (parent, prop_id) if type(parent) is int else (*parent, prop_id)  # type: ignore[misc]


def schema_of(model: RealtimeModel) -> dict[str, tuple[int, bool]]:
    """``{property name: (id, reliable)}`` of a model, owner included (public schema())."""
    found = _SCHEMAS.get(type(model))
    if found is None:
        found = {name: (pid, reliable)
                 for pid, (name, _tag, reliable) in type(model).schema().items()}
        found["owner_id"] = (OWNER, True)
        _SCHEMAS[type(model)] = found
    return found


_SCHEMAS: dict[type, dict[str, tuple[int, bool]]] = {}
_NAMES: dict[type, dict[int, tuple[str, bool]]] = {}


def schema_of_id(model: RealtimeModel, pid: int) -> tuple[str | None, bool]:
    """``(name, reliable)`` of a model's property ``pid`` (None: not a value property)."""
    names = _NAMES.get(type(model))
    if names is None:
        names = _NAMES[type(model)] = {
            pid: (name, reliable) for name, (pid, reliable) in schema_of(model).items()}
    return names.get(pid, (None, True))


def _name_of(model: RealtimeModel, pid: int) -> str | None:
    return schema_of_id(model, pid)[0]


def scalar_names(model: RealtimeModel, owner: bool = True) -> list[str]:
    """The names of a model's value properties (no child models), ``owner_id`` first."""
    names = [name for _pid, (name, tag, _rel) in sorted(type(model).schema().items())
             if not tag.startswith("model:")]
    return ["owner_id", *names] if owner else names


def alive(rt: Realtime, model: RealtimeModel) -> bool:
    """``model`` is (still) one of ``rt``'s models."""
    return model.model_id is not None and rt.datastore.get(model.model_id) is model


# --------------------------------------------------------------------------- authority


class _M:
    __slots__ = ("flags", "key", "owner", "parent", "props", "type")

    def __init__(self, type_name: str, owner: int, flags: int, parent: ModelId | None,
                 key: Any, props: dict[int, Any]) -> None:
        self.type = type_name
        self.owner = owner
        self.flags = flags
        self.parent = parent
        self.key = key
        self.props = props


class Authority:
    """What the room server must do with each update, decided independently of it.

    Listens to a tapped room: the updates each client sends (in order, tagged with the
    number of welcomes that client had applied — its session epoch) and the batches the
    server sends. Each update entry is matched to the update it answers (same client, same
    epoch, same seq; seqs contiguous from 1 in each epoch), replayed against this model and
    compared with the entry's accepted changes and rejected list.
    """

    def __init__(self, room: LocalRoom, classes: Iterable[type[RealtimeModel]],
                 verdict: Verdict) -> None:
        self.room = room
        self.verdict = verdict
        self.schemas: dict[str, dict[int, tuple[str, str, bool]]] = {}
        for cls in classes:
            self.schemas[cls.type_name] = cls.schema()
        self.violations: list[str] = []
        self.models: dict[ModelId, _M] = {}
        self.keyed: dict[ModelId, dict[Any, ModelId]] = {}
        hosted = room.host.rooms[room.room].room
        self.room_seq = hosted.room_seq
        for rec in hosted.snapshot():
            mid = _norm(rec[0])
            if type(mid) is tuple:
                parent: ModelId | None = mid[0] if len(mid) == 2 else mid[:-1]
            else:
                parent = _norm(rec[5]) if len(rec) >= 6 else None
            key = rec[6] if len(rec) >= 7 else None
            self.models[mid] = _M(rec[1], rec[2], rec[3], parent, key,
                                  {pid: _norm(v) for pid, v in rec[4].items()})
            if key is not None and parent is not None:
                self.keyed.setdefault(parent, {})[key] = mid
        # per client: its updates as [epoch, seq, changes, matched]
        self.sent: dict[Realtime, list[list[Any]]] = {}
        self.applied: dict[tuple[int, int], int] = {}  # (client id, epoch) → last seq
        self.entries = 0
        room.listeners.append(self)

    # ------------------------------------------------------------ the wire

    def client_sent(self, rt: Realtime, message: Any) -> None:
        if isinstance(message, Update):
            epoch = self.room.welcomes_received[rt]
            self.sent.setdefault(rt, []).append([epoch, message.seq, message.changes, False])

    def server_sent(self, rt: Realtime | None, message: Any, delivered: bool) -> None:
        if not isinstance(message, Batch) or message.room_seq <= self.room_seq:
            return  # each batch once (the same bytes go to every member)
        if message.room_seq != self.room_seq + 1:
            self.fail(f"the server's stream skipped from batch {self.room_seq} to "
                      f"{message.room_seq}")
        self.room_seq = message.room_seq
        for entry in message.entries:
            if isinstance(entry, UpdateEntry):
                self.entry(entry)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def client(self, client_id: int) -> Realtime | None:
        for rt in self.room.clients:
            if rt.client_id == client_id:
                return rt
        return None

    def entry(self, entry: UpdateEntry) -> None:
        self.entries += 1
        got = flatten(entry.changes)
        got_rejected = [(_norm(mid), pid) for mid, pid in entry.rejected]
        if entry.sender == 0 or entry.seq == 0:  # the server's own lifetime changes
            for mid, pid, value in got:
                self.apply_server_change(mid, pid, value)
            return
        rt = self.client(entry.sender)
        if rt is None:
            self.fail(f"an entry from client {entry.sender}, who is not in the room")
            return
        epoch = self.room.welcomes_sent[rt]
        found = None
        for update in self.sent.get(rt, ()):
            if not update[3] and update[0] == epoch and update[1] == entry.seq:
                found = update
                break
        if found is None:
            self.fail(f"the server answered update {entry.seq} of client {entry.sender} "
                      f"(epoch {epoch}), which it did not send in that session epoch (an "
                      f"update from before its welcome, or one applied twice)")
            return
        found[3] = True
        last = self.applied.get((entry.sender, epoch), 0)
        if entry.seq != last + 1:
            self.fail(f"the server applied update {entry.seq} of client {entry.sender} "
                      f"after update {last} (epoch {epoch})")
        self.applied[(entry.sender, epoch)] = entry.seq
        accepted, rejected = self.evaluate(entry.sender, found[2])
        if [_typed(c) for c in got] != [_typed(c) for c in accepted] or got_rejected != rejected:
            self.fail(f"client {entry.sender}'s update {entry.seq}: the server accepted "
                      f"{got} and rejected {got_rejected}; its rules say accept {accepted} "
                      f"and reject {rejected}")

    # ------------------------------------------------------------ the rules

    def chain(self, mid: ModelId | None) -> Iterator[_M]:
        while mid is not None:
            m = self.models.get(mid)
            if m is None:
                return
            yield m
            mid = m.parent

    def foreign(self, mid: ModelId | None, sender: int) -> bool:
        """Owned, itself or through an ancestor, by a client other than ``sender``."""
        return any(m.owner not in (-1, sender) for m in self.chain(mid))

    def make(self, mid: ModelId, type_name: str, flags: int, parent: ModelId | None,
             key: Any) -> None:
        self.models[mid] = _M(type_name, -1, flags, parent, key, {})
        if key is not None and parent is not None:
            self.keyed.setdefault(parent, {})[key] = mid
        for pid, (_name, tag, _reliable) in self.schemas.get(type_name, {}).items():
            if tag.startswith("model:"):
                self.make(child_id(mid, pid), tag[len("model:"):], 0, mid, None)

    def destroy(self, mid: ModelId) -> None:
        doomed = {mid}
        for other, m in self.models.items():  # parents come before their children
            if m.parent in doomed:
                doomed.add(other)
        for gone in doomed:
            m = self.models.pop(gone)
            self.keyed.pop(gone, None)
            if m.key is not None and self.keyed.get(m.parent, {}).get(m.key) == gone:
                del self.keyed[m.parent][m.key]  # type: ignore[index]

    def evaluate(self, sender: int, changes: Any,
                 ) -> tuple[list[tuple[Any, int, Any]], list[tuple[Any, int]]]:
        accepted: list[tuple[Any, int, Any]] = []
        rejected: list[tuple[Any, int]] = []
        for mid, pid, value in flatten(changes):
            result = self.one(sender, mid, pid, value)
            if result is REJECT:
                rejected.append((mid, pid))
            else:
                accepted.append((mid, pid, result))
        return accepted, rejected

    def one(self, sender: int, mid: Any, pid: int, value: Any) -> Any:
        models = self.models
        if pid == CREATE:
            if mid in models or type(mid) is not int:
                return REJECT
            type_name, flags = value[0], value[1]
            parent = value[2] if len(value) >= 3 else None
            key = value[3] if len(value) >= 4 else None
            if parent is not None:
                if parent not in models or self.foreign(parent, sender):
                    return REJECT  # creating under a model is writing to it
                if len(value) >= 4:
                    replaced = self.keyed.get(parent, {}).get(key)
                    if len(value) == 5 and value[4] != replaced:
                        return REJECT  # a transaction: another client changed the key first
                    if replaced is not None:
                        if models[replaced].owner not in (-1, sender):
                            return REJECT  # replacing is destroying
                        self.destroy(replaced)
            self.make(mid, type_name, flags, parent, key)
            return value
        m = models.get(mid)
        if m is None:
            return REJECT  # never was, or destroyed: a quiet rejection either way
        if pid == DESTROY:
            if type(mid) is not int or mid == 0 or self.foreign(mid, sender):
                return REJECT
            self.destroy(mid)
            return value
        if pid == OWNER:
            if self.foreign(m.parent, sender):
                return REJECT
            if value == sender:
                if m.owner not in (-1, sender) and m.flags & PREVENT_OWNERSHIP_TAKEOVER:
                    return REJECT
            elif value != -1 or m.owner not in (-1, sender):
                return REJECT
            m.owner = value
            return value
        if self.foreign(mid, sender):
            return REJECT
        prop = self.schemas.get(m.type, {}).get(pid)
        if prop is None:
            self.fail(f"a write to {m.type} property {pid}, which the machine does not know")
            return REJECT
        result = self.verdict(m.type, prop[0], value)
        if result is REJECT:
            return REJECT
        m.props[pid] = result
        return result

    def apply_server_change(self, mid: Any, pid: int, value: Any) -> None:
        m = self.models.get(mid)
        if m is None:
            self.fail(f"the server changed model {mid!r}, which it does not have")
        elif pid == DESTROY:
            self.destroy(mid)
        elif pid == OWNER:
            m.owner = value
        elif pid > 0:
            m.props[pid] = value

    # ------------------------------------------------------------ when quiet

    def check_quiet(self) -> None:
        """Once everything is delivered: the room core holds exactly what the rules say, and
        every update each client sent in its current session was applied."""
        hosted = self.room.host.rooms[self.room.room].room
        truth = {_norm(rec[0]): rec for rec in hosted.snapshot()}
        assert set(truth) == set(self.models), (
            f"the room core has models {sorted(map(str, set(truth) - set(self.models)))} "
            f"the rules never made and lacks {sorted(map(str, set(self.models) - set(truth)))}")
        for mid, rec in truth.items():
            m = self.models[mid]
            props = {pid: _typed(_norm(v)) for pid, v in rec[4].items()}
            assert (rec[1], rec[2], rec[3]) == (m.type, m.owner, m.flags), (
                f"model {mid!r}: the room core has {rec[1:4]}, "
                f"the rules {m.type, m.owner, m.flags}")
            want = {pid: _typed(v) for pid, v in m.props.items()}
            assert props == want, f"model {mid!r}: the room core has {rec[4]}, the rules {m.props}"
        for rt, updates in self.sent.items():
            if not rt.connected:
                continue
            epoch = self.room.welcomes_received[rt]
            assert self.room.welcomes_sent[rt] == epoch
            lost = [u[1] for u in updates if u[0] == epoch and not u[3]]
            assert not lost, (f"client {rt.client_id}'s updates {lost} (epoch {epoch}) were "
                              "never answered in the stream")


# --------------------------------------------------------------------------- in flight


_DEFAULTS: dict[type, RealtimeModel] = {}


def default_of(model: RealtimeModel, name: str) -> Any:
    """The value a property of a model never written has (the class default)."""
    blank = _DEFAULTS.get(type(model))
    if blank is None:
        blank = _DEFAULTS[type(model)] = type(model)()
    return getattr(blank, name)


class _Client:
    __slots__ = ("created", "dirty", "inflight", "sent_now", "whole")

    def __init__(self) -> None:
        self.created: set[int] = set()  # own dynamic models whose create was sent
        # The batch being applied: its room_seq and the value each property it changes
        # must show once it is applied whole (before any of its emissions), or None.
        self.whole: tuple[int, dict[tuple[Any, int], Any]] | None = None
        # (model id, property id) → (model, name, value visible when the frame first wrote it)
        self.dirty: dict[tuple[Any, int], tuple[RealtimeModel, str, Any]] = {}
        self.inflight: dict[int, set[tuple[Any, int]]] = {}  # seq → keys it carries
        self.sent_now: dict[tuple[Any, int], Any] = {}


class InFlight:
    """Each client's own writes that are unsent (written this frame) or unanswered, per
    property, kept from the client's change streams and the frames it sends and applies.

    - A ``remote`` change of a reliable property (owner included) with an own write unsent
      or in flight is a stale value shown over the client's newer write (§4.2, §4b).
    - When a frame is sent, every property the frame wrote is in it with the value the model
      shows — unreliable ones always (no "changed back" suppression), reliable ones unless
      the frame changed them back to their frame-start value (§4.1).
    - A batch is applied whole before its streams emit (§4b): at its first emission every
      property it changes shows the value the batch leaves it with — the last other
      client's value, or for an unreliable property the answer to this client's newest
      write of it, never a stale echo of an older one (§4) — unless this client's own
      unsent or in-flight writes decide it.

    Call :meth:`track` for every model whose writes should be followed, before any other
    subscriber of its ``changes`` (a subscriber that writes in its callback emits the write
    to the subscribers after it before they see what it reacted to).
    """

    def __init__(self, room: LocalRoom) -> None:
        self.room = room
        self.clients: dict[Realtime, _Client] = {}
        self.violations: list[str] = []
        self.tracked: set[tuple[int, int]] = set()
        room.listeners.append(self)

    def state(self, rt: Realtime) -> _Client:
        st = self.clients.get(rt)
        if st is None:
            st = self.clients[rt] = _Client()
            self._wrap_flush(rt, st)
        return st

    def track(self, rt: Realtime, model: RealtimeModel) -> None:
        if (id(rt), id(model)) in self.tracked:
            return
        self.tracked.add((id(rt), id(model)))
        st = self.state(rt)
        model.changes.subscribe(lambda c: self.on_change(rt, st, model, c))

    def on_change(self, rt: Realtime, st: _Client, model: RealtimeModel, c: Change) -> None:
        pid, reliable = schema_of(model)[c.prop]
        key = (model.model_id, pid)
        if c.source is ChangeSource.LOCAL:
            if key not in st.dirty:
                # A model created this frame starts from its class defaults (the room has
                # nothing else for it), whatever it was constructed with.
                root = key[0] if type(key[0]) is int else key[0][0]
                fresh = (root != 0 and split_dynamic_model_id(root)[0] == rt.client_id
                         and root not in st.created)
                start = default_of(model, c.prop) if fresh else c.old
                st.dirty[key] = (model, c.prop, start)
            self.check_whole(rt, st)
            return
        self.check_whole(rt, st)
        if c.source is ChangeSource.REMOTE and reliable and (
                key in st.dirty or any(key in keys for keys in st.inflight.values())):
            self.violations.append(
                f"client {rt.client_id} showed another client's {type(model).__name__}."
                f"{c.prop} = {c.new!r} over its own write "
                f"{'not yet sent' if key in st.dirty else 'in flight'} ({c})")
            return
        st.dirty.pop(key, None)  # the stream replaced an unsent unreliable value

    def check_whole(self, rt: Realtime, st: _Client) -> None:
        whole, st.whole = st.whole, None
        if whole is None or rt.room_seq != whole[0]:
            return  # no batch being applied (or the client did not take it: a gap)
        for (mid, pid), value in whole[1].items():
            model = rt.datastore.get(mid)
            if model is None or (mid, pid) in st.dirty or (id(rt), id(model)) not in self.tracked:
                continue  # gone, written since by a callback, or not followed (new here)
            name = _name_of(model, pid)
            if name is not None and not same(getattr(model, name), value):
                self.violations.append(
                    f"client {rt.client_id}: at the first emission of batch {whole[0]}, "
                    f"{type(model).__name__}.{name} of {mid!r} shows {getattr(model, name)!r}; "
                    f"applied whole, the batch leaves it {value!r} (emitted before the batch "
                    f"was applied whole, or a stale echo of an own write shown?)")

    def client_sent(self, rt: Realtime, message: Any) -> None:
        if isinstance(message, Update):
            st = self.state(rt)
            keys = set()
            for mid, pid, value in flatten(message.changes):
                if pid >= 0:
                    keys.add((mid, pid))
                    st.sent_now[(mid, pid)] = value
                elif pid == CREATE:
                    st.created.add(mid)
            st.inflight[message.seq] = keys

    def client_receives(self, rt: Realtime, message: Any) -> None:
        st = self.state(rt)
        if isinstance(message, Welcome):
            st.whole = None      # a batch held back for it is never applied
            st.inflight.clear()  # a new session epoch: what is resent is tracked anew
            if self.room.welcomes_received[rt] <= 1:
                st.dirty.clear()  # a join; a resync re-bases the frame's writes, keeps them
        elif isinstance(message, Batch):
            st.whole = (message.room_seq, self.expected(rt, st, message))

    def expected(self, rt: Realtime, st: _Client, batch: Batch) -> dict[tuple[Any, int], Any]:
        """What the properties ``batch`` changes show once it is applied (those that the
        client's own writes leave undecided here are left out), and the bookkeeping of the
        answers it carries."""
        me = rt.client_id
        dirty_before = set(st.dirty)
        newest: dict[tuple[Any, int], int] = {}  # key → newest own update carrying it
        for seq, keys in st.inflight.items():
            for key in keys:
                newest[key] = max(seq, newest.get(key, 0))
        expect: dict[tuple[Any, int], Any] = {}
        undecided: set[tuple[Any, int]] = set()
        for entry in batch.entries:
            if not isinstance(entry, UpdateEntry):
                continue
            if entry.sender != me or entry.seq == 0:
                for mid, pid, value in flatten(entry.changes):
                    if pid < 0:
                        continue
                    expect[(mid, pid)] = value  # another client's write (or the server's)
                    item = st.dirty.get((mid, pid))
                    if item is not None and not schema_of(item[0])[item[1]][1]:
                        del st.dirty[(mid, pid)]  # an unreliable one wins over an unsent one
                continue
            for seq in [s for s in st.inflight if s <= entry.seq]:
                keys = st.inflight.pop(seq)  # settled (≤ N): the batch applies it first
                if seq != entry.seq:
                    undecided.update(keys)
            accepted = {(mid, pid): value for mid, pid, value in flatten(entry.changes)
                        if pid >= 0}
            refused = {(_norm(mid), pid) for mid, pid in entry.rejected if pid >= 0}
            for key in (*accepted, *refused):
                model = rt.datastore.get(key[0])
                if model is None or schema_of_id(model, key[1])[1]:
                    undecided.add(key)  # reliable: the in-flight cache decides
                elif newest.get(key, 0) > entry.seq:
                    name = schema_of_id(model, key[1])[0]
                    if name is not None:  # a stale echo of an unreliable write: it shows
                        expect.setdefault(key, getattr(model, name))  # nothing
                elif key in refused:
                    undecided.add(key)  # rolls back to a server value not known here
                else:
                    expect[key] = accepted[key]  # the answer to the newest write: it shows
        pending = set().union(*st.inflight.values()) if st.inflight else set()
        for key in list(expect):
            if key in undecided or key in dirty_before or key in st.dirty:
                del expect[key]  # the client's own writes decide what shows
            elif key in pending:
                model = rt.datastore.get(key[0])
                if model is None or schema_of_id(model, key[1])[1]:
                    del expect[key]  # reliable and in flight: the local value shows
        return expect

    def _wrap_flush(self, rt: Realtime, st: _Client) -> None:
        flush = rt.flush

        def checked_flush() -> Any:
            if not rt.connected:
                return flush()
            expected = {}
            for key, (model, name, start) in st.dirty.items():
                if not alive(rt, model):
                    continue  # destroyed meanwhile: its writes go with it
                value = getattr(model, name)
                if not schema_of(model)[name][1] or not same(value, start):
                    expected[key] = (model, name, value)
            st.sent_now = {}
            st.whole = None
            result = flush()
            for key, (model, name, value) in expected.items():
                if key not in st.sent_now:
                    self.violations.append(
                        f"client {rt.client_id} did not send its write "
                        f"{type(model).__name__}.{name} = {value!r} of this frame")
                elif not same(_norm(st.sent_now[key]), value):
                    self.violations.append(
                        f"client {rt.client_id} sent {type(model).__name__}.{name} = "
                        f"{st.sent_now[key]!r}, not the frame's last value {value!r}")
            st.dirty.clear()
            return result

        rt.flush = checked_flush  # type: ignore[method-assign]


# --------------------------------------------------------------------------- streams


class Streams:
    """The last value of every ``observe()`` stream the machine subscribed to."""

    def __init__(self) -> None:
        self.last: dict[tuple[int, int, str], tuple[Realtime, RealtimeModel, list[Any]]] = {}

    def watch(self, rt: Realtime, model: RealtimeModel, names: Iterable[str]) -> None:
        for name in names:
            key = (id(rt), id(model), name)
            if key in self.last:
                continue
            cell: list[Any] = []
            self.last[key] = (rt, model, cell)

            def keep(value: Any, cell: list[Any] = cell) -> None:
                cell[:] = [value]

            model.observe(name).subscribe(keep)
            assert cell, f"observe({name!r}) did not emit the current value on subscribe"

    def check(self) -> None:
        for key, (rt, model, cell) in list(self.last.items()):
            if not alive(rt, model):
                del self.last[key]
                continue
            name = key[2]
            value = getattr(model, name)
            assert same(cell[0], value), (
                f"client {rt.client_id}: observe({name!r}) of {type(model).__name__} "
                f"{model.model_id!r} last emitted {cell[0]!r}, the model has {value!r}")


# --------------------------------------------------------------------------- errors


class Errors:
    """Every :class:`Boom` a subscriber raised is reported on ``rt.errors``, once; nothing
    else is."""

    def __init__(self) -> None:
        self.raised: dict[int, int] = {}
        self.reported: dict[int, list[BaseException]] = {}

    def watch(self, rt: Realtime) -> None:
        reported = self.reported.setdefault(id(rt), [])
        self.raised.setdefault(id(rt), 0)
        errors = getattr(rt, "errors", None)
        if errors is not None:
            errors.subscribe(reported.append)

    def boom(self, rt: Realtime, what: str) -> None:
        self.raised[id(rt)] += 1
        raise Boom(f"a subscriber of client {rt.client_id} raised on {what}")

    def check(self) -> None:
        for key, count in self.raised.items():
            got = self.reported[key]
            assert all(isinstance(e, Boom) for e in got), f"unexpected errors reported: {got}"
            assert len(got) == count, (f"subscribers raised {count} times, rt.errors "
                                       f"reported {len(got)}")
