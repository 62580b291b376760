r"""Applying the server stream: other clients' changes, the answers to this client's updates,
creates and destroys — and the removal of models, whoever asked for it.

An :class:`Applier` changes the state (model values, the tree, the delta tracker's records)
at once and gathers the visible changes as data (:class:`~rtecs.model.VisibleChanges`):
property changes, what happened to collections' elements
(:class:`~rtecs.model.KidEvent`\ s), dynamic models that appeared or went. The datastore
hands them to its notifier once the whole message is applied (DESIGN §4b):
:meth:`Applier.take_changes`.

- A remote write of a reliable property goes through the in-flight cache (it shows only if
  nothing local is newer); an unreliable one shows at once (latest wins).
- An answer accepting an update exactly as sent is settled in bulk; otherwise change by
  change: accepted values set the server value, rejections show it again.
- Destroying a collection's element is *deferred*: the model stays until the server
  answers; accepted, it goes; refused, it stays. A refused destroy of any other model (gone
  here already) cannot be rebuilt here: :attr:`Applier.resync_wanted` asks for a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from rtecs.datastore._delta import MISSING, DeltaTracker
from rtecs.datastore._opaque import OpaqueModel
from rtecs.datastore._tree import ModelTree
from rtecs.errors import SchemaError
from rtecs.model import (
    ChangeSource,
    KidEvent,
    ModelOwner,
    Notifier,
    Prop,
    RealtimeModel,
    VisibleChanges,
    follows_kids,
    props_of,
    set_flags,
    store_of,
    values_of,
    watched,
)
from rtecs.protocol import CREATE, DESTROY, ModelId, UpdateEntry

__all__ = ["Applier"]

log = logging.getLogger("rtecs.datastore")


def _same_runs(received: Any, sent: list[list[Any]]) -> bool:
    """True if the runs of an answer are exactly the runs this client sent."""
    if len(received) != len(sent):
        return False
    for mine, theirs in zip(sent, received, strict=True):
        if len(mine) != len(theirs) or tuple(mine) != theirs:
            return False
    return True


class Applier:
    """Applies server messages to one datastore's tree and records (see module docs)."""

    def __init__(self, owner: ModelOwner, tree: ModelTree, delta: DeltaTracker,
                 notifier: Notifier,
                 find_type: Callable[[str], type[RealtimeModel] | None]) -> None:
        self._owner = owner
        self._tree = tree
        self._delta = delta
        self._notifier = notifier
        self._find_type = find_type
        self._visible = VisibleChanges()
        self.resync_wanted = False
        """Set when this client cannot rebuild the room's state by itself (the server
        refused a destroy this client already applied): ask for a fresh snapshot."""

    def take_changes(self) -> VisibleChanges:
        """The visible changes gathered since the last call (in stream order)."""
        visible, self._visible = self._visible, VisibleChanges()
        return visible

    def report(self, parent: RealtimeModel, event: KidEvent, kid: RealtimeModel,
               key: Any) -> None:
        """Tell the collection ``parent`` what happened to ``kid`` (with the message)."""
        self._visible.kids.append((parent, event, kid, key))

    # ----------------------------------------------------------------- values

    def show(self, model: RealtimeModel, p: Prop, value: Any, source: ChangeSource) -> None:
        """Make ``value`` the visible value of ``model.p`` (a change is recorded)."""
        values = values_of(model)
        old = values[p.slot]
        if type(old) is type(value) and old == value:
            return
        values[p.slot] = value
        if self._notifier.emit is not None or watched(model):  # else nobody would hear it
            self._visible.props.append((model, p, old, value, source))

    # ----------------------------------------------------------------- entries

    def apply_entry(self, entry: UpdateEntry) -> None:
        """Apply one entry of the server stream (its visible changes are gathered)."""
        if entry.sender == self._owner.client_id and entry.seq > 0:
            self._apply_answer(entry)
        else:
            self._apply_changes(entry.changes)

    def _apply_changes(self, changes: Iterable[Any]) -> None:
        models, remote = self._tree.models, self._delta.remote
        for run in changes:
            model = models.get(run[0])
            if model is None and type(run[0]) is tuple:
                model = self.opaque_child(run[0], "")
            for i in range(1, len(run), 2):
                pid = run[i]
                if pid < 0:
                    model = self.apply_lifecycle(run[0], pid, run[i + 1], model)
                    continue
                if model is None:
                    log.debug("change to unknown model %r skipped", run[0])
                    break
                p = props_of(type(model)).get(pid)
                if p is None or p.child_type is not None:
                    if type(model) is OpaqueModel and pid > 0:
                        model.values[pid] = run[i + 1]
                    continue  # a newer peer's property: skip (forward compatibility)
                if remote((model, p), p.reliable, run[i + 1]):
                    self.show(model, p, run[i + 1], ChangeSource.REMOTE)

    def opaque_child(self, model_id: tuple[Any, ...], type_name: str) -> RealtimeModel | None:
        """A declared child of an opaque model, made when the stream first names it (the
        client cannot know an unknown type's children in advance); None for anything else."""
        parent = self._tree.get(model_id[0] if len(model_id) == 2 else model_id[:-1])
        if type(parent) is not OpaqueModel:
            return None
        child = OpaqueModel(type_name)
        self._tree.attach_under(child, model_id, parent)
        return child

    def apply_lifecycle(self, model_id: ModelId, key: int, value: Any,
                        model: RealtimeModel | None) -> RealtimeModel | None:
        """A create or destroy from the stream (or a snapshot's record, as a create)."""
        tree = self._tree
        if key == DESTROY:
            if model is not None:
                self.remove(model)
            elif self._delta.destroying(model_id):
                self._delta.note_race(model_id)
            return None
        if model is not None:
            return model  # our own create, or a duplicate
        type_name, flags = value[0], value[1]
        try:
            model_type = self._find_type(type_name)
        except SchemaError as exc:
            self._notifier.report_error(exc)  # two classes of that name: pass one in types=
            model_type = None
        parent = None
        if len(value) >= 3:
            parent = tree.get(value[2])
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
            set_flags(model, flags)
            tree.attach_under(model, model_id, parent)
            return model
        model = model_type()
        set_flags(model, flags)
        tree.attach_under(model, model_id, parent)
        if len(value) >= 4:
            assert parent is not None
            tree.set_key(model, value[3])
            self.place(parent, value[3], model)
        self._visible.lifecycle.append((model, True))
        if parent is not None and follows_kids(type(parent)):
            self._visible.kids.append((parent, KidEvent.ADDED, model, tree.key_of(model)))
        return model

    # ----------------------------------------------------------------- answers

    def _apply_answer(self, entry: UpdateEntry) -> None:
        seq = entry.seq
        models, delta = self._tree.models, self._delta
        sent_with, lifecycle = delta.take_sent(seq)
        if (sent_with is not None and not entry.rejected
                and _same_runs(entry.changes, sent_with[0])):
            for mid, pid in lifecycle or ():  # all accepted as sent
                if pid == DESTROY:
                    self.destroyed(mid, True)
                elif (created := models.get(mid)) is not None:
                    self.created(created, True)
            for (target, prop), value, source in delta.settle_as_sent(seq, sent_with,
                                                                       self._owner):
                self.show(target, prop, value, source)
            return
        accepted: list[tuple[Hashable, object]] = []
        for run in entry.changes:
            model = models.get(run[0])
            if model is None:
                if DESTROY in run[1::2]:
                    self.destroyed(run[0], True)  # an immediate destroy (already gone here)
                continue
            props = props_of(type(model))
            for i in range(1, len(run), 2):
                pid = run[i]
                if pid == CREATE:
                    self.created(model, True)
                    continue
                if pid == DESTROY:
                    self.destroyed(run[0], True)
                    break  # nothing of it can follow
                p = props.get(pid) if pid >= 0 else None
                if p is None or p.child_type is not None:
                    continue
                if p.reliable:
                    accepted.append(((model, p), run[i + 1]))
                elif delta.answered_unreliable((model, p), seq, run[i + 1]):
                    self.show(model, p, run[i + 1], ChangeSource.TRANSFORMED)
        rejected: set[Hashable] = set()
        for mid, pid in entry.rejected:
            model = models.get(mid)
            if pid == CREATE:
                if model is not None:
                    self.created(model, False)
            elif pid == DESTROY:
                self.destroyed(mid, False)
            elif model is not None and (p := props_of(type(model)).get(pid)) is not None:
                if p.reliable:
                    rejected.add((model, p))
                    continue
                server = delta.rejected_unreliable((model, p), seq)
                if server is not MISSING:
                    self.show(model, p, server, ChangeSource.ROLLBACK)  # DESIGN §4
        for settled, value in delta.confirm(seq, accepted):
            owner_model: RealtimeModel = settled[0]  # type: ignore[index]
            settled_prop: Prop = settled[1]  # type: ignore[index]
            old = values_of(owner_model)[settled_prop.slot]
            if old == value and type(old) is type(value):
                continue  # confirmed as shown: the common case
            why = ChangeSource.ROLLBACK if settled in rejected else ChangeSource.TRANSFORMED
            self.show(owner_model, settled_prop, value, why)

    def created(self, model: RealtimeModel, accepted: bool) -> None:
        """The server answered this client's create of ``model``."""
        parent = model.parent
        follows = parent is not None and follows_kids(type(parent))
        if not accepted:
            # Under a collection a refusal is a normal outcome (a transactional key that
            # another client changed first; ownership taken meanwhile): its streams say so.
            (log.debug if follows else log.warning)("the server refused to create %r", model)
            self.remove(model, event=KidEvent.REFUSED)
            return
        if not follows:
            return
        assert parent is not None
        key = self._tree.key_of(model)
        if key is not None:
            self.place(parent, key, model)
        self._visible.kids.append((parent, KidEvent.CONFIRMED, model, key))

    def destroyed(self, model_id: ModelId, accepted: bool) -> None:
        """The server answered this client's destroy of ``model_id`` (accepted: the change
        list holds it; a run of a model no longer here may be one)."""
        model, raced, deferred = self._delta.end_destroy(model_id)
        if model is None:
            return
        owner = self._owner
        # Refused after the stream destroyed it (or an ancestor) first: a race, no news.
        p: RealtimeModel | None = None if accepted else model if deferred else model.parent
        while p is not None and not raced:
            raced = store_of(p) is not owner
            p = p.parent
        if deferred:
            parent = model.parent
            if accepted and store_of(model) is owner:
                self.remove(model, notify=False, event=KidEvent.DESTROYED)
            elif parent is not None and store_of(parent) is owner:
                if not accepted:
                    log.debug("the server did not destroy %r (%s)", model,
                              "another change came first" if raced else "refused; it stays")
                event = KidEvent.DESTROYED if accepted else KidEvent.KEPT
                self._visible.kids.append((parent, event, model, self._tree.key_of(model)))
        elif not accepted and raced:
            log.debug("the server did not destroy model %r: another change destroyed it "
                      "first", model_id)
        elif not accepted:
            # Gone here but not there, and only the server knows its state now.
            log.info("the server refused to destroy model %r: asking for a fresh snapshot",
                     model_id)
            self.resync_wanted = True

    # ----------------------------------------------------------------- the tree

    def place(self, parent: RealtimeModel, key: Any, model: RealtimeModel) -> None:
        """The stream put ``model`` at ``key`` of ``parent``: the element there goes."""
        previous = self._tree.place(parent, key, model)
        if previous is not None:
            self.remove(previous)

    def remove(self, model: RealtimeModel, notify: bool = True,
               event: KidEvent | None = KidEvent.GONE) -> None:
        """Detach ``model`` and everything under it. ``notify``: it went other than by
        this client's own destroy (lifecycle listeners hear of it). ``event``: what to
        report to the model's collection, if it is in one (None: nothing)."""
        parent = model.parent
        in_collection = parent is not None and follows_kids(type(parent))
        visible = self._visible
        if in_collection and event is not None:
            visible.kids.append((parent, event, model, self._tree.key_of(model)))  # type: ignore[arg-type]
        detached = self._tree.detach(model)
        if notify:
            visible.lifecycle.extend((m, False) for m, mid, _ in detached if type(mid) is int)
        visible.abandoned.extend(m for m, _, _ in detached if follows_kids(type(m)))
        unsent = self._delta.forget(m for m, _, _ in detached)
        if in_collection and model in unsent:
            # Its destroy was never sent: no answer will come.
            visible.kids.append((parent, KidEvent.KEPT, model, detached[0][2]))  # type: ignore[arg-type]
