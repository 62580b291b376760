"""Applying what the server sent to a :class:`~rtecs.datastore.Datastore`: stream entries
(other clients' changes, this client's answers, creates and destroys) and snapshots.

Functions over the datastore's internals, kept apart from its local side (model tree, local
writes, collect) so each module stays readable. Emissions are queued here and delivered by
:meth:`Datastore.flush_emissions` once a whole message is applied (DESIGN §4b).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from rtecs.datastore._opaque import OpaqueModel
from rtecs.errors import SchemaError
from rtecs.model import ChangeSource, Prop, RealtimeModel
from rtecs.model._model import CREATE_MARK, KidEvent
from rtecs.protocol import CREATE, DESTROY, OWNER, ModelId, Update, UpdateEntry, Welcome

if TYPE_CHECKING:
    from rtecs.datastore import Datastore, Key

log = logging.getLogger("rtecs.datastore")

_MISSING: Any = object()


def _same_runs(received: Any, sent: list[list[Any]]) -> bool:
    """True if the runs of an answer are exactly the runs this client sent."""
    if len(received) != len(sent):
        return False
    for mine, theirs in zip(sent, received, strict=True):
        if len(mine) != len(theirs) or tuple(mine) != theirs:
            return False
    return True



def apply_entry(ds: Datastore, entry: UpdateEntry) -> None:
    """Apply one entry of the server stream (queue its emissions)."""
    if entry.sender == ds.client_id and entry.seq > 0:
        _apply_answer(ds, entry)
    else:
        _apply_changes(ds, entry.changes)

def _apply_changes(ds: Datastore, changes: Iterable[Any]) -> None:
    models, dirty, remote = ds._models, ds._dirty, ds.cache.remote
    sent, userver = ds._unreliable_sent, ds._unreliable_server
    for run in changes:
        model = models.get(run[0])
        if model is None and type(run[0]) is tuple:
            model = _opaque_child(ds, run[0], "")
        for i in range(1, len(run), 2):
            pid = run[i]
            if pid < 0:
                model = _apply_lifecycle(ds, run[0], pid, run[i + 1], model)
                continue
            if model is None:
                log.debug("change to unknown model %r skipped", run[0])
                break
            p = type(model)._props.get(pid)
            if p is None or p.child_type is not None:
                if type(model) is OpaqueModel and pid > 0:
                    model.values[pid] = run[i + 1]
                continue  # a newer peer's property: skip (forward compatibility)
            key = (model, p)
            if p.reliable:
                if remote(key, run[i + 1], key in dirty):
                    _show(ds, model, p, run[i + 1], ChangeSource.REMOTE)
            else:
                dirty.pop(key, None)  # latest wins: the stream's value replaces an unsent one
                if key in sent:
                    userver[key] = run[i + 1]
                _show(ds, model, p, run[i + 1], ChangeSource.REMOTE)


def _opaque_child(ds: Datastore, model_id: tuple[Any, ...], type_name: str,
                  ) -> RealtimeModel | None:
    """A declared child of an opaque model, made when the stream first names it (the
    client cannot know an unknown type's children in advance); None for anything else."""
    parent = ds._models.get(model_id[0] if len(model_id) == 2 else model_id[:-1])
    if type(parent) is not OpaqueModel:
        return None
    child = OpaqueModel(type_name)
    ds._attach_under(child, model_id, parent)
    return child

def _apply_lifecycle(ds: Datastore, model_id: ModelId, key: int, value: Any,
                     model: RealtimeModel | None) -> RealtimeModel | None:
    if key == DESTROY:
        if model is not None:
            ds._remove(model)
        elif model_id in ds._destroying:
            ds._raced.add(model_id)
        return None
    if model is not None:
        return model  # our own create, or a duplicate
    type_name, flags = value[0], value[1]
    try:
        model_type = ds.find_type(type_name)
    except SchemaError as exc:
        ds.report_error(exc)  # two classes of that name: pass one in types=
        model_type = None
    parent = None
    if len(value) >= 3:
        parent = ds._models.get(value[2])
        if parent is None:
            # The server had the parent when it ordered this create, so this client
            # destroyed it and the destroy is on its way: a normal race.
            log.debug("model %r arrived under parent %r, which is gone here", model_id,
                      value[2])
            return None
    if model_type is None:
        # No class for it (a newer client's type): kept, never shown (DESIGN §4b).
        log.debug("model %r of unknown type %r kept as opaque", model_id, type_name)
        model = OpaqueModel(type_name)
        model._flags = flags
        ds._attach_under(model, model_id, parent)
        return model
    model = model_type()
    model._flags = flags
    ds._attach_under(model, model_id, parent)
    if len(value) >= 4:
        assert parent is not None
        ds._key_of[model] = value[3]
        ds._place(parent, value[3], model)
    ds._lifecycle.append((model, True))
    if parent is not None and type(parent)._follows_kids:
        ds._kid_reports.append((parent, KidEvent.ADDED, model, ds._key_of.get(model)))
    return model

def _apply_answer(ds: Datastore, entry: UpdateEntry) -> None:
    seq = entry.seq
    models, dirty = ds._models, ds._dirty
    sent_with = ds._inflight.pop(seq, None)
    lifecycle = ds._lifecycle_sent.pop(seq, None)
    if (sent_with is not None and not entry.rejected
            and _same_runs(entry.changes, sent_with[0])):
        for mid, pid in lifecycle or ():  # all accepted as sent
            if pid == DESTROY:
                _destroyed(ds, mid, True)
            elif (created := models.get(mid)) is not None:
                _created(ds, created, True)
        _settle_as_sent(ds, seq, sent_with[1], sent_with[2])
        return
    accepted: list[tuple[Hashable, object]] = []
    sent, userver = ds._unreliable_sent, ds._unreliable_server
    for run in entry.changes:
        model = models.get(run[0])
        if model is None:
            if DESTROY in run[1::2]:
                _destroyed(ds, run[0], True)  # an immediate destroy (already gone here)
            continue
        props = model._props
        for i in range(1, len(run), 2):
            pid = run[i]
            if pid == CREATE:
                _created(ds, model, True)
                continue
            if pid == DESTROY:
                _destroyed(ds, run[0], True)
                break  # nothing of it can follow
            p = props.get(pid) if pid >= 0 else None
            if p is None or p.child_type is not None:
                continue
            key = (model, p)
            if p.reliable:
                accepted.append((key, run[i + 1]))
                continue
            latest = sent.get(key)
            if latest is not None and latest > seq:
                userver[key] = run[i + 1]
                continue  # a stale echo: a newer write of ours is on its way
            if latest == seq:
                del sent[key]
                userver.pop(key, None)
            if key not in dirty:
                _show(ds, model, p, run[i + 1], ChangeSource.TRANSFORMED)
    rejected: set[Hashable] = set()
    for mid, pid in entry.rejected:
        model = models.get(mid)
        if pid == CREATE:
            if model is not None:
                _created(ds, model, False)
        elif pid == DESTROY:
            _destroyed(ds, mid, False)
        elif model is not None and (p := model._props.get(pid)) is not None:
            if p.reliable:
                rejected.add((model, p))
                continue
            key = (model, p)
            if sent.get(key) != seq:
                continue  # a newer write of ours is on its way: it decides
            del sent[key]
            server = userver.pop(key, _MISSING)
            if key not in dirty and server is not _MISSING:
                _show(ds, model, p, server, ChangeSource.ROLLBACK)  # DESIGN §4
    for settled, value in ds.cache.confirm(seq, accepted, dirty):
        owner_model: RealtimeModel = settled[0]  # type: ignore[index]
        p = settled[1]  # type: ignore[index]
        old = owner_model._v[p.slot]
        if old == value and type(old) is type(value):
            continue  # confirmed as shown: the common case
        source = ChangeSource.ROLLBACK if settled in rejected else ChangeSource.TRANSFORMED
        _show(ds, owner_model, p, value, source)

def _settle_as_sent(ds: Datastore, seq: int, reliable: list[tuple[Key, Any]],
                    unreliable: list[tuple[Key, Any]]) -> None:
    """The server accepted update ``seq`` exactly as sent (the common case)."""
    sent, dirty, userver = ds._unreliable_sent, ds._dirty, ds._unreliable_server
    for key, value in unreliable:
        latest = sent.get(key)
        if latest is not None and latest != seq:
            userver[key] = value  # a stale echo still tells the stream's value
        elif latest == seq:
            del sent[key]
            userver.pop(key, None)
            if key not in dirty:  # our value is the latest: show it again if a remote
                model, p = key    # value ordered before ours replaced it here meanwhile
                old = model._v[p.slot]
                if model._ds is ds and (old != value or type(old) is not type(value)):
                    _show(ds, model, p, value, ChangeSource.REMOTE)
    for settled, value in ds.cache.confirm(seq, reliable, dirty):
        target: RealtimeModel = settled[0]  # type: ignore[index]
        prop: Prop = settled[1]  # type: ignore[index]
        old = target._v[prop.slot]
        if target._ds is ds and (old != value or type(old) is not type(value)):
            _show(ds, target, prop, value, ChangeSource.TRANSFORMED)

def _created(ds: Datastore, model: RealtimeModel, accepted: bool) -> None:
    """The server answered this client's create of ``model``."""
    parent = model._parent
    follows = parent is not None and type(parent)._follows_kids
    if not accepted:
        # Under a collection a refusal is a normal outcome (a transactional key that
        # another client changed first; ownership taken meanwhile): its streams say so.
        (log.debug if follows else log.warning)("the server refused to create %r", model)
        ds._remove(model, event=KidEvent.REFUSED)
        return
    if not follows:
        return
    assert parent is not None
    key = ds._key_of.get(model)
    if key is not None:
        ds._place(parent, key, model)
    ds._kid_reports.append((parent, KidEvent.CONFIRMED, model, key))

def _destroyed(ds: Datastore, model_id: ModelId, accepted: bool) -> None:
    """The server answered this client's destroy of ``model_id`` (accepted: the change
    list holds it; a run of a model no longer here may be one)."""
    model = ds._destroying.pop(model_id, None)
    raced = model_id in ds._raced
    ds._raced.discard(model_id)
    deferred = model_id in ds._deferred
    ds._deferred.discard(model_id)
    if model is None:
        return
    # Refused after the stream destroyed it (or an ancestor) first: a race, no news.
    p: RealtimeModel | None = None if accepted else model if deferred else model._parent
    while p is not None and not raced:
        raced = p._ds is not ds
        p = p._parent
    if deferred:
        parent = model._parent
        if accepted and model._ds is ds:
            ds._remove(model, notify=False, event=KidEvent.DESTROYED)
        elif parent is not None and parent._ds is ds:
            if not accepted:
                log.debug("the server did not destroy %r (%s)", model,
                          "another change came first" if raced else "refused; it stays")
            event = KidEvent.DESTROYED if accepted else KidEvent.KEPT
            ds._kid_reports.append((parent, event, model, ds._key_of.get(model)))
    else:
        if not accepted and raced:
            log.debug("the server did not destroy model %r: another change destroyed it "
                      "first", model_id)
        ds._bury(model_id, restore=not accepted and not raced)

def _show(ds: Datastore, model: RealtimeModel, p: Prop, value: Any, source: ChangeSource) -> None:
    values = model._v
    old = values[p.slot]
    if type(old) is type(value) and old == value:
        return
    values[p.slot] = value
    if model._subs is not None or ds._all_changes is not None:
        ds._emissions.append((model, p, old, value, source))

def load_snapshot(ds: Datastore, welcome: Welcome) -> None:
    """Replace the state with the server's at the start of a (new) session.

    Unanswered writes roll back (source ``rollback``); everything else that differs shows
    with source ``snapshot``. Writes made before the first welcome are simply overwritten.
    """
    ds._next_seq = 1  # a (re)join restarts update numbering
    ds.epoch = welcome.epoch
    if welcome.client_id != ds.client_id:
        ds._counter = 0
    ds.client_id = welcome.client_id
    rolled: dict[Hashable, object] = {}
    if ds._welcomed:
        rolled = ds.cache.clear()
        rolled.update(dict.fromkeys(ds._dirty))
        rolled.update(dict.fromkeys(ds._unreliable_sent))
    ds._welcomed = True
    ds.resync_wanted = False
    ds._dirty.clear()
    ds._unreliable_sent.clear()
    ds._unreliable_server.clear()
    ds._inflight.clear()
    ds._lifecycle_sent.clear()
    ds._destroying.clear()  # unanswered destroys: the snapshot says what exists
    ds._deferred.clear()
    ds._raced.clear()
    ds._keyed.clear()       # rebuilt from the records' keys
    _apply_records(ds, welcome, rolled, set(), set())
    for model in ds._models.values():
        if type(model)._follows_kids:
            ds._kid_reports.append((model, KidEvent.RESET, model, None))


def rebase(ds: Datastore, welcome: Welcome) -> list[Update]:
    """A welcome opening a new epoch of this session: see :meth:`Datastore.rebase`."""
    last = welcome.last_applied
    ds.epoch = welcome.epoch
    ds.resync_wanted = False
    in_snapshot = {rec[0] for rec in welcome.snapshot}
    confirm: set[RealtimeModel] = set()  # own creates the server applied: confirmed in order
    for seq in sorted(ds._inflight):
        if seq > last:
            break
        del ds._inflight[seq]
        for mid, pid in ds._lifecycle_sent.pop(seq, ()):
            if pid == DESTROY:
                if mid in ds._deferred:
                    _destroyed(ds, mid, mid not in in_snapshot)
                else:  # already gone here: the snapshot brings it back if it was refused
                    ds._destroying.pop(mid, None)
                    ds._raced.discard(mid)
            elif (created := ds._models.get(mid)) is not None:
                if mid in in_snapshot:
                    confirm.add(created)
                else:
                    _created(ds, created, False)
    ds.cache.confirm(last, (), ds._dirty)  # settled: the snapshot shows what became of them
    sent, userver = ds._unreliable_sent, ds._unreliable_server
    for key in [k for k, seq in sent.items() if seq <= last]:
        del sent[key]
        userver.pop(key, None)
    unapplied = sorted(ds._inflight)
    renumber = {old: new for new, old in enumerate(unapplied, 1)}
    ds.cache.renumber(renumber)
    ds._inflight = {renumber[seq]: sent_with for seq, sent_with in ds._inflight.items()}
    ds._lifecycle_sent = {renumber[seq]: ops for seq, ops in ds._lifecycle_sent.items()}
    for key, seq in sent.items():
        sent[key] = renumber[seq]
    ds._next_seq = len(unapplied) + 1
    keep: set[ModelId] = {run[0] for runs, _, _ in ds._inflight.values() for run in runs
                          if CREATE in run[1::2]}
    keep.update(m._id for m, p in ds._dirty if p is CREATE_MARK)  # type: ignore[misc]
    _apply_records(ds, welcome, {}, keep, confirm, rebase=True)
    resend: list[Update] = []
    models = ds._models
    for seq, (runs, _, _) in ds._inflight.items():
        # Writes to models the server no longer has would only be refused as unknown.
        runs[:] = [run for run in runs if run[0] in models or DESTROY in run[1::2]]
        resend.append(Update(seq, runs, ds.epoch))
    return resend


def _apply_records(ds: Datastore, welcome: Welcome, rolled: dict[Hashable, object],
                   keep: set[ModelId], confirm: set[RealtimeModel], *,
                   rebase: bool = False) -> None:
    """Show the snapshot's records; remove dynamic models it lacks (except ``keep``).

    ``rolled``: keys whose unanswered writes a new session rolls back (source ``rollback``).
    With ``rebase``, keys with newer local writes keep showing them and take the snapshot as
    their server value; ``confirm`` are own creates the server applied."""
    cache, dirty = ds.cache, ds._dirty
    sent, userver = ds._unreliable_sent, ds._unreliable_server
    seen: dict[ModelId, int] = {}
    for position, record in enumerate(welcome.snapshot):
        model_id, type_name, owner, flags, props = record[:5]
        model = ds._models.get(model_id)
        if model is None:
            if type(model_id) is not int:
                # A child of a model we could not create, or of an opaque one.
                model = _opaque_child(ds, model_id, type_name)
                if model is None:
                    continue
            elif model_id in ds._destroying:
                continue  # this client's destroy of it is on its way again
            else:
                model = _apply_lifecycle(ds, model_id, CREATE, (type_name, flags, *record[5:]),
                                         None)
                if model is None:
                    continue
        elif model in confirm:
            _created(ds, model, True)
        elif len(record) == 7 and model._parent is not None:
            ds._key_of[model] = record[6]
            ds._place(model._parent, record[6], model)
        seen[model_id] = position
        model._flags = flags
        if type(model) is OpaqueModel:
            model._v[0] = owner
            model.values.clear()
            model.values.update(props)
            continue
        for p in type(model)._props.values():
            if p.child_type is not None:
                continue
            value = owner if p.id == OWNER else props.get(p.id, type(model)._template[p.slot])
            key = (model, p)
            if rebase:
                if p.reliable:
                    if key in cache or key in dirty:  # a newer local write keeps showing
                        cache.remote(key, value, True)
                        continue
                elif key in dirty or key in sent:
                    if key in sent:
                        userver[key] = value
                    continue
                source = ChangeSource.SNAPSHOT
            else:
                source = ChangeSource.ROLLBACK if key in rolled else ChangeSource.SNAPSHOT
            _show(ds, model, p, value, source)
    for model_id, model in list(ds._models.items()):
        if (model_id not in seen and type(model_id) is int and model_id != 0
                and model._ds is ds and model_id not in keep):
            ds._remove(model)
    last = len(seen)
    for parent, kids in ds._kids.items():  # the room's order of creation
        order = sorted(kids, key=lambda kid: seen.get(kid._id, last))  # type: ignore[arg-type]
        ds._kids[parent] = dict.fromkeys(order)
